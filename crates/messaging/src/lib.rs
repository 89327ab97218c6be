//! Messaging for Agora's services: the event envelope, the transactional outbox and its
//! relay, the inbox, and the subscriber runtime — effectively-exactly-once effects on
//! an at-least-once bus, without distributed transactions.
//!
//! - [`Db`]: a service's own store (SQLite or PostgreSQL, one code path) and its
//!   migrations.
//! - [`Envelope`]: a CloudEvents-shaped envelope around any [`agora_contracts::Event`];
//!   its id is the bus message id.
//! - [`Outbox`] and [`Relay`]: an event is appended in the transaction of the business
//!   change it describes; the relay publishes committed rows in order, at least once.
//! - [`Subscriber`] and [`Inbox`]: each delivery is handled in one transaction with the
//!   record "event processed by this consumer", so a redelivery is a no-op.
//! - [`Feed`] and [`CatchUp`]: a store's published events as a paged feed, and a
//!   consumer catching up from an owner's feed when the bus stream no longer holds
//!   everything.
//! - [`FaultPlan`]: crash injection between any two of those steps, for tests.
//!
//! A producing service, in short:
//!
//! ```no_run
//! # async fn demo(
//! #     bus: agora_bus::SharedBus,
//! #     price: agora_contracts::PriceChanged,
//! # ) -> Result<(), agora_messaging::Error> {
//! use agora_messaging::{Context, Db, Envelope, Outbox, Relay, RelayConfig, stream_config};
//!
//! let db = Db::connect("sqlite://data/ordering.db").await?;
//! db.migrate_messaging().await?;
//! let relay = Relay::spawn(&db, bus, RelayConfig {
//!     streams: vec![stream_config("ordering")],
//!     ..RelayConfig::default()
//! });
//! let outbox = Outbox::new(&db);
//!
//! let mut tx = db.begin().await?;
//! // ... the business change, in `tx` ...
//! let context = Context::new(price.product_id.to_string());
//! Outbox::append(&mut tx, &Envelope::new(&price, &context)?).await?;
//! outbox.commit(tx).await?; // both or neither; wakes the relay
//!
//! relay.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! A consuming one implements [`Handler`] and runs it with [`Subscriber::spawn`].
//!
//! This crate must never publish an event that is not committed, mark an event
//! published before the bus acknowledged it, ack a delivery before its effects are
//! committed, or log a payload.

#![forbid(unsafe_code)]

mod db;
mod envelope;
mod fault;
mod feed;
pub mod metrics;
mod outbox;
mod process;
mod schema;
mod subscriber;
pub mod trace;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use db::{Backend, Db, DbConfig, Migration};
pub use envelope::{Context, Envelope, JSON, SPEC_VERSION, header, stream_config};
pub use fault::{CrashPoint, FaultPlan};
pub use feed::{CatchUp, CatchUpHandle, CatchUpState, FEED_PAGE, Feed, FeedEvent, FeedPage};
pub use outbox::{Outbox, Relay, RelayConfig, RelayHandle};
pub use process::{
    Clock, Decision, Instance, InstanceStatus, ManualClock, Process, ProcessManager, SystemClock,
    TimeoutChange, TimerConfig, TimerHandle, Turn, TurnOutcome, migrate_processes,
};
pub use subscriber::{
    DEFAULT_RETENTION, Handler, HandlerError, Inbox, Subscriber, SubscriberConfig,
    SubscriberHandle, is_the_stores,
};

/// Why a messaging operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("bus: {0}")]
    Bus(#[from] agora_bus::BusError),
    #[error("unsupported database URL scheme {0:?}: use sqlite:// or postgres://")]
    UnsupportedUrl(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot encode the event: {0}")]
    Encode(String),
    #[error("cannot decode the envelope or its data: {0}")]
    Decode(String),
    #[error("feed: {0}")]
    Feed(String),
    #[error("expected a {expected} event, the envelope holds {found}")]
    WrongEventType { expected: String, found: String },
}

impl Error {
    /// Whether the store failed rather than the statement (unreachable, busy, a
    /// serialization conflict): worth a 503 and a retry, not a 500.
    pub fn is_store_unavailable(&self) -> bool {
        matches!(self, Error::Database(error) if is_the_stores(error))
    }
}

/// Whether `error`, or an error it wraps (its `source` chain), is the store failing
/// rather than the request: a messaging [`Error`] or an `sqlx::Error` that
/// [`is_the_stores`].
pub fn is_store_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(error) = error.downcast_ref::<sqlx::Error>() {
            return is_the_stores(error);
        }
        if let Some(error) = error.downcast_ref::<Error>()
            && error.is_store_unavailable()
        {
            return true;
        }
        next = error.source();
    }
    false
}

/// Exponential backoff: `initial`, doubled each attempt, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// The delay before attempt `attempt + 1`, after `attempt` (≥ 1) failures.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }
}

/// Milliseconds since the Unix epoch: how timestamps are stored, the same on both
/// backends.
pub(crate) fn now_ms() -> i64 {
    system_time_ms(SystemTime::now())
}

pub(crate) fn ms_system_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or_default())
}

pub(crate) fn system_time_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
