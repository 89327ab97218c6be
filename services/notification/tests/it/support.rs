//! What the tests share: a running notification on either backend, tokens, HTTP
//! helpers and publishers of the events notification consumes.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_auth::TestIssuer;
use agora_bus::embedded::EmbeddedBus;
use agora_bus::{Bus, SharedBus};
use agora_contracts::{
    Address, AddressSource, CancelReason, Event, OrderAccepted, OrderCancelled, OrderLine,
    OrderShipped, ProductAdded, ProductDeleted, ProductUpdated, Role, ShipmentDispatched,
    UserSignedUp,
};
use agora_messaging::{Context, Envelope, stream_config};
use agora_notification::{Notification, NotificationConfig};
use agora_testkit::PgDatabase;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;
use time::OffsetDateTime;
use tower::ServiceExt;
use uuid::Uuid;

pub use agora_testkit::Backend;

/// A store, a bus and a token issuer that outlive restarts of notification.
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
                format!("sqlite://{}", dir.path().join("notification.db").display()),
                None,
            ),
            Backend::Postgres => {
                let pg = PgDatabase::create().await?;
                (pg.url().to_owned(), Some(pg))
            }
        };
        let bus = EmbeddedBus::open(dir.path().join("bus.db")).await.unwrap();
        for source in ["catalog", "identity", "ordering", "shipping"] {
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

    pub fn config(&self) -> NotificationConfig {
        NotificationConfig::new(
            self.db_url.clone(),
            self.bus.clone() as SharedBus,
            self.issuer.keys(),
        )
    }

    pub async fn start_with(&self, config: NotificationConfig) -> Notification {
        agora_notification::build(config)
            .await
            .expect("notification starts")
    }

    pub async fn publish(&self, envelope: &Envelope) {
        self.bus
            .publish(envelope.to_message().unwrap())
            .await
            .unwrap();
    }

    /// Publishes `event` (correlated with `about`); returns its envelope.
    pub async fn emit<E: Event>(&self, event: &E, about: Uuid) -> Envelope {
        let envelope = Envelope::new(event, &Context::new(about.to_string())).unwrap();
        self.publish(&envelope).await;
        envelope
    }

    pub async fn product(&self, product_id: Uuid, name: &str, version: u64) -> Envelope {
        if version == 1 {
            let event = ProductAdded {
                product_id,
                name: name.to_owned(),
                description: String::new(),
                image_url: None,
                added_at: OffsetDateTime::now_utc(),
                version,
            };
            self.emit(&event, product_id).await
        } else {
            let event = ProductUpdated {
                product_id,
                name: name.to_owned(),
                description: String::new(),
                image_url: None,
                updated_at: OffsetDateTime::now_utc(),
                version,
            };
            self.emit(&event, product_id).await
        }
    }

    pub async fn delete_product(&self, product_id: Uuid, version: u64) -> Envelope {
        let event = ProductDeleted {
            product_id,
            deleted_at: OffsetDateTime::now_utc(),
            version,
        };
        self.emit(&event, product_id).await
    }

    pub async fn sign_up(&self, user_id: Uuid, name: &str) -> Envelope {
        let event = UserSignedUp {
            user_id,
            email: format!("{}@example.com", name.to_lowercase()),
            name: name.to_owned(),
            role: Role::Customer,
            signed_up_at: OffsetDateTime::now_utc(),
            version: 1,
        };
        self.emit(&event, user_id).await
    }

    pub async fn accept(
        &self,
        order_id: Uuid,
        customer_id: Uuid,
        lines: &[(Uuid, u32)],
    ) -> Envelope {
        self.emit(&order_accepted(order_id, customer_id, lines), order_id)
            .await
    }

    pub async fn cancel(
        &self,
        order_id: Uuid,
        customer_id: Uuid,
        reason: CancelReason,
    ) -> Envelope {
        let event = OrderCancelled {
            order_id,
            customer_id,
            reason,
            detail: None,
            cancelled_at: OffsetDateTime::now_utc(),
            version: 2,
        };
        self.emit(&event, order_id).await
    }

    pub async fn dispatched(&self, order_id: Uuid, customer_id: Uuid) -> Envelope {
        let event = ShipmentDispatched {
            shipment_id: Uuid::now_v7(),
            order_id,
            customer_id,
            address: address(),
            carrier: Some("Agora Post".into()),
            tracking_number: Some("AP123".into()),
            dispatched_at: OffsetDateTime::now_utc(),
            version: 1,
        };
        self.emit(&event, order_id).await
    }

    pub async fn shipped(&self, order_id: Uuid, customer_id: Uuid) -> Envelope {
        let event = OrderShipped {
            order_id,
            customer_id,
            shipment_id: Uuid::now_v7(),
            tracking_number: Some("AP123".into()),
            shipped_at: OffsetDateTime::now_utc(),
            version: 2,
        };
        self.emit(&event, order_id).await
    }

    /// Waits until every consumer has settled every message.
    pub async fn settled(&self) {
        for config in [
            agora_notification::products_subscriber_config(),
            agora_notification::users_subscriber_config(),
            agora_notification::orders_subscriber_config(),
            agora_notification::shipments_subscriber_config(),
        ] {
            let consumer = self.bus.consumer(&config.consumer_config()).await.unwrap();
            eventually("the consumer is settled", || async {
                let info = consumer.info().await.unwrap();
                info.pending == 0 && info.ack_pending == 0
            })
            .await;
        }
    }

    /// Waits until the shipments consumer has tried some message more than once.
    pub async fn shipments_retried(&self) {
        let config = agora_notification::shipments_subscriber_config();
        let consumer = self.bus.consumer(&config.consumer_config()).await.unwrap();
        eventually("a shipment event is retried", || async {
            consumer.info().await.unwrap().redelivered > 0
        })
        .await;
    }

    /// Waits until the orders consumer has tried some message more than once.
    pub async fn orders_retried(&self) {
        let config = agora_notification::orders_subscriber_config();
        let consumer = self.bus.consumer(&config.consumer_config()).await.unwrap();
        eventually("an order event is retried", || async {
            consumer.info().await.unwrap().redelivered > 0
        })
        .await;
    }
}

pub fn address() -> Address {
    Address {
        line1: "Unter den Linden 1".into(),
        line2: None,
        city: "Berlin".into(),
        postal_code: "10117".into(),
        country: "DE".into(),
    }
}

pub fn order_accepted(order_id: Uuid, customer_id: Uuid, lines: &[(Uuid, u32)]) -> OrderAccepted {
    OrderAccepted {
        order_id,
        customer_id,
        lines: lines
            .iter()
            .map(|(product_id, quantity)| OrderLine {
                product_id: *product_id,
                quantity: *quantity,
                unit_price_cents: 250,
            })
            .collect(),
        total_cents: lines.iter().map(|(_, q)| i64::from(*q) * 250).sum(),
        currency: "EUR".into(),
        shipping_address: address(),
        address_source: AddressSource::Replica,
        payment_authorization_id: Uuid::now_v7(),
        accepted_at: OffsetDateTime::now_utc(),
        version: 1,
    }
}

/// A started notification on a fresh store: `None` when the backend is unreachable.
pub async fn start(backend: Backend) -> Option<(Env, Notification)> {
    let env = Env::new(backend).await?;
    let notification = env.start_with(env.config()).await;
    Some((env, notification))
}

/// Polls `condition` until it holds; fails after 15 s.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
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
}

/// `GET /api/notifications/me` with `token`, if any.
pub async fn mailbox_answer(router: &axum::Router, token: Option<&str>) -> Answer {
    let mut request = Request::builder()
        .method(Method::GET)
        .uri("/api/notifications/me");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
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

/// The caller's messages (asserting 200).
pub async fn mailbox(router: &axum::Router, token: &str) -> Vec<Value> {
    let answer = mailbox_answer(router, Some(token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body.as_array().unwrap().clone()
}

/// Waits until the caller has `n` messages; returns them.
pub async fn mailbox_of(router: &axum::Router, token: &str, n: usize) -> Vec<Value> {
    eventually(&format!("{n} messages"), || async {
        mailbox(router, token).await.len() >= n
    })
    .await;
    mailbox(router, token).await
}
