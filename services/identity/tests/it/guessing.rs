//! Password guessing: after 5 failed sign-ins for an address, attempts are refused
//! unchecked (429 + Retry-After) for a time that doubles; a success starts afresh; the
//! state is in the store (it survives a restart) and unknown addresses are treated alike.

use std::time::{Duration, Instant};

use agora_identity::{Identity, SignInThrottle};
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::{ADMIN_PASSWORD, Backend, Env, assert_problem, call, sign_up, token};

crate::on_both_backends!(
    five_failures_block_even_the_right_password_until_the_block_passes,
    a_success_starts_the_count_afresh,
    an_unknown_address_is_blocked_alike_and_the_block_survives_a_restart,
);

const PASSWORD: &str = "correct horse battery";
const EMAIL: &str = "ada@example.org";

/// Identity with blocks of `base`, twice `base`, … after 5 failures (the defaults but
/// for the first block, 1 s).
async fn start(env: &Env, base: Duration) -> Identity {
    let mut config = env.config(Some(ADMIN_PASSWORD));
    config.sign_in_throttle = SignInThrottle {
        free_attempts: 5,
        base_delay: base,
        max_delay: Duration::from_secs(15 * 60),
        forget_after: Duration::from_secs(3600),
    };
    agora_identity::build(config)
        .await
        .expect("identity starts")
}

/// A sign-in's status, its Retry-After (seconds) and its body.
async fn sign_in(
    router: &axum::Router,
    email: &str,
    password: &str,
) -> (StatusCode, Option<u64>, Value) {
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/identity/token")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            json!({"email": email, "password": password}).to_string(),
        ))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, retry_after, serde_json::from_slice(&bytes).unwrap())
}

async fn fail_times(router: &axum::Router, email: &str, times: usize) {
    for attempt in 1..=times {
        let (status, _, body) = sign_in(router, email, "wrong password!").await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}: {body}"
        );
    }
}

/// Polls (deadline 10 s) while `password` is refused with 429 (each with a
/// Retry-After); the start of the first request that was not, and its status.
async fn while_blocked(router: &axum::Router, password: &str) -> (Instant, StatusCode) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sent = Instant::now();
        let (status, retry_after, body) = sign_in(router, EMAIL, password).await;
        if status != StatusCode::TOO_MANY_REQUESTS {
            return (sent, status);
        }
        assert!(retry_after.is_some_and(|s| s >= 1), "{body}");
        assert!(Instant::now() < deadline, "still blocked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn five_failures_block_even_the_right_password_until_the_block_passes(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    // Blocks of 2 s, then 4 s: long enough that the checks right after a block fall
    // within it on a busy machine.
    let identity = start(&env, Duration::from_secs(2)).await;
    let router = identity.router();
    sign_up(&router, EMAIL, PASSWORD).await;

    fail_times(&router, EMAIL, 4).await;
    let fifth = Instant::now();
    fail_times(&router, EMAIL, 1).await;
    let (status, retry_after, body) = sign_in(&router, EMAIL, PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(matches!(retry_after, Some(1 | 2)), "{retry_after:?}");
    assert_eq!(body["status"], 429);
    assert_eq!(body["type"], "urn:agora:problem:too-many-requests");
    // The case of the address does not matter.
    let (status, _, _) = sign_in(&router, "ADA@example.org", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    // Once the block (2 s from the fifth attempt) has passed, the right password works;
    // the refused attempts did not prolong it.
    let (accepted, status) = while_blocked(&router, PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let first_block = accepted - fifth;
    assert!(
        first_block >= Duration::from_millis(1950),
        "{first_block:?}"
    );
    assert!(first_block < Duration::from_secs(5), "{first_block:?}");

    // Counted afresh: 5 failures block again (2 s); the first attempt after that block
    // is checked, fails, and blocks twice as long.
    fail_times(&router, EMAIL, 5).await;
    let (sixth, status) = while_blocked(&router, "wrong password!").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (accepted, status) = while_blocked(&router, PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let second_block = accepted - sixth;
    assert!(
        second_block >= Duration::from_millis(3950),
        "{second_block:?}"
    );
    identity.shutdown().await;
}

async fn a_success_starts_the_count_afresh(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let identity = start(&env, Duration::from_secs(1)).await;
    let router = identity.router();
    sign_up(&router, EMAIL, PASSWORD).await;

    fail_times(&router, EMAIL, 4).await;
    assert_eq!(token(&router, EMAIL, PASSWORD).await.0, StatusCode::OK);
    // Counted from zero again: 4 more failures and a success, no block.
    fail_times(&router, EMAIL, 4).await;
    assert_eq!(token(&router, EMAIL, PASSWORD).await.0, StatusCode::OK);
    // Other addresses were never concerned.
    sign_up(&router, "grace@example.org", PASSWORD).await;
    assert_eq!(
        token(&router, "grace@example.org", PASSWORD).await.0,
        StatusCode::OK
    );
    identity.shutdown().await;
}

async fn an_unknown_address_is_blocked_alike_and_the_block_survives_a_restart(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    // A block of a minute: it outlasts the restart.
    let identity = start(&env, Duration::from_secs(60)).await;
    let router = identity.router();
    sign_up(&router, EMAIL, PASSWORD).await;
    let mut blocked = Vec::new();
    for email in [EMAIL, "nobody@example.org"] {
        fail_times(&router, email, 5).await;
        let (status, retry_after, body) = sign_in(&router, email, PASSWORD).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            retry_after.is_some_and(|s| s > 50 && s <= 60),
            "{retry_after:?}"
        );
        blocked.push(body);
    }
    assert_eq!(
        blocked[0], blocked[1],
        "the answers do not tell which exists"
    );
    identity.shutdown().await;

    // Another instance on the same store (or this one restarted) knows.
    let identity = start(&env, Duration::from_secs(60)).await;
    let router = identity.router();
    for email in [EMAIL, "nobody@example.org"] {
        let (status, content_type, body) = call(
            &router,
            Method::POST,
            "/api/identity/token",
            None,
            Some(json!({"email": email, "password": PASSWORD})),
        )
        .await;
        assert_problem(status, &content_type, &body, StatusCode::TOO_MANY_REQUESTS);
    }
    identity.shutdown().await;
}
