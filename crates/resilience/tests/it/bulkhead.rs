use std::sync::Arc;
use std::time::Duration;

use agora_resilience::{BulkheadLayer, CallError};
use axum::http::Request;
use bytes::Bytes;
use tokio::sync::Notify;
use tower::{ServiceBuilder, ServiceExt, service_fn};

use crate::support::{Counter, answer, get};

#[tokio::test(start_paused = true)]
async fn it_rejects_beyond_its_limit_at_once() {
    let calls = Counter::default();
    let release = Arc::new(Notify::new());
    let bulkhead = BulkheadLayer::new(2);
    let service = ServiceBuilder::new()
        .layer(bulkhead.clone())
        .service(service_fn({
            let calls = calls.clone();
            let release = release.clone();
            move |_request: Request<Bytes>| {
                calls.hit();
                let release = release.clone();
                async move {
                    release.notified().await;
                    Ok::<_, CallError>(answer(200))
                }
            }
        }));
    let first = tokio::spawn(service.clone().oneshot(get("/")));
    let second = tokio::spawn(service.clone().oneshot(get("/")));
    while calls.get() < 2 {
        tokio::task::yield_now().await;
    }
    assert_eq!(bulkhead.in_flight(), 2);
    let start = tokio::time::Instant::now();

    let third = service.clone().oneshot(get("/")).await;

    assert!(matches!(third, Err(CallError::BulkheadFull)), "{third:?}");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls.get(), 2);

    release.notify_waiters();
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    assert_eq!(second.await.unwrap().unwrap().status(), 200);
    assert_eq!(bulkhead.in_flight(), 0);
    release.notify_one();
    assert_eq!(service.oneshot(get("/")).await.unwrap().status(), 200);
    assert_eq!(calls.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_failed_call_gives_its_place_back() {
    let bulkhead = BulkheadLayer::new(1);
    let service = ServiceBuilder::new()
        .layer(bulkhead.clone())
        .service(service_fn(|_request: Request<Bytes>| async {
            Err::<axum::http::Response<Bytes>, _>(CallError::Timeout)
        }));

    for _ in 0..3 {
        let result = service.clone().oneshot(get("/")).await;
        assert!(matches!(result, Err(CallError::Timeout)), "{result:?}");
    }

    assert_eq!(bulkhead.in_flight(), 0);
    assert_eq!(bulkhead.limit(), 1);
}
