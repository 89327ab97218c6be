//! Test support shared by Agora's test suites: a private `nats-server -js` per test on a
//! free port with a temporary store, and fresh PostgreSQL databases per test.
//!
//! When a server is missing, [`NatsServer::start`], [`PgDatabase::create`] and
//! [`PgDatabases::create`] return `None` after printing a loud `SKIPPED` line naming what
//! is missing — unless `AGORA_REQUIRE_SERVERS=1` is set (CI sets it), in which case they
//! panic, so a missing server fails the run instead of hiding in a skip.

#![forbid(unsafe_code)]

#[cfg(feature = "otlp")]
pub mod otlp;

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

/// `n` distinct free TCP ports on 127.0.0.1 (all bound at once while chosen, so no
/// two are the same; [`free_port`] called `n` times may repeat one).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port on 127.0.0.1"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

/// The `nats-server` binary: `NATS_SERVER_BIN`, else the first on `PATH` (or in
/// `/usr/sbin`, `/usr/local/sbin`); `None` when there is none.
pub fn find_nats_server() -> Option<PathBuf> {
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
    /// Its monitoring port, whose `/healthz` says when JetStream is ready.
    monitor_port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
    /// Its place in a cluster, if it is in one.
    member: Option<Member>,
}

/// How a server joins a cluster: its name, its route port, the routes to the others.
#[derive(Debug, Clone)]
struct Member {
    name: String,
    route_port: u16,
    routes: String,
}

impl NatsServer {
    /// Starts a server with JetStream and a file store in a temporary directory, and
    /// waits until JetStream is ready (its `/healthz`). `None` (with a loud skip) when
    /// there is no `nats-server` binary.
    pub fn start() -> Option<NatsServer> {
        let Some(binary) = find_nats_server() else {
            missing("nats-server not found on PATH (apt-get install nats-server)");
            return None;
        };
        let store = tempfile::tempdir().expect("create a temporary JetStream store");
        let ports = free_ports(2);
        let mut server = NatsServer {
            binary,
            port: ports[0],
            monitor_port: ports[1],
            store,
            child: None,
            member: None,
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
        let consumers = jetstream_consumers(self.monitor_port);
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        self.spawn();
        // `/healthz` may say ready before every consumer is back: wait for as many as
        // there were, so that no client is told a durable consumer does not exist.
        if let Some(before) = consumers {
            let deadline = Instant::now() + Duration::from_secs(30);
            while jetstream_consumers(self.monitor_port).is_none_or(|now| now < before) {
                assert!(
                    Instant::now() < deadline,
                    "nats-server on {} restored fewer than {before} consumers in 30 s",
                    self.port
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server (SIGKILL); [`restart`](Self::restart) brings it back.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn(&mut self) {
        let mut command = Command::new(&self.binary);
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path());
        if let Some(member) = &self.member {
            command.args([
                "--server_name",
                &member.name,
                "--cluster_name",
                "agora-test",
                "--cluster",
                &format!("nats://127.0.0.1:{}", member.route_port),
                "--routes",
                &member.routes,
            ]);
        }
        command.args(["-m", &self.monitor_port.to_string()]);
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display()));
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10));
        // A lone server is ready once JetStream has restored its streams and
        // consumers: a client that asked before could be told a consumer does not
        // exist and make a new one. (A cluster's members are awaited together, by
        // [`NatsCluster::wait_until_ready`]: one alone never is.)
        if self.member.is_none() {
            wait_for_health(self.monitor_port, Duration::from_secs(30));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private JetStream cluster of `nats-server`s on 127.0.0.1, each with its own store;
/// every server is killed when dropped.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` servers routed to each other and waits until each says JetStream
    /// is ready (its monitoring `/healthz`). `None` (with a loud skip) when there is no
    /// `nats-server` binary.
    pub fn start(size: usize) -> Option<NatsCluster> {
        let Some(binary) = find_nats_server() else {
            missing("nats-server not found on PATH (apt-get install nats-server)");
            return None;
        };
        // Client, route and monitoring ports, all distinct.
        let mut ports = free_ports(3 * size).into_iter();
        let route_ports: Vec<u16> = ports.by_ref().take(size).collect();
        let routes = route_ports
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes: Vec<NatsServer> = route_ports
            .iter()
            .enumerate()
            .map(|(i, &route_port)| NatsServer {
                binary: binary.clone(),
                port: ports.next().expect("a client port"),
                monitor_port: ports.next().expect("a monitoring port"),
                store: tempfile::tempdir().expect("create a temporary JetStream store"),
                child: None,
                member: Some(Member {
                    name: format!("n{i}"),
                    route_port,
                    routes: routes.clone(),
                }),
            })
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        let cluster = NatsCluster { nodes };
        cluster.wait_until_ready(Duration::from_secs(30));
        Some(cluster)
    }

    /// The client URLs of every server, comma-separated (as `AGORA_BUS` takes them).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Server `i`, to kill or restart.
    pub fn node(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    /// The process ids of the servers that run.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(NatsServer::pid).collect()
    }

    /// Waits until every running server answers its `/healthz` with 200 (JetStream
    /// up, its meta leader known).
    pub fn wait_until_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            while !http_ok(node.monitor_port, "/healthz") {
                assert!(
                    Instant::now() < deadline,
                    "the JetStream cluster is not ready after {within:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Whether `GET path` on 127.0.0.1:`port` answers 200.
fn http_ok(port: u16, path: &str) -> bool {
    http_get_200(port, path).is_some()
}

/// The body of `GET path` on 127.0.0.1:`port` when it answers 200.
fn http_get_200(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?;
    (status == "200").then(|| body.to_owned())
}

/// How many consumers the server's JetStream holds (`/jsz`), or `None` when it does
/// not answer.
fn jetstream_consumers(port: u16) -> Option<u64> {
    let jsz: serde_json::Value = serde_json::from_str(&http_get_200(port, "/jsz")?).ok()?;
    jsz.get("consumers")?.as_u64()
}

/// Waits until `/healthz` on 127.0.0.1:`port` answers 200.
fn wait_for_health(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while !http_ok(port, "/healthz") {
        assert!(
            Instant::now() < deadline,
            "nats-server's /healthz on 127.0.0.1:{port} is not 200 after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
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
        let admin_url = pg_admin_url();
        match Self::create_on(&admin_url, name).await {
            Ok(database) => Some(database),
            Err(e) => {
                missing(&format!("PostgreSQL at {admin_url}: {e}"));
                None
            }
        }
    }

    /// Creates database `name` on the server of `admin_url` (a URL of a database on
    /// it, `postgres://…/postgres`).
    async fn create_on(admin_url: &str, name: String) -> Result<PgDatabase, sqlx::Error> {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        let _ = admin.close().await;
        let url = database_url(admin_url, &name);
        Ok(PgDatabase {
            admin_url: admin_url.to_owned(),
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
    databases: Vec<PgDatabase>,
}

impl Drop for PgDatabases {
    fn drop(&mut self) {
        // Side by side, as they were created.
        std::thread::scope(|scope| {
            for database in self.databases.drain(..) {
                scope.spawn(move || drop(database));
            }
        });
    }
}

impl PgDatabases {
    /// Creates one database per name on the server of `AGORA_TEST_PG_URL`, like
    /// [`PgDatabase::create`]. `None` (with a loud skip) when the server cannot be
    /// reached.
    pub async fn create(names: &[&str]) -> Option<PgDatabases> {
        let admin_url = pg_admin_url();
        match Self::create_on(&admin_url, "agora_test", names).await {
            Ok(databases) => Some(databases),
            Err(e) => {
                missing(&format!("PostgreSQL at {admin_url}: {e}"));
                None
            }
        }
    }

    /// Creates `<prefix>_<uuid>_<name>` for each name on the server of `admin_url`
    /// (`postgres://…/postgres`), all dropped with the value (those created before an
    /// error too).
    pub async fn create_on(
        admin_url: &str,
        prefix: &str,
        names: &[&str],
    ) -> Result<PgDatabases, sqlx::Error> {
        let prefix = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
        // Side by side: PostgreSQL serves concurrent requests for a checkpoint (which
        // creating and dropping a database may wait for) with one.
        let mut creating = tokio::task::JoinSet::new();
        for name in names {
            let (admin_url, name) = (admin_url.to_owned(), format!("{prefix}_{name}"));
            creating.spawn(async move { PgDatabase::create_on(&admin_url, name).await });
        }
        let mut databases = PgDatabases {
            template: database_url(admin_url, &format!("{prefix}_{{service}}")),
            databases: Vec::new(),
        };
        let mut failure = None;
        while let Some(created) = creating.join_next().await {
            match created.expect("a database creation task") {
                Ok(database) => databases.databases.push(database),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        // Those created before an error are dropped with `databases`.
        failure.map_or(Ok(databases), Err)
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

/// A private PostgreSQL server on 127.0.0.1 (its own `initdb` in a temporary
/// directory, started with `pg_ctl` on a free port), stopped when dropped: a test can
/// restart it without disturbing any other test. Run as the `postgres` user when the
/// test runs as root (PostgreSQL refuses to run as root).
#[derive(Debug)]
pub struct PgServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// The user the server runs as, when it is not the test's.
    user: Option<&'static str>,
}

impl PgServer {
    /// Initialises a cluster (trust authentication on 127.0.0.1, user `postgres`) and
    /// starts it. `None` (with a loud skip) when PostgreSQL's programs are missing.
    pub fn start() -> Option<PgServer> {
        let Some(bin) = find_pg_bin() else {
            missing("PostgreSQL's initdb and pg_ctl not found (apt-get install postgresql)");
            return None;
        };
        let dir = tempfile::tempdir().expect("a directory for PostgreSQL");
        let user = running_as_root().then_some("postgres");
        if let Some(user) = user {
            let status = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown the PostgreSQL directory to {user}");
        }
        let server = PgServer {
            bin,
            dir,
            port: free_port(),
            user,
        };
        server.run(
            "initdb",
            &[
                "-D",
                &server.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        server.pg_ctl_start();
        Some(server)
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates `name` and returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the private PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create a database");
        let _ = admin.close().await;
        self.url(name)
    }

    /// Stops the server the hard way (`pg_ctl stop -m immediate`: no shutdown
    /// checkpoint, recovery at the next start, like a crash) and starts it again on
    /// the same port and data.
    pub fn restart(&self) {
        self.pg_ctl_stop("immediate");
        self.pg_ctl_start();
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=300",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    fn pg_ctl_stop(&self, mode: &str) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", mode, "-w", "stop"]);
    }

    /// One of PostgreSQL's programs, to run as the server's user.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        match self.user {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    /// Runs one of PostgreSQL's programs (as the server's user), which must succeed.
    fn run(&self, program: &str, args: &[&str]) {
        let output = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The directory of `initdb` and `pg_ctl`: `PG_BIN`, or the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn find_pg_bin() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}
