//! The transactional outbox and the relay that publishes it.
//!
//! An event is appended in the same transaction as the business change it describes, so
//! both commit or neither does. The relay then publishes committed rows, oldest
//! position first, at least once, with the event id as the bus message id: the bus
//! deduplicates a row published again after a crash between "published" and "marked".

use std::time::{Duration, SystemTime};

use agora_bus::{Headers, OutgoingMessage, SharedBus, StreamConfig};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, AssertSqlSafe, Row, Transaction};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::db::{Backend, Db};
use crate::envelope::Envelope;
use crate::fault::{CrashPoint, FaultPlan};
use crate::{Backoff, Error};

/// Appends events in the caller's transaction and wakes the relay on commit.
#[derive(Clone, Debug)]
pub struct Outbox {
    db: Db,
}

impl Outbox {
    pub fn new(db: &Db) -> Outbox {
        Outbox { db: db.clone() }
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// Writes `envelope` in `tx`: it is published only if `tx` commits. Refuses (before
    /// anything is written) an envelope the bus would refuse, so that no row can block
    /// the relay forever.
    pub async fn append(tx: &mut Transaction<'_, Any>, envelope: &Envelope) -> Result<(), Error> {
        let message = envelope.to_message()?;
        let headers =
            serde_json::to_string(&message.headers).map_err(|e| Error::Encode(e.to_string()))?;
        let payload = String::from_utf8(message.payload.to_vec())
            .map_err(|e| Error::Encode(e.to_string()))?;
        sqlx::query(
            "INSERT INTO messaging_outbox (event_id, subject, headers, payload, created_at_ms)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(message.id)
        .bind(message.subject)
        .bind(headers)
        .bind(payload)
        .bind(crate::now_ms())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Commits `tx` and wakes the relay of this process.
    pub async fn commit(&self, tx: Transaction<'_, Any>) -> Result<(), Error> {
        tx.commit().await?;
        self.db.wake_relay();
        Ok(())
    }

    /// Wakes the relay, e.g. after a commit made without [`Outbox::commit`].
    pub fn wake(&self) {
        self.db.wake_relay();
    }

    /// How many committed events wait for the relay.
    pub async fn unpublished(&self) -> Result<u64, Error> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messaging_outbox WHERE published_at_ms IS NULL",
        )
        .fetch_one(self.db.pool())
        .await?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    /// Deletes rows published before `before`; returns how many. Unpublished rows are
    /// never deleted.
    pub async fn prune_published(&self, before: SystemTime) -> Result<u64, Error> {
        let done = sqlx::query(
            "DELETE FROM messaging_outbox
             WHERE published_at_ms IS NOT NULL AND published_at_ms < $1",
        )
        .bind(crate::system_time_ms(before))
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected())
    }
}

/// How a [`Relay`] runs.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Rows per `publish_batch`.
    pub batch_size: usize,
    /// The safety net: how often to look for rows committed by writers that cannot
    /// wake this relay (other processes, or commits without [`Outbox::commit`]).
    pub poll_interval: Duration,
    /// After a bus or database failure, the wait before the next try.
    pub backoff: Backoff,
    /// Streams created (or updated) before the first publish, e.g.
    /// [`stream_config`](crate::stream_config)`(source)`.
    pub streams: Vec<StreamConfig>,
    /// Published rows older than this are deleted, every `prune_every`. `None` (the
    /// default): published events are kept, as the store's event feed
    /// ([`Outbox::feed`]), which is what lets a consumer catch up with more history than
    /// a bus stream keeps. Unpublished rows are never deleted.
    pub retention: Option<Duration>,
    pub prune_every: Duration,
    pub faults: FaultPlan,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 256,
            poll_interval: Duration::from_secs(1),
            // Short: a relay is one task per store, and a bus that comes back should
            // see the outbox drained within a quarter of a second.
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(250)),
            streams: Vec::new(),
            retention: None,
            prune_every: Duration::from_secs(3600),
            faults: FaultPlan::none(),
        }
    }
}

/// Publishes the outbox of one store. See [`Relay::spawn`].
#[derive(Debug)]
pub struct Relay;

/// The running relay. Dropping it aborts the relay; prefer [`RelayHandle::shutdown`].
#[derive(Debug)]
pub struct RelayHandle {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl RelayHandle {
    /// Stops after the current pass (which runs to its end: a bus that does not answer
    /// makes its publish fail with an error, not hang) and waits for the task.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Kills the relay wherever it is, like a crash would, and waits until it is gone.
    pub async fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// What one relay pass did.
#[derive(Debug, PartialEq, Eq)]
enum Pass {
    Published(usize),
    /// Another process's relay holds the outbox.
    Busy,
}

impl Relay {
    /// Starts publishing the outbox of `db` to `bus`.
    ///
    /// Only one relay per outbox publishes at a time, so that rows go out in order:
    /// within a process, relays on the same [`Db`] take turns on a lock held for as long
    /// as one runs (a second one is a hot standby); across processes, on PostgreSQL,
    /// each pass runs in a transaction holding `pg_try_advisory_xact_lock`, and a pass
    /// that cannot take it waits for the next poll. SQLite stores belong to one process.
    pub fn spawn(db: &Db, bus: SharedBus, config: RelayConfig) -> RelayHandle {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(
            run(db.clone(), bus, config, stopped).instrument(tracing::info_span!("outbox_relay")),
        );
        RelayHandle {
            stop,
            task: Some(task),
        }
    }

    /// One pass by hand (for tools and tests): publishes up to `batch_size` rows and
    /// returns how many. Publishes nothing (returns 0) while a relay of this process
    /// runs on `db`: that relay owns the outbox.
    pub async fn publish_pending(
        db: &Db,
        bus: &SharedBus,
        batch_size: usize,
    ) -> Result<usize, Error> {
        let slot = db.relay_slot();
        let Ok(_turn) = slot.try_lock() else {
            return Ok(0);
        };
        let metrics = RelayMetrics::none();
        match pass(db, bus, batch_size.max(1), &FaultPlan::none(), &metrics).await? {
            Pass::Published(n) => Ok(n),
            Pass::Busy => Ok(0),
        }
    }
}

async fn run(db: Db, bus: SharedBus, config: RelayConfig, mut stopped: watch::Receiver<bool>) {
    let slot = db.relay_slot();
    let _turn = tokio::select! {
        turn = slot.lock_owned() => turn,
        _ = stopped.wait_for(|stop| *stop) => return,
    };
    let batch_size = config.batch_size.max(1);
    let metrics = RelayMetrics::of(&config);
    let mut failures: u32 = 0;
    let mut streams_ready = config.streams.is_empty();
    let mut next_prune = tokio::time::Instant::now();
    loop {
        if *stopped.borrow() {
            return;
        }
        if let Some(retention) = config.retention
            && tokio::time::Instant::now() >= next_prune
        {
            next_prune = tokio::time::Instant::now() + config.prune_every;
            let before = std::time::SystemTime::now()
                .checked_sub(retention)
                .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
            match Outbox::new(&db).prune_published(before).await {
                Ok(0) => {}
                Ok(pruned) => {
                    tracing::info!(pruned, "published outbox rows past retention deleted")
                }
                Err(error) => tracing::warn!(%error, "outbox pruning failed; will try again"),
            }
        }
        let attempt = async {
            if !streams_ready {
                for stream in &config.streams {
                    bus.ensure_stream(stream).await?;
                }
                streams_ready = true;
            }
            pass(&db, &bus, batch_size, &config.faults, &metrics).await
        };
        // A pass in progress runs to its end, so that a clean shutdown never leaves
        // published rows unmarked (they would be published again: safe, but noise).
        let outcome = attempt.await;
        let wait = match outcome {
            Ok(Pass::Published(n)) => {
                failures = 0;
                if n == batch_size {
                    continue; // more rows are probably waiting
                }
                None
            }
            Ok(Pass::Busy) => None,
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = config.backoff.delay(failures);
                tracing::warn!(%error, failures, ?delay, "outbox relay pass failed; retrying");
                Some(delay)
            }
        };
        match wait {
            // After a failure, commits must not shorten the backoff.
            Some(delay) => tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped.wait_for(|stop| *stop) => return,
            },
            None => tokio::select! {
                _ = db.outbox_committed().notified() => {}
                _ = tokio::time::sleep(config.poll_interval) => {}
                _ = stopped.wait_for(|stop| *stop) => return,
            },
        }
    }
}

/// The relay's publications and their latency (commit to publish). The `service`
/// label is the first stream's name, lowercase: each service's relay creates its own
/// stream, named after it ([`crate::stream_config`]).
struct RelayMetrics {
    published: metrics::Counter,
    latency: metrics::Histogram,
    /// The service whose outbox it is (its trace spans').
    service: String,
}

impl RelayMetrics {
    fn of(config: &RelayConfig) -> Self {
        use agora_telemetry::names;
        let service = config
            .streams
            .first()
            .map_or_else(|| "unknown".to_owned(), |s| s.name.to_lowercase());
        Self {
            published: metrics::counter!(names::OUTBOX_PUBLISHED, "service" => service.clone()),
            latency: metrics::histogram!(names::OUTBOX_RELAY_LATENCY, "service" => service.clone()),
            service,
        }
    }

    fn none() -> Self {
        Self {
            published: metrics::Counter::noop(),
            latency: metrics::Histogram::noop(),
            service: "unknown".to_owned(),
        }
    }
}

/// Arbitrary, fixed: the advisory lock key of the outbox relay in a service's database.
const RELAY_LOCK_KEY: i64 = 0x6167_6f72_615f_6f62; // "agora_ob"

async fn pass(
    db: &Db,
    bus: &SharedBus,
    batch_size: usize,
    faults: &FaultPlan,
    metrics: &RelayMetrics,
) -> Result<Pass, Error> {
    match db.backend() {
        Backend::Postgres => {
            // The transaction is held across the publish: the lock it holds is what keeps
            // a second process's relay from publishing the same rows out of order.
            let mut tx = db.pool().begin().await?;
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(RELAY_LOCK_KEY)
                .fetch_one(&mut *tx)
                .await?;
            if !locked {
                tx.rollback().await?;
                return Ok(Pass::Busy);
            }
            let rows = unpublished(&mut tx, batch_size).await?;
            if rows.is_empty() {
                tx.rollback().await?;
                return Ok(Pass::Published(0));
            }
            publish(bus, &rows, faults, metrics).await?;
            mark_published(&mut tx, &rows).await?;
            tx.commit().await?;
            Ok(Pass::Published(rows.len()))
        }
        Backend::Sqlite => {
            // No transaction: holding SQLite's only write lock across a publish would
            // stall every writer of the service. One relay per process is enough here.
            let rows = unpublished(&mut *db.pool().acquire().await?, batch_size).await?;
            if rows.is_empty() {
                return Ok(Pass::Published(0));
            }
            publish(bus, &rows, faults, metrics).await?;
            mark_published(&mut *db.pool().acquire().await?, &rows).await?;
            Ok(Pass::Published(rows.len()))
        }
    }
}

#[derive(Debug)]
struct OutboxRow {
    position: i64,
    created_at_ms: i64,
    message: OutgoingMessage,
}

async fn unpublished(conn: &mut AnyConnection, limit: usize) -> Result<Vec<OutboxRow>, Error> {
    let rows: Vec<AnyRow> = sqlx::query(
        "SELECT position, event_id, subject, headers, payload, created_at_ms FROM messaging_outbox
         WHERE published_at_ms IS NULL ORDER BY position LIMIT $1",
    )
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            let headers: String = row.try_get("headers")?;
            let headers: Headers = serde_json::from_str(&headers)
                .map_err(|e| Error::Decode(format!("outbox headers: {e}")))?;
            let payload: String = row.try_get("payload")?;
            Ok(OutboxRow {
                position: row.try_get("position")?,
                created_at_ms: row.try_get("created_at_ms")?,
                message: OutgoingMessage {
                    id: row.try_get("event_id")?,
                    subject: row.try_get("subject")?,
                    headers,
                    payload: payload.into_bytes().into(),
                },
            })
        })
        .collect()
}

async fn publish(
    bus: &SharedBus,
    rows: &[OutboxRow],
    faults: &FaultPlan,
    metrics: &RelayMetrics,
) -> Result<(), Error> {
    faults.checkpoint(CrashPoint::RelayBeforePublish).await;
    // Each event's `send` span, a child of the context it carries, open while the
    // batch is published: in its trace, the time from its creation to the bus.
    let spans: Vec<tracing::Span> = rows
        .iter()
        .map(|row| {
            agora_telemetry::trace::send_span(
                &metrics.service,
                &row.message.subject,
                row.message
                    .headers
                    .get(crate::envelope::header::TRACEPARENT)
                    .map(String::as_str),
            )
        })
        .collect();
    let messages = rows.iter().map(|row| row.message.clone()).collect();
    let published = bus.publish_batch(messages).await;
    if published.is_err() {
        spans.iter().for_each(agora_telemetry::trace::record_error);
    }
    drop(spans);
    published?;
    let now = crate::now_ms();
    metrics.published.increment(rows.len() as u64);
    for row in rows {
        metrics
            .latency
            .record(now.saturating_sub(row.created_at_ms).max(0) as f64 / 1000.0);
    }
    tracing::debug!(
        count = rows.len(),
        first = rows[0].position,
        "outbox rows published"
    );
    faults.checkpoint(CrashPoint::RelayAfterPublish).await;
    Ok(())
}

async fn mark_published(conn: &mut AnyConnection, rows: &[OutboxRow]) -> Result<(), Error> {
    // The exact positions, not a range: on PostgreSQL a row with a smaller position may
    // commit after this batch was read, and a range would mark it unpublished-but-done.
    // Each row takes the next feed position, in the order it was published: only one
    // relay marks rows at a time (see `Relay::spawn`), so the feed has no holes and
    // never changes behind a reader.
    let positions: Vec<String> = (2..rows.len() + 2).map(|i| format!("${i}")).collect();
    let ordinals: Vec<String> = positions
        .iter()
        .enumerate()
        .map(|(i, position)| format!("WHEN {position} THEN {}", i + 1))
        .collect();
    let sql = format!(
        "UPDATE messaging_outbox SET published_at_ms = $1,
             feed_position = (SELECT COALESCE(MAX(feed_position), 0) FROM messaging_outbox)
                 + CASE position {} END
         WHERE position IN ({})",
        ordinals.join(" "),
        positions.join(", ")
    );
    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(crate::now_ms());
    for row in rows {
        query = query.bind(row.position);
    }
    query.execute(conn).await?;
    Ok(())
}
