//! Payment, Agora's master of authorizations, captures, refunds and voids, in front of
//! an external card-payment provider — simulated here ([`SimulatedProvider`]).
//!
//! Ordering authorizes the payment of an order synchronously, before it accepts the
//! order: `POST /internal/payment/authorizations`, keyed by a `request_id` the caller
//! chooses. A request id is authorized at most once, whatever the retries and however
//! many duplicates arrive at once, in any number of processes: the store decides who
//! asks the provider, and the answer (authorized or declined) is recorded and replayed.
//! An authorization publishes `PaymentAuthorized` through the outbox, in the
//! transaction that records it.
//!
//! Fulfilment: on ordering's `OrderAccepted` (consumer [`CONSUMER_ORDERS`]) payment
//! captures the order's authorization once and publishes `CustomerBilled`, or
//! `PaymentFailed{operation: capture}` when the provider declines the capture. A
//! provider that does not answer is retried through the bus (redelivery with
//! backoff, [`PaymentConfig::capture_retry`]), then dead-lettered. Fulfilment's
//! compensations, `POST /internal/payment/authorizations/{id}/refund` and `.../void`,
//! both give the money back whatever the state (refund if captured, void if not) and
//! are idempotent: `PaymentRefunded` or `AuthorizationVoided`, once. A void that comes
//! before the capture wins: the capture does not happen. Each event bumps the
//! authorization's version (authorized 1, then +1 per event).
//!
//! [`build`] makes the service from a [`PaymentConfig`]; [`Payment::router`] serves
//! the internal paths (`/internal/payment/...`), which have no authentication because
//! the gateway never routes them. Payment has no public path: [`openapi`] is an empty
//! description, kept so that every service offers one.
//!
//! What payment must never do: authorize one request id twice, capture, refund or
//! void one authorization twice, capture a voided one, answer a retry differently
//! from the first answer, log a payment token, or read another service's store.

#![forbid(unsafe_code)]

mod authorize;
mod domain;
mod http;
mod orphans;
mod provider;
mod settle;
mod store;

use std::sync::Arc;
use std::time::Duration;

use agora_auth::{InternalKey, KeySource};
use agora_bus::SharedBus;
use agora_contracts::{OrderAccepted, bus_subject};
use agora_messaging::{Backoff, Db, Outbox, SubscriberConfig};
use agora_service::Core;

pub use domain::{AmountCents, Currency, Invalid, PaymentToken};
pub use orphans::{
    CONSUMER_ACCEPTANCES, DEFAULT_ORPHAN_HOLD, ORPHAN_REASON, acceptances_subscriber_config,
};
pub use provider::{
    PaymentProvider, ProviderAuthorization, ProviderCapture, ProviderError, ProviderRefund,
    Replaying, SimulatedProvider,
};

/// The event source and the stream of payment's events.
pub const SOURCE: &str = "payment";

/// The durable consumer of ordering's `OrderAccepted`, which captures.
pub const CONSUMER_ORDERS: &str = "payment-orders";

/// The default [`PaymentConfig::capture_retry`]: from 100 ms, doubling, to 30 s.
pub const DEFAULT_CAPTURE_RETRY: Backoff = Backoff {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(30),
};

/// The default [`PaymentConfig::capture_max_deliveries`]: about 80 s of provider
/// outage with [`DEFAULT_CAPTURE_RETRY`].
pub const DEFAULT_CAPTURE_MAX_DELIVERIES: u32 = 10;

/// The subscriber of [`CONSUMER_ORDERS`]: ordering's stream, `OrderAccepted` only.
pub fn orders_subscriber_config() -> SubscriberConfig {
    SubscriberConfig::on_source(CONSUMER_ORDERS, "ordering").filter(bus_subject::<OrderAccepted>())
}

/// The default [`PaymentConfig::provider_timeout`].
pub const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(2);

/// How payment runs. Built explicitly by the composition (the `agora` binary).
#[derive(Clone)]
pub struct PaymentConfig {
    /// Its own store: `sqlite://…` or `postgres://…`.
    pub db_url: String,
    pub bus: SharedBus,
    /// Identity's public keys. Unused while payment has only internal routes; kept so
    /// that every service is configured alike.
    pub keys: Arc<dyn KeySource>,
    /// The deployment's internal-plane key: every route of payment is internal and
    /// takes only a service token signed with it. [`PaymentConfig::new`] makes a
    /// fresh one, which no other service holds.
    pub internal: InternalKey,
    /// The payment provider, e.g. `Arc::new(SimulatedProvider { latency, decline_rate,
    /// capture_decline_rate })`.
    pub provider: Arc<dyn PaymentProvider>,
    /// How long one provider call may take; a slower call counts as "unavailable"
    /// (503, or a capture retried later; nothing recorded).
    pub provider_timeout: Duration,
    /// The delays between deliveries of an `OrderAccepted` whose capture found the
    /// provider unavailable.
    pub capture_retry: Backoff,
    /// Deliveries of an `OrderAccepted` before it goes to the dead letters (provider
    /// unavailable all along).
    pub capture_max_deliveries: u32,
    /// An authorization whose order payment has not seen accepted after this long is
    /// voided ([`DEFAULT_ORPHAN_HOLD`]; `AGORA_ORPHAN_HOLD_SECS` in `agora up`).
    pub orphan_hold: Duration,
    /// How often holds are checked for orphans (a minute by default).
    pub orphan_sweep_interval: Duration,
}

impl PaymentConfig {
    /// A config with the [`SimulatedProvider::default`] (instant, never declines
    /// `tok_visa`) and the [`DEFAULT_PROVIDER_TIMEOUT`].
    pub fn new(db_url: impl Into<String>, bus: SharedBus, keys: Arc<dyn KeySource>) -> Self {
        Self {
            db_url: db_url.into(),
            bus,
            keys,
            internal: InternalKey::generate(),
            provider: Arc::new(Replaying::new(SimulatedProvider::default())),
            provider_timeout: DEFAULT_PROVIDER_TIMEOUT,
            capture_retry: DEFAULT_CAPTURE_RETRY,
            capture_max_deliveries: DEFAULT_CAPTURE_MAX_DELIVERIES,
            orphan_hold: DEFAULT_ORPHAN_HOLD,
            orphan_sweep_interval: Duration::from_secs(60),
        }
    }
}

impl std::fmt::Debug for PaymentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the database URL: it may hold a password.
        f.debug_struct("PaymentConfig")
            .field("provider_timeout", &self.provider_timeout)
            .field("capture_retry", &self.capture_retry)
            .field("capture_max_deliveries", &self.capture_max_deliveries)
            .finish_non_exhaustive()
    }
}

/// Why payment could not start (or a store operation failed).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store: {0}")]
    Messaging(#[from] agora_messaging::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored {0} is corrupt")]
    Corrupt(&'static str),
}

/// The running service: its routes, its capture consumer and its outbox relay.
#[derive(Debug)]
pub struct Payment {
    router: axum::Router,
    core: Core,
    orphans: orphans::Sweeper,
}

impl Payment {
    /// The internal routes, under `/internal/payment`.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// Its store, for tools and tests.
    pub fn db(&self) -> &Db {
        self.core.db()
    }

    /// Stops the consumers and the orphan sweeper (letting the capture under way
    /// finish), then the outbox relay (events committed but not yet published are published by the next
    /// start).
    pub async fn shutdown(self) {
        self.core.shutdown_with(self.orphans.shutdown()).await;
    }
}

/// Opens the store, applies migrations, starts the outbox relay and the capture
/// consumer (creating ordering's stream if it does not exist yet).
pub async fn build(config: PaymentConfig) -> Result<Payment, Error> {
    let mut core = Core::open(SOURCE, &config.db_url, &config.bus, store::MIGRATIONS).await?;
    let db = core.db().clone();
    let authorizer = authorize::Authorizer {
        db: db.clone(),
        outbox: Outbox::new(&db),
        provider: config.provider.clone(),
        provider_timeout: config.provider_timeout,
        settled: Arc::new(tokio::sync::Notify::new()),
    };
    let settler = settle::Settler {
        db: db.clone(),
        outbox: Outbox::new(&db),
        provider: config.provider.clone(),
        provider_timeout: config.provider_timeout,
    };
    core.consume(
        orders_subscriber_config()
            .backoff(config.capture_retry)
            .max_deliver(config.capture_max_deliveries.max(1)),
        settle::CaptureOnAcceptance {
            provider: config.provider.clone(),
            provider_timeout: config.provider_timeout,
        },
    )
    .await?;
    core.consume(acceptances_subscriber_config(), orphans::Acceptances)
        .await?;
    core.publish();
    let orphans = orphans::Sweeper::spawn(
        settler.clone(),
        config.bus.clone(),
        config.orphan_hold,
        config.orphan_sweep_interval,
    );
    tracing::info!(provider_timeout = ?config.provider_timeout, orphan_hold = ?config.orphan_hold, "payment started");
    Ok(Payment {
        router: http::router(authorizer, settler, &config.internal.service(SOURCE)),
        core,
        orphans,
    })
}

/// The OpenAPI 3.1 description of payment's public paths: there are none (its routes
/// are internal), so it holds only the service's title.
pub fn openapi() -> utoipa::openapi::OpenApi {
    utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("Agora payment")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("No public paths: payment is reached internally only."))
                .build(),
        )
        .paths(utoipa::openapi::Paths::new())
        .build()
}
