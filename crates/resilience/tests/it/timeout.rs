use std::convert::Infallible;
use std::time::Duration;

use agora_resilience::{CallError, Deadline, TimeoutLayer};
use axum::http::Request;
use bytes::Bytes;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt, service_fn};

use crate::support::{answer, get};

fn slow(
    delay: Duration,
) -> impl tower::Service<
    Request<Bytes>,
    Response = axum::http::Response<Bytes>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(move |_request: Request<Bytes>| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, Infallible>(answer(200))
    })
}

#[tokio::test(start_paused = true)]
async fn timeout_fires_with_a_typed_error() {
    let service = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(slow(Duration::from_secs(5)));
    let start = Instant::now();

    let result = service.oneshot(get("/")).await;

    assert!(matches!(result, Err(CallError::Timeout)), "{result:?}");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_call_within_the_timeout_answers() {
    let service = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(slow(Duration::from_millis(999)));

    let response = service.oneshot(get("/")).await.unwrap();

    assert_eq!(response.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn a_nearer_deadline_shortens_the_timeout() {
    let service = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(slow(Duration::from_secs(5)));
    let start = Instant::now();

    let result = Deadline::after(Duration::from_millis(200))
        .scope(service.oneshot(get("/")))
        .await;

    assert!(
        matches!(result, Err(CallError::DeadlineExceeded)),
        "{result:?}"
    );
    assert_eq!(start.elapsed(), Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_in_the_request_extensions_counts_too() {
    let service = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(slow(Duration::from_secs(5)));
    let mut request = get("/");
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::from_millis(300)));
    let start = Instant::now();

    let result = service.oneshot(request).await;

    assert!(
        matches!(result, Err(CallError::DeadlineExceeded)),
        "{result:?}"
    );
    assert_eq!(start.elapsed(), Duration::from_millis(300));
}
