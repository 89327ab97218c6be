//! The gateway's own duties: routing, trace context, limits, health, OpenAPI, status.

use std::time::Duration;

use agora_gateway::{ChaosMode, Limits, Rate};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestShop, eventually};

fn is_problem(answer: &reqwest::Response) -> bool {
    answer.headers().get("content-type").is_some_and(|v| {
        v.to_str()
            .unwrap_or("")
            .starts_with("application/problem+json")
    })
}

#[tokio::test]
async fn every_answer_carries_a_traceparent_continuing_the_callers_trace() {
    let shop = TestShop::start().await;
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for path in [
        "/healthz",
        "/api/identity/jwks",
        "/api/nowhere",
        "/api/customers/me",
    ] {
        let answer = shop
            .client
            .get(shop.url(path))
            .header("traceparent", caller)
            .send()
            .await
            .expect("answer");
        let trace = answer.headers()["traceparent"].to_str().expect("ascii");
        assert!(
            trace.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && trace != caller,
            "{path}: {trace}"
        );
        let fresh = shop
            .client
            .get(shop.url(path))
            .send()
            .await
            .expect("answer");
        let trace = fresh.headers()["traceparent"].to_str().expect("ascii");
        assert_eq!(trace.len(), 55, "{path}: {trace}");
    }
    shop.stop().await;
}

#[tokio::test]
async fn unknown_paths_bodies_over_64_kib_and_missing_tokens_are_problems() {
    let shop = TestShop::start().await;
    let answer = shop
        .client
        .get(shop.url("/api/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    assert!(is_problem(&answer));

    let big = json!({"email": "a@example.com", "password": "x".repeat(64 * 1024), "name": "A"});
    let answer = shop
        .client
        .post(shop.url("/api/identity/users"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(is_problem(&answer));

    // A protected route is refused at the edge, whatever the service would say.
    let answer = shop
        .client
        .put(shop.url("/api/identity/users/me/password"))
        .json(&json!({"current_password": "a", "new_password": "b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert!(is_problem(&answer));
    shop.stop().await;
}

#[tokio::test]
async fn openapi_health_readiness_and_metrics() {
    let shop = TestShop::start().await;
    let doc: Value = shop
        .client
        .get(shop.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/identity/users",
        "/api/identity/token",
        "/api/identity/users/me/password",
        "/api/identity/jwks",
        "/api/ops/status",
        "/api/ops/traces",
        "/api/ops/traces/{trace_id}",
        "/healthz",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    let token = &doc["paths"]["/api/identity/token"]["post"]["responses"];
    for status in ["200", "401", "422", "429", "503"] {
        assert!(token[status].is_object(), "token answers {status}");
    }
    // A parameter documented as "in: path" is in the path's template (a query
    // parameter declared as a path one sends every client astray).
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["in"] == "path" {
                    let name = parameter["name"].as_str().unwrap();
                    assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: path parameter {name} is not in the path"
                    );
                }
            }
        }
    }

    for path in ["/healthz", "/readyz"] {
        let answer = shop.client.get(shop.url(path)).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
    }
    let metrics = shop
        .client
        .get(shop.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("agora_gateway_requests_total{service=\"gateway\",status=\"200\"}"));
    assert!(metrics.contains("agora_online_users"));
    shop.stop().await;
}

#[tokio::test]
async fn ops_status_counts_online_users_for_admins_only() {
    let shop = TestShop::start().await;
    let admin = shop.admin_token().await;
    let (_, _, customer) = shop.customer().await;
    let (_, _, _other) = shop.customer().await;

    let answer = shop
        .client
        .get(shop.url("/api/ops/status"))
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);

    let online = || async {
        let status: Value = shop
            .client
            .get(shop.url("/api/ops/status"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        status["online_users"] == 3
    };
    assert!(
        eventually(Duration::from_secs(5), online).await.is_some(),
        "the admin and two customers signed in"
    );
    let status: Value = shop
        .client
        .get(shop.url("/api/ops/status"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let identity = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "identity")
        .expect("identity is listed");
    assert_eq!(identity["healthy"], true);
    let subscriptions = status["subscriptions"].as_array().unwrap();
    let revocations = subscriptions
        .iter()
        .find(|s| {
            s["consumer"]
                .as_str()
                .is_some_and(|c| c.starts_with("customer-revocations-"))
        })
        .expect("customer's revocation consumer (of its one instance) is listed");
    assert_eq!(revocations["service"], "customer");
    assert!(revocations["pending"].is_u64() && revocations["dead_letters"].is_u64());
    shop.stop().await;
}

#[tokio::test]
async fn with_identity_down_valid_tokens_still_work_elsewhere() {
    let shop = TestShop::start().await;
    let admin = shop.admin_token().await;
    let (_, _, customer) = shop.customer().await;
    shop.set_chaos("identity", ChaosMode::Down).await;

    // Identity's own routes: unreachable, said so as a problem with Retry-After.
    let answer = shop
        .client
        .get(shop.url("/api/identity/jwks"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers().contains_key("retry-after"));
    assert!(is_problem(&answer));
    let ready = shop.client.get(shop.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Another service checks the token with its cached keys.
    let answer = shop
        .client
        .get(shop.url("/api/ops/status"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let status: Value = answer.json().await.unwrap();
    let identity = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "identity")
        .expect("identity is listed");
    assert_eq!(identity["healthy"], false);

    // The customer signed in before identity went down.
    let me = shop
        .client
        .get(shop.url("/api/customers/me"))
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    assert_eq!(
        me.status(),
        StatusCode::OK,
        "customer checks the token itself"
    );

    shop.set_chaos("identity", ChaosMode::Ok).await;
    let answer = shop
        .client
        .get(shop.url("/api/identity/jwks"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    shop.stop().await;
}

#[tokio::test]
async fn a_client_over_its_rate_is_told_when_to_come_back() {
    let limits = Limits {
        per_client: Some(Rate::new(5, 0.1)),
        ..Limits::unlimited()
    };
    let shop = TestShop::start_with(limits).await;
    for _ in 0..5 {
        let answer = shop.client.get(shop.url("/healthz")).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    }
    let answer = shop.client.get(shop.url("/healthz")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = answer.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "retry after {retry} s");
    assert!(is_problem(&answer));
    shop.stop().await;
}

#[tokio::test]
async fn the_web_ui_is_served_at_the_root_under_a_strict_content_security_policy() {
    let shop = TestShop::start().await;
    for (path, content_type) in [
        ("/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let answer = shop
            .client
            .get(shop.url(path))
            .send()
            .await
            .expect("answer");
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
        let headers = answer.headers();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "{path}"
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    let page = shop
        .client
        .get(shop.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"<script src="/ui/app.js" defer></script>"#));
    // The UI is no API: it is not in the OpenAPI document.
    let doc: Value = shop
        .client
        .get(shop.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"].get("/").is_none());
    shop.stop().await;
}
