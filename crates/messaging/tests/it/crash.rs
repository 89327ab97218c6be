//! Crash anywhere, restart from the same files: every committed business change is
//! applied exactly once by every consumer, and nothing is lost.
//!
//! A "process" is a producer (business writes + outbox), its relay, the embedded bus,
//! and two consumers, each with its own store. A [`FaultPlan`] stops the process at one
//! step boundary; the test then aborts every task and drops every handle — nothing is
//! closed or flushed by us — and starts a new process on the same files. A case may
//! crash twice before the last, crash-free, run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_bus::embedded::EmbeddedBus;
use agora_bus::{Bus, SharedBus};
use agora_messaging::{
    Backoff, CrashPoint, Db, FaultPlan, Outbox, Relay, RelayConfig, RelayHandle, Subscriber,
    SubscriberConfig, SubscriberHandle,
};
use agora_testkit::PgDatabase;
use proptest::prelude::*;
use tokio::task::JoinHandle;

use crate::support::{
    CountingHandler, STREAM, applied, create_applied_table, credited, embedded_bus,
};

const CONSUMERS: [&str; 2] = ["ledger-view", "ledger-audit"];
/// How long one run may take to finish its work (or reach its crash).
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// The files (or databases) that survive crashes.
struct World {
    dir: tempfile::TempDir,
    producer_url: String,
    consumer_urls: [String; 2],
    _pg: Vec<PgDatabase>,
}

impl World {
    fn sqlite() -> World {
        let dir = tempfile::tempdir().unwrap();
        let url = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
        World {
            producer_url: url("producer.db"),
            consumer_urls: [url("view.db"), url("audit.db")],
            dir,
            _pg: Vec::new(),
        }
    }

    async fn postgres() -> Option<World> {
        let producer = PgDatabase::create().await?;
        let view = PgDatabase::create().await?;
        let audit = PgDatabase::create().await?;
        Some(World {
            dir: tempfile::tempdir().unwrap(),
            producer_url: producer.url().to_owned(),
            consumer_urls: [view.url().to_owned(), audit.url().to_owned()],
            _pg: vec![producer, view, audit],
        })
    }
}

/// Everything one process holds. Dropped whole to crash.
struct Process {
    bus: Arc<EmbeddedBus>,
    producer: Db,
    consumers: Vec<Db>,
    relay: RelayHandle,
    subscribers: Vec<SubscriberHandle>,
    writer: JoinHandle<()>,
}

async fn open(url: &str) -> Db {
    let db = Db::connect(url).await.expect("connect");
    db.migrate_messaging().await.expect("migrate");
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS business (change_id BIGINT PRIMARY KEY, event_id TEXT NOT NULL)",
    )
    .execute(db.pool())
    .await
    .expect("business table");
    create_applied_table(&db).await;
    db
}

/// Starts a process that writes changes `1..=changes` not committed yet.
async fn start(world: &World, plan: &FaultPlan, changes: u64) -> Process {
    let bus = embedded_bus(world.dir.path()).await;
    let shared: SharedBus = bus.clone();
    let producer = open(&world.producer_url).await;
    let mut consumers = Vec::new();
    for url in &world.consumer_urls {
        consumers.push(open(url).await);
    }
    let relay = Relay::spawn(
        &producer,
        shared.clone(),
        RelayConfig {
            batch_size: 4,
            poll_interval: Duration::from_millis(100),
            backoff: Backoff::new(Duration::from_millis(5), Duration::from_millis(50)),
            faults: plan.clone(),
            ..RelayConfig::default()
        },
    );
    let mut subscribers = Vec::new();
    for (name, db) in CONSUMERS.iter().zip(&consumers) {
        let config = SubscriberConfig::new(*name, STREAM)
            .workers(2)
            .ack_wait(Duration::from_secs(2))
            // Crashes and ack waits add deliveries; none of them may dead-letter.
            .max_deliver(1000)
            .backoff(Backoff::new(
                Duration::from_millis(5),
                Duration::from_millis(20),
            ))
            .faults(plan.clone());
        let handler = CountingHandler::new(name);
        subscribers.push(
            Subscriber::spawn(db, &shared, config, handler)
                .await
                .unwrap(),
        );
    }
    let writer = tokio::spawn(write_changes(producer.clone(), plan.clone(), changes));
    Process {
        bus,
        producer,
        consumers,
        relay,
        subscribers,
        writer,
    }
}

/// The business: one row per change and its event, in one transaction each.
async fn write_changes(db: Db, plan: FaultPlan, changes: u64) {
    let outbox = Outbox::new(&db);
    let done: Option<i64> = sqlx::query_scalar("SELECT MAX(change_id) FROM business")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let first = u64::try_from(done.unwrap_or(0)).unwrap() + 1;
    for change in first..=changes {
        let envelope = credited(change);
        let mut tx = db.begin().await.unwrap();
        sqlx::query("INSERT INTO business (change_id, event_id) VALUES ($1, $2)")
            .bind(i64::try_from(change).unwrap())
            .bind(envelope.id.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        Outbox::append(&mut tx, &envelope).await.unwrap();
        outbox.commit(tx).await.unwrap();
        plan.checkpoint(CrashPoint::AfterBusinessCommit).await;
    }
}

/// Kills the process: every task aborted where it stands, every handle dropped.
async fn crash(process: Process) {
    let Process {
        bus,
        producer,
        consumers,
        relay,
        subscribers,
        writer,
    } = process;
    writer.abort();
    let _ = writer.await;
    relay.abort().await;
    for subscriber in subscribers {
        subscriber.abort().await;
    }
    // A dead process's file locks go with it: close the pools so that no connection of
    // the old "process" still holds a SQLite write lock (or a PostgreSQL session) while
    // the new one starts.
    producer.close().await;
    for consumer in consumers {
        consumer.close().await;
    }
    // The embedded bus has no way to die without committing what it has queued: its
    // `Drop` commits too. `close` does the same and also waits until the file is
    // released, which a new bus on the same file needs (it fails with "database is
    // locked" while the old writer is still shutting down).
    bus.close().await;
}

async fn committed(db: &Db) -> Vec<String> {
    let mut ids: Vec<String> = sqlx::query_scalar("SELECT event_id FROM business")
        .fetch_all(db.pool())
        .await
        .unwrap();
    ids.sort();
    ids
}

/// Whether every consumer applied exactly the committed changes.
async fn converged(process: &Process, changes: u64) -> bool {
    let committed = committed(&process.producer).await;
    if committed.len() as u64 != changes {
        return false;
    }
    for (name, db) in CONSUMERS.iter().zip(&process.consumers) {
        let mut ids: Vec<String> = applied(db, name)
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        if ids != committed {
            return false;
        }
    }
    true
}

async fn run_case(world: World, crashes: Vec<(CrashPoint, u64)>, changes: u64) {
    for (point, passes) in crashes {
        let plan = FaultPlan::crash_at(point, passes);
        let process = start(&world, &plan, changes).await;
        let deadline = Instant::now() + RUN_LIMIT;
        // Run until the crash fires, or until everything is done (the crash point was
        // not reached often enough).
        loop {
            // The crash may fire while `converged` waits for a connection that the
            // crashed task holds forever: the crash wins that race.
            let done = tokio::select! {
                biased;
                () = plan.crashed() => true,
                done = converged(&process, changes) => done,
            };
            if done {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "run with {point:?} made no progress"
            );
            tokio::select! {
                _ = plan.crashed() => {}
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        crash(process).await;
    }

    let process = start(&world, &FaultPlan::none(), changes).await;
    let deadline = Instant::now() + RUN_LIMIT;
    while !converged(&process, changes).await {
        if Instant::now() > deadline {
            let committed = committed(&process.producer).await.len();
            let mut seen = Vec::new();
            for (name, db) in CONSUMERS.iter().zip(&process.consumers) {
                seen.push((name, applied(db, name).await.len()));
            }
            panic!("lost events: {committed} committed of {changes}, applied: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Duplicates still in flight would show up now.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for (name, db) in CONSUMERS.iter().zip(&process.consumers) {
        for (event, count) in applied(db, name).await {
            assert_eq!(count, 1, "{name} applied {event} {count} times");
        }
    }
    assert!(process.bus.dead_letters().await.unwrap().is_empty());
    let outbox = Outbox::new(&process.producer);
    let deadline = Instant::now() + RUN_LIMIT;
    while outbox.unpublished().await.unwrap() != 0 {
        assert!(
            Instant::now() < deadline,
            "outbox rows never marked published"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for subscriber in process.subscribers {
        subscriber.shutdown().await;
    }
    process.relay.shutdown().await;
    process.writer.await.unwrap();
    process.bus.close().await;
}

fn crash_plans() -> impl Strategy<Value = Vec<(CrashPoint, u64)>> {
    let point = prop::sample::select(CrashPoint::ALL.to_vec());
    prop::collection::vec((point, 0..4_u64), 1..=2)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        max_shrink_iters: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn crash_anywhere_then_restart_applies_every_change_once_sqlite(
        crashes in crash_plans(),
        changes in 1..10_u64,
    ) {
        runtime().block_on(run_case(World::sqlite(), crashes, changes));
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 8,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn crash_anywhere_then_restart_applies_every_change_once_postgres(
        crashes in crash_plans(),
        changes in 1..10_u64,
    ) {
        runtime().block_on(async {
            if let Some(world) = World::postgres().await {
                run_case(world, crashes, changes).await;
            }
        });
    }
}
