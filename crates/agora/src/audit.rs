//! `agora audit`: cross-checks every service's store of a stopped (or quiet) shop and
//! lists every inconsistency. It reads the stores directly, read-only — the SQLite files
//! of an embedded shop (`--data-dir`), or the PostgreSQL database of each service named
//! by the template the shop ran with (`--db-template 'postgres://…/agora_{service}'`) —
//! with the same checks and queries on both (only looking up whether a table exists
//! differs): a tool for after the fact, never a service.
//!
//! What it looks for:
//! - an order that is not in a terminal state (`shipped` or `cancelled`);
//! - money kept without a live order: a capture that is not refunded while its order
//!   is cancelled or unknown; more than one capture for one order (a double charge);
//!   a hold still open (`authorized`) for an order that is over, or for no order at
//!   all once the orphan hold time has passed; a shipped order whose payment was never
//!   captured;
//! - stock held that no open order explains: a reservation still `reserved` for an
//!   order that ended or that ordering does not know, and a product whose `reserved`
//!   count differs from the sum of its held reservations;
//! - a notification sent twice (same order, same kind);
//! - an event in an outbox that was never published.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_messaging::Backend;
use agora_ordering::OrderStatus;
use anyhow::{Context, bail};
use sqlx::any::{AnyConnectOptions, AnyRow};
use sqlx::{AnyConnection, ConnectOptions, Connection};

use crate::runtime::ServiceName;

/// How long a store may take to accept the audit's connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One inconsistency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The store it was found in (`ordering`, `payment`, …).
    pub store: String,
    pub what: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.store, self.what)
    }
}

/// Where the stores of the audited shop are.
#[derive(Debug, Clone)]
pub enum Stores {
    /// An embedded shop's data directory: a SQLite file per service (`<service>.db`).
    /// A service without its file is left out: that shop never opened its store.
    DataDir(PathBuf),
    /// A PostgreSQL database per service, named by the template the shop ran with
    /// (`postgres://…/agora_{service}`, `{service}` replaced by each service's name).
    /// Every service has one: a database missing is an error, not a clean store.
    Postgres(String),
}

impl fmt::Display for Stores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stores::DataDir(dir) => write!(f, "{}", dir.display()),
            Stores::Postgres(template) => f.write_str(&without_secrets(template)),
        }
    }
}

impl Stores {
    /// Every service's store, read-only, in service-name order.
    async fn open(&self) -> anyhow::Result<Vec<Store>> {
        let mut stores = Vec::new();
        for (service, url, backend) in self.locations()? {
            let store = Store::open(&service, &url, backend)
                .await
                .with_context(|| {
                    format!("open the {service} store at {}", without_secrets(&url))
                })?;
            stores.push(store);
        }
        Ok(stores)
    }

    /// Each service's store: its name, its URL and its backend, in name order.
    fn locations(&self) -> anyhow::Result<Vec<(String, String, Backend)>> {
        match self {
            Stores::DataDir(dir) => sqlite_files(dir),
            Stores::Postgres(template) => {
                let postgres =
                    template.starts_with("postgres://") || template.starts_with("postgresql://");
                if !postgres || !template.contains("{service}") {
                    // Not the template itself: it may hold a password.
                    bail!(
                        "the database template must be a postgres:// URL naming each service's \
                         database with {{service}}, such as postgres://…/agora_{{service}}"
                    );
                }
                let mut services: Vec<&str> = ServiceName::ALL.map(ServiceName::as_str).to_vec();
                services.sort_unstable();
                Ok(services
                    .into_iter()
                    .map(|service| {
                        let url = template.replace("{service}", service);
                        (service.to_owned(), url, Backend::Postgres)
                    })
                    .collect())
            }
        }
    }
}

/// The SQLite file of each service under `dir` (every `*.db` but the bus's), opened
/// read-only (`mode=ro`).
fn sqlite_files(dir: &Path) -> anyhow::Result<Vec<(String, String, Backend)>> {
    // Absolute: a relative path would read as a host in a `sqlite://` URL.
    let dir = std::fs::canonicalize(dir).with_context(|| format!("read {}", dir.display()))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "db"))
        .filter(|p| p.file_stem().is_some_and(|s| s != "bus"))
        .collect();
    files.sort();
    Ok(files
        .into_iter()
        .map(|path| {
            let service = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let url = format!("sqlite://{}?mode=ro", path.display());
            (service, url, Backend::Sqlite)
        })
        .collect())
}

/// Where `url` points, without what may be secret: its user and password, and its
/// query (which may hold `password=`). For messages: a URL is never printed whole.
fn without_secrets(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(a database URL)".to_owned();
    };
    // The last `@` ends the user info, even when a password holds an unescaped one.
    let host_and_path = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
    let host_and_path = host_and_path.split('?').next().unwrap_or_default();
    format!("{scheme}://{host_and_path}")
}

/// One service's store, opened read-only.
#[derive(Debug)]
struct Store {
    service: String,
    backend: Backend,
    /// A single connection, not a pool: a pool retries a refused connection until its
    /// timeout and then reports the timeout instead of the cause.
    conn: AnyConnection,
}

impl Store {
    /// Connects read-only: a SQLite URL says `mode=ro`; on PostgreSQL every
    /// transaction of the session is read only, so no check can write by mistake.
    async fn open(service: &str, url: &str, backend: Backend) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let options: AnyConnectOptions = url.parse()?;
        let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
            .await
            .with_context(|| format!("no connection within {CONNECT_TIMEOUT:?}"))??;
        if backend == Backend::Postgres {
            sqlx::raw_sql("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                .execute(&mut conn)
                .await?;
        }
        Ok(Store {
            service: service.to_owned(),
            backend,
            conn,
        })
    }

    /// The rows `sql` selects, each read as `T` (a tuple of `String` and `i64`).
    async fn rows<T>(&mut self, sql: &'static str) -> anyhow::Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, AnyRow> + Send + Unpin,
    {
        sqlx::query_as(sql)
            .fetch_all(&mut self.conn)
            .await
            .with_context(|| format!("read the {} store", self.service))
    }

    /// The number `sql` (a `SELECT COUNT(*) …`) answers.
    async fn count(&mut self, sql: &'static str) -> anyhow::Result<i64> {
        sqlx::query_scalar(sql)
            .fetch_one(&mut self.conn)
            .await
            .with_context(|| format!("read the {} store", self.service))
    }

    /// Whether the store has `table` (an older or partial store may not).
    async fn has_table(&mut self, table: &str) -> anyhow::Result<bool> {
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name = $1"
            }
        };
        let count: i64 = sqlx::query_scalar(sql)
            .bind(table)
            .fetch_one(&mut self.conn)
            .await
            .with_context(|| format!("read the tables of the {} store", self.service))?;
        Ok(count > 0)
    }

    async fn close(self) {
        let _ = self.conn.close().await;
    }
}

/// Every inconsistency in the shop under `data_dir` (run with the default orphan hold
/// time).
pub async fn audit(data_dir: &Path) -> anyhow::Result<Vec<Finding>> {
    audit_with(data_dir, agora_payment::DEFAULT_ORPHAN_HOLD).await
}

/// [`audit`] of a shop whose payment voids orphan holds after `orphan_hold`.
pub async fn audit_with(data_dir: &Path, orphan_hold: Duration) -> anyhow::Result<Vec<Finding>> {
    audit_stores(&Stores::DataDir(data_dir.to_owned()), orphan_hold).await
}

/// Every inconsistency between `stores`, of a shop whose payment voids orphan holds
/// after `orphan_hold`. Fails, naming the service, when a store cannot be opened.
pub async fn audit_stores(stores: &Stores, orphan_hold: Duration) -> anyhow::Result<Vec<Finding>> {
    let mut stores = stores.open().await?;
    let findings = check(&mut stores, orphan_hold).await;
    for store in stores {
        store.close().await;
    }
    findings
}

/// The findings so far.
#[derive(Debug, Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn add(&mut self, store: &str, what: String) {
        self.0.push(Finding {
            store: store.to_owned(),
            what,
        });
    }
}

/// Every check, on whichever of their stores there are.
async fn check(stores: &mut [Store], orphan_hold: Duration) -> anyhow::Result<Vec<Finding>> {
    let mut findings = Findings::default();
    let orders = match store(stores, "ordering") {
        Some(db) => check_orders(db, &mut findings).await?,
        None => HashMap::new(),
    };
    if let Some(db) = store(stores, "payment") {
        check_payments(db, &orders, orphan_hold, &mut findings).await?;
    }
    if let Some(db) = store(stores, "inventory") {
        check_reservations(db, &orders, &mut findings).await?;
    }
    if let Some(db) = store(stores, "notification") {
        check_notifications(db, &mut findings).await?;
    }
    for db in stores {
        check_outbox(db, &mut findings).await?;
    }
    Ok(findings.0)
}

fn store<'a>(stores: &'a mut [Store], service: &str) -> Option<&'a mut Store> {
    stores.iter_mut().find(|s| s.service == service)
}

/// Every order and its status (ordering's own [`OrderStatus`], so its terminal states
/// are ordering's rule, not a copy); an order not in a terminal state, or with a status
/// ordering does not know, is a finding.
async fn check_orders(
    db: &mut Store,
    findings: &mut Findings,
) -> anyhow::Result<HashMap<String, OrderStatus>> {
    let rows: Vec<(String, String)> = db.rows("SELECT id, status FROM ordering_orders").await?;
    let mut orders = HashMap::new();
    for (id, raw) in rows {
        let Some(status) = OrderStatus::parse(&raw) else {
            findings.add(
                "ordering",
                format!("order {id} has an unknown status {raw:?}"),
            );
            continue;
        };
        if !status.is_terminal() {
            findings.add(
                "ordering",
                format!("order {id} is {}, not in a terminal state", status.as_str()),
            );
        }
        orders.insert(id, status);
    }
    Ok(orders)
}

/// Money held or taken that the orders do not explain.
async fn check_payments(
    db: &mut Store,
    orders: &HashMap<String, OrderStatus>,
    orphan_hold: Duration,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let authorizations: Vec<(String, String, String, i64)> = db
        .rows("SELECT id, order_id, status, authorized_at_ms FROM payment_authorizations")
        .await?;
    let live = |order: &str| {
        orders
            .get(order)
            .is_some_and(|&s| s != OrderStatus::Cancelled)
    };
    let orphan_before_ms = orphan_before_ms(orphan_hold);
    let mut captures: HashMap<String, u32> = HashMap::new();
    for (id, order, status, authorized_at_ms) in authorizations {
        if status == "captured" || status == "refunded" {
            *captures.entry(order.clone()).or_default() += 1;
        }
        if status == "authorized" {
            match orders.get(&order) {
                Some(over) if over.is_terminal() => findings.add(
                    "payment",
                    format!(
                        "authorization {id} still holds money for order {order}, which is {}",
                        over.as_str()
                    ),
                ),
                None if authorized_at_ms < orphan_before_ms => findings.add(
                    "payment",
                    format!(
                        "authorization {id} still holds money for order {order}, which ordering does not know, past the orphan hold time"
                    ),
                ),
                _ => {}
            }
        }
        if status == "captured" && !live(&order) {
            findings.add(
                "payment",
                format!(
                    "authorization {id} is captured but order {order} is not live, and nothing was refunded"
                ),
            );
        }
    }
    for (order, status) in orders {
        if *status == OrderStatus::Shipped && !captures.contains_key(order) {
            findings.add(
                "payment",
                format!("order {order} was shipped but its payment was never captured"),
            );
        }
    }
    for (order, count) in captures {
        if count > 1 {
            findings.add(
                "payment",
                format!("order {order} was captured {count} times"),
            );
        }
    }
    Ok(())
}

/// A hold authorized before this (ms since the epoch) and still open for an order
/// ordering does not know should have been voided: the sweep runs a minute (at most)
/// after the hold time.
fn orphan_before_ms(orphan_hold: Duration) -> i64 {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    now_ms()
        .saturating_sub(ms(orphan_hold))
        .saturating_sub(ms(orphan_hold.min(Duration::from_secs(60))))
        .saturating_sub(1_000)
}

/// Stock held that no open order explains.
async fn check_reservations(
    db: &mut Store,
    orders: &HashMap<String, OrderStatus>,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let held: Vec<(String,)> = db
        .rows("SELECT order_id FROM inventory_reservations WHERE status = 'reserved'")
        .await?;
    for (order,) in held {
        let open_order = orders.get(&order).is_some_and(|s| !s.is_terminal());
        if !open_order {
            findings.add(
                "inventory",
                format!("stock is still reserved for order {order}, which is not open"),
            );
        }
    }
    // The CAST: PostgreSQL sums BIGINTs into a NUMERIC, which the Any driver cannot read.
    let stock: Vec<(String, i64, i64)> = db
        .rows(
            "SELECT s.product_id, s.reserved, CAST(COALESCE((
                 SELECT SUM(l.quantity) FROM inventory_reservation_lines l
                 JOIN inventory_reservations r ON r.order_id = l.order_id
                 WHERE r.status = 'reserved' AND l.product_id = s.product_id), 0) AS BIGINT)
             FROM inventory_stock s",
        )
        .await?;
    for (product, reserved, explained) in stock {
        if reserved != explained {
            findings.add(
                "inventory",
                format!(
                    "product {product} has {reserved} reserved, but its held reservations add up to {explained}"
                ),
            );
        }
    }
    Ok(())
}

/// A message sent twice about one order.
async fn check_notifications(db: &mut Store, findings: &mut Findings) -> anyhow::Result<()> {
    if !db.has_table("notification_messages").await? {
        return Ok(());
    }
    let repeated: Vec<(String, String, i64)> = db
        .rows(
            "SELECT order_id, kind, COUNT(*) FROM notification_messages
             WHERE order_id IS NOT NULL GROUP BY order_id, kind HAVING COUNT(*) > 1",
        )
        .await?;
    for (order, kind, count) in repeated {
        findings.add(
            "notification",
            format!("{kind} for order {order} was sent {count} times"),
        );
    }
    Ok(())
}

/// Events the store committed but never published.
async fn check_outbox(db: &mut Store, findings: &mut Findings) -> anyhow::Result<()> {
    if !db.has_table("messaging_outbox").await? {
        return Ok(());
    }
    let unpublished = db
        .count("SELECT COUNT(*) FROM messaging_outbox WHERE published_at_ms IS NULL")
        .await?;
    if unpublished > 0 {
        findings.add(
            &db.service,
            format!("{unpublished} event(s) in the outbox were never published"),
        );
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data directory with the two tables these checks read.
    fn shop(orders: &[(&str, &str)], holds: &[(&str, &str, &str, i64)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("dir");
        let db = rusqlite::Connection::open(dir.path().join("ordering.db")).expect("ordering");
        db.execute_batch("CREATE TABLE ordering_orders (id TEXT PRIMARY KEY, status TEXT)")
            .expect("table");
        for (id, status) in orders {
            db.execute("INSERT INTO ordering_orders VALUES (?1, ?2)", [id, status])
                .expect("row");
        }
        let db = rusqlite::Connection::open(dir.path().join("payment.db")).expect("payment");
        db.execute_batch(
            "CREATE TABLE payment_authorizations
                 (id TEXT, order_id TEXT, status TEXT, authorized_at_ms INTEGER)",
        )
        .expect("table");
        for (id, order, status, at) in holds {
            db.execute(
                "INSERT INTO payment_authorizations VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![id, order, status, at],
            )
            .expect("row");
        }
        dir
    }

    /// What the audit of the shop in `dir` finds, as text.
    async fn findings_of(dir: &Path) -> Vec<String> {
        audit(dir)
            .await
            .expect("audit")
            .into_iter()
            .map(|f| f.what)
            .collect()
    }

    #[tokio::test]
    async fn orders_are_judged_by_orderings_own_statuses() {
        let dir = shop(
            &[
                ("o-open", "paid"),
                ("o-done", "shipped"),
                ("o-odd", "refunded"),
            ],
            &[("a-1", "o-done", "captured", now_ms())],
        );
        let findings = findings_of(dir.path()).await;
        assert!(
            findings.contains(&"order o-open is paid, not in a terminal state".to_owned()),
            "{findings:?}"
        );
        assert!(
            findings.contains(&"order o-odd has an unknown status \"refunded\"".to_owned()),
            "{findings:?}"
        );
        assert!(
            !findings.iter().any(|f| f.contains("o-done")),
            "{findings:?}"
        );
    }

    #[tokio::test]
    async fn open_holds_for_orders_that_are_over_and_shipments_without_a_capture_are_found() {
        let now = now_ms();
        let long_ago = now - 24 * 3600 * 1000;
        let dir = shop(
            &[
                ("o-cancelled", "cancelled"),
                ("o-shipped", "shipped"),
                ("o-paid", "shipped"),
            ],
            &[
                ("a-1", "o-cancelled", "authorized", now),
                ("a-2", "o-shipped", "authorized", now),
                ("a-3", "o-gone", "authorized", long_ago),
                ("a-4", "o-fresh", "authorized", now),
                ("a-5", "o-paid", "captured", now),
            ],
        );
        let findings = findings_of(dir.path()).await;
        let has = |text: &str| findings.iter().any(|f| f.contains(text));
        assert!(
            has("authorization a-1 still holds money for order o-cancelled"),
            "{findings:?}"
        );
        assert!(
            has("authorization a-2 still holds money for order o-shipped"),
            "{findings:?}"
        );
        assert!(
            has("authorization a-3 still holds money for order o-gone"),
            "{findings:?}"
        );
        assert!(
            has("order o-shipped was shipped but its payment was never captured"),
            "{findings:?}"
        );
        assert!(
            !has("a-4"),
            "a hold younger than the orphan hold time: {findings:?}"
        );
        assert!(!has("o-paid"), "{findings:?}");
    }

    #[test]
    fn urls_are_printed_without_user_password_or_query() {
        assert_eq!(
            without_secrets(
                "postgres://agora:p@ss/word@db.example:5432/agora_{service}?password=x"
            ),
            "postgres://db.example:5432/agora_{service}"
        );
        assert_eq!(
            without_secrets("postgres://db.example/agora_ordering"),
            "postgres://db.example/agora_ordering"
        );
        assert_eq!(
            without_secrets("host=db password=secret"),
            "(a database URL)"
        );
    }

    #[tokio::test]
    async fn a_template_that_is_not_a_postgres_url_per_service_is_refused_without_echoing_it() {
        for template in [
            "mysql://agora:secret@db/agora_{service}",
            "postgres://agora:secret@db/agora",
        ] {
            let error = audit_stores(
                &Stores::Postgres(template.to_owned()),
                agora_payment::DEFAULT_ORPHAN_HOLD,
            )
            .await
            .expect_err(template);
            let message = format!("{error:#}");
            assert!(message.contains("{service}"), "{message}");
            assert!(!message.contains("secret"), "{message}");
        }
    }
}
