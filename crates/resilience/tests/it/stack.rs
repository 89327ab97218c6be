//! The whole stack over fake transports: how the policies work together.

use std::time::Duration;

use agora_resilience::{BreakerState, CallError, ClientConfig, Deadline, ResilientClient};
use axum::http::{Request, Response};
use bytes::Bytes;
use tokio::time::Instant;
use tower::service_fn;

use crate::support::{Counter, answer};

fn hanging(calls: Counter) -> ResilientClient {
    let transport = service_fn(move |_request: Request<Bytes>| {
        calls.hit();
        async {
            std::future::pending::<()>().await;
            Ok::<Response<Bytes>, CallError>(answer(200))
        }
    });
    ResilientClient::over(
        "customer",
        "http://customer.test",
        ClientConfig::default(),
        transport,
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_hanging_target_costs_at_most_three_timeouts() {
    let calls = Counter::default();
    let customer = hanging(calls.clone());
    let start = Instant::now();

    let error = customer.get_json::<String>("/x").await.unwrap_err();

    assert!(matches!(error, CallError::Timeout), "{error:?}");
    assert_eq!(calls.get(), 3);
    // Three 1 s timeouts and two backoffs of at most 25 ms and 50 ms.
    assert!(start.elapsed() >= Duration::from_secs(3));
    assert!(
        start.elapsed() <= Duration::from_millis(3_075),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_the_whole_call_retries_included() {
    let calls = Counter::default();
    let customer = hanging(calls.clone());
    let start = Instant::now();

    let error = Deadline::after(Duration::from_millis(300))
        .scope(customer.get_json::<String>("/x"))
        .await
        .unwrap_err();

    assert!(matches!(error, CallError::DeadlineExceeded), "{error:?}");
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!(calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn once_the_breaker_opens_a_dead_target_fails_fast() {
    let calls = Counter::default();
    let customer = hanging(calls.clone());
    // Timeouts are failures: ten of them open the breaker.
    while customer.breaker().state() == BreakerState::Closed {
        let _ = customer.post_json::<_, String>("/x", &()).await;
    }
    assert_eq!(calls.get(), 10);
    let start = Instant::now();

    let error = customer.get_json::<String>("/x").await.unwrap_err();

    assert!(matches!(error, CallError::CircuitOpen), "{error:?}");
    assert!(error.is_unavailable());
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls.get(), 10);
}
