//! The reqwest client against a real axum server on 127.0.0.1:0. These run on real
//! time (paused time would fire the timeouts while the runtime waits for the socket);
//! none of them sleeps.

use std::net::SocketAddr;
use std::time::Duration;

use agora_httpkit::Problem;
use agora_resilience::{
    BreakerState, CallError, ClientConfig, Deadline, ReceiveDeadlineLayer, client,
};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::support::Counter;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Item {
    id: u32,
    name: String,
}

#[derive(Clone, Default)]
struct Calls {
    flaky: Counter,
    orders: Counter,
}

async fn spawn_server() -> (SocketAddr, Calls) {
    let calls = Calls::default();
    let app = Router::new()
        .route(
            "/items/{id}",
            get(
                |axum::extract::Path(id): axum::extract::Path<u32>| async move {
                    axum::Json(Item {
                        id,
                        name: format!("item {id}"),
                    })
                },
            ),
        )
        .route(
            "/flaky",
            get(|State(calls): State<Calls>| async move {
                if calls.flaky.hit() < 3 {
                    Err(Problem::service_unavailable(Duration::from_secs(1)))
                } else {
                    Ok(axum::Json("finally"))
                }
            }),
        )
        .route(
            "/orders",
            post(
                |State(calls): State<Calls>,
                 headers: HeaderMap,
                 axum::Json(item): axum::Json<Item>| async move {
                    let n = calls.orders.hit();
                    if headers.contains_key("idempotency-key") && n >= 2 {
                        return Ok((StatusCode::CREATED, axum::Json(item)));
                    }
                    Err(Problem::service_unavailable(Duration::from_secs(1)))
                },
            ),
        )
        .route(
            "/budget",
            get(|| async {
                axum::Json(Deadline::current().map(|d| d.remaining().as_millis() as u64))
            }),
        )
        .route("/missing", get(|| async { Problem::not_found() }))
        .layer(ReceiveDeadlineLayer::new())
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, calls)
}

#[tokio::test]
async fn get_json_against_a_real_server() {
    let (address, _) = spawn_server().await;
    let items = client(
        "catalog",
        &format!("http://{address}/"),
        ClientConfig::default(),
    )
    .unwrap();

    let item: Item = items.get_json("/items/7").await.unwrap();

    assert_eq!(
        item,
        Item {
            id: 7,
            name: "item 7".into()
        }
    );
    assert_eq!(items.name(), "catalog");
    assert_eq!(items.breaker().name(), "catalog");
    assert_eq!(items.breaker().state(), BreakerState::Closed);
}

#[tokio::test]
async fn a_get_is_retried_through_503s() {
    let (address, calls) = spawn_server().await;
    let target = client(
        "flaky",
        &format!("http://{address}"),
        ClientConfig::default(),
    )
    .unwrap();

    let answer: String = target.get_json("/flaky").await.unwrap();

    assert_eq!(answer, "finally");
    assert_eq!(calls.flaky.get(), 3);
}

#[tokio::test]
async fn a_post_is_retried_only_with_an_idempotency_key() {
    let (address, calls) = spawn_server().await;
    let orders = client(
        "ordering",
        &format!("http://{address}"),
        ClientConfig::default(),
    )
    .unwrap();
    let item = Item {
        id: 1,
        name: "one".into(),
    };

    let plain = orders.post_json::<_, Item>("/orders", &item).await;
    assert_eq!(plain.unwrap_err().status(), Some(503));
    assert_eq!(calls.orders.get(), 1);

    let keyed: Item = orders
        .request(axum::http::Method::POST, "/orders")
        .idempotency_key("order-1")
        .json_body(&item)
        .json()
        .await
        .unwrap();
    assert_eq!(keyed, item);
    assert_eq!(calls.orders.get(), 2);
}

#[tokio::test]
async fn the_budget_reaches_the_server() {
    let (address, _) = spawn_server().await;
    let target = client(
        "budget",
        &format!("http://{address}"),
        ClientConfig::default(),
    )
    .unwrap();

    let without: Option<u64> = target.get_json("/budget").await.unwrap();
    let within: Option<u64> = Deadline::after(Duration::from_secs(30))
        .scope(target.get_json("/budget"))
        .await
        .unwrap();

    // Without a deadline the per-call timeout (1 s) is the budget sent.
    let without = without.unwrap();
    assert!(without <= 1_000 && without > 500, "{without}");
    let within = within.unwrap();
    assert!(within <= 1_000 && within > 500, "{within}");
    let short: Option<u64> = Deadline::after(Duration::from_millis(400))
        .scope(target.get_json("/budget"))
        .await
        .unwrap();
    assert!(short.unwrap() <= 400, "{short:?}");
}

#[tokio::test]
async fn a_4xx_is_a_typed_status_error_with_its_problem() {
    let (address, _) = spawn_server().await;
    let target = client(
        "catalog",
        &format!("http://{address}"),
        ClientConfig::default(),
    )
    .unwrap();

    let error = target.get_json::<Item>("/missing").await.unwrap_err();

    assert_eq!(error.status(), Some(404));
    assert!(!error.is_unavailable());
    let problem: Problem = error.body_json().unwrap();
    assert_eq!(problem.problem_type, "urn:agora:problem:not-found");
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error_and_unavailable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let target = client(
        "gone",
        &format!("http://{address}"),
        ClientConfig::default(),
    )
    .unwrap();

    let error = target.get_json::<Item>("/items/1").await.unwrap_err();

    assert!(matches!(error, CallError::Connect(_)), "{error:?}");
    assert!(error.is_unavailable());
}

#[tokio::test]
async fn a_bad_base_url_is_refused() {
    let result = client("nowhere", "not a url", ClientConfig::default());

    assert!(matches!(result, Err(CallError::InvalidRequest(_))));
}

#[tokio::test]
async fn an_answer_over_the_size_limit_is_refused() {
    let (address, _) = spawn_server().await;
    let config = ClientConfig {
        max_response_bytes: 10,
        ..ClientConfig::default()
    };
    let target = client("catalog", &format!("http://{address}"), config).unwrap();

    let error = target.get_json::<Item>("/items/7").await.unwrap_err();

    assert!(matches!(error, CallError::Decode(_)), "{error:?}");
    assert!(!error.is_unavailable());
    assert_eq!(target.breaker().snapshot().window_failures, 0);
}
