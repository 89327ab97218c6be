//! The environment a service under test runs in.

use std::fmt::Display;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use agora_auth::{InternalKey, TestIssuer};
use agora_bus::embedded::EmbeddedBus;
use agora_bus::{Bus, ConsumerConfig, SharedBus};
use agora_contracts::Event;
use agora_messaging::{Context, Db, Envelope, Outbox, SubscriberConfig, stream_config};
use agora_testkit::{Backend, PgDatabase};

use crate::events::{EventReader, eventually};

/// The internal plane's key of every service a test process starts: the key its
/// config is given, and the one [`service_token`] signs with.
pub static TEST_PLANE: LazyLock<InternalKey> = LazyLock::new(InternalKey::generate);

/// A service token of `caller`'s for `target` on the [`TEST_PLANE`].
pub fn service_token(caller: &str, target: &str) -> String {
    TEST_PLANE
        .service(caller)
        .token_for(target)
        .expect("a service token")
}

/// A store, a bus, a token issuer and a temporary directory that outlive restarts of
/// the service under test (dropped with it: the directory is removed, the PostgreSQL
/// database dropped).
pub struct TestEnv {
    /// The service's store: `sqlite://<dir>/<service>.db`, or a fresh PostgreSQL
    /// database.
    pub db_url: String,
    /// An embedded bus in `<dir>/bus.db`.
    pub bus: Arc<EmbeddedBus>,
    /// Signs users' tokens; its key source is what the service's `keys` config takes.
    pub issuer: TestIssuer,
    /// The internal plane's key (the [`TEST_PLANE`]'s).
    pub internal: InternalKey,
    /// The test's temporary directory.
    pub dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("db_url", &self.db_url)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

static READERS: AtomicU32 = AtomicU32::new(0);

impl TestEnv {
    /// A fresh store for `service` on `backend` and an embedded bus with a stream for
    /// each of `sources`. `None` (after a loud skip) when PostgreSQL is unreachable;
    /// under `AGORA_REQUIRE_SERVERS=1` that is a failure instead.
    pub async fn new(backend: Backend, service: &str, sources: &[&str]) -> Option<TestEnv> {
        let dir = tempfile::tempdir().unwrap();
        let (db_url, pg) = match backend {
            Backend::Sqlite => (
                format!(
                    "sqlite://{}",
                    dir.path().join(format!("{service}.db")).display()
                ),
                None,
            ),
            Backend::Postgres => {
                let pg = PgDatabase::create().await?;
                (pg.url().to_owned(), Some(pg))
            }
        };
        let bus = EmbeddedBus::open(dir.path().join("bus.db")).await.unwrap();
        for source in sources {
            bus.ensure_stream(&stream_config(source)).await.unwrap();
        }
        Some(TestEnv {
            db_url,
            bus: Arc::new(bus),
            issuer: TestIssuer::new(),
            internal: TEST_PLANE.clone(),
            dir,
            _pg: pg,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The bus, as a service's config takes it.
    pub fn shared_bus(&self) -> SharedBus {
        self.bus.clone()
    }

    /// The token of a new admin.
    pub fn admin(&self) -> String {
        self.issuer.admin().1
    }

    /// The token of a new customer.
    pub fn customer(&self) -> String {
        self.issuer.customer().1
    }

    /// Publishes `envelope`, as its producer's relay would.
    pub async fn publish(&self, envelope: &Envelope) {
        self.bus
            .publish(envelope.to_message().unwrap())
            .await
            .unwrap();
    }

    /// Publishes `event` in a fresh envelope correlated with `about`; returns the
    /// envelope.
    pub async fn emit<E: Event>(&self, event: &E, about: impl Display) -> Envelope {
        let envelope = Envelope::new(event, &Context::new(about.to_string())).unwrap();
        self.publish(&envelope).await;
        envelope
    }

    /// A reader of the stream of `source` from its start, through a durable consumer
    /// of its own.
    pub async fn reader_of(&self, source: &str) -> EventReader {
        let n = READERS.fetch_add(1, Ordering::SeqCst);
        let stream = stream_config(source).name;
        let consumer = self
            .bus
            .consumer(&ConsumerConfig::new(stream, format!("test-{n}")))
            .await
            .unwrap();
        EventReader::new(consumer)
    }

    /// Every event `source` published so far, waiting until there are `at_least`.
    pub async fn published(&self, source: &str, at_least: usize) -> Vec<Envelope> {
        self.reader_of(source).await.read(at_least).await
    }

    /// Waits until the durable consumer of `config` has settled every message (acked,
    /// or dead-lettered).
    pub async fn consumer_settled(&self, config: &ConsumerConfig) {
        let consumer = self.bus.consumer(config).await.unwrap();
        eventually(&format!("consumer {} is settled", config.name), || async {
            let info = consumer.info().await.unwrap();
            info.pending == 0 && info.ack_pending == 0
        })
        .await;
    }

    /// Waits until the consumers of every one of `subscribers` have settled every
    /// message and, if given, the relay of `outbox`'s store has published everything.
    pub async fn consumers_settled(&self, subscribers: &[SubscriberConfig], outbox: Option<&Db>) {
        for subscriber in subscribers {
            self.consumer_settled(&subscriber.consumer_config()).await;
        }
        if let Some(db) = outbox {
            outbox_published(db).await;
        }
    }

    /// Every event `source` published, read until nothing more comes: all there is
    /// once its producer is settled.
    pub async fn all_published(&self, source: &str) -> Vec<Envelope> {
        self.reader_of(source).await.read_all().await
    }

    /// Waits until the durable consumer of `config` has tried some message more than
    /// once.
    pub async fn consumer_retried(&self, config: &ConsumerConfig) {
        let consumer = self.bus.consumer(config).await.unwrap();
        eventually(&format!("consumer {} retries", config.name), || async {
            consumer.info().await.unwrap().redelivered > 0
        })
        .await;
    }
}

/// Waits until the relay of `db`'s outbox has published everything in it.
pub async fn outbox_published(db: &Db) {
    let outbox = Outbox::new(db);
    eventually("the outbox is published", || async {
        outbox.unpublished().await.unwrap() == 0
    })
    .await;
}

/// How long a reader fetches for at a time.
pub(crate) const FETCH_WAIT: Duration = Duration::from_millis(50);
