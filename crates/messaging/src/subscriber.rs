//! The inbox and the subscriber runtime: each delivery is handled in the same
//! transaction that records "event processed by this consumer", so a redelivery —
//! after a crash, an ack lost, or an ack wait that ran out — changes nothing.
//!
//! A fetched batch is handled in one transaction, each delivery in a savepoint of its
//! own: a failing handler rolls back its own delivery alone, and the batch costs one
//! commit (one fsync) instead of one per event. Nothing is acked before that commit.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agora_bus::{ConsumerConfig, DeliverPolicy, Delivery, SharedBus, StreamConfig};
use async_trait::async_trait;
use futures::FutureExt;
use sqlx::{Acquire, Any, Transaction};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use crate::db::Db;
use crate::envelope::Envelope;
use crate::fault::{CrashPoint, FaultPlan};
use crate::trace::span_id_of;
use crate::{Backoff, Error};

/// The longest reason a nak or a dead letter carries; handler errors can be long.
const MAX_REASON_BYTES: usize = 512;

/// Business logic for one consumer.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Applies `envelope` inside `tx`, which commits only if this returns `Ok` (and the
    /// event was not processed before). Events to emit in response go through
    /// [`Outbox::append`](crate::Outbox::append) in the same `tx`, with
    /// [`Envelope::context_for_effects`].
    ///
    /// Use `tx` for every read and write: the store is not to be touched through
    /// another connection meanwhile (on SQLite the pool has one connection, which `tx`
    /// holds, so a second one would wait for the pool's acquire timeout).
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError>;
}

/// Why a handler failed, which decides what becomes of the message:
///
/// - [`HandlerError::transient`]: this attempt failed (e.g. a downstream service said
///   no for now): redelivered with backoff, counted, dead-lettered after the
///   consumer's max deliveries;
/// - [`HandlerError::permanent`]: retrying cannot help: dead-lettered at once;
/// - [`HandlerError::not_the_message`]: the store failed, or another worker got there
///   first (an optimistic-concurrency conflict): nothing is wrong with the message.
///   The worker backs off and tries again, holding the delivery (its ack wait kept
///   alive), so no attempt is spent and a database hiccup never dead-letters anything.
///   Database errors (`?` on sqlx) are of this kind.
#[derive(Debug)]
pub struct HandlerError {
    reason: String,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Transient,
    Permanent,
    NotTheMessage,
}

impl HandlerError {
    /// Worth retrying, and counted against the message's deliveries.
    pub fn transient(reason: impl fmt::Display) -> Self {
        Self::of(reason, Kind::Transient)
    }

    /// Retrying cannot help (e.g. the data does not fit the contract): dead-letter now.
    pub fn permanent(reason: impl fmt::Display) -> Self {
        Self::of(reason, Kind::Permanent)
    }

    /// The store or a concurrent writer, not the message: retried without spending
    /// the message's deliveries.
    pub fn not_the_message(reason: impl fmt::Display) -> Self {
        Self::of(reason, Kind::NotTheMessage)
    }

    fn of(reason: impl fmt::Display, kind: Kind) -> Self {
        Self {
            reason: reason.to_string(),
            kind,
        }
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub fn is_permanent(&self) -> bool {
        self.kind == Kind::Permanent
    }

    /// Whether the failure is the store's or a conflict's ([`HandlerError::not_the_message`]).
    pub fn is_not_the_message(&self) -> bool {
        self.kind == Kind::NotTheMessage
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for HandlerError {}

impl From<sqlx::Error> for HandlerError {
    /// The store's own failures (unreachable, busy, a serialization conflict) are
    /// [`HandlerError::not_the_message`]; an error the data caused (a constraint, a
    /// malformed value) is [`HandlerError::transient`], so that it ends in the dead
    /// letters instead of holding a worker forever.
    fn from(error: sqlx::Error) -> Self {
        let reason = format!("database: {error}");
        if is_the_stores(&error) {
            HandlerError::not_the_message(reason)
        } else {
            HandlerError::transient(reason)
        }
    }
}

/// Whether `error` is the store failing rather than the statement: connection and pool
/// failures; SQLite's busy, locked, I/O, full and can't-open codes; PostgreSQL's
/// connection (08), transaction rollback (40: serialization, deadlock), resource
/// (53), operator intervention (57) and system (58) classes.
pub fn is_the_stores(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => {
            let Some(code) = database.code() else {
                return false;
            };
            if database
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
            {
                return ["08", "40", "53", "57", "58"]
                    .iter()
                    .any(|class| code.starts_with(class));
            }
            // SQLite: the primary result code is the low byte of the extended one.
            code.parse::<u32>()
                .is_ok_and(|extended| matches!(extended & 0xff, 5 | 6 | 10 | 13 | 14))
        }
        _ => false,
    }
}

impl From<Error> for HandlerError {
    fn from(error: Error) -> Self {
        match error {
            // The event does not fit the contract this consumer knows: retrying the same
            // bytes gives the same answer.
            Error::Decode(_) | Error::WrongEventType { .. } | Error::Encode(_) => {
                HandlerError::permanent(error)
            }
            Error::Database(error) => HandlerError::from(error),
            _ => HandlerError::transient(error),
        }
    }
}

/// The record of which events each consumer has processed.
#[derive(Debug)]
pub struct Inbox;

impl Inbox {
    /// Records that `consumer` processes `event_id`, in `tx`. `false`: it was processed
    /// before, and the caller must not apply it again.
    pub async fn record(
        tx: &mut Transaction<'_, Any>,
        consumer: &str,
        event_id: Uuid,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "INSERT INTO messaging_inbox (consumer, event_id, processed_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (consumer, event_id) DO NOTHING",
        )
        .bind(consumer)
        .bind(event_id.to_string())
        .bind(crate::now_ms())
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn contains(db: &Db, consumer: &str, event_id: Uuid) -> Result<bool, Error> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT processed_at_ms FROM messaging_inbox WHERE consumer = $1 AND event_id = $2",
        )
        .bind(consumer)
        .bind(event_id.to_string())
        .fetch_optional(db.pool())
        .await?;
        Ok(found.is_some())
    }

    /// Forgets the events `consumer` processed before `before`; returns how many.
    pub async fn prune_consumer(db: &Db, consumer: &str, before: SystemTime) -> Result<u64, Error> {
        let done =
            sqlx::query("DELETE FROM messaging_inbox WHERE consumer = $1 AND processed_at_ms < $2")
                .bind(consumer)
                .bind(crate::system_time_ms(before))
                .execute(db.pool())
                .await?;
        Ok(done.rows_affected())
    }

    /// Forgets events processed before `before`; returns how many. Keep them longer
    /// than any redelivery can take (ack wait × max deliveries, plus redrives from the
    /// dead letters): an event forgotten too early would be applied twice.
    pub async fn prune(db: &Db, before: SystemTime) -> Result<u64, Error> {
        let done = sqlx::query("DELETE FROM messaging_inbox WHERE processed_at_ms < $1")
            .bind(crate::system_time_ms(before))
            .execute(db.pool())
            .await?;
        Ok(done.rows_affected())
    }
}

/// How a [`Subscriber`] consumes.
#[derive(Clone, Debug)]
pub struct SubscriberConfig {
    /// The durable consumer name; also the inbox key. Every process running the same
    /// consumer shares its messages.
    pub consumer: String,
    pub stream: String,
    /// Created (or updated) before the consumer is opened, so that a consumer may start
    /// before the producer has published anything. See [`SubscriberConfig::on_source`].
    pub create_stream: Option<StreamConfig>,
    /// Only subjects matching this pattern; every subject of the stream when `None`.
    pub filter: Option<String>,
    /// Where a new consumer starts.
    pub deliver: DeliverPolicy,
    /// Tasks fetching and handling concurrently. Deliveries are not handled in stream
    /// order across workers: handlers rely on the aggregate `version` in the data, as
    /// replicas must anyway (redeliveries reorder too).
    pub workers: usize,
    /// Deliveries fetched at once by a worker, then handled one by one.
    pub batch_size: usize,
    /// How long a fetch waits for messages; also bounds how long a clean shutdown takes.
    pub fetch_wait: Duration,
    /// A delivery not settled within this time is delivered again: it must cover a
    /// whole fetched batch.
    pub ack_wait: Duration,
    /// Deliveries after which a failing message goes to the dead letters.
    pub max_deliver: u32,
    /// The delay of the n-th redelivery after a failure.
    pub backoff: Backoff,
    /// How long this consumer remembers the events it processed (its inbox rows),
    /// swept every [`SubscriberConfig::prune_every`]. Longer than any redelivery can
    /// take, and longer than dead letters wait for a redrive: an event forgotten and
    /// then delivered again would be applied again. 7 days by default.
    pub retention: Duration,
    pub prune_every: Duration,
    pub faults: FaultPlan,
}

/// The default [`SubscriberConfig::retention`]: how long a consumer remembers what it
/// processed.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl SubscriberConfig {
    /// Defaults: 2 workers, batches of 32, 30 s ack wait, 5 deliveries, backoff from
    /// 100 ms to 30 s.
    pub fn new(consumer: impl Into<String>, stream: impl Into<String>) -> Self {
        Self {
            consumer: consumer.into(),
            stream: stream.into(),
            create_stream: None,
            filter: None,
            deliver: DeliverPolicy::All,
            workers: 2,
            batch_size: 32,
            fetch_wait: Duration::from_millis(500),
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(30)),
            retention: DEFAULT_RETENTION,
            prune_every: Duration::from_secs(3600),
            faults: FaultPlan::none(),
        }
    }

    /// A consumer of the events of the service `source`, on its stream
    /// ([`stream_config`](crate::stream_config)), which it creates if needed.
    pub fn on_source(consumer: impl Into<String>, source: &str) -> Self {
        let stream = crate::stream_config(source);
        let mut config = Self::new(consumer, stream.name.clone());
        config.create_stream = Some(stream);
        config
    }

    pub fn filter(mut self, subject_pattern: impl Into<String>) -> Self {
        self.filter = Some(subject_pattern.into());
        self
    }

    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    pub fn max_deliver(mut self, max_deliver: u32) -> Self {
        self.max_deliver = max_deliver;
        self
    }

    pub fn faults(mut self, faults: FaultPlan) -> Self {
        self.faults = faults;
        self
    }

    /// Inbox rows older than `retention` are swept every `prune_every`.
    pub fn retention(mut self, retention: Duration, prune_every: Duration) -> Self {
        self.retention = retention;
        self.prune_every = prune_every;
        self
    }

    /// The bus consumer this subscriber opens.
    pub fn consumer_config(&self) -> ConsumerConfig {
        let mut config = ConsumerConfig::new(&self.stream, &self.consumer)
            .deliver(self.deliver)
            .ack_wait(self.ack_wait)
            .max_deliver(self.max_deliver);
        if let Some(filter) = &self.filter {
            config = config.filter(filter);
        }
        config
    }
}

/// Runs a [`Handler`] on a durable consumer. See [`Subscriber::spawn`].
#[derive(Debug)]
pub struct Subscriber;

/// The running workers. Dropping it aborts them; prefer [`SubscriberHandle::shutdown`].
#[derive(Debug)]
pub struct SubscriberHandle {
    stop: watch::Sender<bool>,
    workers: JoinSet<()>,
}

impl SubscriberHandle {
    /// Lets every worker finish the delivery it is handling, then stops them. Fetched
    /// deliveries not handled yet are released for redelivery at once.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.workers.join_next().await.is_some() {}
    }

    /// Stops several subscribers at once: each is told to stop before any is waited
    /// for, so that stopping N idle subscribers takes one fetch wait, not N.
    pub async fn shutdown_all(handles: impl IntoIterator<Item = SubscriberHandle>) {
        futures::future::join_all(handles.into_iter().map(SubscriberHandle::shutdown)).await;
    }

    /// Kills the workers wherever they are, like a crash would, and waits until they
    /// are gone.
    pub async fn abort(mut self) {
        self.workers.abort_all();
        while self.workers.join_next().await.is_some() {}
    }
}

struct Worker {
    db: Db,
    handler: Arc<dyn Handler>,
    config: SubscriberConfig,
    metrics: ConsumerMetrics,
}

/// The consumer's counters and handler latency, registered once at spawn (no label is
/// built per delivery). The `service` label is the consumer name's prefix
/// (`<service>-<what>`).
struct ConsumerMetrics {
    acked: metrics::Counter,
    duplicate: metrics::Counter,
    retried: metrics::Counter,
    dead_lettered: metrics::Counter,
    redeliveries: metrics::Counter,
    dead_letters: metrics::Counter,
    handler_duration: metrics::Histogram,
}

impl ConsumerMetrics {
    fn new(consumer: &str) -> Self {
        use agora_telemetry::names;
        let service = agora_telemetry::service_of_consumer(consumer).to_owned();
        let labels = [("service", service), ("consumer", consumer.to_owned())];
        let delivered = |outcome: &'static str| {
            let mut labels: Vec<metrics::Label> = labels.iter().map(metrics::Label::from).collect();
            labels.push(metrics::Label::new("outcome", outcome));
            metrics::counter!(names::CONSUMER_DELIVERIES, labels)
        };
        Self {
            acked: delivered("acked"),
            duplicate: delivered("duplicate"),
            retried: delivered("retried"),
            dead_lettered: delivered("dead_lettered"),
            redeliveries: metrics::counter!(names::CONSUMER_REDELIVERIES, &labels),
            dead_letters: metrics::counter!(names::CONSUMER_DEAD_LETTERS, &labels),
            handler_duration: metrics::histogram!(names::CONSUMER_HANDLER_DURATION, &labels),
        }
    }

    /// A delivery given back to the bus: retried, or dead-lettered if it was its last.
    fn failed(&self, deliveries: u32, max_deliver: u32, permanent: bool) {
        if permanent || deliveries >= max_deliver {
            self.dead_lettered.increment(1);
            self.dead_letters.increment(1);
        } else {
            self.retried.increment(1);
        }
    }
}

impl Subscriber {
    /// Opens (or creates) the durable consumer and starts `config.workers` tasks on it.
    /// The stream must exist; the store must have the messaging tables
    /// ([`Db::migrate_messaging`]).
    pub async fn spawn(
        db: &Db,
        bus: &SharedBus,
        config: SubscriberConfig,
        handler: impl Handler,
    ) -> Result<SubscriberHandle, Error> {
        if config.workers == 0 || config.batch_size == 0 {
            return Err(Error::Config(
                "a subscriber needs at least one worker and a batch size of at least 1".into(),
            ));
        }
        if let Some(stream) = &config.create_stream {
            bus.ensure_stream(stream).await?;
        }
        let consumer = bus.consumer(&config.consumer_config()).await?;
        let (stop, stopped) = watch::channel(false);
        let worker = Arc::new(Worker {
            db: db.clone(),
            handler: Arc::new(handler),
            metrics: ConsumerMetrics::new(&config.consumer),
            config,
        });
        let mut workers = JoinSet::new();
        for index in 0..worker.config.workers {
            let span = tracing::info_span!(
                "subscriber",
                consumer = %worker.config.consumer,
                worker = index
            );
            workers.spawn(
                worker_loop(worker.clone(), consumer.clone(), stopped.clone()).instrument(span),
            );
        }
        workers.spawn(prune_loop(worker.clone(), stopped));
        Ok(SubscriberHandle { stop, workers })
    }
}

async fn worker_loop(
    worker: Arc<Worker>,
    consumer: Arc<dyn agora_bus::Consumer>,
    stopped: watch::Receiver<bool>,
) {
    let config = &worker.config;
    let mut failures: u32 = 0;
    // A fetch is never cancelled half-way (the messages it takes would wait a whole ack
    // wait before redelivery): shutdown is checked between fetches instead.
    while !*stopped.borrow() {
        let batch = match consumer.fetch(config.batch_size, config.fetch_wait).await {
            Ok(batch) => {
                failures = 0;
                batch
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = config.backoff.delay(failures);
                tracing::warn!(%error, ?delay, "fetch failed; retrying");
                let mut stopped = stopped.clone();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stopped.wait_for(|stop| *stop) => {}
                }
                continue;
            }
        };
        if !batch.is_empty() {
            worker.process(batch, &stopped).await;
        }
    }
}

/// Forgets this consumer's processed events older than its retention, at start and
/// every `prune_every`.
async fn prune_loop(worker: Arc<Worker>, mut stopped: watch::Receiver<bool>) {
    let config = &worker.config;
    loop {
        let before = SystemTime::now()
            .checked_sub(config.retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        match Inbox::prune_consumer(&worker.db, &config.consumer, before).await {
            Ok(0) => {}
            Ok(pruned) => {
                tracing::info!(consumer = %config.consumer, pruned, "inbox rows past retention forgotten")
            }
            Err(error) => {
                tracing::warn!(consumer = %config.consumer, %error, "inbox pruning failed; will try again")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.prune_every) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

enum Outcome {
    Applied,
    Duplicate,
}

impl Worker {
    /// Handles a fetched batch: decodes it, applies what decodes in one transaction,
    /// then settles every delivery.
    ///
    /// Deliveries that failed because of the store or a conflict
    /// ([`HandlerError::not_the_message`]) are held and tried again with backoff, as
    /// long as it takes, without being settled: no attempt of theirs is spent.
    async fn process(&self, batch: Vec<Delivery>, stopped: &watch::Receiver<bool>) {
        let config = &self.config;
        let mut decoded = Vec::with_capacity(batch.len());
        for delivery in batch {
            if delivery.deliveries > 1 {
                self.metrics.redeliveries.increment(1);
            }
            match Envelope::from_json(&delivery.payload) {
                Ok(envelope) => {
                    // One span per delivery, its handling and its settling; a child of
                    // the producer's context in the envelope.
                    let span = span_of(&delivery, Some(&envelope));
                    decoded.push((delivery, envelope, span));
                }
                Err(error) => {
                    // Never crash on bad bytes: retry like any failure (a newer build of
                    // this consumer may read them), then the bus dead-letters them.
                    let span = span_of(&delivery, None);
                    let delay = config.backoff.delay(delivery.deliveries);
                    self.metrics
                        .failed(delivery.deliveries, config.max_deliver, false);
                    async {
                        tracing::warn!(%error, "undecodable delivery");
                        if let Err(error) = delivery.nak(delay, "undecodable").await {
                            tracing::warn!(%error, "nak failed; the message returns after the ack wait");
                        }
                    }
                    .instrument(span)
                    .await;
                }
            }
        }
        let mut held = decoded;
        let mut attempt: u32 = 0;
        while !held.is_empty() {
            let outcomes = match self.apply_in_time(&held).await {
                Ok(outcomes) => outcomes,
                // Nothing of the batch is committed: every delivery shares its fate.
                Err(error) => held
                    .iter()
                    .map(|_| Err(HandlerError::of(error.reason(), error.kind)))
                    .collect(),
            };
            if outcomes.iter().any(Result::is_ok) {
                config.faults.checkpoint(CrashPoint::CommitBeforeAck).await;
            }
            let mut again = Vec::new();
            for ((delivery, envelope, span), outcome) in held.into_iter().zip(outcomes) {
                match outcome {
                    Err(error) if error.is_not_the_message() => {
                        again.push((delivery, envelope, span, error));
                    }
                    outcome => {
                        if outcome.is_err() {
                            agora_telemetry::trace::record_error(&span);
                        }
                        self.settle(delivery, outcome).instrument(span).await;
                    }
                }
            }
            if again.is_empty() {
                return;
            }
            attempt = attempt.saturating_add(1);
            let delay = config.backoff.delay(attempt);
            tracing::warn!(
                reason = truncate(again[0].3.reason(), MAX_REASON_BYTES),
                deliveries = again.len(),
                ?delay,
                "the store failed or another worker got there first; holding the deliveries and trying again"
            );
            held = again.into_iter().map(|(d, e, s, _)| (d, e, s)).collect();
            if !self.hold(&held, delay, stopped).await {
                // Shutting down: unsettled, they come back after their ack wait.
                return;
            }
        }
    }

    /// [`Worker::apply`], telling the bus every third of the ack wait that the batch is
    /// still being worked on: a batch that takes longer than the ack wait (slow
    /// handlers, a slow store) is not delivered again to another worker meanwhile.
    async fn apply_in_time(
        &self,
        batch: &[(Delivery, Envelope, tracing::Span)],
    ) -> Result<Vec<Result<Outcome, HandlerError>>, HandlerError> {
        let tick = (self.config.ack_wait / 3).max(Duration::from_millis(1));
        let work = self.apply(batch);
        tokio::pin!(work);
        loop {
            tokio::select! {
                outcomes = &mut work => return outcomes,
                _ = tokio::time::sleep(tick) => keep_alive(batch).await,
            }
        }
    }

    /// Waits `delay` while keeping `held` from being delivered again (their ack wait
    /// restarted at least every third of it). `false` if the subscriber is stopping.
    async fn hold(
        &self,
        held: &[(Delivery, Envelope, tracing::Span)],
        delay: Duration,
        stopped: &watch::Receiver<bool>,
    ) -> bool {
        let tick = (self.config.ack_wait / 3).max(Duration::from_millis(1));
        let until = tokio::time::Instant::now() + delay;
        loop {
            keep_alive(held).await;
            let now = tokio::time::Instant::now();
            if now >= until {
                return true;
            }
            let mut stopped = stopped.clone();
            tokio::select! {
                _ = tokio::time::sleep((until - now).min(tick)) => {}
                _ = stopped.wait_for(|stop| *stop) => return false,
            }
        }
    }

    /// The transaction: for each delivery, in a savepoint, the inbox record and the
    /// handler; then one commit. A delivery whose handler fails (or panics) is rolled
    /// back to its savepoint and the others go on.
    ///
    /// A batch of one (what a consumer fetches whenever it keeps up) needs no
    /// savepoint: the transaction is the delivery's, and it is rolled back whole when
    /// the delivery is not applied. Two statements fewer per event.
    async fn apply(
        &self,
        decoded: &[(Delivery, Envelope, tracing::Span)],
    ) -> Result<Vec<Result<Outcome, HandlerError>>, HandlerError> {
        let config = &self.config;
        let mut tx = self.db.begin().await?;
        let alone = decoded.len() == 1;
        let mut outcomes = Vec::with_capacity(decoded.len());
        for (_, envelope, span) in decoded {
            config.faults.checkpoint(CrashPoint::BeforeHandle).await;
            let started = tokio::time::Instant::now();
            let work = async {
                if alone {
                    self.apply_alone(&mut tx, envelope).await
                } else {
                    self.apply_one(&mut tx, envelope).await
                }
            };
            let outcome = AssertUnwindSafe(work)
                .catch_unwind()
                .instrument(span.clone())
                .await
                .unwrap_or_else(|_| Err(HandlerError::transient("the handler panicked")));
            self.metrics
                .handler_duration
                .record(started.elapsed().as_secs_f64());
            outcomes.push(outcome);
        }
        if alone && !matches!(outcomes[..], [Ok(Outcome::Applied)]) {
            tx.rollback().await?;
            return Ok(outcomes);
        }
        config
            .faults
            .checkpoint(CrashPoint::HandlerBeforeCommit)
            .await;
        if config.faults.commit_fails() {
            tx.rollback().await?;
            return Err(HandlerError::not_the_message("injected commit failure"));
        }
        tx.commit().await?;
        // The handlers may have appended events to the outbox.
        self.db.wake_relay();
        Ok(outcomes)
    }

    /// The only delivery of a batch, straight in the batch's transaction, which the
    /// caller rolls back unless this returns [`Outcome::Applied`].
    async fn apply_alone(
        &self,
        tx: &mut Transaction<'static, Any>,
        envelope: &Envelope,
    ) -> Result<Outcome, HandlerError> {
        if !Inbox::record(tx, &self.config.consumer, envelope.id).await? {
            return Ok(Outcome::Duplicate);
        }
        self.handler.handle(tx, envelope).await?;
        Ok(Outcome::Applied)
    }

    /// One delivery inside the batch's transaction, in a savepoint: dropping it on any
    /// error (or unwinding) rolls back this delivery's changes only.
    async fn apply_one(
        &self,
        tx: &mut Transaction<'static, Any>,
        envelope: &Envelope,
    ) -> Result<Outcome, HandlerError> {
        let mut savepoint = (&mut **tx).begin().await?;
        if !Inbox::record(&mut savepoint, &self.config.consumer, envelope.id).await? {
            savepoint.rollback().await?;
            return Ok(Outcome::Duplicate);
        }
        if let Err(error) = self.handler.handle(&mut savepoint, envelope).await {
            savepoint.rollback().await?;
            return Err(error);
        }
        savepoint.commit().await?;
        Ok(Outcome::Applied)
    }

    async fn settle(&self, delivery: Delivery, outcome: Result<Outcome, HandlerError>) {
        let settled = match outcome {
            Ok(outcome) => {
                match outcome {
                    Outcome::Applied => {
                        self.metrics.acked.increment(1);
                        tracing::debug!("handled")
                    }
                    Outcome::Duplicate => {
                        self.metrics.duplicate.increment(1);
                        tracing::debug!("already processed; acking the redelivery")
                    }
                }
                delivery.ack().await
            }
            Err(error) => {
                let reason = truncate(error.reason(), MAX_REASON_BYTES);
                self.metrics.failed(
                    delivery.deliveries,
                    self.config.max_deliver,
                    error.is_permanent(),
                );
                if error.is_permanent() {
                    tracing::warn!(reason, "handler failed permanently; dead-lettering");
                    delivery.term(reason).await
                } else {
                    let delay = self.config.backoff.delay(delivery.deliveries);
                    tracing::warn!(reason, ?delay, "handler failed; will retry");
                    delivery.nak(delay, reason).await
                }
            }
        };
        if let Err(error) = settled {
            // Effects are committed (or rolled back) already; the message comes back
            // after the ack wait and the inbox makes it a no-op.
            tracing::warn!(%error, "settling the delivery failed");
        }
    }
}

/// Restarts the ack wait of every delivery of `batch` (still being worked on).
async fn keep_alive(batch: &[(Delivery, Envelope, tracing::Span)]) {
    for (delivery, _, _) in batch {
        if let Err(error) = delivery.progress().await {
            tracing::warn!(%error, "cannot extend the ack wait; the message may come back");
        }
    }
}

/// The span of a delivery's handling ([`agora_telemetry::trace::consumer_span`]): a
/// child of the producer's context the envelope carries, current while the handler
/// runs (so the events it writes are its children) and while the delivery is settled.
/// Its logs carry its ids; without a tracer, the envelope's trace id and a span id of
/// this delivery's (another for each redelivery).
fn span_of(delivery: &Delivery, envelope: Option<&Envelope>) -> tracing::Span {
    agora_telemetry::trace::consumer_span(
        agora_telemetry::trace::Delivery {
            consumer: &delivery.consumer,
            subject: &delivery.subject,
            message_id: &delivery.message_id,
            deliveries: u64::from(delivery.deliveries),
            event_type: envelope.map(|e| e.event_type.as_str()),
            correlation_id: envelope.map(|e| e.correlation_id.as_str()),
            traceparent: envelope.and_then(|e| e.traceparent.as_deref()),
        },
        || span_id_of((&delivery.message_id, delivery.deliveries)),
    )
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stores_failures_are_not_the_messages_and_the_datas_are() {
        for error in [sqlx::Error::PoolTimedOut, sqlx::Error::PoolClosed] {
            assert!(HandlerError::from(error).is_not_the_message());
        }
        for error in [
            sqlx::Error::RowNotFound,
            sqlx::Error::ColumnNotFound("x".into()),
        ] {
            let error = HandlerError::from(error);
            assert!(!error.is_not_the_message() && !error.is_permanent());
        }
        assert!(HandlerError::from(Error::Decode("bad".into())).is_permanent());
        assert!(
            HandlerError::from(Error::Database(sqlx::Error::PoolTimedOut)).is_not_the_message()
        );
    }

    #[tokio::test]
    async fn sqlite_busy_is_the_stores_and_a_constraint_the_datas() {
        let db = Db::connect("sqlite::memory:").await.expect("db");
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .execute(db.pool())
            .await
            .expect("table");
        sqlx::query("INSERT INTO t (id) VALUES (1)")
            .execute(db.pool())
            .await
            .expect("row");
        let duplicate = sqlx::query("INSERT INTO t (id) VALUES (1)")
            .execute(db.pool())
            .await
            .expect_err("a unique violation");
        assert!(!HandlerError::from(duplicate).is_not_the_message());
    }
}
