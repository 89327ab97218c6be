//! Inventory's own part of the harness (`agora-service-testkit` has the rest): its
//! config, publishers of the events it consumes, and its routes (an `/internal` one
//! with fulfilment's service token).

use agora_contracts::{AddressSource, OrderAccepted, OrderLine, ShipmentDispatched};
use agora_inventory::{Inventory, InventoryConfig};
use agora_messaging::Envelope;
use agora_service_testkit::TestEnv;
use agora_service_testkit::http::{self, json};
use axum::http::{Method, StatusCode};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

pub use agora_service_testkit::http::Answer;
pub use agora_service_testkit::{Backend, TEST_PLANE, address};

/// A store, a bus and a token issuer that outlive restarts of inventory.
pub struct Env(TestEnv);

agora_service_testkit::env_deref!(Env);

impl Env {
    /// `None` (after a loud skip) when the backend is unreachable.
    pub async fn new(backend: Backend) -> Option<Env> {
        let sources = [agora_inventory::SOURCE, "ordering", "shipping"];
        TestEnv::new(backend, "inventory", &sources).await.map(Env)
    }

    pub fn config(&self) -> InventoryConfig {
        InventoryConfig {
            internal: TEST_PLANE.clone(),
            ..InventoryConfig::new(self.db_url.clone(), self.shared_bus(), self.issuer.keys())
        }
    }

    pub async fn start(&self) -> Inventory {
        agora_inventory::build(self.config())
            .await
            .expect("inventory starts")
    }

    /// Publishes ordering's `OrderAccepted` for `lines`; returns the envelope.
    pub async fn accept(&self, order_id: Uuid, lines: &[(Uuid, u32)]) -> Envelope {
        self.emit(&order_accepted(order_id, lines), order_id).await
    }

    /// Publishes shipping's `ShipmentDispatched` for `order_id`; returns the envelope.
    pub async fn dispatch(&self, order_id: Uuid) -> Envelope {
        let event = ShipmentDispatched {
            shipment_id: Uuid::now_v7(),
            order_id,
            customer_id: Uuid::now_v7(),
            address: address(),
            carrier: None,
            tracking_number: None,
            dispatched_at: OffsetDateTime::now_utc(),
            version: 1,
        };
        self.emit(&event, order_id).await
    }

    /// Waits until both consumers have settled every message and the outbox is
    /// published.
    pub async fn settled(&self, inventory: &Inventory) {
        let consumers = [
            agora_inventory::orders_subscriber_config(),
            agora_inventory::shipments_subscriber_config(),
        ];
        self.consumers_settled(&consumers, Some(inventory.db()))
            .await;
    }

    /// Every event inventory published, once everything is settled.
    pub async fn events(&self, inventory: &Inventory) -> Vec<Envelope> {
        self.settled(inventory).await;
        self.all_published(agora_inventory::SOURCE).await
    }
}

pub fn order_accepted(order_id: Uuid, lines: &[(Uuid, u32)]) -> OrderAccepted {
    OrderAccepted {
        order_id,
        customer_id: Uuid::now_v7(),
        lines: lines
            .iter()
            .map(|(product_id, quantity)| OrderLine {
                product_id: *product_id,
                quantity: *quantity,
                unit_price_cents: 100,
            })
            .collect(),
        total_cents: 100,
        currency: "EUR".into(),
        shipping_address: address(),
        address_source: AddressSource::Replica,
        payment_authorization_id: Uuid::now_v7(),
        accepted_at: OffsetDateTime::now_utc(),
        version: 1,
    }
}

/// A started inventory on a fresh store: `None` when the backend is unreachable.
pub async fn start(backend: Backend) -> Option<(Env, Inventory)> {
    let env = Env::new(backend).await?;
    let inventory = env.start().await;
    Some((env, inventory))
}

/// A service token of fulfilment's for inventory.
pub fn service_token() -> String {
    agora_service_testkit::service_token("fulfilment", "inventory")
}

/// One request with a raw body and its content type; to an `/internal` path without
/// `token`, with a [`service_token`].
pub async fn send(
    router: &axum::Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> Answer {
    let service = path.starts_with("/internal/").then(service_token);
    http::send_as(
        router,
        method,
        path,
        token.or(service.as_deref()),
        &[],
        body,
    )
    .await
}

/// One JSON request, like [`send`].
pub async fn call(
    router: &axum::Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    send(router, method, path, token, body.as_ref().map(json)).await
}

pub async fn get_stock(router: &axum::Router, product_id: Uuid) -> Answer {
    let path = format!("/api/inventory/stock/{product_id}");
    call(router, Method::GET, &path, None, None).await
}

/// Sets `on_hand` as the admin; asserts 200.
pub async fn set_stock(env: &Env, router: &axum::Router, product_id: Uuid, on_hand: u32) {
    let admin = env.admin();
    let path = format!("/api/inventory/stock/{product_id}");
    let answer = call(
        router,
        Method::PUT,
        &path,
        Some(&admin),
        Some(serde_json::json!({ "on_hand": on_hand })),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

/// `(on_hand, reserved, available)` of a stocked product.
pub async fn stock_of(router: &axum::Router, product_id: Uuid) -> (u64, u64, u64) {
    let answer = get_stock(router, product_id).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let n = |field: &str| answer.body[field].as_u64().unwrap();
    (n("on_hand"), n("reserved"), n("available"))
}

pub async fn release(router: &axum::Router, order_id: Uuid, reason: Option<&str>) -> Answer {
    let path = format!("/internal/inventory/reservations/{order_id}/release");
    let body = reason.map(|r| serde_json::json!({ "reason": r }));
    call(router, Method::POST, &path, None, body).await
}
