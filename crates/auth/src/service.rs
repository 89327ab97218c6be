//! Token checking as a service wires it: a [`Verifier`] on identity's JWKS, and the
//! feeds of `PasswordChanged` and `UserSignedOut` that keep its revocations current.
//!
//! Every instance of a service must learn every revocation, so each one reads identity's
//! revoking events through consumers of its own (`<service>-revocations-<instance>`,
//! `<service>-sign-outs-<instance>`), not through a consumer group whose messages its
//! instances would share. Those consumers start [`REPLAY`] back in time, which is all a
//! starting instance needs (older revocations only refuse expired tokens); they are
//! deleted at shutdown, and by the bus after [`INACTIVE_THRESHOLD`] when their instance
//! died without a shutdown, so they never pile up.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agora_bus::{BusError, Consumer, ConsumerConfig, DeliverPolicy, Delivery, SharedBus};
use agora_contracts::{PasswordChanged, UserSignedOut, bus_subject};
use agora_messaging::{Backoff, Db, Envelope, stream_config};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::revocation::{MIGRATION_COMPONENT, MIGRATIONS, REPLAY};
use crate::{Error, KeySource, Revocations, Verifier, VerifierConfig};

/// How long after its instance stopped fetching the bus deletes a revocation consumer.
/// An instance that fetches again after that (it was cut off from the bus that long)
/// opens it again, replaying from [`REPLAY`] back: nothing is missed.
pub const INACTIVE_THRESHOLD: Duration = Duration::from_secs(120);

/// Deliveries fetched at once.
const BATCH: usize = 256;
/// How long a stopping instance waits for the bus to delete its consumers.
const DELETE_WAIT: Duration = Duration::from_secs(2);
/// How long a fetch waits; also bounds how long a shutdown takes.
const FETCH_WAIT: Duration = Duration::from_millis(500);

/// What a service that checks tokens runs: its [`Verifier`] (put it in the router
/// state) and the feeds that keep its revocations current.
pub struct ServiceAuth {
    verifier: Verifier,
    bus: SharedBus,
    feeds: Vec<ConsumerConfig>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl ServiceAuth {
    /// Fetches the keys from `keys` (a service still starts when identity is
    /// unreachable), opens this instance's two consumers on identity's stream, each
    /// filtered to its one event type (so that the many sign-ins on the stream cost them
    /// nothing), and returns once both have replayed what the stream held at the start:
    /// a new instance refuses every token revoked before it started.
    ///
    /// `db` is the service's store: revocations are not kept there, but stores of older
    /// versions had tables for them, which this drops.
    pub async fn start(
        service: &str,
        db: &Db,
        bus: &SharedBus,
        keys: impl KeySource,
    ) -> Result<Self, Error> {
        db.migrate(MIGRATION_COMPONENT, MIGRATIONS)
            .await
            .map_err(|e| Error::Store(e.to_string()))?;
        let revocations = Revocations::new();
        let verifier = Verifier::start(keys, revocations.clone(), VerifierConfig::default()).await;
        let instance = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        let feeds = vec![
            feed_config(
                format!("{service}-revocations-{instance}"),
                bus_subject::<PasswordChanged>(),
            ),
            feed_config(
                format!("{service}-sign-outs-{instance}"),
                bus_subject::<UserSignedOut>(),
            ),
        ];
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for config in &feeds {
            let feed = Feed {
                bus: bus.clone(),
                config: config.clone(),
                revocations: revocations.clone(),
            };
            let consumer = feed.catch_up().await.map_err(bus_error)?;
            tasks.spawn(feed.run(consumer, stopped.clone()));
        }
        Ok(Self {
            verifier,
            bus: bus.clone(),
            feeds,
            stop,
            tasks,
        })
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Stops the feeds and deletes this instance's consumers, side by side and giving
    /// up after [`DELETE_WAIT`]: a bus that cannot answer deletes them itself once they
    /// are inactive, so a stopping instance does not wait for it.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        let mut deletes = JoinSet::new();
        for config in self.feeds.iter().cloned() {
            let bus = self.bus.clone();
            deletes.spawn(async move {
                let deleted =
                    tokio::time::timeout(DELETE_WAIT, bus.delete_consumer(&config.stream, &config.name))
                        .await;
                match deleted {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(%error, consumer = %config.name, "revocation consumer not deleted; the bus will")
                    }
                    Err(_) => {
                        tracing::warn!(consumer = %config.name, "the bus did not answer; it deletes the revocation consumer itself")
                    }
                }
            });
        }
        while deletes.join_next().await.is_some() {}
    }
}

impl std::fmt::Debug for ServiceAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAuth")
            .field("feeds", &self.feeds)
            .finish_non_exhaustive()
    }
}

fn bus_error(error: BusError) -> Error {
    Error::Store(format!("revocation feed: {error}"))
}

/// One of this instance's consumers of identity's stream. Its start is computed anew
/// each time it is opened.
fn feed_config(name: String, subject: String) -> ConsumerConfig {
    ConsumerConfig::new(stream_config("identity").name, name)
        .filter(subject)
        .inactive_threshold(INACTIVE_THRESHOLD)
}

/// Applies one consumer's revoking events to the instance's revocations.
struct Feed {
    bus: SharedBus,
    config: ConsumerConfig,
    revocations: Revocations,
}

impl Feed {
    /// Opens the consumer (creating it, [`REPLAY`] back from now, if it is gone).
    async fn open(&self) -> Result<Arc<dyn Consumer>, BusError> {
        let since = SystemTime::now()
            .checked_sub(REPLAY)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        self.bus.ensure_stream(&stream_config("identity")).await?;
        self.bus
            .consumer(&self.config.clone().deliver(DeliverPolicy::FromTime(since)))
            .await
    }

    /// Opens the consumer and applies what the stream holds now.
    async fn catch_up(&self) -> Result<Arc<dyn Consumer>, BusError> {
        let consumer = self.open().await?;
        let last = self.bus.last_sequence(&self.config.stream).await?;
        let mut reached = 0;
        while reached < last && consumer.info().await?.pending > 0 {
            for delivery in consumer.fetch(BATCH, FETCH_WAIT).await? {
                reached = reached.max(delivery.stream_sequence);
                self.apply(delivery).await;
            }
        }
        Ok(consumer)
    }

    /// Applies deliveries until stopped; a failing consumer (the bus unreachable, the
    /// consumer deleted while this instance was cut off) is opened again after a pause.
    async fn run(self, mut consumer: Arc<dyn Consumer>, mut stopped: watch::Receiver<bool>) {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut failures = 0;
        while !*stopped.borrow() {
            let batch = match consumer.fetch(BATCH, FETCH_WAIT).await {
                Ok(batch) => batch,
                Err(error) => {
                    failures += 1;
                    let delay = backoff.delay(failures);
                    tracing::warn!(%error, consumer = %self.config.name, ?delay, "revocation feed failed; reopening");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stopped.wait_for(|stop| *stop) => return,
                    }
                    match self.open().await {
                        Ok(reopened) => consumer = reopened,
                        Err(error) => tracing::warn!(%error, "revocation consumer not reopened"),
                    }
                    continue;
                }
            };
            failures = 0;
            for delivery in batch {
                self.apply(delivery).await;
            }
        }
    }

    /// Applies one delivery and acks it. One that cannot be read is acked all the
    /// same: retrying the same bytes gives the same answer.
    async fn apply(&self, delivery: Delivery) {
        let applied = Envelope::from_json(&delivery.payload)
            .and_then(|envelope| self.revocations.apply(&envelope));
        if let Err(error) = applied {
            tracing::warn!(%error, message_id = %delivery.message_id, "unreadable revoking event skipped");
        }
        if let Err(error) = delivery.ack().await {
            tracing::debug!(%error, "ack lost; the event comes again, which changes nothing");
        }
    }
}
