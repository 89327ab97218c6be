use std::time::Duration;

use agora_resilience::{
    BreakerConfig, CallError, ClientConfig, FallbackExt, ResilientClient, call_with_fallback,
};
use axum::http::{Request, Response};
use bytes::Bytes;
use tower::service_fn;

use crate::support::{Counter, answer};

#[tokio::test(start_paused = true)]
async fn the_fallback_is_used_on_failure_only() {
    let failed = call_with_fallback(async { Err(CallError::Timeout) }, |error| {
        assert!(matches!(error, CallError::Timeout));
        "cached"
    })
    .await;
    let succeeded = call_with_fallback(async { Ok("live") }, |_| "cached").await;

    assert_eq!(failed, "cached");
    assert_eq!(succeeded, "live");
}

fn failing_client(status: u16, calls: Counter) -> ResilientClient {
    let config = ClientConfig {
        breaker: BreakerConfig {
            min_calls: 2,
            ..BreakerConfig::default()
        },
        ..ClientConfig::default()
    };
    let transport = service_fn(move |_request: Request<Bytes>| {
        calls.hit();
        async move { Ok::<Response<Bytes>, CallError>(answer(status)) }
    });
    ResilientClient::over("customer", "http://customer.test", config, transport).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_client_call_falls_back_when_the_target_is_down() {
    let calls = Counter::default();
    let customer = failing_client(503, calls.clone());

    let name = customer
        .get_json::<String>("/internal/customer/1")
        .or_fallback(|error| {
            assert!(error.is_unavailable());
            "from the replica".to_owned()
        })
        .await;

    assert_eq!(name, "from the replica");
    // The breaker is open now: the next fallback comes without a call.
    let calls_before = calls.get();
    let started = tokio::time::Instant::now();
    let name = customer
        .get_json::<String>("/internal/customer/1")
        .or_fallback_if_unavailable(|error| {
            assert!(matches!(error, CallError::CircuitOpen), "{error:?}");
            "from the replica".to_owned()
        })
        .await
        .unwrap();
    assert_eq!(name, "from the replica");
    assert_eq!(calls.get(), calls_before);
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_definite_answer_is_not_replaced_by_the_fallback_if_unavailable() {
    let customer = failing_client(404, Counter::default());

    let result = customer
        .get_json::<String>("/internal/customer/1")
        .or_fallback_if_unavailable(|_| "from the replica".to_owned())
        .await;

    assert_eq!(result.unwrap_err().status(), Some(404));
}
