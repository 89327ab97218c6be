//! The HTTP compensator against a stand-in for payment and inventory: the exact
//! endpoints and bodies, and what counts as done.

use std::sync::{Arc, Mutex};

use agora_auth::InternalKey;
use agora_contracts::CancelReason;
use agora_fulfilment::{Compensator, HttpCompensator};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::routing::post;
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq)]
struct Seen {
    path: String,
    idempotency_key: Option<String>,
    body: serde_json::Value,
}

#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// The deployment's internal-plane key in these tests.
static PLANE: std::sync::LazyLock<InternalKey> = std::sync::LazyLock::new(InternalKey::generate);

/// Answers `status` to every POST with a service token for `service` (the real guard;
/// anything else is refused), recording it.
async fn stand_in(service: &str, status: StatusCode) -> (String, Recorder) {
    let recorder = Recorder::default();
    let app = Router::new()
        .route(
            "/{*path}",
            post(
                move |State(recorder): State<Recorder>, request: Request| async move {
                    let path = request.uri().path().to_owned();
                    let idempotency_key = request
                        .headers()
                        .get("idempotency-key")
                        .map(|v| v.to_str().unwrap().to_owned());
                    let bytes = axum::body::to_bytes(request.into_body(), 1 << 16)
                        .await
                        .unwrap();
                    recorder.seen.lock().unwrap().push(Seen {
                        path,
                        idempotency_key,
                        body: serde_json::from_slice(&bytes).unwrap(),
                    });
                    status
                },
            ),
        )
        .route_layer(PLANE.service(service).guard())
        .with_state(recorder.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, recorder)
}

#[tokio::test]
async fn calls_the_internal_endpoints_with_their_bodies() {
    let (payment_url, payment) = stand_in("payment", StatusCode::OK).await;
    let (inventory_url, inventory) = stand_in("inventory", StatusCode::ACCEPTED).await;
    let compensator =
        HttpCompensator::new(&payment_url, &inventory_url, &PLANE.service("fulfilment")).unwrap();
    let (authorization, order) = (Uuid::now_v7(), Uuid::now_v7());

    compensator
        .refund(authorization, order, &CancelReason::OutOfStock)
        .await
        .unwrap();
    compensator
        .void(authorization, order, &CancelReason::Timeout)
        .await
        .unwrap();
    compensator
        .release(order, &CancelReason::PaymentFailed)
        .await
        .unwrap();

    let payment = payment.seen.lock().unwrap().clone();
    assert_eq!(
        payment,
        [
            Seen {
                path: format!("/internal/payment/authorizations/{authorization}/refund"),
                idempotency_key: Some(format!("fulfilment-refund-{order}")),
                body: serde_json::json!({ "order_id": order, "reason": "out_of_stock" }),
            },
            Seen {
                path: format!("/internal/payment/authorizations/{authorization}/void"),
                idempotency_key: Some(format!("fulfilment-void-{order}")),
                body: serde_json::json!({ "order_id": order, "reason": "timeout" }),
            },
        ]
    );
    let inventory = inventory.seen.lock().unwrap().clone();
    assert_eq!(
        inventory,
        [Seen {
            path: format!("/internal/inventory/reservations/{order}/release"),
            idempotency_key: Some(format!("fulfilment-release-{order}")),
            body: serde_json::json!({ "reason": "payment_failed" }),
        }]
    );
}

#[tokio::test]
async fn an_error_answer_is_a_failed_compensation() {
    let (url, _) = stand_in("inventory", StatusCode::CONFLICT).await;
    let compensator = HttpCompensator::new(&url, &url, &PLANE.service("fulfilment")).unwrap();
    let error = compensator
        .release(Uuid::now_v7(), &CancelReason::Timeout)
        .await
        .unwrap_err();
    assert_eq!(error.target, "inventory");
    assert_eq!(error.operation, "release");
}

#[tokio::test]
async fn a_compensator_of_another_deployment_is_refused() {
    let (url, seen) = stand_in("payment", StatusCode::OK).await;
    let stranger = InternalKey::generate().service("fulfilment");
    let compensator = HttpCompensator::new(&url, &url, &stranger).unwrap();
    let error = compensator
        .refund(Uuid::now_v7(), Uuid::now_v7(), &CancelReason::Timeout)
        .await
        .unwrap_err();
    assert_eq!(error.target, "payment");
    assert!(seen.seen.lock().unwrap().is_empty(), "never reached");
}
