//! Inventory, Agora's master of stock on hand and of reservations.
//!
//! Stock is kept per product: `on_hand` (what the warehouse holds) and `reserved` (what
//! accepted orders hold of it); `available` is their difference and never goes below
//! zero. Admins set `on_hand` (`PUT /api/inventory/stock/{product_id}`), never below
//! what is reserved.
//!
//! Fulfilment: on ordering's `OrderAccepted` (consumer [`CONSUMER_ORDERS`]) inventory
//! reserves every line of the order, or none: `StockReserved`, or
//! `StockReservationFailed` with the shortages (nothing held). The reservation, its
//! stock changes and its event are one transaction with the inbox record, so each
//! order is reserved at most once however often it is delivered. Each product row is
//! locked before it is read, in product-id order, so concurrent reservations never
//! oversell (and, on PostgreSQL, never deadlock).
//!
//! An order's reservation goes `reserved → released` (fulfilment's compensation,
//! `POST /internal/inventory/reservations/{order_id}/release`, which publishes
//! `StockReleased` once) or `reserved → shipped` (shipping's `ShipmentDispatched`,
//! consumer [`CONSUMER_SHIPMENTS`], which takes the goods out of `on_hand` and
//! `reserved`). A release of a shipped order releases nothing; a release that comes
//! before the order was reserved leaves a `released` mark, so that the late
//! `OrderAccepted` reserves nothing.
//!
//! [`build`] makes the service from an [`InventoryConfig`]; [`Inventory::router`]
//! serves the public paths (`/api/inventory/stock/{product_id}`) and the internal
//! ones (`/internal/inventory/...`, no token: a gateway never routes them).
//! [`openapi`] documents the public paths.
//!
//! What inventory must never do: hold part of an order, let `reserved` exceed
//! `on_hand`, release or ship one reservation twice, or read another service's store.

#![forbid(unsafe_code)]

mod domain;
mod events;
mod http;
mod store;

use std::sync::Arc;

use agora_auth::{InternalKey, KeySource};
use agora_bus::SharedBus;
use agora_contracts::{OrderAccepted, ShipmentDispatched, bus_subject};
use agora_messaging::{Db, Outbox, SubscriberConfig};
use agora_service::Core;
use uuid::Uuid;

pub use domain::{Invalid, MAX_ON_HAND};
pub use store::Stock;

/// The event source and the stream of inventory's events.
pub const SOURCE: &str = "inventory";

/// The durable consumer of ordering's `OrderAccepted`, which reserves.
pub const CONSUMER_ORDERS: &str = "inventory-orders";

/// The durable consumer of shipping's `ShipmentDispatched`, which ships reservations.
pub const CONSUMER_SHIPMENTS: &str = "inventory-shipments";

/// The subscriber of [`CONSUMER_ORDERS`]: ordering's stream, `OrderAccepted` only.
pub fn orders_subscriber_config() -> SubscriberConfig {
    SubscriberConfig::on_source(CONSUMER_ORDERS, "ordering").filter(bus_subject::<OrderAccepted>())
}

/// The subscriber of [`CONSUMER_SHIPMENTS`]: shipping's stream, `ShipmentDispatched`
/// only.
pub fn shipments_subscriber_config() -> SubscriberConfig {
    SubscriberConfig::on_source(CONSUMER_SHIPMENTS, "shipping")
        .filter(bus_subject::<ShipmentDispatched>())
}

/// How inventory runs. Built explicitly by the composition (the `agora` binary).
#[derive(Clone)]
pub struct InventoryConfig {
    /// Its own store: `sqlite://…` or `postgres://…`.
    pub db_url: String,
    pub bus: SharedBus,
    /// Identity's public keys, to verify tokens with.
    pub keys: Arc<dyn KeySource>,
    /// The deployment's internal-plane key: `/internal/inventory/...` takes only a
    /// service token signed with it. [`InventoryConfig::new`] makes a fresh one, which
    /// no other service holds.
    pub internal: InternalKey,
}

impl InventoryConfig {
    pub fn new(db_url: impl Into<String>, bus: SharedBus, keys: Arc<dyn KeySource>) -> Self {
        Self {
            db_url: db_url.into(),
            bus,
            keys,
            internal: InternalKey::generate(),
        }
    }
}

impl std::fmt::Debug for InventoryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the database URL: it may hold a password.
        let backend = self.db_url.split(':').next().unwrap_or_default();
        f.debug_struct("InventoryConfig")
            .field("db", &backend)
            .finish_non_exhaustive()
    }
}

/// Why inventory could not start (or a store operation failed).
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
pub struct Inventory {
    router: axum::Router,
    core: Core,
}

impl Inventory {
    /// The routes: `/api/inventory/...` and `/internal/inventory/...`.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// Its store, for tools and tests.
    pub fn db(&self) -> &Db {
        self.core.db()
    }

    /// Sets `on_hand` of each product, only when the store holds no stock at all (a
    /// fresh shop's demo stock); returns whether it did. Quantities over
    /// [`MAX_ON_HAND`] are capped.
    pub async fn seed(&self, stock: &[(Uuid, u32)]) -> Result<bool, Error> {
        store::seed(self.core.db(), stock).await
    }

    /// Stops the consumers, then the outbox relay (events committed but not yet
    /// published are published by the next start).
    pub async fn shutdown(self) {
        self.core.shutdown().await;
    }
}

/// Opens the store, applies migrations, and starts token verification, the consumers
/// of `OrderAccepted` and `ShipmentDispatched` and the outbox relay.
pub async fn build(config: InventoryConfig) -> Result<Inventory, Error> {
    let mut core = Core::open(SOURCE, &config.db_url, &config.bus, store::MIGRATIONS).await?;
    let verifier = core.check_tokens(config.keys.clone()).await?;
    core.consume(orders_subscriber_config(), events::ReserveOnAcceptance)
        .await?;
    core.consume(shipments_subscriber_config(), events::ShipOnDispatch)
        .await?;
    core.publish();
    let state = http::State {
        db: core.db().clone(),
        outbox: Outbox::new(core.db()),
        verifier,
    };
    tracing::info!("inventory started");
    Ok(Inventory {
        router: http::router(state, &config.internal.service(SOURCE)),
        core,
    })
}

/// The OpenAPI 3.1 document of inventory's public paths (not the internal ones).
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    http::ApiDoc::openapi()
}
