//! What every service's start and stop share, so that its `lib.rs` is about its
//! domain: a [`Core`] opens the service's own store and applies its migrations, checks
//! tokens, runs its consumers and the relay of its outbox, and stops them in the right
//! order.
//!
//! ```ignore
//! let mut core = Core::open(SOURCE, &config.db_url, &config.bus, store::MIGRATIONS).await?;
//! let verifier = core.check_tokens(config.keys.clone()).await?;
//! core.consume(orders_subscriber_config(), events::ReserveOnAcceptance).await?;
//! core.publish();
//! ```
//!
//! What it must never do: hold anything of another service, or decide anything a
//! service's own code should (what to consume, what to answer).

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use agora_auth::{KeySource, ServiceAuth, Verifier};
use agora_bus::SharedBus;
use agora_httpkit::Problem;
use agora_messaging::{
    Db, Handler, Migration, Relay, RelayConfig, RelayHandle, Subscriber, SubscriberConfig,
    SubscriberHandle, stream_config,
};

/// How long a client is asked to wait when the store cannot answer.
pub const STORE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The answer to a request that failed inside `service` with `error`: a 503 with
/// `Retry-After` when the store could not answer (unreachable, restarting, busy: the
/// request may well succeed in a moment), else a 500. The cause goes to the log, never
/// to the client.
pub fn internal_problem(service: &str, error: &(dyn std::error::Error + 'static)) -> Problem {
    if agora_messaging::is_store_failure(error) {
        tracing::warn!(%service, %error, "the store cannot answer");
        Problem::service_unavailable(STORE_RETRY_AFTER)
    } else {
        tracing::error!(%service, %error, "request failed");
        Problem::internal()
    }
}

/// A service's store, token checking, consumers and relay. Stop it with
/// [`Core::shutdown`]; dropping it aborts its consumers and relay where they are.
pub struct Core {
    source: &'static str,
    db: Db,
    bus: SharedBus,
    auth: Option<ServiceAuth>,
    consumers: Vec<SubscriberHandle>,
    relay: Option<RelayHandle>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("source", &self.source)
            .field("consumers", &self.consumers.len())
            .field("publishes", &self.relay.is_some())
            .finish_non_exhaustive()
    }
}

impl Core {
    /// Opens `source`'s own store at `db_url` (`sqlite://…` or `postgres://…`) and
    /// applies the messaging tables' migrations, then its own.
    pub async fn open(
        source: &'static str,
        db_url: &str,
        bus: &SharedBus,
        migrations: &[Migration],
    ) -> Result<Core, agora_messaging::Error> {
        let db = Db::connect(db_url).await?;
        db.migrate_messaging().await?;
        db.migrate(source, migrations).await?;
        Ok(Core {
            source,
            db,
            bus: bus.clone(),
            auth: None,
            consumers: Vec::new(),
            relay: None,
        })
    }

    /// Starts checking tokens: identity's keys from `keys`, revocations from its
    /// stream ([`ServiceAuth`]). Returns the verifier for the service's routes.
    pub async fn check_tokens(
        &mut self,
        keys: Arc<dyn KeySource>,
    ) -> Result<Verifier, agora_auth::Error> {
        let auth = ServiceAuth::start(self.source, &self.db, &self.bus, keys).await?;
        let verifier = auth.verifier().clone();
        self.auth = Some(auth);
        Ok(verifier)
    }

    /// Starts a consumer of the bus that handles each delivery with `handler` in a
    /// transaction of this store.
    pub async fn consume(
        &mut self,
        config: SubscriberConfig,
        handler: impl Handler,
    ) -> Result<(), agora_messaging::Error> {
        let consumer = Subscriber::spawn(&self.db, &self.bus, config, handler).await?;
        self.consumers.push(consumer);
        Ok(())
    }

    /// Starts the relay that publishes the outbox to the service's own stream.
    pub fn publish(&mut self) {
        self.relay = Some(Relay::spawn(
            &self.db,
            self.bus.clone(),
            RelayConfig {
                streams: vec![stream_config(self.source)],
                ..RelayConfig::default()
            },
        ));
    }

    /// The service's own store.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The bus, as the service was given it.
    pub fn bus(&self) -> &SharedBus {
        &self.bus
    }

    /// Stops the consumers (each lets its handlers finish their batch) and token
    /// checking side by side, then the relay: events committed but not yet published
    /// are published by the next start.
    pub async fn shutdown(self) {
        self.shutdown_with(async {}).await;
    }

    /// As [`Core::shutdown`], stopping `also` (the service's own tasks: a timer, a
    /// sweeper) beside the consumers, before the relay.
    pub async fn shutdown_with(self, also: impl Future<Output = ()>) {
        let auth = async {
            if let Some(auth) = self.auth {
                auth.shutdown().await;
            }
        };
        tokio::join!(SubscriberHandle::shutdown_all(self.consumers), auth, also);
        if let Some(relay) = self.relay {
            relay.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use agora_httpkit::Problem;

    use super::*;

    /// A service's error wrapping the store's, as each service's `Error` does.
    #[derive(Debug, thiserror::Error)]
    enum ServiceError {
        #[error("store: {0}")]
        Messaging(#[from] agora_messaging::Error),
        #[error("database: {0}")]
        Database(#[from] sqlx::Error),
        #[error("stored {0} is corrupt")]
        Corrupt(&'static str),
    }

    fn status(problem: &Problem) -> u16 {
        problem.status_code().as_u16()
    }

    #[tokio::test]
    async fn a_store_that_cannot_answer_is_a_503_anything_else_a_500() {
        let dir = std::env::temp_dir().join(format!("agora-service-{}", std::process::id()));
        let url = format!("sqlite://{}/store.db", dir.display());
        let db = Db::connect(&url).await.expect("connect");
        let statement = sqlx::query("SELECT nothing FROM nowhere")
            .execute(db.pool())
            .await
            .expect_err("no such table");
        db.pool().close().await;
        let closed = db.begin().await.expect_err("closed");
        let _ = std::fs::remove_dir_all(&dir);

        let unavailable = internal_problem("test", &ServiceError::Messaging(closed));
        assert_eq!(status(&unavailable), 503);
        assert_eq!(unavailable.retry_after, Some(STORE_RETRY_AFTER));
        let pool_closed = ServiceError::Database(sqlx::Error::PoolClosed);
        assert_eq!(status(&internal_problem("test", &pool_closed)), 503);

        assert_eq!(
            status(&internal_problem(
                "test",
                &ServiceError::Database(statement)
            )),
            500,
            "a statement the store refused is the request's fault"
        );
        assert_eq!(
            status(&internal_problem("test", &ServiceError::Corrupt("row"))),
            500
        );
    }
}
