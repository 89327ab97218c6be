//! The internal route for the ops console, and the (empty) public OpenAPI document.

use axum::http::StatusCode;

use crate::on_both_backends;
use crate::support::{Backend, Env, Order, get_process};

async fn process_view_shows_what_was_received(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let service = env.start().await;
    let order = Order::new();
    env.deliver(&service, &order.billed()).await;
    env.deliver(&service, &order.accepted()).await;
    let (status, body) = get_process(&service, &order.order_id.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["order_id"], order.order_id.to_string());
    assert_eq!(body["status"], "waiting");
    assert_eq!(
        body["received"],
        serde_json::json!(["order_accepted", "customer_billed"])
    );
    assert_eq!(body["compensations"], serde_json::json!([]));
    assert!(body["timeout_at"].is_string());
    service.shutdown().await;
}

async fn unknown_process_is_404(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let service = env.start().await;
    let (status, body) = get_process(&service, &Order::new().order_id.to_string()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["status"], 404);
    let (status, _) = get_process(&service, "not-a-uuid").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    service.shutdown().await;
}

on_both_backends!(process_view_shows_what_was_received, unknown_process_is_404);

#[test]
fn openapi_has_no_public_paths() {
    let doc = agora_fulfilment::openapi();
    assert!(doc.paths.paths.is_empty());
    let json = serde_json::to_value(&doc).unwrap();
    assert_eq!(json["openapi"], "3.1.0");
}
