//! What the tests share: a running inventory on either backend, tokens, HTTP helpers,
//! publishers of the events inventory consumes and a reader of those it publishes.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use agora_auth::{InternalKey, TestIssuer};
use agora_bus::embedded::EmbeddedBus;
use agora_bus::{Bus, ConsumerConfig, SharedBus};
use agora_contracts::{Address, AddressSource, OrderAccepted, OrderLine, ShipmentDispatched};
use agora_inventory::{Inventory, InventoryConfig};
use agora_messaging::{Context, Envelope, Outbox, stream_config};
use agora_testkit::PgDatabase;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;
use time::OffsetDateTime;
use tower::ServiceExt;
use uuid::Uuid;

pub use agora_testkit::Backend;

/// A store, a bus and a token issuer that outlive restarts of inventory.
pub struct Env {
    pub db_url: String,
    pub bus: Arc<EmbeddedBus>,
    pub issuer: TestIssuer,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

impl Env {
    /// `None` (after a loud skip) when the backend is unreachable.
    pub async fn new(backend: Backend) -> Option<Env> {
        let dir = tempfile::tempdir().unwrap();
        let (db_url, pg) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("inventory.db").display()),
                None,
            ),
            Backend::Postgres => {
                let pg = PgDatabase::create().await?;
                (pg.url().to_owned(), Some(pg))
            }
        };
        let bus = EmbeddedBus::open(dir.path().join("bus.db")).await.unwrap();
        for source in [agora_inventory::SOURCE, "ordering", "shipping"] {
            bus.ensure_stream(&stream_config(source)).await.unwrap();
        }
        Some(Env {
            db_url,
            bus: Arc::new(bus),
            issuer: TestIssuer::new(),
            _dir: dir,
            _pg: pg,
        })
    }

    pub fn config(&self) -> InventoryConfig {
        InventoryConfig {
            internal: TEST_PLANE.clone(),
            ..InventoryConfig::new(
                self.db_url.clone(),
                self.bus.clone() as SharedBus,
                self.issuer.keys(),
            )
        }
    }

    pub async fn start(&self) -> Inventory {
        agora_inventory::build(self.config())
            .await
            .expect("inventory starts")
    }

    pub async fn publish(&self, envelope: &Envelope) {
        self.bus
            .publish(envelope.to_message().unwrap())
            .await
            .unwrap();
    }

    /// Publishes ordering's `OrderAccepted` for `lines`; returns the envelope.
    pub async fn accept(&self, order_id: Uuid, lines: &[(Uuid, u32)]) -> Envelope {
        let envelope = Envelope::new(
            &order_accepted(order_id, lines),
            &Context::new(order_id.to_string()),
        )
        .unwrap();
        self.publish(&envelope).await;
        envelope
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
        let envelope = Envelope::new(&event, &Context::new(order_id.to_string())).unwrap();
        self.publish(&envelope).await;
        envelope
    }

    /// Waits until both consumers have settled every message and the outbox is
    /// published.
    pub async fn settled(&self, inventory: &Inventory) {
        for config in [
            agora_inventory::orders_subscriber_config(),
            agora_inventory::shipments_subscriber_config(),
        ] {
            let consumer = self.bus.consumer(&config.consumer_config()).await.unwrap();
            eventually("the consumer is settled", || async {
                let info = consumer.info().await.unwrap();
                info.pending == 0 && info.ack_pending == 0
            })
            .await;
        }
        let outbox = Outbox::new(inventory.db());
        eventually("the outbox is published", || async {
            outbox.unpublished().await.unwrap() == 0
        })
        .await;
    }

    /// Every event inventory published, once everything is settled.
    pub async fn events(&self, inventory: &Inventory) -> Vec<Envelope> {
        self.settled(inventory).await;
        let n = READERS.fetch_add(1, Ordering::SeqCst);
        let consumer = self
            .bus
            .consumer(&ConsumerConfig::new("INVENTORY", format!("test-{n}")))
            .await
            .unwrap();
        let mut seen = Vec::new();
        loop {
            let batch = consumer
                .fetch(100, Duration::from_millis(50))
                .await
                .unwrap();
            if batch.is_empty() {
                return seen;
            }
            for delivery in batch {
                seen.push(Envelope::from_json(&delivery.payload).unwrap());
                delivery.ack().await.unwrap();
            }
        }
    }
}

static READERS: AtomicU32 = AtomicU32::new(0);

pub fn address() -> Address {
    Address {
        line1: "Unter den Linden 1".into(),
        line2: None,
        city: "Berlin".into(),
        postal_code: "10117".into(),
        country: "DE".into(),
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

/// Polls `condition` until it holds; fails after 10 s.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An answer: status, content type and the JSON body (`Value::Null` when empty).
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Value,
}

impl Answer {
    /// Asserts a problem+json answer with `expected`.
    pub fn assert_problem(&self, expected: StatusCode) {
        assert_eq!(self.status, expected, "{}", self.body);
        assert_eq!(self.content_type, "application/problem+json");
        assert_eq!(self.body["status"], expected.as_u16());
    }

    /// The fields named by a 422's `errors`.
    pub fn invalid_fields(&self) -> Vec<String> {
        self.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
        self.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// One request through the router, with a raw body and its content type.
/// The internal-plane key of every inventory the tests start.
pub static TEST_PLANE: std::sync::LazyLock<InternalKey> =
    std::sync::LazyLock::new(InternalKey::generate);

/// A service token of fulfilment's for inventory.
pub fn service_token() -> String {
    TEST_PLANE
        .service("fulfilment")
        .token_for("inventory")
        .expect("a service token")
}

/// One request; to an `/internal` path without `token`, with a [`service_token`].
pub async fn send(
    router: &axum::Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    let service = path.starts_with("/internal/").then(service_token);
    if let Some(token) = token.or(service.as_deref()) {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match body {
        Some((content_type, bytes)) => {
            request = request.header(header::CONTENT_TYPE, content_type);
            Body::from(bytes)
        }
        None => Body::empty(),
    };
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Answer {
        status,
        content_type,
        body,
    }
}

/// One JSON request, with a bearer token if given.
pub async fn call(
    router: &axum::Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
    send(router, method, path, token, body).await
}

pub async fn get_stock(router: &axum::Router, product_id: Uuid) -> Answer {
    let path = format!("/api/inventory/stock/{product_id}");
    call(router, Method::GET, &path, None, None).await
}

/// Sets `on_hand` as the admin; asserts 200.
pub async fn set_stock(env: &Env, router: &axum::Router, product_id: Uuid, on_hand: u32) {
    let (_, admin) = env.issuer.admin();
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
