//! The store handle every service uses: one pool over SQLite or PostgreSQL, and the
//! versioned migrations of each component's tables.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, AssertSqlSafe, Transaction};
use tokio::sync::Notify;

use crate::Error;

/// Which database a [`Db`] talks to, so that callers can pick per-backend DDL where the
/// two differ. Queries themselves should be written in the SQL both accept (`$1`
/// placeholders, `ON CONFLICT`, `BIGINT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How a [`Db`] connects. Built explicitly; [`DbConfig::default`] suits a service.
#[derive(Clone, Debug)]
pub struct DbConfig {
    /// Pool size. `None`: 1 on SQLite, 10 on PostgreSQL.
    ///
    /// SQLite has one writer at a time; with a single connection, writers queue in the
    /// pool (a fair async queue) instead of spinning in SQLite's busy handler, which
    /// sleeps in steps of up to 100 ms and ruins latency.
    pub max_connections: Option<u32>,
    /// How long to wait for a connection from the pool. `None`: 30 s on SQLite (its one
    /// connection is the queue of its writers), 5 s on PostgreSQL (ten connections all
    /// busy that long: the server is down or swamped, and a request had better get its
    /// 503 than wait).
    pub acquire_timeout: Option<Duration>,
    /// SQLite only: how long a connection waits for another process's lock.
    pub busy_timeout: Duration,
}

impl Default for DbConfig {
    fn default() -> Self {
        Self {
            max_connections: None,
            acquire_timeout: None,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// A versioned schema change of one component, in the dialect of each backend.
///
/// Each script may hold several statements. Scripts run in a transaction, so a
/// migration is applied entirely or not at all (both backends have transactional DDL).
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// Increasing, per component; never reuse or edit a version once released.
    pub version: i64,
    pub description: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// A shared handle on a service's own store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: AnyPool,
    backend: Backend,
    /// Wakes the outbox relay after a commit that may have appended events.
    outbox_committed: Notify,
    /// Held by the running relay: one relay per store in a process.
    relay_slot: Arc<tokio::sync::Mutex<()>>,
    /// How many migrations [`Db::migrate`] applied through this handle.
    migrations_applied: AtomicUsize,
}

impl Db {
    /// Connects with the default [`DbConfig`]. `url` is `sqlite://path` (the file is
    /// created if missing), `sqlite::memory:`, or `postgres://…`; a PostgreSQL URL may
    /// size the pool with `pool_max_conns=N` (default 10), as a deployment must when
    /// processes' pools together would pass the server's `max_connections`.
    pub async fn connect(url: &str) -> Result<Db, Error> {
        Db::connect_with(url, &DbConfig::default()).await
    }

    pub async fn connect_with(url: &str, config: &DbConfig) -> Result<Db, Error> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        let pool = match backend {
            Backend::Sqlite => connect_sqlite(url, config).await?,
            Backend::Postgres => {
                let (url, pool_size) = take_pool_size(url)?;
                let options: AnyConnectOptions = url.parse()?;
                AnyPoolOptions::new()
                    .max_connections(config.max_connections.or(pool_size).unwrap_or(10))
                    .acquire_timeout(config.acquire_timeout.unwrap_or(Duration::from_secs(5)))
                    .connect_with(options)
                    .await?
            }
        };
        Ok(Db {
            inner: Arc::new(Inner {
                pool,
                backend,
                outbox_committed: Notify::new(),
                relay_slot: Arc::new(tokio::sync::Mutex::new(())),
                migrations_applied: AtomicUsize::new(0),
            }),
        })
    }

    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The store's clock, in milliseconds since the Unix epoch, as an SQL expression:
    /// what a lease shared by several hosts is written and compared with, so that no
    /// host's clock decides it.
    pub fn now_ms_sql(&self) -> &'static str {
        match self.inner.backend {
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// The pool, for reads and single statements outside a transaction.
    pub fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }

    /// Begins a write transaction.
    ///
    /// On SQLite it is `BEGIN IMMEDIATE`: the write lock is taken up front, so a
    /// transaction that reads before it writes cannot fail half-way with
    /// `SQLITE_BUSY_SNAPSHOT` when another connection wrote in between.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, Error> {
        let tx = match self.inner.backend {
            Backend::Sqlite => self.inner.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.inner.pool.begin().await?,
        };
        Ok(tx)
    }

    /// Applies the messaging tables (outbox, inbox); idempotent.
    pub async fn migrate_messaging(&self) -> Result<(), Error> {
        self.migrate("messaging", crate::schema::MIGRATIONS).await
    }

    /// Applies the `migrations` of `component` not applied yet, in version order, each
    /// in its own transaction; idempotent, and safe when several processes start at
    /// once (PostgreSQL: an advisory lock; SQLite: the write lock of `BEGIN IMMEDIATE`).
    pub async fn migrate(&self, component: &str, migrations: &[Migration]) -> Result<(), Error> {
        let ledger = match self.inner.backend {
            Backend::Sqlite => {
                "CREATE TABLE IF NOT EXISTS agora_migrations (
                    component TEXT NOT NULL,
                    version INTEGER NOT NULL,
                    description TEXT NOT NULL,
                    applied_at_ms INTEGER NOT NULL,
                    PRIMARY KEY (component, version)
                )"
            }
            Backend::Postgres => {
                "CREATE TABLE IF NOT EXISTS agora_migrations (
                    component TEXT NOT NULL,
                    version BIGINT NOT NULL,
                    description TEXT NOT NULL,
                    applied_at_ms BIGINT NOT NULL,
                    PRIMARY KEY (component, version)
                )"
            }
        };
        let mut sorted = migrations.to_vec();
        sorted.sort_by_key(|m| m.version);
        for migration in sorted {
            let mut tx = self.begin().await?;
            if self.inner.backend == Backend::Postgres {
                // Serializes concurrent migrators, including the ledger's creation:
                // `CREATE TABLE IF NOT EXISTS` alone races on PostgreSQL.
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(MIGRATION_LOCK_KEY)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::raw_sql(ledger).execute(&mut *tx).await?;
            let applied: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM agora_migrations WHERE component = $1 AND version = $2",
            )
            .bind(component)
            .bind(migration.version)
            .fetch_optional(&mut *tx)
            .await?;
            if applied.is_some() {
                tx.rollback().await?;
                continue;
            }
            let script = match self.inner.backend {
                Backend::Sqlite => migration.sqlite,
                Backend::Postgres => migration.postgres,
            };
            sqlx::raw_sql(AssertSqlSafe(script))
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO agora_migrations (component, version, description, applied_at_ms)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(component)
            .bind(migration.version)
            .bind(migration.description)
            .bind(crate::now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            self.inner
                .migrations_applied
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(component, version = migration.version, "migration applied");
        }
        Ok(())
    }

    /// How many migrations were applied through this handle (those of this start; none
    /// when the schema was up to date).
    pub fn migrations_applied(&self) -> usize {
        self.inner.migrations_applied.load(Ordering::Relaxed)
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    pub(crate) fn wake_relay(&self) {
        // `notify_one` keeps a permit when the relay is busy, so a commit during a
        // relay pass is never missed: the relay runs one more pass.
        self.inner.outbox_committed.notify_one();
    }

    pub(crate) fn outbox_committed(&self) -> &Notify {
        &self.inner.outbox_committed
    }

    pub(crate) fn relay_slot(&self) -> Arc<tokio::sync::Mutex<()>> {
        self.inner.relay_slot.clone()
    }
}

/// `hashtext('agora_migrations')`-like constant: any fixed key works, it only has to
/// differ from the other advisory locks of the database.
const MIGRATION_LOCK_KEY: i64 = 0x6167_6f72_615f_6d67; // "agora_mg"

/// The URL without its `pool_max_conns` parameter, and that parameter's value.
fn take_pool_size(url: &str) -> Result<(String, Option<u32>), Error> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut size = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("pool_max_conns", value)) => {
                size = Some(value.parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(|| {
                    Error::Config(format!(
                        "pool_max_conns={value:?} in the database URL: a positive integer, please"
                    ))
                })?);
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, size))
}

fn backend_of(url: &str) -> Result<Backend, Error> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Backend::Postgres)
    } else {
        // Only the scheme: the rest of a URL may hold a password.
        let scheme = url.split(':').next().unwrap_or_default();
        Err(Error::UnsupportedUrl(scheme.to_owned()))
    }
}

async fn connect_sqlite(url: &str, config: &DbConfig) -> Result<AnyPool, Error> {
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let mut url = url.to_owned();
    if !in_memory {
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:")
            .split('?')
            .next()
            .unwrap_or_default();
        if let Some(parent) = std::path::Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::Config(format!("create {}: {e}", parent.display())))?;
        }
        if !url.contains("mode=") {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str("mode=rwc");
        }
    }
    let options: AnyConnectOptions = url.parse()?;
    let busy_ms = i64::try_from(config.busy_timeout.as_millis()).unwrap_or(i64::MAX);
    let pool = AnyPoolOptions::new()
        .max_connections(config.max_connections.unwrap_or(1))
        .min_connections(if in_memory { 1 } else { 0 })
        .acquire_timeout(config.acquire_timeout.unwrap_or(Duration::from_secs(30)))
        // An in-memory database lives as long as its connection: never recycle it.
        .idle_timeout(None)
        .max_lifetime(None)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                // WAL lets readers run beside the writer; FULL fsyncs every commit, which
                // is what makes "committed" mean "survives a power cut".
                for pragma in [
                    "PRAGMA journal_mode = WAL".to_owned(),
                    "PRAGMA synchronous = FULL".to_owned(),
                    "PRAGMA foreign_keys = ON".to_owned(),
                    format!("PRAGMA busy_timeout = {busy_ms}"),
                ] {
                    sqlx::raw_sql(AssertSqlSafe(pragma))
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    Ok(pool)
}
