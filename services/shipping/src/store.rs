//! Shipping's tables and every query on them, in the SQL both SQLite and PostgreSQL
//! accept.

use agora_contracts::Address;
use agora_messaging::{Db, Migration};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Error;

const TABLES: &str = "
CREATE TABLE shipping_orders (
    order_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    address TEXT,
    ready_at_ms BIGINT
);
CREATE TABLE shipping_shipments (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    customer_id TEXT NOT NULL,
    address TEXT NOT NULL,
    status TEXT NOT NULL,
    carrier TEXT NOT NULL,
    tracking_number TEXT NOT NULL,
    dispatched_at_ms BIGINT NOT NULL
);
CREATE INDEX shipping_shipments_customer ON shipping_shipments (customer_id);
";

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "order replicas and shipments",
    sqlite: TABLES,
    postgres: TABLES,
}];

pub fn ms_of(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

pub fn time_of_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The current time at the store's precision (milliseconds).
pub fn now() -> OffsetDateTime {
    time_of_ms(ms_of(OffsetDateTime::now_utc()))
}

/// What shipping knows of an order: its customer, and (once `OrderAccepted` came) its
/// address, and (once fulfilment said so) that it is ready.
#[derive(Debug)]
pub struct Order {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub address: Option<Address>,
    pub ready: bool,
}

/// A shipment.
#[derive(Clone, Debug)]
pub struct Shipment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub address: Address,
    pub status: String,
    pub carrier: String,
    pub tracking_number: String,
    pub dispatched_at: OffsetDateTime,
}

fn uuid_of(row: &AnyRow, column: &str) -> Result<Uuid, Error> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|_| Error::Corrupt("id"))
}

fn address_of(text: &str) -> Result<Address, Error> {
    serde_json::from_str(text).map_err(|_| Error::Corrupt("address"))
}

fn address_text(address: &Address) -> Result<String, Error> {
    serde_json::to_string(address).map_err(|_| Error::Corrupt("address"))
}

/// Records an accepted order's customer and address (the first copy wins: an order's
/// address never changes after acceptance); returns the order's row.
pub async fn record_accepted(
    tx: &mut Transaction<'_, Any>,
    order_id: Uuid,
    customer_id: Uuid,
    address: &Address,
) -> Result<Order, Error> {
    sqlx::query(
        "INSERT INTO shipping_orders (order_id, customer_id, address) VALUES ($1, $2, $3)
         ON CONFLICT (order_id) DO UPDATE
            SET address = COALESCE(shipping_orders.address, excluded.address)",
    )
    .bind(order_id.to_string())
    .bind(customer_id.to_string())
    .bind(address_text(address)?)
    .execute(&mut **tx)
    .await?;
    order(tx, order_id).await
}

/// Records that fulfilment has made the order ready; returns the order's row.
pub async fn record_ready(
    tx: &mut Transaction<'_, Any>,
    order_id: Uuid,
    customer_id: Uuid,
    at: OffsetDateTime,
) -> Result<Order, Error> {
    sqlx::query(
        "INSERT INTO shipping_orders (order_id, customer_id, ready_at_ms) VALUES ($1, $2, $3)
         ON CONFLICT (order_id) DO UPDATE
            SET ready_at_ms = COALESCE(shipping_orders.ready_at_ms, excluded.ready_at_ms)",
    )
    .bind(order_id.to_string())
    .bind(customer_id.to_string())
    .bind(ms_of(at))
    .execute(&mut **tx)
    .await?;
    order(tx, order_id).await
}

async fn order(tx: &mut Transaction<'_, Any>, order_id: Uuid) -> Result<Order, Error> {
    let row = sqlx::query(
        "SELECT order_id, customer_id, address, ready_at_ms FROM shipping_orders
         WHERE order_id = $1",
    )
    .bind(order_id.to_string())
    .fetch_one(&mut **tx)
    .await?;
    let address: Option<String> = row.try_get("address")?;
    let ready: Option<i64> = row.try_get("ready_at_ms")?;
    Ok(Order {
        order_id: uuid_of(&row, "order_id")?,
        customer_id: uuid_of(&row, "customer_id")?,
        address: address.as_deref().map(address_of).transpose()?,
        ready: ready.is_some(),
    })
}

/// Records the shipment of its order, unless the order has one: `false` then.
pub async fn insert_shipment(
    tx: &mut Transaction<'_, Any>,
    shipment: &Shipment,
) -> Result<bool, Error> {
    let inserted = sqlx::query(
        "INSERT INTO shipping_shipments
            (id, order_id, customer_id, address, status, carrier, tracking_number,
             dispatched_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(shipment.id.to_string())
    .bind(shipment.order_id.to_string())
    .bind(shipment.customer_id.to_string())
    .bind(address_text(&shipment.address)?)
    .bind(shipment.status.clone())
    .bind(shipment.carrier.clone())
    .bind(shipment.tracking_number.clone())
    .bind(ms_of(shipment.dispatched_at))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// The shipments of an order.
pub async fn shipments_of_order(db: &Db, order_id: Uuid) -> Result<Vec<Shipment>, Error> {
    shipments_where(db, "order_id = $1", order_id.to_string()).await
}

/// The shipments of the orders whose id has this human reference (its last 40 bits).
pub async fn shipments_of_reference(
    db: &Db,
    reference: agora_contracts::OrderReference,
) -> Result<Vec<Shipment>, Error> {
    // Ids are stored as lower-case hyphenated text ending in hex: a plain suffix.
    let pattern = format!("%{}", reference.id_suffix());
    let shipments = shipments_where(db, "order_id LIKE $1", pattern).await?;
    Ok(shipments
        .into_iter()
        .filter(|s| reference.matches(s.order_id))
        .collect())
}

/// The shipments matching `condition` (on `$1`), in dispatch order.
async fn shipments_where(db: &Db, condition: &str, value: String) -> Result<Vec<Shipment>, Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id, order_id, customer_id, address, status, carrier, tracking_number,
                dispatched_at_ms
         FROM shipping_shipments WHERE {condition} ORDER BY dispatched_at_ms, id"
    )))
    .bind(value)
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(|row| {
        let address: String = row.try_get("address")?;
        Ok(Shipment {
            id: uuid_of(row, "id")?,
            order_id: uuid_of(row, "order_id")?,
            customer_id: uuid_of(row, "customer_id")?,
            address: address_of(&address)?,
            status: row.try_get("status")?,
            carrier: row.try_get("carrier")?,
            tracking_number: row.try_get("tracking_number")?,
            dispatched_at: time_of_ms(row.try_get("dispatched_at_ms")?),
        })
    })
    .collect()
}
