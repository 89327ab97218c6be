//! Notification's tables and every query on them, in the SQL both SQLite and
//! PostgreSQL accept.

use agora_messaging::{Db, Migration};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Error;

const TABLES: &str = "
CREATE TABLE notification_products (
    product_id TEXT PRIMARY KEY,
    name TEXT,
    deleted BIGINT NOT NULL,
    version BIGINT NOT NULL
);
CREATE TABLE notification_customers (
    customer_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    version BIGINT NOT NULL
);
CREATE TABLE notification_messages (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    order_id TEXT,
    kind TEXT NOT NULL,
    recipient TEXT,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at_ms BIGINT NOT NULL,
    UNIQUE (order_id, kind)
);
CREATE INDEX notification_messages_customer
    ON notification_messages (customer_id, sent_at_ms);
";

/// Each accepted order's lines, kept so that its shipped message can name the products
/// too.
const ORDER_LINES: &str = "
CREATE TABLE notification_order_lines (
    order_id TEXT NOT NULL,
    line_no BIGINT NOT NULL,
    product_id TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
";

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "product and customer replicas, messages",
        sqlite: TABLES,
        postgres: TABLES,
    },
    Migration {
        version: 2,
        description: "order lines",
        sqlite: ORDER_LINES,
        postgres: ORDER_LINES,
    },
];

pub fn ms_of(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

pub fn time_of_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub fn now() -> OffsetDateTime {
    time_of_ms(ms_of(OffsetDateTime::now_utc()))
}

fn version_of(version: u64) -> Result<i64, Error> {
    i64::try_from(version).map_err(|_| Error::Corrupt("version"))
}

/// Applies a product's name (or its deletion, `name: None`) at `version`, if newer
/// than what the replica holds. A deletion keeps the last known name.
pub async fn apply_product(
    tx: &mut Transaction<'_, Any>,
    product_id: Uuid,
    name: Option<&str>,
    version: u64,
) -> Result<bool, Error> {
    let applied = sqlx::query(
        "INSERT INTO notification_products (product_id, name, deleted, version)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (product_id) DO UPDATE
            SET name = COALESCE(excluded.name, notification_products.name),
                deleted = excluded.deleted,
                version = excluded.version
            WHERE notification_products.version < excluded.version",
    )
    .bind(product_id.to_string())
    .bind(name.map(str::to_owned))
    .bind(i64::from(name.is_none()))
    .bind(version_of(version)?)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(applied == 1)
}

/// What the replica knows of a product's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProductName {
    Known(String),
    /// Deleted before its name reached notification.
    Deleted,
    Unknown,
}

pub async fn product_name(
    tx: &mut Transaction<'_, Any>,
    product_id: Uuid,
) -> Result<ProductName, Error> {
    let row = sqlx::query("SELECT name FROM notification_products WHERE product_id = $1")
        .bind(product_id.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    Ok(match row {
        None => ProductName::Unknown,
        Some(row) => match row.try_get::<Option<String>, _>("name")? {
            Some(name) => ProductName::Known(name),
            None => ProductName::Deleted,
        },
    })
}

/// Applies a customer's name and email at `version`, if newer.
pub async fn apply_customer(
    tx: &mut Transaction<'_, Any>,
    customer_id: Uuid,
    name: &str,
    email: &str,
    version: u64,
) -> Result<bool, Error> {
    let applied = sqlx::query(
        "INSERT INTO notification_customers (customer_id, name, email, version)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (customer_id) DO UPDATE
            SET name = excluded.name, email = excluded.email, version = excluded.version
            WHERE notification_customers.version < excluded.version",
    )
    .bind(customer_id.to_string())
    .bind(name.to_owned())
    .bind(email.to_owned())
    .bind(version_of(version)?)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(applied == 1)
}

/// A customer's `(name, email)`, if known.
pub async fn customer(
    tx: &mut Transaction<'_, Any>,
    customer_id: Uuid,
) -> Result<Option<(String, String)>, Error> {
    let row = sqlx::query("SELECT name, email FROM notification_customers WHERE customer_id = $1")
        .bind(customer_id.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|row| Ok((row.try_get("name")?, row.try_get("email")?)))
        .transpose()
}

/// Keeps an order's `(product, quantity)` lines, in order; lines kept already stay.
pub async fn save_order_lines(
    tx: &mut Transaction<'_, Any>,
    order_id: Uuid,
    lines: &[(Uuid, u32)],
) -> Result<(), Error> {
    for (line_no, (product_id, quantity)) in lines.iter().enumerate() {
        sqlx::query(
            "INSERT INTO notification_order_lines (order_id, line_no, product_id, quantity)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (order_id, line_no) DO NOTHING",
        )
        .bind(order_id.to_string())
        .bind(i64::try_from(line_no).map_err(|_| Error::Corrupt("order line"))?)
        .bind(product_id.to_string())
        .bind(i64::from(*quantity))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// An order's `(product, quantity)` lines, in order; empty when its acceptance has
/// not been handled yet.
pub async fn order_lines(
    tx: &mut Transaction<'_, Any>,
    order_id: Uuid,
) -> Result<Vec<(Uuid, u32)>, Error> {
    sqlx::query(
        "SELECT product_id, quantity FROM notification_order_lines
         WHERE order_id = $1 ORDER BY line_no",
    )
    .bind(order_id.to_string())
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|row| {
        let product_id: String = row.try_get("product_id")?;
        let quantity: i64 = row.try_get("quantity")?;
        Ok((
            uuid_of(&product_id)?,
            u32::try_from(quantity).map_err(|_| Error::Corrupt("quantity"))?,
        ))
    })
    .collect()
}

/// The kinds of message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Confirmation,
    Cancelled,
    Shipped,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Confirmation => "order_confirmation",
            Kind::Cancelled => "order_cancelled",
            Kind::Shipped => "order_shipped",
        }
    }
}

/// A sent message.
#[derive(Clone, Debug)]
pub struct Message {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub order_id: Option<Uuid>,
    pub kind: String,
    /// The email it went to, when the customer was known.
    pub recipient: Option<String>,
    pub subject: String,
    pub body: String,
    pub sent_at: OffsetDateTime,
}

/// Records (sends) a message, unless one of its kind exists for its order: `false`
/// then.
pub async fn send(tx: &mut Transaction<'_, Any>, message: &Message) -> Result<bool, Error> {
    let inserted = sqlx::query(
        "INSERT INTO notification_messages
            (id, customer_id, order_id, kind, recipient, subject, body, sent_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (order_id, kind) DO NOTHING",
    )
    .bind(message.id.to_string())
    .bind(message.customer_id.to_string())
    .bind(message.order_id.map(|id| id.to_string()))
    .bind(message.kind.clone())
    .bind(message.recipient.clone())
    .bind(message.subject.clone())
    .bind(message.body.clone())
    .bind(ms_of(message.sent_at))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Whether the order has a message of `kind` already.
pub async fn has_message(
    tx: &mut Transaction<'_, Any>,
    order_id: Uuid,
    kind: Kind,
) -> Result<bool, Error> {
    let row = sqlx::query("SELECT id FROM notification_messages WHERE order_id = $1 AND kind = $2")
        .bind(order_id.to_string())
        .bind(kind.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.is_some())
}

fn uuid_of(text: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(text).map_err(|_| Error::Corrupt("id"))
}

fn message_of(row: &AnyRow) -> Result<Message, Error> {
    let id: String = row.try_get("id")?;
    let customer_id: String = row.try_get("customer_id")?;
    let order_id: Option<String> = row.try_get("order_id")?;
    Ok(Message {
        id: uuid_of(&id)?,
        customer_id: uuid_of(&customer_id)?,
        order_id: order_id.as_deref().map(uuid_of).transpose()?,
        kind: row.try_get("kind")?,
        recipient: row.try_get("recipient")?,
        subject: row.try_get("subject")?,
        body: row.try_get("body")?,
        sent_at: time_of_ms(row.try_get("sent_at_ms")?),
    })
}

/// A customer's messages, newest first, at most `limit`.
pub async fn mailbox(db: &Db, customer_id: Uuid, limit: i64) -> Result<Vec<Message>, Error> {
    sqlx::query(
        "SELECT id, customer_id, order_id, kind, recipient, subject, body, sent_at_ms
         FROM notification_messages WHERE customer_id = $1
         ORDER BY sent_at_ms DESC, id DESC LIMIT $2",
    )
    .bind(customer_id.to_string())
    .bind(limit)
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(message_of)
    .collect()
}
