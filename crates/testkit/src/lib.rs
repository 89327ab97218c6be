//! Test support shared by Agora's test suites: a private `nats-server -js` per test on a
//! free port with a temporary store, and fresh PostgreSQL databases per test.
//!
//! When a server is missing, [`NatsServer::start`], [`PgDatabase::create`] and
//! [`PgDatabases::create`] return `None` after printing a loud `SKIPPED` line naming what
//! is missing — unless `AGORA_REQUIRE_SERVERS=1` is set (CI sets it), in which case they
//! panic, so a missing server fails the run instead of hiding in a skip.

#![forbid(unsafe_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set to `1` to make a missing server fail the tests that need it.
pub const REQUIRE_SERVERS_ENV: &str = "AGORA_REQUIRE_SERVERS";
/// The PostgreSQL server tests create their databases on.
pub const PG_URL_ENV: &str = "AGORA_TEST_PG_URL";
const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn servers_required() -> bool {
    std::env::var(REQUIRE_SERVERS_ENV).is_ok_and(|v| v == "1" || v == "true")
}

fn missing(what: &str) {
    if servers_required() {
        panic!("{what}, and {REQUIRE_SERVERS_ENV}=1 says this test must not be skipped");
    }
    eprintln!(
        "SKIPPED {}: {what} (set {REQUIRE_SERVERS_ENV}=1 to fail instead)",
        std::thread::current().name().unwrap_or("test")
    );
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

fn find_nats_server() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("NATS_SERVER_BIN") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
}

/// A private `nats-server -js` on 127.0.0.1, killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server with JetStream and a file store in a temporary directory, and
    /// waits until it accepts connections. `None` (with a loud skip) when there is no
    /// `nats-server` binary.
    pub fn start() -> Option<NatsServer> {
        let Some(binary) = find_nats_server() else {
            missing("nats-server not found on PATH (apt-get install nats-server)");
            return None;
        };
        let store = tempfile::tempdir().expect("create a temporary JetStream store");
        let mut server = NatsServer {
            binary,
            port: free_port(),
            store,
            child: None,
        };
        server.spawn();
        Some(server)
    }

    /// `nats://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// Stops the server the hard way (SIGKILL) and starts it again on the same port and
    /// store: what a crash and a restart look like to clients.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Stops the server the gentle way (SIGTERM, then waits for it to exit, which lets
    /// it write its state) and starts it again on the same port and store.
    pub fn restart_gracefully(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        self.spawn();
    }

    /// Stops the server (SIGKILL); [`restart`](Self::restart) brings it back.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display()));
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10));
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_for_port(port: u16, within: Duration) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + within;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A fresh PostgreSQL database, dropped when the value is dropped.
#[derive(Debug)]
pub struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    /// Creates `agora_test_<uuid>` on the server of `AGORA_TEST_PG_URL` (default
    /// `postgres://postgres@127.0.0.1:5432/postgres`). `None` (with a loud skip) when
    /// the server cannot be reached.
    pub async fn create() -> Option<PgDatabase> {
        Self::create_named(format!("agora_test_{}", uuid::Uuid::now_v7().simple())).await
    }

    async fn create_named(name: String) -> Option<PgDatabase> {
        use sqlx::Connection;
        let admin_url = pg_admin_url();
        let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(conn) => conn,
            Err(e) => {
                missing(&format!("PostgreSQL unreachable at {admin_url}: {e}"));
                return None;
            }
        };
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        let _ = admin.close().await;
        let url = database_url(&admin_url, &name);
        Some(PgDatabase {
            admin_url,
            name,
            url,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Drop runs outside any async context we can rely on: a short-lived thread with
        // its own runtime does the cleanup.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// Fresh PostgreSQL databases `agora_test_<uuid>_<name>`, one per name, all dropped when
/// the value is dropped: for a shop whose services each have their own database, named
/// by a template (`postgres://…/agora_{service}`).
#[derive(Debug)]
pub struct PgDatabases {
    template: String,
    /// Held for their drop, which drops the databases.
    _databases: Vec<PgDatabase>,
}

impl PgDatabases {
    /// Creates one database per name on the server of `AGORA_TEST_PG_URL`, like
    /// [`PgDatabase::create`]. `None` (with a loud skip) when the server cannot be
    /// reached.
    pub async fn create(names: &[&str]) -> Option<PgDatabases> {
        let prefix = format!("agora_test_{}", uuid::Uuid::now_v7().simple());
        let mut databases = Vec::new();
        for name in names {
            databases.push(PgDatabase::create_named(format!("{prefix}_{name}")).await?);
        }
        Some(PgDatabases {
            template: database_url(&pg_admin_url(), &format!("{prefix}_{{service}}")),
            _databases: databases,
        })
    }

    /// `postgres://…/agora_test_<uuid>_{service}`: with a name for `{service}`, the URL
    /// of that name's database.
    pub fn template(&self) -> &str {
        &self.template
    }
}

/// `AGORA_TEST_PG_URL`, or the default server's `postgres` database.
fn pg_admin_url() -> String {
    std::env::var(PG_URL_ENV).unwrap_or_else(|_| DEFAULT_PG_URL.into())
}

/// The URL of database `name` on the server of `admin_url`.
fn database_url(admin_url: &str, name: &str) -> String {
    match admin_url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("{PG_URL_ENV} must end with /<database>"),
    }
}

/// The store backend a test runs on; see [`on_both_backends!`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates, for each `async fn case(backend: Backend)` of the calling module, a test
/// on SQLite (module `sqlite`) and one on PostgreSQL (module `postgres`).
#[macro_export]
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::Backend::Postgres).await;
                }
            )*
        }
    };
}
