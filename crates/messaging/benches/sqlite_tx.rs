//! What one store transaction costs on SQLite, three ways, measured in the same run
//! (issue 17: "run a store's transaction whole on its connection's thread and
//! group-commit concurrent writers"):
//!
//! - `sqlx`: the stores today — [`Db`] over sqlx's `Any` driver, one statement at a
//!   time through its SQLite worker thread;
//! - `thread`: the same transaction as one closure run whole on a rusqlite
//!   connection's own thread (one hand-off per transaction);
//! - `group`: as `thread`, and the closures queued meanwhile share one `COMMIT` (each
//!   in its own savepoint, so one that fails undoes only itself).
//!
//! Every mode runs the same transaction — a handler's shape: record the delivery in
//! the inbox, read a row, update it, append an event to the outbox — from 8 tasks on a
//! 2-worker tokio runtime, with the stores' settings (WAL, `synchronous = FULL`: every
//! commit is on disk before it is answered). It prints the CPU time and the context
//! switches of the whole process per transaction, and each mode's ratio to `sqlx`.
//!
//! `cargo bench -p agora-messaging --bench sqlite_tx [-- SECONDS]`; `SQLITE_TX_ONLY=thread`
//! (or `group`) runs `sqlx` and that mode alone, e.g. under `strace -c -f`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use agora_messaging::Db;

const TASKS: usize = 8;
const ITEMS: i64 = 64;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS inbox (consumer TEXT NOT NULL, message_id TEXT NOT NULL,
    PRIMARY KEY (consumer, message_id));
CREATE TABLE IF NOT EXISTS items (id BIGINT PRIMARY KEY, n BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT,
    subject TEXT NOT NULL, payload TEXT NOT NULL);";

fn main() {
    let seconds: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(4);
    let run = Duration::from_secs(seconds);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "one store transaction (inbox insert, read, update, outbox insert), {TASKS} tasks, \
         {seconds} s each, WAL + synchronous=FULL"
    );
    let only = std::env::var("SQLITE_TX_ONLY").ok();
    let wanted = |mode: &str| only.as_deref().is_none_or(|only| only == mode);
    let sqlx = runtime.block_on(measure("sqlx", run, Sqlx::open));
    let mut others = Vec::new();
    if wanted("thread") {
        others.push(runtime.block_on(measure("thread", run, |dir| Thread::open(dir, false))));
    }
    if wanted("group") {
        others.push(runtime.block_on(measure("group", run, |dir| Thread::open(dir, true))));
    }
    println!();
    for m in std::iter::once(&sqlx).chain(&others) {
        println!(
            "{:>7}: {:>8.0} tx/s  {:>6.1} µs CPU/tx  {:>5.2} context switches/tx  \
             (CPU ×{:.2}, switches ×{:.2}, rate ×{:.2} vs sqlx)",
            m.name,
            m.rate(),
            m.cpu_us_per_tx(),
            m.switches_per_tx(),
            m.cpu_us_per_tx() / sqlx.cpu_us_per_tx(),
            m.switches_per_tx() / sqlx.switches_per_tx(),
            m.rate() / sqlx.rate(),
        );
    }
}

struct Measured {
    name: &'static str,
    transactions: u64,
    elapsed: Duration,
    cpu: Duration,
    switches: u64,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.transactions as f64 / self.elapsed.as_secs_f64()
    }
    fn cpu_us_per_tx(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.transactions as f64
    }
    fn switches_per_tx(&self) -> f64 {
        self.switches as f64 / self.transactions as f64
    }
}

/// A store that runs the benchmark's transaction.
trait Store: Send + Sync + 'static {
    fn transaction(&self, message_id: String, item: i64) -> impl Future<Output = ()> + Send;
}

async fn measure<S, F, Fut>(name: &'static str, run: Duration, open: F) -> Measured
where
    S: Store,
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = S>,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(open(dir.path().to_owned()).await);
    let done = Arc::new(AtomicU64::new(0));
    // A short warm-up, then the measured window.
    for (window, counted) in [(Duration::from_millis(300), false), (run, true)] {
        let before = Usage::now();
        let start = Instant::now();
        let count_before = done.load(Ordering::Relaxed);
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let store = store.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while start.elapsed() < window {
                        let id = format!("{name}-{counted}-{task}-{i}");
                        store
                            .transaction(id, (i as i64 + task as i64) % ITEMS)
                            .await;
                        done.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        if counted {
            let after = Usage::now();
            let measured = Measured {
                name,
                transactions: done.load(Ordering::Relaxed) - count_before,
                elapsed: start.elapsed(),
                cpu: after.cpu - before.cpu,
                switches: after.switches - before.switches,
            };
            println!(
                "{name}: {} transactions in {:.2?}",
                measured.transactions, measured.elapsed
            );
            return measured;
        }
    }
    unreachable!("the counted window returns")
}

struct Sqlx(Db);

impl Sqlx {
    async fn open(dir: PathBuf) -> Sqlx {
        let url = format!("sqlite://{}", dir.join("sqlx.db").display());
        let db = Db::connect(&url).await.expect("connect");
        let mut tx = db.begin().await.expect("begin");
        for statement in SCHEMA.split(';').filter(|s| !s.trim().is_empty()) {
            sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
                .execute(&mut *tx)
                .await
                .expect("schema");
        }
        for id in 0..ITEMS {
            sqlx::query("INSERT INTO items (id, n) VALUES ($1, 0) ON CONFLICT DO NOTHING")
                .bind(id)
                .execute(&mut *tx)
                .await
                .expect("item");
        }
        tx.commit().await.expect("commit");
        Sqlx(db)
    }
}

impl Store for Sqlx {
    async fn transaction(&self, message_id: String, item: i64) {
        let mut tx = self.0.begin().await.expect("begin");
        sqlx::query("INSERT INTO inbox (consumer, message_id) VALUES ($1, $2)")
            .bind("bench")
            .bind(message_id)
            .execute(&mut *tx)
            .await
            .expect("inbox");
        let n: i64 = sqlx::query_scalar("SELECT n FROM items WHERE id = $1")
            .bind(item)
            .fetch_one(&mut *tx)
            .await
            .expect("read");
        sqlx::query("UPDATE items SET n = $1 WHERE id = $2")
            .bind(n + 1)
            .bind(item)
            .execute(&mut *tx)
            .await
            .expect("update");
        sqlx::query("INSERT INTO outbox (subject, payload) VALUES ($1, $2)")
            .bind("bench.item_changed")
            .bind(format!("{{\"item\":{item},\"n\":{}}}", n + 1))
            .execute(&mut *tx)
            .await
            .expect("outbox");
        tx.commit().await.expect("commit");
    }
}

type Work = Box<dyn FnOnce(&rusqlite::Connection) -> rusqlite::Result<()> + Send>;

/// A rusqlite connection on its own thread, taking whole transactions as closures.
struct Thread {
    jobs: mpsc::Sender<(Work, tokio::sync::oneshot::Sender<Result<(), String>>)>,
}

impl Thread {
    async fn open(dir: PathBuf, group: bool) -> Thread {
        let path = dir.join("thread.db");
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .expect("pragmas");
        conn.execute_batch(SCHEMA).expect("schema");
        for id in 0..ITEMS {
            conn.execute(
                "INSERT INTO items (id, n) VALUES (?1, 0) ON CONFLICT DO NOTHING",
                [id],
            )
            .expect("item");
        }
        let (jobs, queue) = mpsc::channel();
        std::thread::spawn(move || {
            if group {
                serve_grouped(&conn, &queue);
            } else {
                serve(&conn, &queue);
            }
        });
        Thread { jobs }
    }
}

type Queue = mpsc::Receiver<(Work, tokio::sync::oneshot::Sender<Result<(), String>>)>;

/// One transaction per closure.
fn serve(conn: &rusqlite::Connection, queue: &Queue) {
    while let Ok((work, answer)) = queue.recv() {
        let result = (|| {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            match work(conn) {
                Ok(()) => conn.execute_batch("COMMIT"),
                Err(error) => {
                    conn.execute_batch("ROLLBACK")?;
                    Err(error)
                }
            }
        })();
        let _ = answer.send(result.map_err(|e| e.to_string()));
    }
}

/// Every closure waiting when the writer is free, in one transaction: each in its
/// own savepoint, one `COMMIT` (one fsync) for all, answered after it.
fn serve_grouped(conn: &rusqlite::Connection, queue: &Queue) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        let mut answers = Vec::with_capacity(batch.len());
        let began = conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| e.to_string());
        for (work, answer) in batch {
            let result = began.clone().and_then(|()| {
                let one = || {
                    conn.execute_batch("SAVEPOINT one")?;
                    match work(conn) {
                        Ok(()) => conn.execute_batch("RELEASE one"),
                        Err(error) => {
                            conn.execute_batch("ROLLBACK TO one; RELEASE one")?;
                            Err(error)
                        }
                    }
                };
                one().map_err(|e| e.to_string())
            });
            answers.push((answer, result));
        }
        let committed = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
        for (answer, result) in answers {
            let _ = answer.send(committed.clone().and(result));
        }
    }
}

impl Store for Thread {
    async fn transaction(&self, message_id: String, item: i64) {
        let work: Work = Box::new(move |conn| {
            conn.prepare_cached("INSERT INTO inbox (consumer, message_id) VALUES (?1, ?2)")?
                .execute(("bench", &message_id))?;
            let n: i64 = conn
                .prepare_cached("SELECT n FROM items WHERE id = ?1")?
                .query_row([item], |row| row.get(0))?;
            conn.prepare_cached("UPDATE items SET n = ?1 WHERE id = ?2")?
                .execute([n + 1, item])?;
            conn.prepare_cached("INSERT INTO outbox (subject, payload) VALUES (?1, ?2)")?
                .execute((
                    "bench.item_changed",
                    format!("{{\"item\":{item},\"n\":{}}}", n + 1),
                ))?;
            Ok(())
        });
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.jobs.send((work, answer)).expect("writer gone");
        answered.await.expect("writer gone").expect("transaction");
    }
}

/// The whole process's CPU time and context switches (every thread's, live ones).
struct Usage {
    cpu: Duration,
    switches: u64,
}

impl Usage {
    fn now() -> Usage {
        let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
        // Fields after the command's closing parenthesis: utime is the 12th, stime the
        // 13th (14th and 15th of the line), in clock ticks of 1/100 s.
        let after = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        let mut switches = 0;
        for task in std::fs::read_dir("/proc/self/task")
            .expect("tasks")
            .flatten()
        {
            let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
                continue;
            };
            for line in status.lines() {
                if let Some(n) = line
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    switches += n.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
        Usage {
            cpu: Duration::from_millis(ticks * 10),
            switches,
        }
    }
}
