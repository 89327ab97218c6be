//! The process-manager runtime: durable state per correlation id, advanced by events
//! and by timeouts, with optimistic concurrency and compensation steps.
//!
//! A [`Process`] is pure decision logic: given its state and an event (or a fired
//! timeout) it mutates the state and returns a [`Decision`] — events to publish, a
//! timeout to set or clear, compensation steps to run, whether the instance is done.
//! A [`ProcessManager`] runs it:
//!
//! - as a [`Handler`], under a [`Subscriber`](crate::Subscriber) (several, one per
//!   source stream, may feed the same manager): the inbox makes every delivery's
//!   effects happen once;
//! - with [`ProcessManager::spawn_timer`], which scans the instances whose timeout is due
//!   and fires them. A timeout is an absolute time in the instance row, read from a
//!   [`Clock`], so one that fell while the process was down fires after the restart.
//!
//! Each turn (one event, or one timeout) is one transaction: read the instance, decide,
//! run the compensation steps, write the instance with `version = expected + 1` only if
//! its version is still `expected`, and append the events to the outbox. When another
//! worker advanced the instance in between, the write matches no row and the turn fails
//! with [`HandlerError::not_the_message`]: the delivery is retried on the new state
//! (without spending one of its attempts), so two workers never both advance one
//! instance from the same version.
//!
//! Compensation steps are side effects outside the store (e.g. a refund call): they
//! must be idempotent, since a turn that fails after running them (a conflict, a crash
//! before the commit) runs them again. The process records in its state, in the same
//! turn, that they are done, so after a successful turn they never run again. A failed
//! step fails the turn: nothing is written, and the delivery (held by its worker, its
//! attempts not spent) or the timer (with a growing wait) retries it for as long as it
//! takes: a compensation is owed, never dropped, unless it fails permanently. Steps run inside the turn's transaction: on SQLite that holds the
//! store's write lock, so keep them short (calls bounded by the resilient client's
//! timeouts).
//!
//! Events for an instance that is [terminal](InstanceStatus::Terminal) are
//! acknowledged and ignored.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{Any, Transaction};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::Error;
use crate::db::{Db, Migration};
use crate::envelope::Envelope;
use crate::outbox::Outbox;
use crate::subscriber::{Handler, HandlerError};

/// The tables of the process-manager runtime, in the ledger under this component.
const COMPONENT: &str = "messaging-process";

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "process instances",
        sqlite: "
        CREATE TABLE process_instances (
            process TEXT NOT NULL,
            id TEXT NOT NULL,
            state TEXT NOT NULL,
            version INTEGER NOT NULL,
            status TEXT NOT NULL,
            timeout_at_ms INTEGER,
            created_at_ms INTEGER NOT NULL,
            updated_at_ms INTEGER NOT NULL,
            PRIMARY KEY (process, id)
        );
        CREATE INDEX process_instances_due
            ON process_instances (process, timeout_at_ms) WHERE timeout_at_ms IS NOT NULL;
    ",
        postgres: "
        CREATE TABLE process_instances (
            process TEXT NOT NULL,
            id TEXT NOT NULL,
            state TEXT NOT NULL,
            version BIGINT NOT NULL,
            status TEXT NOT NULL,
            timeout_at_ms BIGINT,
            created_at_ms BIGINT NOT NULL,
            updated_at_ms BIGINT NOT NULL,
            PRIMARY KEY (process, id)
        );
        CREATE INDEX process_instances_due
            ON process_instances (process, timeout_at_ms) WHERE timeout_at_ms IS NOT NULL;
    ",
    },
    Migration {
        version: 2,
        description: "failed timeout turns, counted",
        sqlite: "ALTER TABLE process_instances ADD COLUMN timeout_failures INTEGER NOT NULL DEFAULT 0;",
        postgres: "ALTER TABLE process_instances ADD COLUMN timeout_failures INTEGER NOT NULL DEFAULT 0;",
    },
];

/// The wait after the n-th failed timeout turn in a row before it is tried again: 1 s,
/// doubling, at most 5 minutes. A compensation owed is retried for as long as it takes.
pub fn timeout_retry_delay(failures: u32) -> Duration {
    crate::Backoff::new(Duration::from_secs(1), Duration::from_secs(5 * 60)).delay(failures)
}

/// Applies the process-manager tables; idempotent. The store also needs the messaging
/// tables ([`Db::migrate_messaging`]).
pub async fn migrate_processes(db: &Db) -> Result<(), Error> {
    db.migrate(COMPONENT, MIGRATIONS).await
}

/// Where a process manager reads the time: the system clock in production, a
/// [`ManualClock`] in tests, so that timeouts are driven without sleeping.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now(&self) -> OffsetDateTime;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that moves only when told to; share it with `Arc`.
#[derive(Debug)]
pub struct ManualClock {
    ms: AtomicI64,
}

impl ManualClock {
    pub fn new(start: OffsetDateTime) -> Self {
        Self {
            ms: AtomicI64::new(to_ms(start)),
        }
    }

    /// A manual clock at the current wall-clock time.
    pub fn starting_now() -> Self {
        Self::new(OffsetDateTime::now_utc())
    }

    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.ms.fetch_add(by, Ordering::SeqCst);
    }

    pub fn set(&self, to: OffsetDateTime) {
        self.ms.store(to_ms(to), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        from_ms(self.ms.load(Ordering::SeqCst))
    }
}

/// What a turn of a process instance knows besides its state.
#[derive(Clone, Debug)]
pub struct Turn {
    /// The instance: the correlation id.
    pub id: Uuid,
    /// The manager's clock, read once at the start of the turn.
    pub now: OffsetDateTime,
    /// The version this turn writes if it commits (1 for a new instance): events
    /// emitted by the turn may carry it as their aggregate version.
    pub version: u64,
    /// The timeout set before this turn, if any.
    pub timeout_at: Option<OffsetDateTime>,
}

/// What happens to an instance's timeout after a turn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeoutChange {
    /// Unchanged; except after the timeout fired, which consumes it.
    #[default]
    Keep,
    /// Fire at this time (replaces any earlier timeout).
    Set(OffsetDateTime),
    Clear,
}

/// The outcome of one turn of a [`Process`].
#[derive(Debug)]
pub struct Decision<S> {
    /// Published through the outbox, in the turn's transaction.
    pub events: Vec<Envelope>,
    /// Idempotent side effects run (in order) before anything is written; any failure
    /// fails the whole turn, which is retried.
    pub steps: Vec<S>,
    pub timeout: TimeoutChange,
    /// The instance is done: its timeout is cleared and later events are ignored.
    pub terminal: bool,
}

impl<S> Default for Decision<S> {
    fn default() -> Self {
        Self {
            events: Vec::new(),
            steps: Vec::new(),
            timeout: TimeoutChange::Keep,
            terminal: false,
        }
    }
}

impl<S> Decision<S> {
    /// Nothing to publish, run or schedule (the state may still have changed).
    pub fn none() -> Self {
        Self::default()
    }

    pub fn emit(mut self, event: Envelope) -> Self {
        self.events.push(event);
        self
    }

    pub fn step(mut self, step: S) -> Self {
        self.steps.push(step);
        self
    }

    pub fn timeout_at(mut self, at: OffsetDateTime) -> Self {
        self.timeout = TimeoutChange::Set(at);
        self
    }

    pub fn clear_timeout(mut self) -> Self {
        self.timeout = TimeoutChange::Clear;
        self
    }

    pub fn terminal(mut self) -> Self {
        self.terminal = true;
        self
    }
}

/// The logic of one kind of process. Deciding is synchronous and pure (state in,
/// state and decision out); only [`Process::run`] touches the outside world.
#[async_trait]
pub trait Process: Send + Sync + 'static {
    /// Stored as JSON in the instance row; `Default` is the state of a new instance.
    type State: Serialize + DeserializeOwned + Default + Send + Sync;
    /// A compensation (or any idempotent side effect) the process asks to run.
    type Step: fmt::Debug + Send + Sync;

    /// The process's name, the first half of an instance's key: never change it.
    const NAME: &'static str;

    /// The instance `envelope` belongs to; `Ok(None)`: not for this process (acked,
    /// ignored). An event of a type the process takes whose data does not decode is an
    /// error ([`HandlerError::permanent`]: it goes to the dead letters, where it can be
    /// seen and redriven, instead of being acked unseen).
    fn correlate(&self, envelope: &Envelope) -> Result<Option<Uuid>, HandlerError>;

    /// Applies `envelope` to the state of an active instance.
    fn handle(
        &self,
        state: &mut Self::State,
        envelope: &Envelope,
        turn: &Turn,
    ) -> Result<Decision<Self::Step>, HandlerError>;

    /// The instance's timeout fell due.
    fn on_timeout(
        &self,
        state: &mut Self::State,
        turn: &Turn,
    ) -> Result<Decision<Self::Step>, HandlerError>;

    /// Runs one step; an error fails the turn (transient: it is retried).
    async fn run(&self, step: &Self::Step) -> Result<(), HandlerError>;
}

/// Whether an instance still takes events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceStatus {
    Active,
    Terminal,
}

impl InstanceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Active => "active",
            InstanceStatus::Terminal => "terminal",
        }
    }

    fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "active" => Ok(InstanceStatus::Active),
            "terminal" => Ok(InstanceStatus::Terminal),
            other => Err(Error::Decode(format!("unknown instance status {other:?}"))),
        }
    }
}

/// A stored instance, as [`ProcessManager::instance`] reads it.
#[derive(Clone, Debug)]
pub struct Instance<S> {
    pub id: Uuid,
    pub state: S,
    pub version: u64,
    pub status: InstanceStatus,
    pub timeout_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// Timeout turns failed in a row (0 once one succeeds).
    pub timeout_failures: u32,
}

/// What one turn did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnOutcome {
    /// The instance was written (created or advanced).
    Advanced,
    /// The decision changed nothing: nothing written.
    Unchanged,
    /// Not for this process, a terminal instance, or a timeout no longer due.
    Ignored,
}

/// How the timer of [`ProcessManager::spawn_timer`] scans.
#[derive(Clone, Debug)]
pub struct TimerConfig {
    /// Between two scans for due timeouts (a failed timeout turn is retried at the
    /// next scan).
    pub interval: Duration,
    /// Instances fired per scan at most (more are fired by the next scans).
    pub batch: u32,
}

impl Default for TimerConfig {
    /// A scan every second, 100 instances at a time.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            batch: 100,
        }
    }
}

/// The running timer. Dropping it aborts the task; prefer [`TimerHandle::shutdown`].
#[derive(Debug)]
pub struct TimerHandle {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl TimerHandle {
    /// Lets the current scan finish, then stops.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TimerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Runs a [`Process`]: as a [`Handler`] for its subscribers, and with a timer. Cheap to
/// clone; clones share the process.
pub struct ProcessManager<P: Process> {
    shared: Arc<Shared<P>>,
}

struct Shared<P> {
    db: Db,
    process: P,
    clock: Arc<dyn Clock>,
}

impl<P: Process> Clone for ProcessManager<P> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<P: Process> fmt::Debug for ProcessManager<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessManager")
            .field("process", &P::NAME)
            .field("clock", &self.shared.clock)
            .finish_non_exhaustive()
    }
}

enum Trigger<'a> {
    Event(&'a Envelope),
    Timeout,
}

struct Row {
    state: String,
    version: i64,
    status: String,
    timeout_at_ms: Option<i64>,
    created_at_ms: i64,
    updated_at_ms: i64,
    timeout_failures: i64,
}

type RowTuple = (String, i64, String, Option<i64>, i64, i64, i64);

const ROW_COLUMNS: &str =
    "state, version, status, timeout_at_ms, created_at_ms, updated_at_ms, timeout_failures";

impl<P: Process> ProcessManager<P> {
    /// A manager of `process` on `db` (migrated with [`migrate_processes`]).
    pub fn new(db: &Db, process: P, clock: Arc<dyn Clock>) -> Self {
        Self {
            shared: Arc::new(Shared {
                db: db.clone(),
                process,
                clock,
            }),
        }
    }

    pub fn process(&self) -> &P {
        &self.shared.process
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }

    /// The stored instance `id`, if any.
    pub async fn instance(&self, id: Uuid) -> Result<Option<Instance<P::State>>, Error> {
        let row: Option<RowTuple> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ROW_COLUMNS} FROM process_instances WHERE process = $1 AND id = $2"
        )))
        .bind(P::NAME)
        .bind(id.to_string())
        .fetch_optional(self.shared.db.pool())
        .await?;
        let Some(row) = row.map(Row::from) else {
            return Ok(None);
        };
        Ok(Some(Instance {
            id,
            state: decode_state(&row.state)?,
            version: u64::try_from(row.version).unwrap_or_default(),
            status: InstanceStatus::parse(&row.status)?,
            timeout_at: row.timeout_at_ms.map(from_ms),
            created_at: from_ms(row.created_at_ms),
            updated_at: from_ms(row.updated_at_ms),
            timeout_failures: u32::try_from(row.timeout_failures).unwrap_or(u32::MAX),
        }))
    }

    /// Fires the timeouts due now (at most `batch`), each in its own transaction;
    /// returns how many instances advanced. A failed turn is counted and tried again
    /// after [`timeout_retry_delay`] (a compensation that cannot be done now is owed,
    /// for as long as it takes); a turn that can never succeed (a permanent error) is
    /// parked: its timeout cleared, its failures kept, for an operator to see
    /// ([`ProcessManager::failing_timeouts`]).
    pub async fn fire_due_timeouts(&self, batch: u32) -> Result<usize, Error> {
        let now = to_ms(self.shared.clock.now());
        let due: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM process_instances
             WHERE process = $1 AND status = 'active'
               AND timeout_at_ms IS NOT NULL AND timeout_at_ms <= $2
             ORDER BY timeout_at_ms LIMIT $3",
        )
        .bind(P::NAME)
        .bind(now)
        .bind(i64::from(batch))
        .fetch_all(self.shared.db.pool())
        .await?;
        let mut fired = 0;
        for (id,) in due {
            let Ok(id) = Uuid::parse_str(&id) else {
                tracing::warn!(process = P::NAME, id, "instance with an invalid id");
                continue;
            };
            match self.fire_timeout(id).await {
                Ok(TurnOutcome::Advanced) => fired += 1,
                Ok(_) => {}
                Err(error) => self.timeout_failed(id, &error).await?,
            }
        }
        Ok(fired)
    }

    /// Counts a failed timeout turn of `id` and moves its timeout: later, or (for a
    /// permanent error) away.
    async fn timeout_failed(&self, id: Uuid, error: &HandlerError) -> Result<(), Error> {
        let db = &self.shared.db;
        let failures: Option<i64> = sqlx::query_scalar(
            "UPDATE process_instances SET timeout_failures = timeout_failures + 1
             WHERE process = $1 AND id = $2 AND status = 'active'
             RETURNING timeout_failures",
        )
        .bind(P::NAME)
        .bind(id.to_string())
        .fetch_optional(db.pool())
        .await?;
        let Some(failures) = failures else {
            return Ok(());
        };
        let failures = u32::try_from(failures).unwrap_or(u32::MAX);
        let next = if error.is_permanent() {
            tracing::error!(process = P::NAME, %id, %error, failures, "timeout can never succeed; parked");
            None
        } else {
            let delay = timeout_retry_delay(failures);
            tracing::warn!(process = P::NAME, %id, %error, failures, ?delay, "timeout failed; will retry");
            Some(to_ms(self.shared.clock.now() + delay))
        };
        sqlx::query(
            "UPDATE process_instances SET timeout_at_ms = $1
             WHERE process = $2 AND id = $3 AND status = 'active'",
        )
        .bind(next)
        .bind(P::NAME)
        .bind(id.to_string())
        .execute(db.pool())
        .await?;
        Ok(())
    }

    /// The active instances whose last timeout turns failed: `(id, failures in a row,
    /// next try)`; no next try means parked.
    pub async fn failing_timeouts(
        &self,
    ) -> Result<Vec<(Uuid, u32, Option<OffsetDateTime>)>, Error> {
        let rows: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT id, timeout_failures, timeout_at_ms FROM process_instances
             WHERE process = $1 AND status = 'active' AND timeout_failures > 0
             ORDER BY id",
        )
        .bind(P::NAME)
        .fetch_all(self.shared.db.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, failures, at)| {
                Some((
                    Uuid::parse_str(&id).ok()?,
                    u32::try_from(failures).unwrap_or(u32::MAX),
                    at.map(from_ms),
                ))
            })
            .collect())
    }

    /// Fires the timeout of instance `id` if it is due, in its own transaction.
    pub async fn fire_timeout(&self, id: Uuid) -> Result<TurnOutcome, HandlerError> {
        let mut tx = self.shared.db.begin().await?;
        let outcome = self.turn(&mut tx, id, Trigger::Timeout).await?;
        if outcome == TurnOutcome::Advanced {
            Outbox::new(&self.shared.db).commit(tx).await?;
        } else {
            tx.rollback().await?;
        }
        Ok(outcome)
    }

    /// Scans for due timeouts every `config.interval`, starting at once (so timeouts
    /// that fell while the process was down fire on start).
    pub fn spawn_timer(&self, config: TimerConfig) -> TimerHandle {
        let (stop, mut stopped) = watch::channel(false);
        let manager = self.clone();
        let task = tokio::spawn(async move {
            loop {
                // Fire everything due, a batch at a time, before sleeping.
                loop {
                    match manager.fire_due_timeouts(config.batch).await {
                        Ok(fired) if fired >= config.batch as usize && !*stopped.borrow() => {
                            continue;
                        }
                        Ok(_) => break,
                        Err(error) => {
                            tracing::warn!(process = P::NAME, %error, "timeout scan failed");
                            break;
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(config.interval) => {}
                    _ = stopped.wait_for(|stop| *stop) => return,
                }
            }
        });
        TimerHandle {
            stop,
            task: Some(task),
        }
    }

    /// Applies `envelope` in `tx` (the subscriber's transaction); what [`Handler`] does.
    pub async fn apply(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<TurnOutcome, HandlerError> {
        let Some(id) = self.shared.process.correlate(envelope)? else {
            return Ok(TurnOutcome::Ignored);
        };
        self.turn(tx, id, Trigger::Event(envelope)).await
    }

    async fn turn(
        &self,
        tx: &mut Transaction<'_, Any>,
        id: Uuid,
        trigger: Trigger<'_>,
    ) -> Result<TurnOutcome, HandlerError> {
        let process = &self.shared.process;
        // On PostgreSQL a timeout turn locks its row and skips one locked by another
        // instance's turn: two instances never fire the same timeout (or run its
        // compensation twice). SQLite's write lock serializes turns anyway.
        let lock = match (&trigger, self.shared.db.backend()) {
            (Trigger::Timeout, crate::Backend::Postgres) => " FOR UPDATE SKIP LOCKED",
            _ => "",
        };
        let row: Option<RowTuple> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ROW_COLUMNS} FROM process_instances WHERE process = $1 AND id = $2{lock}"
        )))
        .bind(P::NAME)
        .bind(id.to_string())
        .fetch_optional(&mut **tx)
        .await?;
        let now = self.shared.clock.now();
        let now_ms = to_ms(now);
        let (mut state, version, timeout_at_ms, created_at_ms) = match row.map(Row::from) {
            Some(row) if row.status != InstanceStatus::Active.as_str() => {
                tracing::debug!(process = P::NAME, %id, "instance is terminal; ignoring");
                return Ok(TurnOutcome::Ignored);
            }
            Some(row) => (
                decode_state::<P::State>(&row.state).map_err(HandlerError::permanent)?,
                row.version,
                row.timeout_at_ms,
                row.created_at_ms,
            ),
            None if matches!(trigger, Trigger::Timeout) => return Ok(TurnOutcome::Ignored),
            None => (P::State::default(), 0, None, now_ms),
        };
        let timeout_fired = matches!(trigger, Trigger::Timeout);
        if timeout_fired && timeout_at_ms.is_none_or(|at| at > now_ms) {
            // Another worker handled or moved it since the scan.
            return Ok(TurnOutcome::Ignored);
        }
        let turn = Turn {
            id,
            now,
            version: u64::try_from(version + 1).unwrap_or_default(),
            timeout_at: timeout_at_ms.map(from_ms),
        };
        let before = encode_state(&state)?;
        let decision = match trigger {
            Trigger::Event(envelope) => process.handle(&mut state, envelope, &turn)?,
            Trigger::Timeout => process.on_timeout(&mut state, &turn)?,
        };
        for step in &decision.steps {
            tracing::info!(process = P::NAME, %id, ?step, "running step");
            process.run(step).await.map_err(owed)?;
        }
        let after = encode_state(&state)?;
        let new_timeout = if decision.terminal {
            None
        } else {
            match decision.timeout {
                TimeoutChange::Keep if timeout_fired => None,
                TimeoutChange::Keep => timeout_at_ms,
                TimeoutChange::Set(at) => Some(to_ms(at)),
                TimeoutChange::Clear => None,
            }
        };
        if after == before
            && decision.events.is_empty()
            && decision.steps.is_empty()
            && !decision.terminal
            && new_timeout == timeout_at_ms
        {
            return Ok(TurnOutcome::Unchanged);
        }
        let status = if decision.terminal {
            InstanceStatus::Terminal
        } else {
            InstanceStatus::Active
        };
        let written = if version == 0 {
            sqlx::query(
                "INSERT INTO process_instances
                     (process, id, state, version, status, timeout_at_ms, created_at_ms, updated_at_ms)
                 VALUES ($1, $2, $3, 1, $4, $5, $6, $7)
                 ON CONFLICT (process, id) DO NOTHING",
            )
            .bind(P::NAME)
            .bind(id.to_string())
            .bind(&after)
            .bind(status.as_str())
            .bind(new_timeout)
            .bind(created_at_ms)
            .bind(now_ms)
            .execute(&mut **tx)
            .await?
        } else {
            sqlx::query(
                "UPDATE process_instances
                 SET state = $1, version = $2, status = $3, timeout_at_ms = $4, updated_at_ms = $5,
                     timeout_failures = 0
                 WHERE process = $6 AND id = $7 AND version = $8 AND status = 'active'",
            )
            .bind(&after)
            .bind(version + 1)
            .bind(status.as_str())
            .bind(new_timeout)
            .bind(now_ms)
            .bind(P::NAME)
            .bind(id.to_string())
            .bind(version)
            .execute(&mut **tx)
            .await?
        };
        if written.rows_affected() != 1 {
            return Err(HandlerError::not_the_message(format!(
                "process {} instance {id} was advanced concurrently (expected version {version})",
                P::NAME
            )));
        }
        for event in &decision.events {
            Outbox::append(tx, event).await?;
        }
        Ok(TurnOutcome::Advanced)
    }
}

#[async_trait]
impl<P: Process> Handler for ProcessManager<P> {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        self.apply(tx, envelope).await.map(|_| ())
    }
}

impl From<RowTuple> for Row {
    fn from(
        (state, version, status, timeout_at_ms, created_at_ms, updated_at_ms, timeout_failures): RowTuple,
    ) -> Self {
        Row {
            state,
            version,
            status,
            timeout_at_ms,
            created_at_ms,
            updated_at_ms,
            timeout_failures,
        }
    }
}

/// A step (a compensation) that cannot be done now is owed, not dropped: unless
/// retrying cannot help (permanent), the turn is tried again — by the subscriber
/// holding the delivery, or by the timer — as long as it takes, without spending the
/// delivery's attempts, so the event that asked for it never goes to the dead letters.
fn owed(error: HandlerError) -> HandlerError {
    if error.is_permanent() || error.is_not_the_message() {
        return error;
    }
    HandlerError::not_the_message(format!("a step is owed, tried again until done: {error}"))
}

fn decode_state<S: DeserializeOwned>(text: &str) -> Result<S, Error> {
    serde_json::from_str(text).map_err(|e| Error::Decode(format!("process state: {e}")))
}

fn encode_state<S: Serialize>(state: &S) -> Result<String, HandlerError> {
    serde_json::to_string(state)
        .map_err(|e| HandlerError::permanent(format!("cannot encode the process state: {e}")))
}

fn to_ms(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
