//! Notification, Agora's master of the messages sent to customers: their mailbox.
//!
//! It keeps two replicas, both applied by version (an older event never overwrites a
//! newer one, so they converge whatever the order or duplication of delivery):
//! product names from catalog's `ProductAdded`/`ProductUpdated`/`ProductDeleted`
//! (consumer [`CONSUMER_PRODUCTS`]; a deletion keeps a tombstone at its version and the
//! last known name), and customers' names and emails from identity's `UserSignedUp`
//! (consumer [`CONSUMER_USERS`]).
//!
//! Messages: `order_confirmation` on ordering's `OrderAccepted`, naming the products
//! from the replica (a name not known yet is waited for: the delivery is retried
//! through the bus for [`NotificationConfig::name_wait`], then the message says
//! "product <id>"); `order_cancelled` on
//! `OrderCancelled`, with the reason; `order_shipped` on shipping's
//! `ShipmentDispatched` or ordering's `OrderShipped`, whichever comes first (consumers
//! [`CONSUMER_ORDERS`] and [`CONSUMER_SHIPMENTS`]), naming the products as the
//! confirmation does, from the order's lines kept with it (lines not kept yet are
//! waited for, twice `name_wait`, then the message goes without them). A message is
//! unique per (order, kind), so redeliveries and duplicates send nothing twice.
//!
//! [`build`] makes the service from a [`NotificationConfig`];
//! [`Notification::router`] serves `GET /api/notifications/me`, the caller's mailbox,
//! newest first. [`openapi`] documents it.
//!
//! What notification must never do: send one message of a kind twice for an order,
//! show a customer another's messages, or read another service's store.

#![forbid(unsafe_code)]

mod events;
mod http;
mod store;

use std::sync::Arc;
use std::time::Duration;

use agora_auth::KeySource;
use agora_bus::SharedBus;
use agora_contracts::{ShipmentDispatched, UserSignedUp, bus_subject};
use agora_messaging::{Backoff, Db, SubscriberConfig};
use agora_service::Core;

/// The event source of notification (it publishes no events).
pub const SOURCE: &str = "notification";

/// The durable consumer of catalog's product events: the names replica.
pub const CONSUMER_PRODUCTS: &str = "notification-products";
/// The durable consumer of identity's `UserSignedUp`: the customers replica.
pub const CONSUMER_USERS: &str = "notification-users";
/// The durable consumer of ordering's order events: confirmations, cancellations,
/// shipments.
pub const CONSUMER_ORDERS: &str = "notification-orders";
/// The durable consumer of shipping's `ShipmentDispatched`.
pub const CONSUMER_SHIPMENTS: &str = "notification-shipments";

/// The default [`NotificationConfig::name_wait`].
pub const DEFAULT_NAME_WAIT: Duration = Duration::from_secs(10);

/// The subscriber of [`CONSUMER_PRODUCTS`]: catalog's stream, every event.
pub fn products_subscriber_config() -> SubscriberConfig {
    SubscriberConfig::on_source(CONSUMER_PRODUCTS, "catalog")
}

/// The subscriber of [`CONSUMER_USERS`]: identity's stream, `UserSignedUp` only.
pub fn users_subscriber_config() -> SubscriberConfig {
    SubscriberConfig::on_source(CONSUMER_USERS, "identity").filter(bus_subject::<UserSignedUp>())
}

/// The subscriber of [`CONSUMER_ORDERS`]: ordering's stream, every event (the handler
/// keeps `OrderAccepted`, `OrderCancelled` and `OrderShipped`). Redelivered while a
/// product name is awaited: from 100 ms, doubling, to 2 s, 40 deliveries at most.
pub fn orders_subscriber_config() -> SubscriberConfig {
    SubscriberConfig::on_source(CONSUMER_ORDERS, "ordering")
        .backoff(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(2),
        ))
        .max_deliver(40)
}

/// The subscriber of [`CONSUMER_SHIPMENTS`]: shipping's stream, `ShipmentDispatched`
/// only. Redelivered while the order's lines are awaited, as
/// [`orders_subscriber_config`].
pub fn shipments_subscriber_config() -> SubscriberConfig {
    SubscriberConfig::on_source(CONSUMER_SHIPMENTS, "shipping")
        .filter(bus_subject::<ShipmentDispatched>())
        .backoff(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(2),
        ))
        .max_deliver(40)
}

/// How notification runs. Built explicitly by the composition (the `agora` binary).
#[derive(Clone)]
pub struct NotificationConfig {
    /// Its own store: `sqlite://…` or `postgres://…`.
    pub db_url: String,
    pub bus: SharedBus,
    /// Identity's public keys, to verify tokens with.
    pub keys: Arc<dyn KeySource>,
    /// How long an order's confirmation waits for product names the replica does not
    /// know yet — counted both from the order's acceptance and from the first attempt
    /// of this process — before naming them "product <id>". A shipped message waits
    /// twice as long for the order's lines; keep that within what
    /// [`orders_subscriber_config`] redelivers (about 70 s).
    pub name_wait: Duration,
}

impl NotificationConfig {
    /// A config with the [`DEFAULT_NAME_WAIT`].
    pub fn new(db_url: impl Into<String>, bus: SharedBus, keys: Arc<dyn KeySource>) -> Self {
        Self {
            db_url: db_url.into(),
            bus,
            keys,
            name_wait: DEFAULT_NAME_WAIT,
        }
    }
}

impl std::fmt::Debug for NotificationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the database URL: it may hold a password.
        let backend = self.db_url.split(':').next().unwrap_or_default();
        f.debug_struct("NotificationConfig")
            .field("db", &backend)
            .field("name_wait", &self.name_wait)
            .finish_non_exhaustive()
    }
}

/// Why notification could not start (or a store operation failed).
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

/// The running service: its routes and its consumers.
#[derive(Debug)]
pub struct Notification {
    router: axum::Router,
    core: Core,
}

impl Notification {
    /// The routes: `/api/notifications/...`.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// Its store, for tools and tests.
    pub fn db(&self) -> &Db {
        self.core.db()
    }

    /// Stops the consumers (letting the messages under way finish).
    pub async fn shutdown(self) {
        self.core.shutdown().await;
    }
}

/// Opens the store, applies migrations, and starts token verification and the four
/// consumers.
pub async fn build(config: NotificationConfig) -> Result<Notification, Error> {
    let mut core = Core::open(SOURCE, &config.db_url, &config.bus, store::MIGRATIONS).await?;
    let verifier = core.check_tokens(config.keys.clone()).await?;
    core.consume(products_subscriber_config(), events::Products)
        .await?;
    core.consume(users_subscriber_config(), events::Users)
        .await?;
    core.consume(
        orders_subscriber_config(),
        events::Orders::new(config.name_wait),
    )
    .await?;
    core.consume(
        shipments_subscriber_config(),
        events::Shipments::new(config.name_wait),
    )
    .await?;
    let state = http::State {
        db: core.db().clone(),
        verifier,
    };
    tracing::info!(name_wait = ?config.name_wait, "notification started");
    Ok(Notification {
        router: http::router(state),
        core,
    })
}

/// The OpenAPI 3.1 document of notification's public paths.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    http::ApiDoc::openapi()
}
