//! `agora audit --data-dir D`: cross-checks every service's store of a stopped (or
//! quiet) shop and lists every inconsistency. It reads the SQLite files of the embedded
//! shop directly, read-only: a tool for after the fact, never a service.
//!
//! What it looks for:
//! - an order that is not in a terminal state (`shipped` or `cancelled`);
//! - money kept without a live order: a capture that is not refunded while its order
//!   is cancelled or unknown; more than one capture for one order (a double charge);
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

/// Every inconsistency in the shop under `data_dir`.
pub fn audit(data_dir: &Path) -> anyhow::Result<Vec<Finding>> {
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
        let mut statement =
            db.prepare("SELECT id, order_id, status FROM payment_authorizations")?;
        let rows = statement.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut captures: HashMap<String, u32> = HashMap::new();
        for row in rows {
            let (id, order, status) = row?;
            if status == "captured" || status == "refunded" {
                *captures.entry(order.clone()).or_default() += 1;
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
