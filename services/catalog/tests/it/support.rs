//! Catalog's own part of the harness (`agora-service-testkit` has the rest): its
//! config.

use agora_catalog::{Catalog, CatalogConfig};
use agora_messaging::Envelope;
use agora_service_testkit::TestEnv;

pub use agora_service_testkit::Backend;
pub use agora_service_testkit::http::call;
/// One request through the router, with a token, extra headers and a raw body.
pub use agora_service_testkit::http::send_as as call_raw;

/// A store, a bus and a token issuer that outlive restarts of catalog.
pub struct Env(TestEnv);

agora_service_testkit::env_deref!(Env);

impl Env {
    /// `None` (after a loud skip) when the backend is unreachable.
    pub async fn new(backend: Backend) -> Option<Env> {
        let sources = [agora_catalog::SOURCE];
        TestEnv::new(backend, "catalog", &sources).await.map(Env)
    }

    pub fn config(&self) -> CatalogConfig {
        CatalogConfig {
            db_url: self.db_url.clone(),
            bus: self.shared_bus(),
            keys: self.issuer.keys(),
        }
    }

    pub async fn start(&self) -> Catalog {
        agora_catalog::build(self.config())
            .await
            .expect("catalog starts")
    }

    /// Every event catalog published so far (waiting until there are `at_least`).
    pub async fn events(&self, at_least: usize) -> Vec<Envelope> {
        self.published(agora_catalog::SOURCE, at_least).await
    }
}

/// A started catalog on a fresh store: `None` when the backend is unreachable.
pub async fn start(backend: Backend) -> Option<(Env, Catalog)> {
    let env = Env::new(backend).await?;
    let catalog = env.start().await;
    Some((env, catalog))
}
