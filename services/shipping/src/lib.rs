//! Shipping, Agora's master of shipments.
//!
//! Shipping keeps its own copy of each order's shipping address and customer, from
//! ordering's `OrderAccepted` (consumer [`CONSUMER_ORDERS`]), and dispatches an order
//! when fulfilment says it is ready (`OrderReadyForShipping`, consumer
//! [`CONSUMER_READY`]). The two arrive in either order: each handler records its fact
//! on the order's one row (an upsert, so concurrent handlers of one order take turns)
//! and whichever finds both creates the shipment, "dispatches" it (simulated: a carrier
//! and a tracking number, at once) and publishes `ShipmentDispatched` through the
//! outbox, in the same transaction. The shipment's `order_id` is unique, so an order is
//! dispatched at most once, whatever the duplicates and redeliveries.
//!
//! [`build`] makes the service from a [`ShippingConfig`]; [`Shipping::router`] serves
//! `GET /api/shipping/shipments?order_id=` (the order's customer or an admin; another
//! customer gets an empty list, so that the answer does not tell whether the order
//! exists). [`openapi`] documents it.
//!
//! What shipping must never do: dispatch an order twice or before fulfilment said it
//! is ready, show a customer another customer's shipment, or read another service's
//! store.

#![forbid(unsafe_code)]

mod events;
mod http;
mod store;

use std::sync::Arc;

use agora_auth::KeySource;
use agora_bus::SharedBus;
use agora_contracts::{OrderAccepted, OrderReadyForShipping, bus_subject};
use agora_messaging::{Db, SubscriberConfig};
use agora_service::Core;

/// The event source and the stream of shipping's events.
pub const SOURCE: &str = "shipping";

/// The durable consumer of ordering's `OrderAccepted`: the address replica.
pub const CONSUMER_ORDERS: &str = "shipping-orders";

/// The durable consumer of fulfilment's `OrderReadyForShipping`: dispatch.
pub const CONSUMER_READY: &str = "shipping-ready";

/// The carrier simulated dispatches name.
pub const CARRIER: &str = "Agora Post";

/// The subscriber of [`CONSUMER_ORDERS`]: ordering's stream, `OrderAccepted` only.
pub fn orders_subscriber_config() -> SubscriberConfig {
    SubscriberConfig::on_source(CONSUMER_ORDERS, "ordering").filter(bus_subject::<OrderAccepted>())
}

/// The subscriber of [`CONSUMER_READY`]: fulfilment's stream, `OrderReadyForShipping`
/// only.
pub fn ready_subscriber_config() -> SubscriberConfig {
    SubscriberConfig::on_source(CONSUMER_READY, "fulfilment")
        .filter(bus_subject::<OrderReadyForShipping>())
}

/// How shipping runs. Built explicitly by the composition (the `agora` binary).
#[derive(Clone)]
pub struct ShippingConfig {
    /// Its own store: `sqlite://…` or `postgres://…`.
    pub db_url: String,
    pub bus: SharedBus,
    /// Identity's public keys, to verify tokens with.
    pub keys: Arc<dyn KeySource>,
}

impl ShippingConfig {
    pub fn new(db_url: impl Into<String>, bus: SharedBus, keys: Arc<dyn KeySource>) -> Self {
        Self {
            db_url: db_url.into(),
            bus,
            keys,
        }
    }
}

impl std::fmt::Debug for ShippingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the database URL: it may hold a password.
        let backend = self.db_url.split(':').next().unwrap_or_default();
        f.debug_struct("ShippingConfig")
            .field("db", &backend)
            .finish_non_exhaustive()
    }
}

/// Why shipping could not start (or a store operation failed).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store: {0}")]
    Messaging(#[from] agora_messaging::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("auth: {0}")]
    Auth(#[from] agora_auth::Error),
    #[error("stored {0} is corrupt")]
    Corrupt(&'static str),
}

/// The running service: its routes, its consumers and its outbox relay.
#[derive(Debug)]
pub struct Shipping {
    router: axum::Router,
    core: Core,
}

impl Shipping {
    /// The routes: `/api/shipping/...`.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// Its store, for tools and tests.
    pub fn db(&self) -> &Db {
        self.core.db()
    }

    /// Stops the consumers, then the outbox relay (events committed but not yet
    /// published are published by the next start).
    pub async fn shutdown(self) {
        self.core.shutdown().await;
    }
}

/// Opens the store, applies migrations, and starts token verification, the two
/// consumers and the outbox relay.
pub async fn build(config: ShippingConfig) -> Result<Shipping, Error> {
    let mut core = Core::open(SOURCE, &config.db_url, &config.bus, store::MIGRATIONS).await?;
    let verifier = core.check_tokens(config.keys.clone()).await?;
    core.consume(orders_subscriber_config(), events::RecordAcceptedOrder)
        .await?;
    core.consume(ready_subscriber_config(), events::DispatchWhenReady)
        .await?;
    core.publish();
    let state = http::State {
        db: core.db().clone(),
        verifier,
    };
    tracing::info!("shipping started");
    Ok(Shipping {
        router: http::router(state),
        core,
    })
}

/// The OpenAPI 3.1 document of shipping's public paths.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    http::ApiDoc::openapi()
}
