//! Catalog, Agora's master of product data: name, description and an optional image
//! URL. Prices belong to ordering and stock to inventory; catalog knows neither.
//!
//! Admins add, replace and delete products; anyone lists and reads them. Every change
//! bumps the product's version and publishes its event (`ProductAdded`,
//! `ProductUpdated`, `ProductDeleted`) through the outbox, in the transaction of the
//! change, so replicas (ordering's, notification's product names) converge. A deleted
//! product stays as a tombstone: it is no longer served, and its id is never reused.
//!
//! [`build`] makes the service from a [`CatalogConfig`]; [`Catalog::router`] serves the
//! public paths as they are (`/api/catalog/...`), without a fallback route;
//! [`openapi`] describes them. [`demo_products`] are the demo shop's products, with
//! fixed ids that other services' demo data name; [`Catalog::seed_demo`] adds them to
//! an empty catalog.
//!
//! What catalog must never do: serve a deleted product, publish an event that does
//! not match a committed change, or read another service's store.

#![forbid(unsafe_code)]

mod demo;
mod domain;
mod http;
mod store;

use std::sync::Arc;

use agora_auth::KeySource;
use agora_bus::SharedBus;
use agora_messaging::{Db, Outbox};
use agora_service::Core;

pub use demo::{DEMO_CURRENCY, DemoProduct, demo_products};
pub use domain::{Description, ImageUrl, Invalid, ProductName};

/// The event source and the stream of catalog's events.
pub const SOURCE: &str = "catalog";

/// How catalog runs. Built explicitly by the composition (the `agora` binary).
#[derive(Clone)]
pub struct CatalogConfig {
    /// Its own store: `sqlite://…` or `postgres://…`.
    pub db_url: String,
    pub bus: SharedBus,
    /// Identity's public keys, to verify admins' tokens.
    pub keys: Arc<dyn KeySource>,
}

impl std::fmt::Debug for CatalogConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the database URL: it may hold a password.
        f.debug_struct("CatalogConfig").finish_non_exhaustive()
    }
}

/// Why catalog could not start (or a store operation failed).
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

/// The running service: its routes, its outbox relay and its token checking.
#[derive(Debug)]
pub struct Catalog {
    router: axum::Router,
    core: Core,
    outbox: Outbox,
}

impl Catalog {
    /// The routes, under `/api/catalog`.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// Its store, for tools and tests.
    pub fn db(&self) -> &Db {
        self.core.db()
    }

    /// Adds the [`demo_products`] (each with its `ProductAdded`) if the catalog has
    /// never held a product; the number added (0 otherwise). Safe to call on every
    /// start, and from several processes at once.
    pub async fn seed_demo(&self) -> Result<usize, Error> {
        let added = store::seed(self.core.db(), &self.outbox, &demo_products()).await?;
        if added > 0 {
            tracing::info!(added, "demo products added");
        }
        Ok(added)
    }

    /// Stops the outbox relay and the revocation consumer (events committed but not
    /// yet published are published by the next start).
    pub async fn shutdown(self) {
        self.core.shutdown().await;
    }
}

/// Opens the store, applies migrations, starts token checking and the outbox relay.
pub async fn build(config: CatalogConfig) -> Result<Catalog, Error> {
    let mut core = Core::open(SOURCE, &config.db_url, &config.bus, store::MIGRATIONS).await?;
    let verifier = core.check_tokens(config.keys.clone()).await?;
    core.publish();
    let outbox = Outbox::new(core.db());
    let state = http::State {
        db: core.db().clone(),
        outbox: outbox.clone(),
        verifier,
    };
    tracing::info!("catalog started");
    Ok(Catalog {
        router: http::router(state),
        core,
        outbox,
    })
}

/// The OpenAPI 3.1 description of catalog's public paths.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <http::ApiDoc as utoipa::OpenApi>::openapi()
}
