//! What the tests share: stores on both backends, test events, a recording bus double,
//! and a counting handler.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use agora_bus::{
    Bus, BusError, Consumer, ConsumerConfig, DeadLetter, OutgoingMessage, PublishAck, SharedBus,
    StreamConfig,
};
use agora_contracts::Event;
use agora_messaging::{Context, Db, Envelope, Handler, HandlerError, Outbox};
use agora_testkit::PgDatabase;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::{Any, Transaction};

/// Generates, for each `async fn case(store: TestStore)` of the calling module, a test
/// on SQLite and one on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(store) = $crate::support::TestStore::sqlite().await {
                        super::$case(store).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(store) = $crate::support::TestStore::postgres().await {
                        super::$case(store).await;
                    }
                }
            )*
        }
    };
}

/// A migrated store on one backend, removed when dropped.
pub struct TestStore {
    pub db: Db,
    pub url: String,
    /// Files of the test: the SQLite store, and anything else (e.g. a bus file).
    pub dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

impl TestStore {
    pub async fn sqlite() -> Option<TestStore> {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        Some(Self::open(url, dir, None).await)
    }

    pub async fn postgres() -> Option<TestStore> {
        let pg = PgDatabase::create().await?;
        let url = pg.url().to_owned();
        Some(Self::open(url, tempfile::tempdir().unwrap(), Some(pg)).await)
    }

    async fn open(url: String, dir: tempfile::TempDir, pg: Option<PgDatabase>) -> TestStore {
        let db = Db::connect(&url).await.expect("connect");
        db.migrate_messaging().await.expect("migrate");
        create_applied_table(&db).await;
        TestStore {
            db,
            url,
            dir,
            _pg: pg,
        }
    }
}

/// The table of the counting handler: how many times each consumer applied each event.
pub async fn create_applied_table(db: &Db) {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS applied (
            consumer TEXT NOT NULL,
            event_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            count BIGINT NOT NULL,
            PRIMARY KEY (consumer, event_id)
        )",
    )
    .execute(db.pool())
    .await
    .expect("create applied");
}

/// `(event id, times applied)` for `consumer`, in no particular order.
pub async fn applied(db: &Db, consumer: &str) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT event_id, count FROM applied WHERE consumer = $1")
        .bind(consumer)
        .fetch_all(db.pool())
        .await
        .expect("read applied")
}

/// A ledger credit: the test event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Credited {
    pub account_id: String,
    pub amount: i64,
    pub version: u64,
}

impl Event for Credited {
    const TYPE: &'static str = "Credited";
    const SOURCE: &'static str = "ledger";

    fn subject(&self) -> String {
        self.account_id.clone()
    }

    fn version(&self) -> u64 {
        self.version
    }
}

pub const STREAM: &str = "LEDGER";

pub fn credited(n: u64) -> Envelope {
    let event = Credited {
        account_id: format!("acct-{}", n % 3),
        amount: i64::try_from(n).unwrap(),
        version: n,
    };
    Envelope::new(&event, &Context::new(format!("flow-{n}"))).unwrap()
}

/// Appends `envelopes` in one transaction and commits it through the outbox.
pub async fn commit_events(db: &Db, envelopes: &[Envelope]) {
    let mut tx = db.begin().await.unwrap();
    for envelope in envelopes {
        Outbox::append(&mut tx, envelope).await.unwrap();
    }
    Outbox::new(db).commit(tx).await.unwrap();
}

/// Polls `check` until it holds; panics with `what` after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Records applied events, in the handler's transaction, and fails on demand.
pub struct CountingHandler {
    pub consumer: String,
    /// Calls that fail (transiently) before calls succeed.
    pub failures_left: Arc<AtomicU32>,
    /// Calls that fail as if the store were unreachable, before the others.
    pub store_failures_left: Arc<AtomicU32>,
    pub calls: Arc<AtomicU32>,
}

impl CountingHandler {
    pub fn new(consumer: &str) -> Self {
        Self {
            consumer: consumer.to_owned(),
            failures_left: Arc::new(AtomicU32::new(0)),
            store_failures_left: Arc::new(AtomicU32::new(0)),
            calls: Arc::new(AtomicU32::new(0)),
        }
    }
}

#[async_trait]
impl Handler for CountingHandler {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let event: Credited = envelope.decode()?;
        let take = |left: &AtomicU32| {
            left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        };
        if take(&self.store_failures_left) {
            return Err(HandlerError::from(sqlx::Error::PoolTimedOut));
        }
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(HandlerError::transient("ledger is locked, try later"));
        }
        sqlx::query(
            "INSERT INTO applied (consumer, event_id, seq, count) VALUES ($1, $2, $3, 1)
             ON CONFLICT (consumer, event_id) DO UPDATE SET count = applied.count + 1",
        )
        .bind(&self.consumer)
        .bind(envelope.id.to_string())
        .bind(i64::try_from(event.version).unwrap())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// A bus double that records what is published (deduplicated by message id, like a
/// real bus) and fails the next publishes on demand, after storing part of the batch.
#[derive(Default)]
pub struct RecordingBus {
    published: parking_lot::Mutex<Vec<OutgoingMessage>>,
    failures_left: AtomicU32,
    pub publish_calls: AtomicU32,
    /// Messages published again (after the bus stored them once).
    pub duplicates: AtomicU32,
}

impl RecordingBus {
    pub fn failing(times: u32) -> Arc<Self> {
        let bus = Self::default();
        bus.failures_left.store(times, Ordering::SeqCst);
        Arc::new(bus)
    }

    pub fn published(&self) -> Vec<OutgoingMessage> {
        self.published.lock().clone()
    }

    pub fn shared(self: &Arc<Self>) -> SharedBus {
        self.clone()
    }

    fn store(&self, messages: &[OutgoingMessage]) -> Vec<PublishAck> {
        let mut published = self.published.lock();
        messages
            .iter()
            .map(|m| {
                let duplicate = published.iter().any(|p| p.id == m.id);
                if duplicate {
                    self.duplicates.fetch_add(1, Ordering::SeqCst);
                } else {
                    published.push(m.clone());
                }
                PublishAck {
                    stream: STREAM.into(),
                    sequence: published.len() as u64,
                    duplicate,
                }
            })
            .collect()
    }
}

fn unsupported() -> BusError {
    BusError::Unavailable("not supported by the recording bus".into())
}

#[async_trait]
impl Bus for RecordingBus {
    async fn ensure_stream(&self, _config: &StreamConfig) -> Result<(), BusError> {
        Ok(())
    }

    async fn publish(&self, message: OutgoingMessage) -> Result<PublishAck, BusError> {
        let mut acks = self.publish_batch(vec![message]).await?;
        Ok(acks.remove(0))
    }

    async fn publish_batch(
        &self,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<PublishAck>, BusError> {
        self.publish_calls.fetch_add(1, Ordering::SeqCst);
        for message in &messages {
            message.validate()?;
        }
        let fail = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            // Like a connection lost mid-batch: the first half is stored.
            self.store(&messages[..messages.len() / 2]);
            return Err(BusError::Unavailable("injected failure".into()));
        }
        Ok(self.store(&messages))
    }

    async fn consumer(&self, _config: &ConsumerConfig) -> Result<Arc<dyn Consumer>, BusError> {
        Err(unsupported())
    }

    async fn delete_consumer(&self, _stream: &str, _name: &str) -> Result<(), BusError> {
        Err(unsupported())
    }

    async fn last_sequence(&self, _stream: &str) -> Result<u64, BusError> {
        Ok(self.published.lock().len() as u64)
    }

    async fn consumers(&self) -> Result<Vec<agora_bus::ConsumerInfo>, BusError> {
        Ok(Vec::new())
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError> {
        Ok(Vec::new())
    }

    async fn redrive(&self, dead_letter_id: u64) -> Result<PublishAck, BusError> {
        Err(BusError::DeadLetterNotFound(dead_letter_id))
    }
}

/// Ids must be unique: a bus double bug would otherwise hide a relay bug.
pub fn assert_unique(ids: &[String]) {
    let set: HashSet<&String> = ids.iter().collect();
    assert_eq!(set.len(), ids.len(), "duplicate message ids: {ids:?}");
}

/// An embedded bus in the test's directory, with the ledger stream.
pub async fn embedded_bus(dir: &std::path::Path) -> Arc<agora_bus::embedded::EmbeddedBus> {
    let bus = agora_bus::embedded::EmbeddedBus::open(dir.join("bus.db"))
        .await
        .expect("open the embedded bus");
    bus.ensure_stream(&agora_messaging::stream_config(Credited::SOURCE))
        .await
        .expect("create the stream");
    Arc::new(bus)
}
