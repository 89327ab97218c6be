//! The clients ordering calls payment and customer with (the resilient ones, as the
//! composition builds them) against a stand-in server on port 0: what each answer of
//! payment and customer becomes.

use std::time::{Duration, Instant};

use agora_ordering::{
    AuthorizationRequest, CustomerClient, CustomerError, PaymentClient, PaymentError,
    ResilientCustomerClient, ResilientPaymentClient,
};
use agora_resilience::ClientConfig;
use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};
use uuid::Uuid;

/// Payment's client with a timeout per call, under a deadline of 900 ms.
fn payment_client(base: &str) -> ResilientPaymentClient {
    let config = ClientConfig {
        timeout: Duration::from_millis(300),
        ..ClientConfig::default()
    };
    ResilientPaymentClient::new(base, config, Duration::from_millis(900)).unwrap()
}

/// Customer's client, as sync mode runs it: 250 ms in all.
fn customer_client(base: &str) -> ResilientCustomerClient {
    ResilientCustomerClient::new(base, ClientConfig::default(), Duration::from_millis(250)).unwrap()
}

/// Serves `router` on a free port; the base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

/// A base URL where nothing listens.
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

/// A payment stand-in: the amount decides the answer.
async fn authorize(axum::Json(body): axum::Json<Value>) -> impl IntoResponse {
    match body["amount_cents"].as_i64().unwrap() {
        402 => (
            StatusCode::PAYMENT_REQUIRED,
            axum::Json(json!({"status": 402})),
        ),
        503 => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({}))),
        422 => (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({}))),
        999 => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            (StatusCode::CREATED, axum::Json(json!({})))
        }
        amount => (
            StatusCode::CREATED,
            axum::Json(json!({
                "authorization_id": Uuid::now_v7(),
                "request_id": body["request_id"],
                "order_id": body["order_id"],
                "status": "authorized",
                "amount_cents": amount,
                "currency": body["currency"],
                "authorized_at": "2026-01-01T00:00:00Z",
            })),
        ),
    }
}

#[tokio::test]
async fn payment_answers_become_authorizations_declines_or_unavailability() {
    let base =
        serve(Router::new().route("/internal/payment/authorizations", post(authorize))).await;
    let client = payment_client(&format!("{base}/"));

    let request = authorization_request(1234);
    let granted = client.authorize(&request).await.unwrap();
    assert_eq!(granted.request_id, request.request_id);
    assert_eq!(granted.order_id, request.order_id);
    assert_eq!(granted.amount_cents, 1234);
    assert_eq!(granted.status, "authorized");

    assert_eq!(
        client.authorize(&authorization_request(402)).await,
        Err(PaymentError::Declined)
    );
    assert!(matches!(
        client.authorize(&authorization_request(503)).await,
        Err(PaymentError::Unavailable(_))
    ));
    assert!(matches!(
        client.authorize(&authorization_request(422)).await,
        Err(PaymentError::Unexpected(_))
    ));
    let started = Instant::now();
    assert!(matches!(
        client.authorize(&authorization_request(999)).await,
        Err(PaymentError::Unavailable(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(2));

    let down = payment_client(&nothing_listening().await);
    assert!(matches!(
        down.authorize(&authorization_request(1)).await,
        Err(PaymentError::Unavailable(_))
    ));
}

#[tokio::test]
async fn customer_answers_become_records_none_or_unavailability() {
    let known = Uuid::now_v7();
    let failing = Uuid::now_v7();
    let slow = Uuid::now_v7();
    let base = serve(Router::new().route(
        "/internal/customers/{id}",
        get(move |Path(id): Path<Uuid>| async move {
            if id == known {
                (
                    StatusCode::OK,
                    axum::Json(json!({
                        "id": id, "name": "Ada", "email": "ada@example.org",
                        "address": {"line1": "Main St 1", "city": "Berlin",
                                    "postal_code": "10115", "country": "DE"},
                        "payment_method": null, "version": 3,
                        "updated_at": "2026-01-01T00:00:00Z",
                    })),
                )
            } else if id == failing {
                (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({})))
            } else if id == slow {
                tokio::time::sleep(Duration::from_secs(5)).await;
                (StatusCode::OK, axum::Json(json!({})))
            } else {
                (StatusCode::NOT_FOUND, axum::Json(json!({})))
            }
        }),
    ))
    .await;
    let client = customer_client(&base);

    let record = client.fetch(known).await.unwrap().unwrap();
    assert_eq!(record.id, known);
    assert_eq!(record.address.unwrap().line1, "Main St 1");
    assert_eq!(record.payment_method, None);
    assert_eq!(record.version, 3);
    assert_eq!(client.fetch(Uuid::now_v7()).await, Ok(None));
    assert!(matches!(
        client.fetch(failing).await,
        Err(CustomerError::Unavailable(_))
    ));
    let started = Instant::now();
    assert!(matches!(
        client.fetch(slow).await,
        Err(CustomerError::Unavailable(_))
    ));
    assert!(started.elapsed() < Duration::from_millis(1000));

    let down = customer_client(&nothing_listening().await);
    assert!(matches!(
        down.fetch(known).await,
        Err(CustomerError::Unavailable(_))
    ));
}

#[test]
fn the_openapi_document_covers_the_public_paths_only() {
    let document = serde_json::to_value(agora_ordering::openapi()).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut paths: Vec<_> = document["paths"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/api/ordering/checkout/preview",
            "/api/ordering/orders",
            "/api/ordering/orders/{id}",
            "/api/ordering/prices",
            "/api/ordering/prices/{product_id}",
        ]
    );
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let checkout = &document["paths"]["/api/ordering/orders"]["post"];
    for status in [
        "201", "400", "401", "402", "403", "409", "413", "415", "422", "503",
    ] {
        assert!(checkout["responses"][status].is_object(), "{status}");
    }
    assert_eq!(
        checkout["responses"]["422"]["content"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["application/problem+json"]
    );
}
