use std::convert::Infallible;
use std::time::Duration;

use agora_resilience::{
    BUDGET_HEADER, CallError, ClientConfig, Deadline, PropagateDeadlineLayer, ReceiveDeadlineLayer,
    ResilientClient,
};
use axum::Router;
use axum::body::Body;
use axum::extract::Extension;
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get as get_route;
use bytes::Bytes;
use tower::{ServiceBuilder, ServiceExt, service_fn};

use crate::support::{Counter, answer, get};

#[tokio::test(start_paused = true)]
async fn the_client_layer_sends_the_remaining_budget() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let service = ServiceBuilder::new()
        .layer(PropagateDeadlineLayer::new())
        .service(service_fn({
            let seen = seen.clone();
            move |request: Request<Bytes>| {
                let header = request.headers().get(BUDGET_HEADER).cloned();
                *seen.lock().unwrap() = header;
                async { Ok::<_, Infallible>(answer(200)) }
            }
        }));
    let deadline = Deadline::after(Duration::from_millis(750));
    tokio::time::advance(Duration::from_millis(250)).await;

    deadline.scope(service.oneshot(get("/"))).await.unwrap();

    assert_eq!(seen.lock().unwrap().as_ref().unwrap(), "500");
}

#[tokio::test(start_paused = true)]
async fn the_client_layer_fails_at_once_past_the_deadline_without_calling() {
    let calls = Counter::default();
    let service = ServiceBuilder::new()
        .layer(PropagateDeadlineLayer::new())
        .service(service_fn({
            let calls = calls.clone();
            move |_request: Request<Bytes>| {
                calls.hit();
                async { Ok::<_, Infallible>(answer(200)) }
            }
        }));
    let deadline = Deadline::after(Duration::from_millis(100));
    tokio::time::advance(Duration::from_millis(100)).await;

    let result = deadline.scope(service.oneshot(get("/"))).await;

    assert!(
        matches!(result, Err(CallError::DeadlineExceeded)),
        "{result:?}"
    );
    assert_eq!(calls.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn without_a_deadline_no_header_is_sent() {
    let service = ServiceBuilder::new()
        .layer(PropagateDeadlineLayer::new())
        .service(service_fn(|request: Request<Bytes>| async move {
            assert!(request.headers().get(BUDGET_HEADER).is_none());
            Ok::<_, Infallible>(answer(200))
        }));

    let response = service.oneshot(get("/")).await.unwrap();

    assert_eq!(response.status(), 200);
}

/// A router that answers the budget its handler sees, counting calls.
fn budget_echo(calls: Counter) -> Router {
    Router::new()
        .route(
            "/",
            get_route(move |Extension(deadline): Extension<Deadline>| {
                calls.hit();
                async move {
                    let current = Deadline::current().expect("a task-local deadline");
                    assert_eq!(current, deadline);
                    deadline.remaining().as_millis().to_string()
                }
            }),
        )
        .layer(ReceiveDeadlineLayer::new())
}

#[tokio::test(start_paused = true)]
async fn the_server_layer_refuses_a_spent_budget_with_504_without_calling() {
    for budget in ["0", "-20"] {
        let calls = Counter::default();
        let request = Request::builder()
            .uri("/")
            .header(BUDGET_HEADER, budget)
            .body(Body::empty())
            .unwrap();

        let response = budget_echo(calls.clone()).oneshot(request).await.unwrap();

        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["type"], "urn:agora:problem:deadline-exceeded");
        assert_eq!(calls.get(), 0, "budget {budget}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_server_layer_runs_the_handler_under_the_budget() {
    let calls = Counter::default();
    let request = Request::builder()
        .uri("/")
        .header(BUDGET_HEADER, "420")
        .body(Body::empty())
        .unwrap();

    let response = budget_echo(calls.clone()).oneshot(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(&body[..], b"420");
    assert_eq!(calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn without_a_header_the_handler_has_no_deadline() {
    let router = Router::new()
        .route(
            "/",
            get_route(|| async { format!("{:?}", Deadline::current()) }),
        )
        .layer(ReceiveDeadlineLayer::new());
    let request = Request::builder()
        .uri("/")
        .header(BUDGET_HEADER, "soon")
        .body(Body::empty())
        .unwrap();

    let response = router.oneshot(request).await.unwrap();

    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(&body[..], b"None");
}

/// A transport that hands requests to a router in process, as the network would.
fn in_process(
    router: Router,
) -> impl tower::Service<
    Request<Bytes>,
    Response = Response<Bytes>,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    service_fn(move |request: Request<Bytes>| {
        let router = router.clone();
        async move {
            let response = router.oneshot(request.map(Body::from)).await?;
            let (parts, body) = response.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            Ok(Response::from_parts(parts, body))
        }
    })
}

/// One hop of a chain: records the budget it was given, works for `work`, then calls
/// `next` (if any) and answers the budgets seen downstream after its own.
fn hop(calls: Counter, work: Work, next: Option<ResilientClient>) -> Router {
    Router::new()
        .route(
            "/",
            get_route(move || {
                calls.hit();
                let next = next.clone();
                async move {
                    let mine = Deadline::current().unwrap().remaining().as_millis() as u64;
                    match work {
                        Work::Sleep(time) => tokio::time::sleep(time).await,
                        // Work that runs to its end whoever waits for it (CPU, say).
                        Work::Busy(time) => tokio::time::advance(time).await,
                    }
                    let mut budgets = vec![mine];
                    if let Some(next) = next {
                        match next.get_json::<Vec<u64>>("/").await {
                            Ok(downstream) => budgets.extend(downstream),
                            Err(error) => {
                                let status = if error.is_unavailable() { 504 } else { 500 };
                                return (StatusCode::from_u16(status).unwrap(), error.to_string())
                                    .into_response();
                            }
                        }
                    }
                    axum::Json(budgets).into_response()
                }
            }),
        )
        .layer(ReceiveDeadlineLayer::new())
}

#[derive(Clone, Copy, Debug)]
enum Work {
    Sleep(Duration),
    Busy(Duration),
}

fn client_of(name: &str, router: Router) -> ResilientClient {
    ResilientClient::over(
        name,
        &format!("http://{name}.test"),
        ClientConfig::default(),
        in_process(router),
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_deadline_shrinks_across_three_hops() {
    let (a, b, c) = (Counter::default(), Counter::default(), Counter::default());
    let hop_c = hop(c.clone(), Work::Sleep(Duration::from_millis(100)), None);
    let hop_b = hop(
        b.clone(),
        Work::Sleep(Duration::from_millis(300)),
        Some(client_of("c", hop_c)),
    );
    let hop_a = hop(
        a.clone(),
        Work::Sleep(Duration::from_millis(200)),
        Some(client_of("b", hop_b)),
    );
    let caller = client_of("a", hop_a);

    let budgets: Vec<u64> = Deadline::after(Duration::from_millis(900))
        .scope(caller.get_json("/"))
        .await
        .unwrap();

    assert_eq!(budgets, vec![900, 700, 400]);
    assert_eq!((a.get(), b.get(), c.get()), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_hop_past_its_deadline_makes_no_downstream_call() {
    let (a, b, c) = (Counter::default(), Counter::default(), Counter::default());
    let hop_c = hop(c.clone(), Work::Sleep(Duration::ZERO), None);
    // B's work outlasts the 700 ms it is given; then its call to C must not happen.
    let hop_b = hop(
        b.clone(),
        Work::Busy(Duration::from_millis(800)),
        Some(client_of("c", hop_c)),
    );
    let hop_a = hop(
        a.clone(),
        Work::Sleep(Duration::from_millis(200)),
        Some(client_of("b", hop_b)),
    );
    let caller = client_of("a", hop_a);

    let result = Deadline::after(Duration::from_millis(900))
        .scope(caller.get_json::<Vec<u64>>("/"))
        .await;

    let error = result.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert_eq!((a.get(), b.get(), c.get()), (1, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_hop_whose_caller_gave_up_is_cancelled_before_its_downstream_call() {
    let (a, b, c) = (Counter::default(), Counter::default(), Counter::default());
    let hop_c = hop(c.clone(), Work::Sleep(Duration::ZERO), None);
    let hop_b = hop(
        b.clone(),
        Work::Sleep(Duration::from_millis(800)),
        Some(client_of("c", hop_c)),
    );
    let hop_a = hop(
        a.clone(),
        Work::Sleep(Duration::from_millis(200)),
        Some(client_of("b", hop_b)),
    );
    let caller = client_of("a", hop_a);
    let start = tokio::time::Instant::now();

    let result = Deadline::after(Duration::from_millis(900))
        .scope(caller.get_json::<Vec<u64>>("/"))
        .await;

    assert!(result.unwrap_err().is_unavailable());
    assert_eq!(start.elapsed(), Duration::from_millis(900));
    assert_eq!((a.get(), b.get(), c.get()), (1, 1, 0));
}
