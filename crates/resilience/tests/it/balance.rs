//! Several instances of one target behind one client, against real axum servers on
//! 127.0.0.1:0 (real time; nothing sleeps).

use std::net::SocketAddr;

use agora_resilience::{ClientConfig, client};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};

use crate::support::Counter;

/// An instance that counts its calls; `/work` answers `status`.
async fn instance(status: StatusCode) -> (SocketAddr, Counter) {
    let hits = Counter::default();
    let app = Router::new()
        .route(
            "/work",
            get(move |State(hits): State<Counter>| async move {
                hits.hit();
                (status, axum::Json("done"))
            }),
        )
        .route(
            "/orders",
            post(|State(hits): State<Counter>| async move {
                hits.hit();
                (StatusCode::CREATED, axum::Json("placed"))
            }),
        )
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, hits)
}

/// An address nothing listens on: a process that is gone.
async fn gone() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn urls(addresses: &[SocketAddr]) -> String {
    addresses
        .iter()
        .map(|a| format!("http://{a}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test]
async fn requests_spread_over_the_instances_each_with_its_own_breaker() {
    let (a, a_hits) = instance(StatusCode::OK).await;
    let (b, b_hits) = instance(StatusCode::OK).await;
    let payment = client("payment", &urls(&[a, b]), ClientConfig::default()).unwrap();

    for _ in 0..200 {
        let _: String = payment.get_json("/work").await.unwrap();
    }

    assert_eq!(a_hits.get() + b_hits.get(), 200);
    assert!(
        a_hits.get() > 40 && b_hits.get() > 40,
        "{} / {}",
        a_hits.get(),
        b_hits.get()
    );
    let names: Vec<&str> = payment.breakers().iter().map(|b| b.name()).collect();
    assert_eq!(names, [format!("payment@{a}"), format!("payment@{b}")]);
}

/// A killed instance costs nothing to the requests that come after: a refused
/// connection means nothing was sent, so even a POST without an idempotency key goes
/// on to another instance — and is handled exactly once.
#[tokio::test]
async fn a_gone_instance_costs_no_request_not_even_a_post() {
    let dead = gone().await;
    let (a, a_hits) = instance(StatusCode::OK).await;
    let (b, b_hits) = instance(StatusCode::OK).await;
    let orders = client("ordering", &urls(&[dead, a, b]), ClientConfig::default()).unwrap();

    for n in 0..60 {
        let placed: Result<String, _> = orders.post_json("/orders", &n).await;
        assert_eq!(placed.unwrap(), "placed", "order {n}");
    }

    assert_eq!(a_hits.get() + b_hits.get(), 60, "each order handled once");
}

/// A retry goes to an instance the request has not been to: with one instance
/// failing, every GET succeeds and visits the bad one at most once.
#[tokio::test]
async fn a_retry_goes_to_another_instance() {
    let (bad, bad_hits) = instance(StatusCode::SERVICE_UNAVAILABLE).await;
    let (good, good_hits) = instance(StatusCode::OK).await;
    let mut config = ClientConfig::default();
    // Neither the breaker nor the retry budget may hide the behaviour under test.
    config.breaker.min_calls = 1_000;
    config.retry.budget.max_balance = 1_000.0;
    let work = client("work", &urls(&[bad, good]), config).unwrap();

    for n in 0..40 {
        let done: Result<String, _> = work.get_json("/work").await;
        assert_eq!(done.unwrap(), "done", "request {n}");
    }

    assert_eq!(good_hits.get(), 40);
    assert!(
        bad_hits.get() <= 40,
        "the bad instance got {}",
        bad_hits.get()
    );
}

#[test]
fn instances_must_differ_in_host_and_port_only() {
    let mixed = client(
        "payment",
        "http://127.0.0.1:1/a,http://127.0.0.1:2/b",
        ClientConfig::default(),
    );
    assert!(mixed.is_err());
    assert!(client("payment", " , ", ClientConfig::default()).is_err());
}
