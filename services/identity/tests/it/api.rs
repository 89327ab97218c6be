//! Every answer of the Identity section of the API, on both backends.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::{
    Backend, access_token, assert_problem, call, change_password, sign_up, start, token,
    verify_with_jwks,
};

use agora_contracts::UserSignedOut;

crate::on_both_backends!(
    sign_up_answers_201_with_the_user,
    a_taken_email_is_409_whatever_its_case,
    invalid_sign_ups_are_422_naming_each_field,
    a_body_that_is_not_json_is_400_and_a_large_one_413,
    valid_credentials_get_a_bearer_token,
    unknown_email_and_wrong_password_get_the_same_401,
    a_password_change_is_204_and_revokes_the_old_password_and_tokens,
    a_password_change_needs_a_valid_token,
    a_password_change_checks_both_passwords,
    jwks_publishes_the_key_that_verifies_tokens,
    signing_out_refuses_that_token_only_and_is_published,
);

const PASSWORD: &str = "correct horse battery";

async fn sign_up_answers_201_with_the_user(backend: Backend) {
    let Some((_env, identity)) = start(backend).await else {
        return;
    };
    let router = identity.router();
    let (status, body) = sign_up(&router, " Ada@Example.org ", PASSWORD).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["email"], "ada@example.org");
    assert_eq!(body["name"], "Ada Lovelace");
    let id = uuid::Uuid::parse_str(body["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(body.as_object().unwrap().len(), 3, "no hash, no password");
    identity.shutdown().await;
}

async fn a_taken_email_is_409_whatever_its_case(backend: Backend) {
    let Some((_env, identity)) = start(backend).await else {
        return;
    };
    let router = identity.router();
    assert_eq!(
        sign_up(&router, "ada@example.org", PASSWORD).await.0,
        StatusCode::CREATED
    );
    for email in ["ada@example.org", "ADA@example.ORG"] {
        let (status, content_type, body) = call(
            &router,
            Method::POST,
            "/api/identity/users",
            None,
            Some(json!({"email": email, "password": "another password", "name": "Eve"})),
        )
        .await;
        assert_problem(status, &content_type, &body, StatusCode::CONFLICT);
    }
    identity.shutdown().await;
}

async fn invalid_sign_ups_are_422_naming_each_field(backend: Backend) {
    let Some((_env, identity)) = start(backend).await else {
        return;
    };
    let router = identity.router();
    let cases = [
        (
            json!({"email": "ada@example.org", "password": "short", "name": "Ada"}),
            vec!["password"],
        ),
        (
            json!({"email": "not-an-email", "password": PASSWORD, "name": "Ada"}),
            vec!["email"],
        ),
        (
            json!({"email": "x", "password": "", "name": " "}),
            vec!["email", "password", "name"],
        ),
        (json!({"password": PASSWORD, "name": "Ada"}), vec!["email"]),
        (
            json!({"email": "ada@example.org", "password": 12, "name": "Ada"}),
            vec!["password"],
        ),
    ];
    for (request, fields) in cases {
        let (status, content_type, body) = call(
            &router,
            Method::POST,
            "/api/identity/users",
            None,
            Some(request.clone()),
        )
        .await;
        assert_problem(
            status,
            &content_type,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
        );
        let named: Vec<&str> = body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(named, fields, "{request}");
    }
    // None of them was created.
    assert_eq!(
        token(&router, "ada@example.org", PASSWORD).await.0,
        StatusCode::UNAUTHORIZED
    );
    identity.shutdown().await;
}

async fn a_body_that_is_not_json_is_400_and_a_large_one_413(backend: Backend) {
    let Some((_env, identity)) = start(backend).await else {
        return;
    };
    let router = identity.router();
    let request = axum::http::Request::post("/api/identity/token")
        .header("content-type", "application/json")
        .body(axum::body::Body::from("{\"email\":"))
        .unwrap();
    let response = tower::ServiceExt::oneshot(router.clone(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    identity.shutdown().await;
}

async fn valid_credentials_get_a_bearer_token(backend: Backend) {
    let Some((_env, identity)) = start(backend).await else {
        return;
    };
    let router = identity.router();
    let (_, user) = sign_up(&router, "ada@example.org", PASSWORD).await;
    let (status, body) = token(&router, "ADA@example.org", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    let access_token = body["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(access_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert!(header.kid.is_some());
    let claims = verify_with_jwks(&router, access_token).await.unwrap();
    assert_eq!(claims.sub.to_string(), user["id"].as_str().unwrap());
    assert_eq!(claims.roles, [agora_contracts::Role::Customer]);
    assert!(claims.exp - claims.iat <= 15 * 60);
    // Each token has its own id.
    let again = access_token_claims(&router, "ada@example.org").await;
    assert_ne!(again.jti, claims.jti);
    identity.shutdown().await;
}

async fn access_token_claims(router: &axum::Router, email: &str) -> agora_auth::Claims {
    let token = access_token(router, email, PASSWORD).await;
    verify_with_jwks(router, &token).await.unwrap()
}

async fn unknown_email_and_wrong_password_get_the_same_401(backend: Backend) {
    let Some((_env, identity)) = start(backend).await else {
        return;
    };
    let router = identity.router();
    sign_up(&router, "ada@example.org", PASSWORD).await;
    let mut answers = Vec::new();
    for (email, password) in [
        ("ada@example.org", "wrong password!"),
        ("nobody@example.org", PASSWORD),
        ("not an email", PASSWORD),
    ] {
        let (status, content_type, body) = call(
            &router,
            Method::POST,
            "/api/identity/token",
            None,
            Some(json!({"email": email, "password": password})),
        )
        .await;
        assert_problem(status, &content_type, &body, StatusCode::UNAUTHORIZED);
        answers.push(body);
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    identity.shutdown().await;
}

async fn a_password_change_is_204_and_revokes_the_old_password_and_tokens(backend: Backend) {
    let Some((_env, identity)) = start(backend).await else {
        return;
    };
    let router = identity.router();
    sign_up(&router, "ada@example.org", PASSWORD).await;
    let old_token = access_token(&router, "ada@example.org", PASSWORD).await;
    let (status, _, body) =
        change_password(&router, Some(&old_token), PASSWORD, "a brand new password").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(body, serde_json::Value::Null);

    assert_eq!(
        token(&router, "ada@example.org", PASSWORD).await.0,
        StatusCode::UNAUTHORIZED
    );
    let new_token = access_token(&router, "ada@example.org", "a brand new password").await;
    // The token issued before the change is refused; the new one works.
    let (status, content_type, body) = change_password(
        &router,
        Some(&old_token),
        "a brand new password",
        "yet another one",
    )
    .await;
    assert_problem(status, &content_type, &body, StatusCode::UNAUTHORIZED);
    let (status, _, _) = change_password(
        &router,
        Some(&new_token),
        "a brand new password",
        "yet another one",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    identity.shutdown().await;
}

async fn a_password_change_needs_a_valid_token(backend: Backend) {
    let Some((_env, identity)) = start(backend).await else {
        return;
    };
    let router = identity.router();
    sign_up(&router, "ada@example.org", PASSWORD).await;
    let valid = access_token(&router, "ada@example.org", PASSWORD).await;
    let mut tampered: Vec<String> = valid.split('.').map(str::to_owned).collect();
    tampered[2] = tampered[2].chars().rev().collect();
    let foreign = foreign_token(&valid);
    for token in [
        None,
        Some("garbage"),
        Some(tampered.join(".").as_str()),
        Some(foreign.as_str()),
    ] {
        let (status, content_type, body) =
            change_password(&router, token, PASSWORD, "a brand new password").await;
        assert_problem(status, &content_type, &body, StatusCode::UNAUTHORIZED);
    }
    // A scheme other than Bearer is no token either.
    let request = axum::http::Request::put("/api/identity/users/me/password")
        .header("content-type", "application/json")
        .header("authorization", format!("Basic {valid}"))
        .body(axum::body::Body::from(
            json!({"current_password": PASSWORD, "new_password": "a brand new password"})
                .to_string(),
        ))
        .unwrap();
    let response = tower::ServiceExt::oneshot(router.clone(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    // The password did not change.
    assert_eq!(
        token(&router, "ada@example.org", PASSWORD).await.0,
        StatusCode::OK
    );
    identity.shutdown().await;
}

/// The same claims and `kid`, signed by a key identity does not hold.
fn foreign_token(valid: &str) -> String {
    let header = jsonwebtoken::decode_header(valid).unwrap();
    let claims: agora_auth::Claims =
        jsonwebtoken::dangerous::insecure_decode_claims(valid).unwrap();
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&[7u8; 32]);
    let key = jsonwebtoken::EncodingKey::from_ed_der(&der);
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

async fn a_password_change_checks_both_passwords(backend: Backend) {
    let Some((_env, identity)) = start(backend).await else {
        return;
    };
    let router = identity.router();
    sign_up(&router, "ada@example.org", PASSWORD).await;
    let token_ = access_token(&router, "ada@example.org", PASSWORD).await;
    let (status, content_type, body) =
        change_password(&router, Some(&token_), PASSWORD, "short").await;
    assert_problem(
        status,
        &content_type,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert_eq!(body["errors"][0]["field"], "new_password");
    let (status, content_type, body) = change_password(
        &router,
        Some(&token_),
        "not my password",
        "a brand new password",
    )
    .await;
    assert_problem(
        status,
        &content_type,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert_eq!(body["errors"][0]["field"], "current_password");
    assert_eq!(
        token(&router, "ada@example.org", PASSWORD).await.0,
        StatusCode::OK
    );
    identity.shutdown().await;
}

async fn jwks_publishes_the_key_that_verifies_tokens(backend: Backend) {
    let Some((_env, identity)) = start(backend).await else {
        return;
    };
    let router = identity.router();
    let (status, content_type, jwks) =
        call(&router, Method::GET, "/api/identity/jwks", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let key = keys[0].as_object().unwrap();
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    assert!(key["kid"].is_string() && key["x"].is_string());
    assert!(!key.contains_key("d"), "never the private key");

    sign_up(&router, "ada@example.org", PASSWORD).await;
    let token = access_token(&router, "ada@example.org", PASSWORD).await;
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(),
        key["kid"].as_str()
    );
    assert!(verify_with_jwks(&router, &token).await.is_some());
    identity.shutdown().await;
}

/// An unknown email costs a password verification too, so that the answer's time does
/// not tell whether the account exists. Loose (a third), to hold on a busy machine;
/// without the dummy verification the unknown email is tens of times faster. The two
/// are measured in turns, so that a burst of load elsewhere slows both alike; 4 of
/// each, under the 5 failures after which an address is blocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_email_takes_about_as_long_as_a_wrong_password() {
    let Some((_env, identity)) = start(Backend::Sqlite).await else {
        return;
    };
    let router = identity.router();
    sign_up(&router, "ada@example.org", PASSWORD).await;
    let timed = async |email: &str, password: &str| {
        let started = std::time::Instant::now();
        assert_eq!(
            token(&router, email, password).await.0,
            StatusCode::UNAUTHORIZED
        );
        started.elapsed()
    };
    let (mut wrong_password, mut unknown_email) =
        (std::time::Duration::MAX, std::time::Duration::MAX);
    for _ in 0..4 {
        wrong_password = wrong_password.min(timed("ada@example.org", "wrong password!").await);
        unknown_email = unknown_email.min(timed("nobody@example.org", PASSWORD).await);
    }
    assert!(
        unknown_email * 3 >= wrong_password,
        "unknown email {unknown_email:?}, wrong password {wrong_password:?}"
    );
    identity.shutdown().await;
}

async fn signing_out_refuses_that_token_only_and_is_published(backend: Backend) {
    let Some((env, identity)) = start(backend).await else {
        return;
    };
    let router = identity.router();
    sign_up(&router, "ada@example.org", PASSWORD).await;
    let first = access_token(&router, "ada@example.org", PASSWORD).await;
    let second = access_token(&router, "ada@example.org", PASSWORD).await;
    let first_claims = verify_with_jwks(&router, &first).await.unwrap();

    let (status, content_type, body) =
        call(&router, Method::DELETE, "/api/identity/token", None, None).await;
    assert_problem(status, &content_type, &body, StatusCode::UNAUTHORIZED);

    let (status, _, body) = call(
        &router,
        Method::DELETE,
        "/api/identity/token",
        Some(&first),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(body, serde_json::Value::Null);

    // That token is refused from now on, by identity too...
    let (status, content_type, body) = call(
        &router,
        Method::DELETE,
        "/api/identity/token",
        Some(&first),
        None,
    )
    .await;
    assert_problem(status, &content_type, &body, StatusCode::UNAUTHORIZED);
    let (status, content_type, body) =
        change_password(&router, Some(&first), PASSWORD, "a brand new password").await;
    assert_problem(status, &content_type, &body, StatusCode::UNAUTHORIZED);
    // ...the other session goes on (a wrong current password: 422, nothing changes).
    let (status, _, _) = change_password(
        &router,
        Some(&second),
        "not my password",
        "a brand new password",
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Published for every service: the admin's sign-up, Ada's sign-up, two sign-ins,
    // the sign-out.
    let events = env.events(5).await;
    let signed_out: UserSignedOut = events
        .iter()
        .find(|e| e.is::<UserSignedOut>())
        .expect("a UserSignedOut")
        .decode()
        .unwrap();
    assert_eq!(signed_out.token_id, first_claims.jti);
    assert_eq!(signed_out.user_id, first_claims.sub);
    assert_eq!(signed_out.version, 4, "sign-up, two sign-ins, the sign-out");
    identity.shutdown().await;
}
