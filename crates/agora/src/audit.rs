//! `agora audit --data-dir D`: cross-checks every service's store of a stopped (or
//! quiet) shop and lists every inconsistency. It reads the SQLite files of the embedded
//! shop directly, read-only: a tool for after the fact, never a service.
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
use std::path::Path;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

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

/// Every inconsistency in the shop under `data_dir` (run with the default orphan hold
/// time).
pub fn audit(data_dir: &Path) -> anyhow::Result<Vec<Finding>> {
    audit_with(data_dir, agora_payment::DEFAULT_ORPHAN_HOLD)
}

/// [`audit`] of a shop whose payment voids orphan holds after `orphan_hold`.
pub fn audit_with(
    data_dir: &Path,
    orphan_hold: std::time::Duration,
) -> anyhow::Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let mut found = |store: &str, what: String| {
        findings.push(Finding {
            store: store.to_owned(),
            what,
        })
    };

    let ordering = open(data_dir, "ordering")?;
    let mut orders: HashMap<String, String> = HashMap::new();
    if let Some(db) = &ordering {
        let mut statement = db.prepare("SELECT id, status FROM ordering_orders")?;
        let rows =
            statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (id, status) = row?;
            if status != "shipped" && status != "cancelled" {
                found(
                    "ordering",
                    format!("order {id} is {status}, not in a terminal state"),
                );
            }
            orders.insert(id, status);
        }
    }
    let live = |order: &str| orders.get(order).is_some_and(|s| s != "cancelled");

    if let Some(db) = open(data_dir, "payment")? {
        let mut statement = db
            .prepare("SELECT id, order_id, status, authorized_at_ms FROM payment_authorizations")?;
        let rows = statement.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        // A sweep a minute (at most) after the hold time.
        let orphan_before_ms = now_ms()
            - i64::try_from(orphan_hold.as_millis()).unwrap_or(i64::MAX)
            - i64::try_from(
                orphan_hold
                    .min(std::time::Duration::from_secs(60))
                    .as_millis(),
            )
            .unwrap_or(0)
            - 1_000;
        let mut captures: HashMap<String, u32> = HashMap::new();
        for row in rows {
            let (id, order, status, authorized_at_ms) = row?;
            if status == "captured" || status == "refunded" {
                *captures.entry(order.clone()).or_default() += 1;
            }
            if status == "authorized" {
                match orders.get(&order).map(String::as_str) {
                    Some(over @ ("cancelled" | "shipped")) => found(
                        "payment",
                        format!(
                            "authorization {id} still holds money for order {order}, which is {over}"
                        ),
                    ),
                    None if authorized_at_ms < orphan_before_ms => found(
                        "payment",
                        format!(
                            "authorization {id} still holds money for order {order}, which ordering does not know, past the orphan hold time"
                        ),
                    ),
                    _ => {}
                }
            }
            if status == "captured" && !live(&order) {
                found(
                    "payment",
                    format!(
                        "authorization {id} is captured but order {order} is not live, and nothing was refunded"
                    ),
                );
            }
        }
        for (order, status) in &orders {
            if status == "shipped" && !captures.contains_key(order) {
                found(
                    "payment",
                    format!("order {order} was shipped but its payment was never captured"),
                );
            }
        }
        for (order, count) in captures {
            if count > 1 {
                found(
                    "payment",
                    format!("order {order} was captured {count} times"),
                );
            }
        }
    }

    if let Some(db) = open(data_dir, "inventory")? {
        let mut statement =
            db.prepare("SELECT order_id FROM inventory_reservations WHERE status = 'reserved'")?;
        let held = statement.query_map([], |r| r.get::<_, String>(0))?;
        for order in held {
            let order = order?;
            let open_order = orders
                .get(&order)
                .is_some_and(|s| s != "cancelled" && s != "shipped");
            if !open_order {
                found(
                    "inventory",
                    format!("stock is still reserved for order {order}, which is not open"),
                );
            }
        }
        let mut statement = db.prepare(
            "SELECT s.product_id, s.reserved, COALESCE((
                 SELECT SUM(l.quantity) FROM inventory_reservation_lines l
                 JOIN inventory_reservations r ON r.order_id = l.order_id
                 WHERE r.status = 'reserved' AND l.product_id = s.product_id), 0)
             FROM inventory_stock s",
        )?;
        let rows = statement.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (product, reserved, explained) = row?;
            if reserved != explained {
                found(
                    "inventory",
                    format!(
                        "product {product} has {reserved} reserved, but its held reservations add up to {explained}"
                    ),
                );
            }
        }
    }

    if let Some(db) = open(data_dir, "notification")? {
        let table: Option<String> = db
            .query_row(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'notification_%'
                 AND sql LIKE '%kind%' AND sql LIKE '%order_id%' LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(table) = table {
            let mut statement = db.prepare(&format!(
                "SELECT order_id, kind, COUNT(*) FROM {table}
                 WHERE order_id IS NOT NULL GROUP BY order_id, kind HAVING COUNT(*) > 1"
            ))?;
            let rows = statement.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (order, kind, count) = row?;
                found(
                    "notification",
                    format!("{kind} for order {order} was sent {count} times"),
                );
            }
        }
    }

    let mut stores: Vec<_> = std::fs::read_dir(data_dir)
        .with_context(|| format!("read {}", data_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "db"))
        .filter(|p| p.file_stem().is_some_and(|s| s != "bus"))
        .collect();
    stores.sort();
    for path in stores {
        let store = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let db = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let has_outbox: bool = db.query_row(
            "SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = 'messaging_outbox'",
            [],
            |r| r.get(0),
        )?;
        if has_outbox {
            let unpublished: i64 = db.query_row(
                "SELECT COUNT(*) FROM messaging_outbox WHERE published_at_ms IS NULL",
                [],
                |r| r.get(0),
            )?;
            if unpublished > 0 {
                found(
                    &store,
                    format!("{unpublished} event(s) in the outbox were never published"),
                );
            }
        }
    }
    Ok(findings)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The service's store, read-only, if it exists.
fn open(data_dir: &Path, service: &str) -> anyhow::Result<Option<Connection>> {
    let path = data_dir.join(format!("{service}.db"));
    if !path.exists() {
        return Ok(None);
    }
    let db = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("open {}", path.display()))?;
    Ok(Some(db))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data directory with the two tables these checks read.
    fn shop(orders: &[(&str, &str)], holds: &[(&str, &str, &str, i64)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("dir");
        let db = Connection::open(dir.path().join("ordering.db")).expect("ordering");
        db.execute_batch("CREATE TABLE ordering_orders (id TEXT PRIMARY KEY, status TEXT)")
            .expect("table");
        for (id, status) in orders {
            db.execute("INSERT INTO ordering_orders VALUES (?1, ?2)", [id, status])
                .expect("row");
        }
        let db = Connection::open(dir.path().join("payment.db")).expect("payment");
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

    #[test]
    fn open_holds_for_orders_that_are_over_and_shipments_without_a_capture_are_found() {
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
        let findings: Vec<String> = audit(dir.path())
            .expect("audit")
            .into_iter()
            .map(|f| f.what)
            .collect();
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
}
