//! Notification's own part of the harness (`agora-service-testkit` has the rest): its
//! config, publishers of the events it consumes, and the mailbox route.

use agora_contracts::{
    AddressSource, CancelReason, OrderAccepted, OrderCancelled, OrderLine, OrderShipped,
    ProductAdded, ProductDeleted, ProductUpdated, Role, ShipmentDispatched, UserSignedUp,
};
use agora_messaging::Envelope;
use agora_notification::{Notification, NotificationConfig};
use agora_service_testkit::TestEnv;
use axum::http::{Method, StatusCode};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

pub use agora_service_testkit::http::{Answer, call};
pub use agora_service_testkit::{Backend, address, eventually};

/// A store, a bus and a token issuer that outlive restarts of notification.
pub struct Env(TestEnv);

agora_service_testkit::env_deref!(Env);

impl Env {
    /// `None` (after a loud skip) when the backend is unreachable.
    pub async fn new(backend: Backend) -> Option<Env> {
        let sources = ["catalog", "identity", "ordering", "shipping"];
        TestEnv::new(backend, "notification", &sources)
            .await
            .map(Env)
    }

    pub fn config(&self) -> NotificationConfig {
        NotificationConfig::new(self.db_url.clone(), self.shared_bus(), self.issuer.keys())
    }

    pub async fn start_with(&self, config: NotificationConfig) -> Notification {
        agora_notification::build(config)
            .await
            .expect("notification starts")
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
        let consumers = [
            agora_notification::products_subscriber_config(),
            agora_notification::users_subscriber_config(),
            agora_notification::orders_subscriber_config(),
            agora_notification::shipments_subscriber_config(),
        ];
        self.consumers_settled(&consumers, None).await;
    }

    /// Waits until the shipments consumer has tried some message more than once.
    pub async fn shipments_retried(&self) {
        let config = agora_notification::shipments_subscriber_config();
        self.consumer_retried(&config.consumer_config()).await;
    }

    /// Waits until the orders consumer has tried some message more than once.
    pub async fn orders_retried(&self) {
        let config = agora_notification::orders_subscriber_config();
        self.consumer_retried(&config.consumer_config()).await;
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

/// `GET /api/notifications/me` with `token`, if any.
pub async fn mailbox_answer(router: &axum::Router, token: Option<&str>) -> Answer {
    call(router, Method::GET, "/api/notifications/me", token, None).await
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
