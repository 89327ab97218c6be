//! Shipping's own part of the harness (`agora-service-testkit` has the rest): its
//! config, publishers of the events it consumes, and its routes.

use agora_contracts::{AddressSource, OrderAccepted, OrderLine, OrderReadyForShipping};
use agora_messaging::Envelope;
use agora_service_testkit::TestEnv;
use agora_shipping::{Shipping, ShippingConfig};
use axum::http::Method;
use time::OffsetDateTime;
use uuid::Uuid;

pub use agora_service_testkit::http::{Answer, call};
pub use agora_service_testkit::{Backend, address};

/// A store, a bus and a token issuer that outlive restarts of shipping.
pub struct Env(TestEnv);

agora_service_testkit::env_deref!(Env);

impl Env {
    /// `None` (after a loud skip) when the backend is unreachable.
    pub async fn new(backend: Backend) -> Option<Env> {
        let sources = [agora_shipping::SOURCE, "ordering", "fulfilment"];
        TestEnv::new(backend, "shipping", &sources).await.map(Env)
    }

    pub fn config(&self) -> ShippingConfig {
        ShippingConfig::new(self.db_url.clone(), self.shared_bus(), self.issuer.keys())
    }

    pub async fn start(&self) -> Shipping {
        agora_shipping::build(self.config())
            .await
            .expect("shipping starts")
    }

    /// Publishes ordering's `OrderAccepted` of `customer_id`; returns the envelope.
    pub async fn accept(&self, order_id: Uuid, customer_id: Uuid) -> Envelope {
        self.emit(&order_accepted(order_id, customer_id), order_id)
            .await
    }

    /// Publishes fulfilment's `OrderReadyForShipping`; returns the envelope.
    pub async fn ready(&self, order_id: Uuid, customer_id: Uuid) -> Envelope {
        let event = OrderReadyForShipping {
            order_id,
            customer_id,
            ready_at: OffsetDateTime::now_utc(),
            version: 1,
        };
        self.emit(&event, order_id).await
    }

    /// Waits until both consumers have settled every message and the outbox is
    /// published.
    pub async fn settled(&self, shipping: &Shipping) {
        let consumers = [
            agora_shipping::orders_subscriber_config(),
            agora_shipping::ready_subscriber_config(),
        ];
        self.consumers_settled(&consumers, Some(shipping.db()))
            .await;
    }

    /// Every event shipping published, once everything is settled.
    pub async fn events(&self, shipping: &Shipping) -> Vec<Envelope> {
        self.settled(shipping).await;
        self.all_published(agora_shipping::SOURCE).await
    }
}

pub fn order_accepted(order_id: Uuid, customer_id: Uuid) -> OrderAccepted {
    OrderAccepted {
        order_id,
        customer_id,
        lines: vec![OrderLine {
            product_id: Uuid::now_v7(),
            quantity: 1,
            unit_price_cents: 100,
        }],
        total_cents: 100,
        currency: "EUR".into(),
        shipping_address: address(),
        address_source: AddressSource::Replica,
        payment_authorization_id: Uuid::now_v7(),
        accepted_at: OffsetDateTime::now_utc(),
        version: 1,
    }
}

/// A started shipping on a fresh store: `None` when the backend is unreachable.
pub async fn start(backend: Backend) -> Option<(Env, Shipping)> {
    let env = Env::new(backend).await?;
    let shipping = env.start().await;
    Some((env, shipping))
}

pub async fn shipments(router: &axum::Router, order_id: &str, token: &str) -> Answer {
    let path = format!("/api/shipping/shipments?order_id={order_id}");
    call(router, Method::GET, &path, Some(token), None).await
}
