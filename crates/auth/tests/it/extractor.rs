//! The `Caller` extractor answers 401 and 403 in problem+json, before any handler runs.

use agora_auth::{Caller, Verifier};
use agora_contracts::Role;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::FromRef;
use axum::http::{Request, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::Value;
use tower::ServiceExt;

use crate::support::{TestKey, admin, customer, raw_token, verifier};

/// A service's own state, which provides the verifier.
#[derive(Clone)]
struct AppState {
    verifier: Verifier,
}

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Verifier {
        state.verifier.clone()
    }
}

async fn me(caller: Caller) -> String {
    caller.user_id.to_string()
}

async fn admin_only(caller: Caller) -> Result<&'static str, agora_auth::Error> {
    caller.require(Role::Admin)?;
    Ok("secret admin page")
}

async fn greeting(caller: Option<Caller>) -> impl IntoResponse {
    match caller {
        Some(caller) => format!("hello {}", caller.user_id),
        None => "hello stranger".to_owned(),
    }
}

async fn app(key: &TestKey) -> Router {
    let (verifier, _) = verifier(&[key]).await;
    Router::new()
        .route("/me", get(me))
        .route("/admin", get(admin_only))
        .route("/greeting", get(greeting))
        .with_state(AppState { verifier })
}

async fn call(
    app: Router,
    path: &str,
    authorization: Option<&str>,
) -> (StatusCode, Option<String>, String) {
    let mut request = Request::get(path);
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let response = app
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body = to_bytes(response.into_body(), 64 * 1024)
        .await
        .expect("body");
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).expect("utf-8"),
    )
}

fn assert_problem(
    status: StatusCode,
    content_type: Option<String>,
    body: &str,
    expected: StatusCode,
) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    let problem: Value = serde_json::from_str(body).expect("json");
    assert_eq!(problem["status"], expected.as_u16());
    let kind = if expected == StatusCode::FORBIDDEN {
        "forbidden"
    } else {
        "unauthorized"
    };
    assert_eq!(problem["type"], format!("urn:agora:problem:{kind}"));
    assert!(problem["title"].is_string());
    assert!(problem["detail"].is_string());
    assert_eq!(problem.as_object().expect("object").len(), 4, "{body}");
}

#[tokio::test]
async fn a_valid_token_reaches_the_handler_as_a_caller() {
    let key = TestKey::generate("k1");
    let claims = customer();
    let token = key.sign(&claims);

    let (status, _, body) = call(app(&key).await, "/me", Some(&format!("Bearer {token}"))).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, claims.sub.to_string());
}

#[tokio::test]
async fn the_scheme_is_case_insensitive() {
    let key = TestKey::generate("k1");
    let token = key.sign(&customer());

    let (status, _, _) = call(app(&key).await, "/me", Some(&format!("bearer {token}"))).await;

    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_missing_or_garbled_header_is_401_problem_json() {
    let key = TestKey::generate("k1");
    let token = key.sign(&customer());
    let cases = [
        None,
        Some(String::new()),
        Some("Bearer".to_owned()),
        Some("Bearer ".to_owned()),
        Some(token.clone()),
        Some(format!("Basic {token}")),
        Some(format!("Bearer {token} extra")),
        Some("Bearer not-a-jwt".to_owned()),
        Some(format!("Bearer {}", &token[..token.len() - 5])),
    ];

    for authorization in cases {
        let (status, content_type, body) =
            call(app(&key).await, "/me", authorization.as_deref()).await;
        assert_problem(status, content_type, &body, StatusCode::UNAUTHORIZED);
        assert!(!body.contains(&token[..20]), "the token is echoed: {body}");
    }
}

#[tokio::test]
async fn a_refused_token_is_401_without_the_token_in_the_body() {
    let key = TestKey::generate("k1");
    let payload = serde_json::to_value(admin()).expect("json");
    let forged = raw_token(
        &serde_json::json!({"alg": "none", "kid": "k1"}),
        &payload,
        b"",
    );

    let (status, content_type, body) =
        call(app(&key).await, "/admin", Some(&format!("Bearer {forged}"))).await;

    assert_problem(status, content_type, &body, StatusCode::UNAUTHORIZED);
    assert!(!body.contains(&forged[..20]));
}

#[tokio::test]
async fn an_expired_token_is_401_and_says_so() {
    let key = TestKey::generate("k1");
    let mut claims = customer();
    claims.iat -= 1000;
    claims.nbf = claims.iat;
    claims.exp = claims.iat + 300;

    let (status, content_type, body) = call(
        app(&key).await,
        "/me",
        Some(&format!("Bearer {}", key.sign(&claims))),
    )
    .await;

    assert_problem(status, content_type, &body, StatusCode::UNAUTHORIZED);
    assert!(body.contains("expired"), "{body}");
}

#[tokio::test]
async fn a_customer_on_an_admin_route_is_403_problem_json() {
    let key = TestKey::generate("k1");
    let token = key.sign(&customer());

    let (status, content_type, body) =
        call(app(&key).await, "/admin", Some(&format!("Bearer {token}"))).await;

    assert_problem(status, content_type, &body, StatusCode::FORBIDDEN);
    assert!(!body.contains("secret"));
}

#[tokio::test]
async fn an_admin_on_an_admin_route_is_200() {
    let key = TestKey::generate("k1");
    let token = key.sign(&admin());

    let (status, _, body) = call(app(&key).await, "/admin", Some(&format!("Bearer {token}"))).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "secret admin page");
}

#[tokio::test]
async fn an_optional_caller_is_none_without_a_header_but_a_bad_token_is_still_401() {
    let key = TestKey::generate("k1");
    let claims = customer();

    let (status, _, body) = call(app(&key).await, "/greeting", None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello stranger"));

    let token = key.sign(&claims);
    let (status, _, body) = call(
        app(&key).await,
        "/greeting",
        Some(&format!("Bearer {token}")),
    )
    .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, format!("hello {}", claims.sub))
    );

    let (status, content_type, body) =
        call(app(&key).await, "/greeting", Some("Bearer junk")).await;
    assert_problem(status, content_type, &body, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_router_whose_state_is_the_verifier_works_too() {
    let key = TestKey::generate("k1");
    let (verifier, _) = verifier(&[&key]).await;
    let app = Router::new().route("/me", get(me)).with_state(verifier);
    let token = key.sign(&customer());

    let (status, _, _) = call(app, "/me", Some(&format!("Bearer {token}"))).await;

    assert_eq!(status, StatusCode::OK);
}
