use std::time::Duration;

use agora_resilience::{
    CallError, Deadline, IDEMPOTENCY_KEY_HEADER, RetryBudgetConfig, RetryConfig, RetryLayer,
};
use axum::http::{Request, Response};
use bytes::Bytes;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt, service_fn};

use crate::support::{Counter, answer, get, request};

/// A fake target that answers `outcome(n)` to its n-th call (1-based).
fn target(
    calls: Counter,
    outcome: impl Fn(usize) -> Result<Response<Bytes>, CallError> + Clone + Send + Sync + 'static,
) -> agora_resilience::Retry<
    impl tower::Service<
        Request<Bytes>,
        Response = Response<Bytes>,
        Error = CallError,
        Future = impl Send + 'static,
    > + Clone
    + Send
    + 'static,
> {
    target_with(RetryConfig::default(), calls, outcome)
}

fn target_with(
    config: RetryConfig,
    calls: Counter,
    outcome: impl Fn(usize) -> Result<Response<Bytes>, CallError> + Clone + Send + Sync + 'static,
) -> agora_resilience::Retry<
    impl tower::Service<
        Request<Bytes>,
        Response = Response<Bytes>,
        Error = CallError,
        Future = impl Send + 'static,
    > + Clone
    + Send
    + 'static,
> {
    ServiceBuilder::new()
        .layer(RetryLayer::new(config))
        .service(service_fn(move |_request: Request<Bytes>| {
            let result = outcome(calls.hit());
            async move { result }
        }))
}

#[tokio::test(start_paused = true)]
async fn an_idempotent_request_gets_at_most_three_attempts() {
    for method in ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"] {
        let calls = Counter::default();
        let service = target(calls.clone(), |_| Ok(answer(503)));

        let response = service.oneshot(request(method, "/")).await.unwrap();

        assert_eq!(response.status(), 503);
        assert_eq!(calls.get(), 3, "{method}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_post_is_not_retried() {
    for method in ["POST", "PATCH"] {
        let calls = Counter::default();
        let service = target(calls.clone(), |_| Err(CallError::Timeout));

        let result = service.oneshot(request(method, "/")).await;

        assert!(matches!(result, Err(CallError::Timeout)));
        assert_eq!(calls.get(), 1, "{method}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_post_with_an_idempotency_key_is_retried() {
    let calls = Counter::default();
    let service = target(calls.clone(), |n| Ok(answer(if n < 3 { 502 } else { 201 })));
    let mut post = request("POST", "/");
    post.headers_mut()
        .insert(IDEMPOTENCY_KEY_HEADER, "order-1".parse().unwrap());

    let response = service.oneshot(post).await.unwrap();

    assert_eq!(response.status(), 201);
    assert_eq!(calls.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn timeouts_and_connection_failures_are_retried_until_success() {
    let calls = Counter::default();
    let service = target(calls.clone(), |n| match n {
        1 => Err(CallError::Connect("refused".into())),
        2 => Err(CallError::Timeout),
        _ => Ok(answer(200)),
    });

    let response = service.oneshot(get("/")).await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(calls.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn client_errors_and_500_are_never_retried() {
    for status in [400, 401, 404, 409, 422, 429, 500] {
        let calls = Counter::default();
        let service = target(calls.clone(), move |_| Ok(answer(status)));

        let response = service.oneshot(get("/")).await.unwrap();

        assert_eq!(response.status(), status);
        assert_eq!(calls.get(), 1, "{status}");
    }
}

#[tokio::test(start_paused = true)]
async fn refusals_without_a_call_are_not_retried() {
    for refusal in [
        CallError::CircuitOpen,
        CallError::BulkheadFull,
        CallError::DeadlineExceeded,
    ] {
        let calls = Counter::default();
        let returned = refusal.clone();
        let service = target(calls.clone(), move |_| Err(returned.clone()));

        let result = service.oneshot(get("/")).await;

        assert_eq!(
            result.unwrap_err().to_string(),
            refusal.to_string(),
            "{refusal:?}"
        );
        assert_eq!(calls.get(), 1, "{refusal:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_is_jittered_and_bounded() {
    let config = RetryConfig::default();
    for _ in 0..50 {
        let calls = Counter::default();
        let service = target(calls.clone(), |_| Ok(answer(503)));
        let start = Instant::now();

        service.oneshot(get("/")).await.unwrap();

        // Two backoffs: at most 25 ms, then at most 50 ms.
        assert!(
            start.elapsed() <= config.base_backoff * 3,
            "{:?}",
            start.elapsed()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn no_retry_once_the_deadline_has_passed() {
    let calls = Counter::default();
    let service = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryConfig::default()))
        .service(service_fn({
            let calls = calls.clone();
            move |_request: Request<Bytes>| {
                calls.hit();
                async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, CallError>(answer(503))
                }
            }
        }));

    let response = Deadline::after(Duration::from_millis(100))
        .scope(service.oneshot(get("/")))
        .await
        .unwrap();

    assert_eq!(response.status(), 503);
    assert_eq!(calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn under_total_failure_retries_stay_within_the_budget() {
    let budget = RetryBudgetConfig::default();
    let calls = Counter::default();
    let service = target(calls.clone(), |_| Ok(answer(503)));
    let requests = 1_000;
    let start = Instant::now();

    for _ in 0..requests {
        let response = service.clone().oneshot(get("/")).await.unwrap();
        assert_eq!(response.status(), 503);
    }

    let attempts = calls.get() as f64;
    let floor = budget.max_balance + budget.min_per_second * start.elapsed().as_secs_f64();
    assert!(
        attempts <= (1.0 + budget.ratio) * requests as f64 + floor,
        "{attempts} attempts for {requests} requests, floor {floor}"
    );
    // The budget was used, not ignored: its 10% were spent.
    assert!(
        attempts >= (1.0 + budget.ratio) * requests as f64,
        "{attempts}"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_share_one_budget() {
    let config = RetryConfig {
        budget: RetryBudgetConfig {
            ratio: 0.1,
            min_per_second: 0.0,
            max_balance: 5.0,
        },
        ..RetryConfig::default()
    };
    let calls = Counter::default();
    let service = target_with(config, calls.clone(), |_| Err(CallError::Timeout));
    let requests = 200;

    let results =
        futures::future::join_all((0..requests).map(|_| service.clone().oneshot(get("/")))).await;

    assert!(results.iter().all(|result| result.is_err()));
    let attempts = calls.get();
    // 200 requests deposit 20 tokens (the bucket holds at most 5 at a time), plus the
    // 5 it starts with.
    assert!(attempts <= requests + 25, "{attempts}");
    assert!(attempts > requests, "{attempts}");
}

#[tokio::test(start_paused = true)]
async fn a_proxy_retries_failed_connections_but_not_error_answers() {
    let config = RetryConfig {
        retry_server_errors: false,
        ..RetryConfig::default()
    };
    let calls = Counter::default();
    let service = target_with(config.clone(), calls.clone(), |_| Ok(answer(503)));
    let answered = service.oneshot(get("/")).await.unwrap();
    assert_eq!(answered.status(), 503);
    assert_eq!(
        calls.get(),
        1,
        "the target's own 503 is passed on, not retried"
    );

    let calls = Counter::default();
    let service = target_with(config, calls.clone(), |n| {
        if n == 1 {
            Err(CallError::Connect("refused".into()))
        } else {
            Ok(answer(200))
        }
    });
    assert_eq!(service.oneshot(get("/")).await.unwrap().status(), 200);
    assert_eq!(calls.get(), 2);
}
