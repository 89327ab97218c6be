//! Inventory's tables and every query on them, in the SQL both SQLite and PostgreSQL
//! accept.
//!
//! Writes that read before they decide take the row's write lock first, with an
//! `UPDATE` that changes nothing (SQLite has no `SELECT … FOR UPDATE`; on SQLite the
//! transaction holds the store's only writer anyway).

use std::collections::BTreeMap;

use agora_contracts::{StockLine, StockShortage};
use agora_messaging::{Db, Migration};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Error;
use crate::domain::{MAX_ON_HAND, OnHand};

const TABLES: &str = "
CREATE TABLE inventory_stock (
    product_id TEXT PRIMARY KEY,
    on_hand BIGINT NOT NULL CHECK (on_hand >= 0),
    reserved BIGINT NOT NULL CHECK (reserved >= 0 AND reserved <= on_hand),
    updated_at_ms BIGINT NOT NULL
);
CREATE TABLE inventory_reservations (
    order_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE TABLE inventory_reservation_lines (
    order_id TEXT NOT NULL REFERENCES inventory_reservations (order_id),
    product_id TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
";

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "stock and reservations",
    sqlite: TABLES,
    postgres: TABLES,
}];

/// A product's stock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stock {
    pub product_id: Uuid,
    pub on_hand: u32,
    pub reserved: u32,
}

impl Stock {
    /// What may still be reserved.
    pub fn available(&self) -> u32 {
        self.on_hand.saturating_sub(self.reserved)
    }

    fn none(product_id: Uuid) -> Stock {
        Stock {
            product_id,
            on_hand: 0,
            reserved: 0,
        }
    }
}

pub fn ms_of(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The current time at the store's precision (milliseconds), so that an event and a
/// later read agree.
pub fn now() -> OffsetDateTime {
    let ms = ms_of(OffsetDateTime::now_utc());
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn quantity(row: &AnyRow, column: &str) -> Result<u32, Error> {
    let value: i64 = row.try_get(column)?;
    u32::try_from(value).map_err(|_| Error::Corrupt("quantity"))
}

fn stock_of(row: &AnyRow) -> Result<Stock, Error> {
    let id: String = row.try_get("product_id")?;
    Ok(Stock {
        product_id: Uuid::parse_str(&id).map_err(|_| Error::Corrupt("product id"))?,
        on_hand: quantity(row, "on_hand")?,
        reserved: quantity(row, "reserved")?,
    })
}

async fn stock_in(conn: &mut AnyConnection, product_id: Uuid) -> Result<Option<Stock>, Error> {
    sqlx::query("SELECT product_id, on_hand, reserved FROM inventory_stock WHERE product_id = $1")
        .bind(product_id.to_string())
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(stock_of)
        .transpose()
}

/// The stock of a product, `None` if it was never stocked.
pub async fn stock(db: &Db, product_id: Uuid) -> Result<Option<Stock>, Error> {
    let mut conn = db.pool().acquire().await?;
    stock_in(&mut conn, product_id).await
}

/// The stock of each product, in the order asked; zeros for a product never stocked.
pub async fn stocks(db: &Db, ids: &[Uuid]) -> Result<Vec<Stock>, Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
    let sql = format!(
        "SELECT product_id, on_hand, reserved FROM inventory_stock WHERE product_id IN ({})",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in ids {
        query = query.bind(id.to_string());
    }
    let found: BTreeMap<Uuid, Stock> = query
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(|row| stock_of(row).map(|s| (s.product_id, s)))
        .collect::<Result<_, _>>()?;
    Ok(ids
        .iter()
        .map(|id| found.get(id).copied().unwrap_or_else(|| Stock::none(*id)))
        .collect())
}

/// What setting `on_hand` did.
#[derive(Debug)]
pub enum SetOnHand {
    Set(Stock),
    /// Refused: more than the new `on_hand` is reserved; the stock as it is.
    BelowReserved(Stock),
}

/// Sets a product's `on_hand` (creating its stock), unless it is below what is
/// reserved: one statement, so a reservation cannot slip in between check and write.
pub async fn set_on_hand(db: &Db, product_id: Uuid, on_hand: OnHand) -> Result<SetOnHand, Error> {
    let mut tx = db.begin().await?;
    let written = sqlx::query(
        "INSERT INTO inventory_stock (product_id, on_hand, reserved, updated_at_ms)
         VALUES ($1, $2, 0, $3)
         ON CONFLICT (product_id) DO UPDATE
            SET on_hand = excluded.on_hand, updated_at_ms = excluded.updated_at_ms
            WHERE inventory_stock.reserved <= excluded.on_hand",
    )
    .bind(product_id.to_string())
    .bind(i64::from(on_hand.get()))
    .bind(ms_of(now()))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let stock = stock_in(&mut tx, product_id)
        .await?
        .ok_or(Error::Corrupt("stock just written"))?;
    tx.commit().await?;
    Ok(if written == 1 {
        SetOnHand::Set(stock)
    } else {
        SetOnHand::BelowReserved(stock)
    })
}

/// Sets the stock of each product when the store holds none at all.
pub async fn seed(db: &Db, stock: &[(Uuid, u32)]) -> Result<bool, Error> {
    let mut tx = db.begin().await?;
    let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM inventory_stock")
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
    if count > 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    let at = ms_of(now());
    for (product_id, on_hand) in stock {
        sqlx::query(
            "INSERT INTO inventory_stock (product_id, on_hand, reserved, updated_at_ms)
             VALUES ($1, $2, 0, $3) ON CONFLICT (product_id) DO NOTHING",
        )
        .bind(product_id.to_string())
        .bind(i64::from((*on_hand).min(MAX_ON_HAND)))
        .bind(at)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Where an order's reservation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Every line is held (version 1).
    Reserved,
    /// The order could not be reserved; nothing is held (version 1).
    Failed,
    /// Given back (version 2), or released before any reservation (version 1).
    Released,
    /// Taken out of stock by the shipment (version 2).
    Shipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Reserved => "reserved",
            Status::Failed => "failed",
            Status::Released => "released",
            Status::Shipped => "shipped",
        }
    }

    fn parse(text: &str) -> Result<Status, Error> {
        Ok(match text {
            "reserved" => Status::Reserved,
            "failed" => Status::Failed,
            "released" => Status::Released,
            "shipped" => Status::Shipped,
            _ => return Err(Error::Corrupt("reservation status")),
        })
    }
}

/// An order's reservation, locked in the caller's transaction.
#[derive(Debug)]
pub struct Reservation {
    pub status: Status,
    pub version: u64,
    pub lines: Vec<StockLine>,
}

/// What reserving an order did.
#[derive(Debug)]
pub enum Reserve {
    /// Every line is now held (lines merged per product, in product order).
    Reserved(Vec<StockLine>),
    /// Nothing is held: these lines could not be served.
    Failed(Vec<StockShortage>),
    /// The order was decided before (reserved, failed, released or shipped).
    AlreadyDecided(Status),
}

/// Reserves every line of `order_id`, or none.
pub async fn reserve(
    tx: &mut Transaction<'_, Any>,
    order_id: Uuid,
    lines: &[StockLine],
    at: OffsetDateTime,
) -> Result<Reserve, Error> {
    // Claims the order first: a second reservation of it (or a release that came
    // first) finds the row, and on PostgreSQL a concurrent one waits here.
    let claimed = sqlx::query(
        "INSERT INTO inventory_reservations (order_id, status, version, updated_at_ms)
         VALUES ($1, 'reserving', 0, $2) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id.to_string())
    .bind(ms_of(at))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if claimed == 0 {
        let existing = lock_reservation(tx, order_id)
            .await?
            .ok_or(Error::Corrupt("reservation"))?;
        return Ok(Reserve::AlreadyDecided(existing.status));
    }
    // Merged per product and in product order: each row is locked once, and
    // concurrent reservations lock in the same order.
    let mut wanted: BTreeMap<Uuid, u64> = BTreeMap::new();
    for line in lines {
        *wanted.entry(line.product_id).or_default() += u64::from(line.quantity);
    }
    let mut shortages = Vec::new();
    for (product_id, requested) in &wanted {
        sqlx::query("UPDATE inventory_stock SET on_hand = on_hand WHERE product_id = $1")
            .bind(product_id.to_string())
            .execute(&mut **tx)
            .await?;
        let stock = stock_in(tx, *product_id)
            .await?
            .unwrap_or_else(|| Stock::none(*product_id));
        if u64::from(stock.available()) < *requested {
            shortages.push(StockShortage {
                product_id: *product_id,
                requested: u32::try_from(*requested).unwrap_or(u32::MAX),
                available: stock.available(),
            });
        }
    }
    let (status, held) = if shortages.is_empty() {
        let mut held = Vec::new();
        for (product_id, quantity) in &wanted {
            let quantity = i64::try_from(*quantity).map_err(|_| Error::Corrupt("quantity"))?;
            sqlx::query(
                "UPDATE inventory_stock SET reserved = reserved + $1, updated_at_ms = $2
                 WHERE product_id = $3",
            )
            .bind(quantity)
            .bind(ms_of(at))
            .bind(product_id.to_string())
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "INSERT INTO inventory_reservation_lines (order_id, product_id, quantity)
                 VALUES ($1, $2, $3)",
            )
            .bind(order_id.to_string())
            .bind(product_id.to_string())
            .bind(quantity)
            .execute(&mut **tx)
            .await?;
            held.push(StockLine {
                product_id: *product_id,
                quantity: u32::try_from(quantity).unwrap_or(u32::MAX),
            });
        }
        (Status::Reserved, Some(held))
    } else {
        (Status::Failed, None)
    };
    sqlx::query(
        "UPDATE inventory_reservations SET status = $1, version = 1, updated_at_ms = $2
         WHERE order_id = $3",
    )
    .bind(status.as_str())
    .bind(ms_of(at))
    .bind(order_id.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(match held {
        Some(held) => Reserve::Reserved(held),
        None => Reserve::Failed(shortages),
    })
}

/// The reservation of `order_id` with its lines, write-locked; `None` if there is none.
pub async fn lock_reservation(
    tx: &mut Transaction<'_, Any>,
    order_id: Uuid,
) -> Result<Option<Reservation>, Error> {
    let locked =
        sqlx::query("UPDATE inventory_reservations SET version = version WHERE order_id = $1")
            .bind(order_id.to_string())
            .execute(&mut **tx)
            .await?
            .rows_affected();
    if locked == 0 {
        return Ok(None);
    }
    let row = sqlx::query("SELECT status, version FROM inventory_reservations WHERE order_id = $1")
        .bind(order_id.to_string())
        .fetch_one(&mut **tx)
        .await?;
    let status: String = row.try_get("status")?;
    let version: i64 = row.try_get("version")?;
    let lines = sqlx::query(
        "SELECT product_id, quantity FROM inventory_reservation_lines
         WHERE order_id = $1 ORDER BY product_id",
    )
    .bind(order_id.to_string())
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|row| {
        let id: String = row.try_get("product_id")?;
        Ok(StockLine {
            product_id: Uuid::parse_str(&id).map_err(|_| Error::Corrupt("product id"))?,
            quantity: quantity(row, "quantity")?,
        })
    })
    .collect::<Result<Vec<_>, Error>>()?;
    Ok(Some(Reservation {
        status: Status::parse(&status)?,
        version: u64::try_from(version).map_err(|_| Error::Corrupt("version"))?,
        lines,
    }))
}

/// What releasing an order did.
#[derive(Debug)]
pub enum Release {
    /// The lines went back to stock; the reservation is at `version`.
    Released { lines: Vec<StockLine>, version: u64 },
    /// Nothing was held for the order (not reserved yet, failed, released or shipped
    /// before); its status now.
    Nothing(Status),
}

/// Gives an order's reservation back to stock, if it is held. An order inventory has
/// not seen yet is marked released, so that its late `OrderAccepted` holds nothing.
pub async fn release(
    tx: &mut Transaction<'_, Any>,
    order_id: Uuid,
    at: OffsetDateTime,
) -> Result<Release, Error> {
    let marked = sqlx::query(
        "INSERT INTO inventory_reservations (order_id, status, version, updated_at_ms)
         VALUES ($1, 'released', 1, $2) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id.to_string())
    .bind(ms_of(at))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if marked == 1 {
        return Ok(Release::Nothing(Status::Released));
    }
    let reservation = lock_reservation(tx, order_id)
        .await?
        .ok_or(Error::Corrupt("reservation"))?;
    if reservation.status != Status::Reserved {
        return Ok(Release::Nothing(reservation.status));
    }
    for line in &reservation.lines {
        sqlx::query(
            "UPDATE inventory_stock SET reserved = reserved - $1, updated_at_ms = $2
             WHERE product_id = $3",
        )
        .bind(i64::from(line.quantity))
        .bind(ms_of(at))
        .bind(line.product_id.to_string())
        .execute(&mut **tx)
        .await?;
    }
    let version = reservation.version + 1;
    set_status(tx, order_id, Status::Released, version, at).await?;
    Ok(Release::Released {
        lines: reservation.lines,
        version,
    })
}

/// What shipping an order did.
#[derive(Debug)]
pub enum Ship {
    /// The reserved goods left `on_hand` and `reserved`.
    Shipped,
    /// Nothing was held for the order; its status.
    Nothing(Status),
    /// Inventory has not decided the order yet.
    Unknown,
}

/// Takes the goods of a held reservation out of stock: they left the warehouse.
pub async fn ship(
    tx: &mut Transaction<'_, Any>,
    order_id: Uuid,
    at: OffsetDateTime,
) -> Result<Ship, Error> {
    let Some(reservation) = lock_reservation(tx, order_id).await? else {
        return Ok(Ship::Unknown);
    };
    if reservation.status != Status::Reserved {
        return Ok(Ship::Nothing(reservation.status));
    }
    for line in &reservation.lines {
        sqlx::query(
            "UPDATE inventory_stock
             SET on_hand = on_hand - $1, reserved = reserved - $1, updated_at_ms = $2
             WHERE product_id = $3",
        )
        .bind(i64::from(line.quantity))
        .bind(ms_of(at))
        .bind(line.product_id.to_string())
        .execute(&mut **tx)
        .await?;
    }
    set_status(tx, order_id, Status::Shipped, reservation.version + 1, at).await?;
    Ok(Ship::Shipped)
}

async fn set_status(
    tx: &mut Transaction<'_, Any>,
    order_id: Uuid,
    status: Status,
    version: u64,
    at: OffsetDateTime,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE inventory_reservations SET status = $1, version = $2, updated_at_ms = $3
         WHERE order_id = $4",
    )
    .bind(status.as_str())
    .bind(i64::try_from(version).map_err(|_| Error::Corrupt("version"))?)
    .bind(ms_of(at))
    .bind(order_id.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
