//! The security suite: forged, stale and misdirected tokens, roles, revocation by
//! password change, and password guessing, all through the public port.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agora_auth::{AUDIENCE, Claims, ISSUER};
use agora_contracts::Role;
use agora_gateway::Limits;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{PASSWORD, TestShop, b64url, b64url_decode, eventually, raw};

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn admin_claims() -> Claims {
    Claims::new(
        Uuid::now_v7(),
        vec![Role::Admin],
        now(),
        Duration::from_secs(300),
    )
}

async fn status_with(shop: &TestShop, token: &str) -> StatusCode {
    shop.client
        .get(shop.url("/api/ops/status"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

fn sign(kid: &str, key: &EncodingKey, claims: &impl serde::Serialize) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

#[tokio::test]
async fn forged_and_invalid_tokens_are_refused_and_a_genuine_one_accepted() {
    let shop = TestShop::start().await;
    let (kid, key) = shop.identity_key();
    let genuine = sign(&kid, &key, &admin_claims());
    assert_eq!(
        status_with(&shop, &genuine).await,
        StatusCode::OK,
        "the control case"
    );

    let payload = |claims: &Claims| b64url(&serde_json::to_vec(claims).unwrap());
    let mut forged: Vec<(&str, String)> = Vec::new();

    let none_header = b64url(
        json!({"alg": "none", "typ": "JWT", "kid": kid})
            .to_string()
            .as_bytes(),
    );
    forged.push((
        "alg none",
        format!("{none_header}.{}.", payload(&admin_claims())),
    ));

    let jwks = shop
        .client
        .get(shop.url("/api/identity/jwks"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let public: Value = serde_json::from_str(&jwks).unwrap();
    let x = b64url_decode(public["keys"][0]["x"].as_str().unwrap());
    for secret in [x.as_slice(), jwks.as_bytes()] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        let token =
            jsonwebtoken::encode(&header, &admin_claims(), &EncodingKey::from_secret(secret))
                .unwrap();
        forged.push(("HMAC with the public key", token));
    }

    forged.push(("unknown kid", sign("no-such-key", &key, &admin_claims())));

    let mut expired = admin_claims();
    expired.iat = now() - 3_600;
    expired.nbf = expired.iat;
    expired.exp = now() - 600;
    forged.push(("expired", sign(&kid, &key, &expired)));

    let mut early = admin_claims();
    early.nbf = now() + 600;
    early.iat = early.nbf;
    early.exp = early.nbf + 300;
    forged.push(("not yet valid", sign(&kid, &key, &early)));

    let mut issuer = admin_claims();
    issuer.iss = "someone-else".into();
    forged.push(("wrong iss", sign(&kid, &key, &issuer)));

    let mut audience = admin_claims();
    audience.aud = "another-system".into();
    forged.push(("wrong aud", sign(&kid, &key, &audience)));

    // A customer's genuine token with its payload swapped for an admin's.
    let customer = Claims::new(
        Uuid::now_v7(),
        vec![Role::Customer],
        now(),
        Duration::from_secs(300),
    );
    let real = sign(&kid, &key, &customer);
    let parts: Vec<&str> = real.split('.').collect();
    forged.push((
        "tampered payload",
        format!("{}.{}.{}", parts[0], payload(&admin_claims()), parts[2]),
    ));
    forged.push(("garbage", "not-a-jwt".into()));

    assert_eq!(ISSUER, "agora-identity");
    assert_eq!(AUDIENCE, "agora");
    for (case, token) in &forged {
        assert_eq!(
            status_with(&shop, token).await,
            StatusCode::UNAUTHORIZED,
            "{case}"
        );
    }
    shop.stop().await;
}

#[tokio::test]
async fn a_customer_on_an_admin_route_is_forbidden() {
    let shop = TestShop::start().await;
    let (_, _, token) = shop.customer().await;
    assert_eq!(status_with(&shop, &token).await, StatusCode::FORBIDDEN);
    shop.stop().await;
}

/// The trace routes are the admin's, however they are asked: without a token 401, as
/// a customer 403, and no spelling of their path reaches them or anything else.
#[tokio::test]
async fn the_trace_routes_are_for_the_admin_only_however_they_are_spelled() {
    let shop = TestShop::start().await;
    let (_, _, customer) = shop.customer().await;
    let admin = shop.admin_token().await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let routes = [
        format!("/api/ops/traces/{trace}"),
        format!("/api/ops/traces?correlation_id={}", Uuid::now_v7()),
    ];
    for route in &routes {
        let anonymous = shop.client.get(shop.url(route)).send().await.unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "{route}");
        let forged = shop
            .client
            .get(shop.url(route))
            .bearer_auth("eyJhbGciOiJub25lIn0.e30.")
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), StatusCode::UNAUTHORIZED, "{route}");
        let answer = shop
            .client
            .get(shop.url(route))
            .bearer_auth(&customer)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{route}");
        let body = answer.text().await.unwrap();
        assert!(!body.contains("span"), "{route}: {body}");
    }
    // The admin's: a trace id is 32 lower-case hex digits, a query names what it is
    // about; this shop keeps no spans (no tracer in this test binary), so 404.
    for (route, status) in [
        (format!("/api/ops/traces/{trace}"), StatusCode::NOT_FOUND),
        (
            format!("/api/ops/traces/{}", trace.to_uppercase()),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/api/ops/traces/{}", &trace[1..]),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/api/ops/traces/{}", "0".repeat(32)),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/ops/traces/%20or%201=1".to_owned(),
            StatusCode::BAD_REQUEST,
        ),
        ("/api/ops/traces".to_owned(), StatusCode::BAD_REQUEST),
        (
            format!("/api/ops/traces?correlation_id={}", "x".repeat(101)),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/api/ops/traces?correlation_id={}", Uuid::now_v7()),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let answer = shop
            .client
            .get(shop.url(&route))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), status, "{route}");
    }
    // Spellings that a reader of URLs might take for another path: refused before
    // routing, token or not; the customer's token reaches nothing with them.
    let addr = shop.shop.addr();
    for path in [
        "/api/ops/traces/%2e%2e/status".to_owned(),
        "/api/ops/traces/..%2f..%2finternal%2fordering%2fsettings".to_owned(),
        format!("/api/ops//traces/{trace}"),
        format!("/api/ops/traces/{trace};x=1"),
        format!("/api/ops/traces%2f{trace}"),
    ] {
        for token in [None, Some(&customer)] {
            let auth = token.map_or(String::new(), |t| format!("\r\nAuthorization: Bearer {t}"));
            let (status, body) = raw(addr, &format!("GET {path} HTTP/1.1{auth}"), "").await;
            assert_eq!(status, 400, "{path}: {body}");
            assert!(!body.contains("span_id"), "{path}: {body}");
        }
    }
    // An encoded letter is not decoded into the route's name: nothing is there.
    let path = format!("/api/ops/%74races/{trace}");
    let auth = format!("\r\nAuthorization: Bearer {admin}");
    let (status, body) = raw(addr, &format!("GET {path} HTTP/1.1{auth}"), "").await;
    assert_eq!(status, 404, "{path}: {body}");
    shop.stop().await;
}

#[tokio::test]
async fn tokens_issued_before_a_password_change_are_refused_everywhere_within_2_s() {
    let shop = TestShop::start().await;
    let admin = shop.admin_token().await;
    let (_, email, first) = shop.customer().await;
    let second = shop.token(&email, PASSWORD).await;
    let (_, _, bystander) = shop.customer().await;
    let url = |service: &str| shop.shop.service_url(service).unwrap();
    let (identity_url, customer_url, catalog_url, ordering_url) = (
        url("identity"),
        url("customer"),
        url("catalog"),
        url("ordering"),
    );
    let (inventory_url, shipping_url, notification_url) =
        (url("inventory"), url("shipping"), url("notification"));
    let product = uuid::Uuid::now_v7();
    // What every service that checks tokens answers this token: the gateway's edge,
    // then each service called directly (not through the edge).
    let answers = async |token: &str| {
        let client = &shop.client;
        let status = async |request: reqwest::RequestBuilder| {
            request.bearer_auth(token).send().await.unwrap().status()
        };
        [
            ("gateway", status(client.get(shop.url("/api/ops/status"))).await),
            (
                "identity",
                // A wrong current password: a valid token gets 422, and nothing changes.
                status(
                    client
                        .put(format!("{identity_url}/api/identity/users/me/password"))
                        .json(&json!({"current_password": "not it at all", "new_password": "another new password"})),
                )
                .await,
            ),
            ("customer", status(client.get(format!("{customer_url}/api/customers/me"))).await),
            (
                "catalog",
                status(
                    client
                        .post(format!("{catalog_url}/api/catalog/products"))
                        .json(&json!({"name": "x", "description": "y"})),
                )
                .await,
            ),
            ("ordering", status(client.get(format!("{ordering_url}/api/ordering/orders"))).await),
            (
                "inventory",
                status(
                    client
                        .put(format!("{inventory_url}/api/inventory/stock/{product}"))
                        .json(&json!({"available": 1})),
                )
                .await,
            ),
            (
                "shipping",
                status(client.get(format!("{shipping_url}/api/shipping/shipments?order_id={product}")))
                    .await,
            ),
            (
                "notification",
                status(client.get(format!("{notification_url}/api/notifications/me"))).await,
            ),
        ]
    };
    let before = answers(&second).await;
    for (service, status) in before {
        assert_ne!(
            status,
            StatusCode::UNAUTHORIZED,
            "valid before, at {service}"
        );
    }
    assert_eq!(before[2], ("customer", StatusCode::OK));

    let changed = shop
        .client
        .put(shop.url("/api/identity/users/me/password"))
        .bearer_auth(&first)
        .json(&json!({"current_password": PASSWORD, "new_password": "a brand new password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);

    let refused_everywhere = || async {
        answers(&second)
            .await
            .iter()
            .all(|(_, status)| *status == StatusCode::UNAUTHORIZED)
    };
    let took = eventually(Duration::from_secs(2), refused_everywhere).await;
    assert!(took.is_some(), "old tokens still accepted after 2 s");

    // Only that user's old tokens: others still work, and so does a new one.
    let fresh = shop.token(&email, "a brand new password").await;
    for token in [&fresh, &bystander] {
        let answer = shop
            .client
            .get(shop.url("/api/ops/status"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer.status(),
            StatusCode::FORBIDDEN,
            "valid, but not an admin"
        );
    }
    assert_eq!(status_with(&shop, &admin).await, StatusCode::OK);
    shop.stop().await;
}

#[tokio::test]
async fn password_guessing_is_slowed_by_the_rate_limit() {
    let shop = TestShop::start_with(Limits::default()).await;
    let (_, email) = shop.sign_up().await;
    let mut refused_after = None;
    for attempt in 1..=30 {
        let answer = shop
            .client
            .post(shop.url("/api/identity/token"))
            .json(&json!({"email": email, "password": format!("guess number {attempt}")}))
            .send()
            .await
            .unwrap();
        match answer.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(answer.headers().contains_key("retry-after"));
                refused_after = Some(attempt);
                break;
            }
            other => panic!("attempt {attempt}: {other}"),
        }
    }
    let refused_after = refused_after.expect("guessing is limited");
    assert!(
        refused_after <= 11,
        "limited after {refused_after} attempts"
    );
    shop.stop().await;
}

/// What every service that checks tokens answers `token`: the gateway's edge, then each
/// service called directly (not through the edge), each on a route where a valid
/// customer token is not refused with 401.
async fn answers_everywhere(shop: &TestShop, token: &str) -> Vec<(&'static str, StatusCode)> {
    let client = &shop.client;
    let url = |service: &str| shop.shop.service_url(service).unwrap();
    let product = Uuid::now_v7();
    let requests = [
        ("gateway", client.get(shop.url("/api/ops/status"))),
        (
            "identity",
            // A wrong current password: a valid token gets 422, and nothing changes.
            client
                .put(format!("{}/api/identity/users/me/password", url("identity")))
                .json(&json!({"current_password": "not it at all", "new_password": "another new password"})),
        ),
        ("customer", client.get(format!("{}/api/customers/me", url("customer")))),
        (
            "catalog",
            client
                .post(format!("{}/api/catalog/products", url("catalog")))
                .json(&json!({"name": "x", "description": "y"})),
        ),
        ("ordering", client.get(format!("{}/api/ordering/orders", url("ordering")))),
        (
            "inventory",
            client
                .put(format!("{}/api/inventory/stock/{product}", url("inventory")))
                .json(&json!({"available": 1})),
        ),
        (
            "shipping",
            client.get(format!(
                "{}/api/shipping/shipments?order_id={product}",
                url("shipping")
            )),
        ),
        (
            "notification",
            client.get(format!("{}/api/notifications/me", url("notification"))),
        ),
    ];
    let mut answers = Vec::new();
    for (service, request) in requests {
        let status = request.bearer_auth(token).send().await.unwrap().status();
        answers.push((service, status));
    }
    answers
}

#[tokio::test]
async fn a_signed_out_token_is_refused_everywhere_within_2_s_and_the_other_session_goes_on() {
    let shop = TestShop::start().await;
    let (_, email, first) = shop.customer().await;
    let second = shop.token(&email, PASSWORD).await;
    for token in [&first, &second] {
        for (service, status) in answers_everywhere(&shop, token).await {
            assert_ne!(
                status,
                StatusCode::UNAUTHORIZED,
                "valid before, at {service}"
            );
        }
    }

    let sign_out = |token: Option<&str>| {
        let request = shop.client.delete(shop.url("/api/identity/token"));
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(sign_out(None).await, StatusCode::UNAUTHORIZED, "no token");
    assert_eq!(sign_out(Some(&first)).await, StatusCode::NO_CONTENT);

    let refused_everywhere = || async {
        answers_everywhere(&shop, &first)
            .await
            .iter()
            .all(|(_, status)| *status == StatusCode::UNAUTHORIZED)
    };
    let took = eventually(Duration::from_secs(2), refused_everywhere).await;
    assert!(
        took.is_some(),
        "a signed-out token still accepted after 2 s: {:?}",
        answers_everywhere(&shop, &first).await
    );
    assert_eq!(
        sign_out(Some(&first)).await,
        StatusCode::UNAUTHORIZED,
        "once only"
    );

    // The same user's other token still works everywhere.
    for (service, status) in answers_everywhere(&shop, &second).await {
        assert_ne!(status, StatusCode::UNAUTHORIZED, "still valid at {service}");
    }
    shop.stop().await;
}
