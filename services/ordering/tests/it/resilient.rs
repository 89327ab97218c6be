//! The resilient clients against stand-in servers on port 0: retries under the
//! idempotency key, the breaker failing checkout fast, timeouts, and the breakers route.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_ordering::{
    AuthorizationRequest, CustomerClient, CustomerError, PaymentClient, PaymentError,
    ResilientCustomerClient, ResilientPaymentClient,
};
use agora_resilience::{BreakerConfig, BreakerState, ClientConfig};
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{Env, call, customer_with_data, lines, place_order, product};

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

async fn nothing_listening() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

fn authorization_request(amount_cents: i64) -> AuthorizationRequest {
    AuthorizationRequest {
        request_id: Uuid::now_v7(),
        order_id: Uuid::now_v7(),
        customer_id: Uuid::now_v7(),
        amount_cents,
        currency: "EUR".into(),
        payment_token: "tok_visa".into(),
    }
}

fn granted(body: &Value) -> Value {
    json!({
        "authorization_id": Uuid::now_v7(),
        "request_id": body["request_id"],
        "order_id": body["order_id"],
        "status": "authorized",
        "amount_cents": body["amount_cents"],
        "currency": body["currency"],
        "authorized_at": "2026-01-01T00:00:00Z",
    })
}

/// A payment stand-in that answers 503 to the first attempt of each request id, then
/// grants it; records the `Idempotency-Key` of every attempt per request id. Amount 402
/// declines, 422 is a contract violation.
#[derive(Clone, Default)]
struct FlakyPayment {
    keys: Arc<Mutex<HashMap<String, Vec<Option<String>>>>>,
}

impl FlakyPayment {
    fn router(&self) -> Router {
        let this = self.clone();
        Router::new().route(
            "/internal/payment/authorizations",
            post(
                move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
                    let this = this.clone();
                    async move {
                        match body["amount_cents"].as_i64().unwrap() {
                            402 => return (StatusCode::PAYMENT_REQUIRED, axum::Json(json!({}))),
                            422 => {
                                return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({})));
                            }
                            _ => {}
                        }
                        let key = headers
                            .get("idempotency-key")
                            .map(|v| v.to_str().unwrap().to_owned());
                        let attempts = {
                            let mut keys = this.keys.lock().unwrap();
                            let seen = keys
                                .entry(body["request_id"].as_str().unwrap().to_owned())
                                .or_default();
                            seen.push(key);
                            seen.len()
                        };
                        if attempts == 1 {
                            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({})))
                        } else {
                            (StatusCode::CREATED, axum::Json(granted(&body)))
                        }
                    }
                },
            ),
        )
    }
}

#[tokio::test]
async fn an_authorization_is_retried_after_a_503_under_its_idempotency_key() {
    let stand_in = FlakyPayment::default();
    let base = serve(stand_in.router()).await;
    let client =
        ResilientPaymentClient::new(&base, ClientConfig::default(), Duration::from_secs(2))
            .unwrap();

    let request = authorization_request(1234);
    let authorization = client.authorize(&request).await.unwrap();
    assert_eq!(authorization.request_id, request.request_id);
    assert_eq!(authorization.amount_cents, 1234);
    let keys = stand_in.keys.lock().unwrap().clone();
    let key = request.request_id.to_string();
    assert_eq!(
        keys[&key],
        vec![Some(key.clone()), Some(key.clone())],
        "one 503, one retry, both under the request id"
    );
    assert_eq!(client.breaker().name(), "payment");
    assert_eq!(client.breaker().state(), BreakerState::Closed);

    assert_eq!(
        client.authorize(&authorization_request(402)).await,
        Err(PaymentError::Declined)
    );
    assert!(matches!(
        client.authorize(&authorization_request(422)).await,
        Err(PaymentError::Unexpected(_))
    ));
    let down = ResilientPaymentClient::new(
        &nothing_listening().await,
        ClientConfig::default(),
        Duration::from_millis(500),
    )
    .unwrap();
    assert!(matches!(
        down.authorize(&authorization_request(1)).await,
        Err(PaymentError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_customer_fetch_that_times_out_is_unavailable_quickly() {
    let known = Uuid::now_v7();
    let slow = Uuid::now_v7();
    let base = serve(Router::new().route(
        "/internal/customers/{id}",
        get(move |Path(id): Path<Uuid>| async move {
            if id == known {
                (
                    StatusCode::OK,
                    axum::Json(json!({
                        "id": id, "name": "Ada", "email": "ada@example.org",
                        "address": null, "payment_method": null, "version": 1,
                        "updated_at": "2026-01-01T00:00:00Z",
                    })),
                )
                    .into_response()
            } else if id == slow {
                tokio::time::sleep(Duration::from_secs(5)).await;
                StatusCode::OK.into_response()
            } else {
                StatusCode::NOT_FOUND.into_response()
            }
        }),
    ))
    .await;
    let config = ClientConfig {
        timeout: Duration::from_millis(100),
        ..ClientConfig::default()
    };
    let client = ResilientCustomerClient::new(&base, config, Duration::from_millis(250)).unwrap();
    assert_eq!(client.breaker().name(), "customer");

    assert_eq!(client.fetch(known).await.unwrap().unwrap().id, known);
    assert_eq!(client.fetch(Uuid::now_v7()).await, Ok(None));
    let started = Instant::now();
    assert!(matches!(
        client.fetch(slow).await,
        Err(CustomerError::Unavailable(_))
    ));
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(600), "took {elapsed:?}");
}

/// Checkout with the real ordering and a payment that fails slowly (503 after 50 ms):
/// while the breaker is closed, each checkout costs the failing calls; once it opens,
/// checkout answers 503 at once and payment sees no more calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_fails_fast_once_the_payment_breaker_is_open() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let base = serve(Router::new().route(
        "/internal/payment/authorizations",
        post(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, AtomicOrdering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                StatusCode::SERVICE_UNAVAILABLE
            }
        }),
    ))
    .await;
    let client = ResilientPaymentClient::new(
        &base,
        ClientConfig {
            breaker: BreakerConfig {
                window_calls: 10,
                min_calls: 4,
                open_duration: Duration::from_secs(60),
                ..BreakerConfig::default()
            },
            ..ClientConfig::default()
        },
        Duration::from_secs(2),
    )
    .unwrap();

    let env = Env::new(crate::support::Backend::Sqlite).await.unwrap();
    let mut config = env.config();
    config.breakers = vec![client.breaker().clone()];
    config.payment = Arc::new(client);
    let ordering = agora_ordering::build(config).await.unwrap();
    let lamp = product(&env, &ordering, "Lamp", 1000).await;
    let (_, token) = customer_with_data(&env, &ordering).await;

    let breakers = || async {
        let (status, _, body) = call(
            &ordering.router(),
            Method::GET,
            "/internal/ordering/breakers",
            None,
            &[],
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        body
    };
    assert_eq!(
        breakers().await,
        json!([{"target": "payment", "state": "closed"}])
    );

    let mut attempts = 0;
    while ordering.breakers() != [("payment".to_owned(), BreakerState::Open)] {
        attempts += 1;
        assert!(attempts <= 10, "the breaker never opened");
        let started = Instant::now();
        let answer = place_order(
            &ordering,
            &token,
            Some(&format!("closed-{attempts}")),
            lines(&[(lamp, 1)]),
        )
        .await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
    assert_eq!(
        breakers().await,
        json!([{"target": "payment", "state": "open"}])
    );

    let calls_when_opened = hits.load(AtomicOrdering::SeqCst);
    let mut latencies = Vec::new();
    for n in 0..7 {
        let started = Instant::now();
        let answer = place_order(
            &ordering,
            &token,
            Some(&format!("open-{n}")),
            lines(&[(lamp, 1)]),
        )
        .await;
        latencies.push(started.elapsed());
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(answer.headers.contains_key("retry-after"));
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    assert!(
        median < Duration::from_millis(10),
        "503s took {latencies:?} with the breaker open"
    );
    assert_eq!(
        hits.load(AtomicOrdering::SeqCst),
        calls_when_opened,
        "no call reached payment while the breaker was open"
    );
    assert_eq!(ordering.order_count().await.unwrap(), 0);
    ordering.shutdown().await;
}
