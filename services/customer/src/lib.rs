//! Customer, Agora's master of customer profiles: name, email, shipping address and
//! payment method (a payment provider's token and the card's last four digits, never a
//! card number).
//!
//! A profile's id is the identity user id. Profiles come from two sides, in any order:
//! identity's `UserSignedUp` (consumer `customer-users`) records the name and email and
//! publishes `CustomerRegistered`; a customer's write (`PUT /api/customers/me/address`,
//! `PUT /api/customers/me/payment-method`) works before that event has arrived and
//! creates the profile without them. `GET /api/customers/me` answers 200 for any
//! verified customer, with `name` and `email` empty strings until the sign-up is known
//! (strings, never `null`, so that clients need no special case) and version 0 when
//! there is no profile at all yet.
//!
//! Every change bumps the profile's one version counter and publishes its event
//! (`CustomerRegistered`, `CustomerAddressChanged`, `PaymentMethodChanged`, each with
//! the version after the change) through the outbox, in the transaction of the change.
//! A write that changes nothing (the same address again) bumps nothing and publishes
//! nothing. The events are partial (each carries one fact), so a replica that keeps
//! several facts of a profile should keep the version per fact (e.g. the address's
//! version apart from the payment method's), applying an event when it is newer than
//! the fact it updates; `changed_at` in the address and payment-method events is the
//! "as of" of the fact.
//!
//! [`build`] makes the service from a [`CustomerConfig`]; [`Customer::router`] serves
//! the public paths as they are (`/api/customers/...`), so a gateway forwards without
//! rewriting, and `GET /internal/customers/{id}`, the live read of ordering's `sync`
//! mode: `{id, name, email, address, payment_method, version, updated_at}`, 404 for an
//! unknown customer. The internal path checks no token: it is for other services only
//! and a gateway must never route it. Every route honours the caller's time budget
//! (`Agora-Budget-Ms`, see `agora_resilience`): a spent one is answered 504 before any
//! work, and reads stop waiting when it runs out. There is no fallback route: whoever serves the
//! router adds one, so that routers can be merged. [`openapi`] documents the public
//! paths.
//!
//! What customer must never do: store, log or answer with a card number; let a caller
//! read or change another customer's profile through the public paths; read another
//! service's store.

#![forbid(unsafe_code)]

mod domain;
mod http;
mod store;
mod users;

use std::sync::Arc;

use agora_auth::{InternalKey, KeySource};
use agora_bus::SharedBus;
use agora_contracts::{UserSignedUp, bus_subject};
use agora_messaging::{Db, Outbox, SubscriberConfig};
use agora_service::Core;

pub use users::CONSUMER as USERS_CONSUMER;

/// The event source and the stream of customer's events.
pub const SOURCE: &str = "customer";

/// How customer runs. Built explicitly by the composition (the `agora` binary).
#[derive(Clone)]
pub struct CustomerConfig {
    /// Its own store: `sqlite://…` or `postgres://…`.
    pub db_url: String,
    pub bus: SharedBus,
    /// Identity's public keys, to verify tokens with.
    pub keys: Arc<dyn KeySource>,
    /// The deployment's internal-plane key: `/internal/customers/{id}` takes only a
    /// service token signed with it.
    pub internal: InternalKey,
}

impl std::fmt::Debug for CustomerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the database URL: it may hold a password.
        let backend = self.db_url.split(':').next().unwrap_or_default();
        f.debug_struct("CustomerConfig")
            .field("db", &backend)
            .finish_non_exhaustive()
    }
}

/// Why customer could not start (or a store operation failed).
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

/// The running service: its routes, its outbox relay and its consumers.
#[derive(Debug)]
pub struct Customer {
    router: axum::Router,
    core: Core,
}

impl Customer {
    /// The routes: `/api/customers/...` and `/internal/customers/{id}`.
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

/// Opens the store, applies migrations, and starts token verification, the consumer of
/// `UserSignedUp` and the outbox relay.
pub async fn build(config: CustomerConfig) -> Result<Customer, Error> {
    let mut core = Core::open(SOURCE, &config.db_url, &config.bus, store::MIGRATIONS).await?;
    let verifier = core.check_tokens(config.keys.clone()).await?;
    core.consume(
        SubscriberConfig::on_source(users::CONSUMER, "identity")
            .filter(bus_subject::<UserSignedUp>()),
        users::SignUps,
    )
    .await?;
    core.publish();
    let state = http::State {
        db: core.db().clone(),
        outbox: Outbox::new(core.db()),
        verifier,
    };
    tracing::info!("customer started");
    Ok(Customer {
        router: http::router(state, &config.internal.service(SOURCE)),
        core,
    })
}

/// The OpenAPI 3.1 document of customer's public paths (not the internal one).
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    http::ApiDoc::openapi()
}
