//! Ordering's own tables: prices, orders (with their lines and history), idempotency
//! answers, settings, and the replicas of customer and catalog data. The SQL is the
//! dialect SQLite and PostgreSQL share; ids are UUID strings, times Unix milliseconds
//! (or RFC 3339 text where a replica keeps another service's time as given).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use agora_contracts::{Address, AddressSource, OrderReference, PaymentMethod};
use agora_messaging::{Db, Migration};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Error;
use crate::domain::OrderStatus;

const SCHEMA: &str = "
CREATE TABLE ordering_prices (
    product_id TEXT PRIMARY KEY,
    amount_cents BIGINT NOT NULL,
    currency TEXT NOT NULL,
    -- The price's aggregate version, carried by PriceChanged.
    version BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE TABLE ordering_orders (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    status TEXT NOT NULL,
    total_cents BIGINT NOT NULL,
    currency TEXT NOT NULL,
    -- JSON of the contracts' Address.
    shipping_address TEXT NOT NULL,
    address_source TEXT NOT NULL,
    payment_authorization_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX ordering_orders_by_customer ON ordering_orders (customer_id, created_at_ms);
CREATE TABLE ordering_order_lines (
    order_id TEXT NOT NULL,
    line_no BIGINT NOT NULL,
    product_id TEXT NOT NULL,
    -- The product's name in the replica when the order was accepted, if known.
    name TEXT,
    quantity BIGINT NOT NULL,
    unit_price_cents BIGINT NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE ordering_order_history (
    order_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    status TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    reason TEXT,
    PRIMARY KEY (order_id, seq)
);
-- One row per (customer, Idempotency-Key). state: 'pending' while one request holds
-- it (claim names that request), 'open' when an attempt that reached payment ended
-- without a final answer (a retry may claim it again, reusing order_id, so that
-- payment sees the same order), 'done' with the answer to repeat. An attempt that
-- failed before payment leaves no row.
CREATE TABLE ordering_idempotency (
    customer_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    claim TEXT NOT NULL,
    order_id TEXT NOT NULL,
    status BIGINT,
    body TEXT,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (customer_id, idempotency_key)
);
CREATE TABLE ordering_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Replica of customer data. The customer's one version counter is shared by its three
-- event types, so each field group keeps the version it was last set at.
CREATE TABLE ordering_customer_replica (
    customer_id TEXT PRIMARY KEY,
    name TEXT,
    email TEXT,
    profile_version BIGINT NOT NULL DEFAULT 0,
    address TEXT,
    address_as_of TEXT,
    address_version BIGINT NOT NULL DEFAULT 0,
    payment_method TEXT,
    payment_method_version BIGINT NOT NULL DEFAULT 0
);
-- Replica of product names; a deleted product is a tombstone at its version.
CREATE TABLE ordering_product_replica (
    product_id TEXT PRIMARY KEY,
    name TEXT,
    deleted BIGINT NOT NULL,
    version BIGINT NOT NULL
);
";

/// Each status enters an order's history once, whatever redeliveries or races do.
const HISTORY_ONCE: &str = "
CREATE UNIQUE INDEX ordering_order_history_once ON ordering_order_history (order_id, status);
";

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "prices, orders, idempotency, settings, replicas",
        sqlite: SCHEMA,
        postgres: SCHEMA,
    },
    Migration {
        version: 2,
        description: "each status once in an order's history",
        sqlite: HISTORY_ONCE,
        postgres: HISTORY_ONCE,
    },
    Migration {
        version: 3,
        description: "what an unanswered checkout asked payment for, replayed by its retry",
        sqlite: "ALTER TABLE ordering_idempotency ADD COLUMN attempt TEXT;",
        postgres: "ALTER TABLE ordering_idempotency ADD COLUMN attempt TEXT;",
    },
];

// ---------------------------------------------------------------------------------
// Settings

/// Where checkout takes the customer's address and payment method from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CustomerData {
    /// Ordering's replica, fed by customer's events (the default: checkout goes on
    /// when customer is down).
    #[default]
    Replica,
    /// A live call to the customer service, with a timeout (the original design).
    Sync,
}

impl CustomerData {
    pub fn as_str(self) -> &'static str {
        match self {
            CustomerData::Replica => "replica",
            CustomerData::Sync => "sync",
        }
    }

    pub fn parse(raw: &str) -> Option<CustomerData> {
        match raw {
            "replica" => Some(CustomerData::Replica),
            "sync" => Some(CustomerData::Sync),
            _ => None,
        }
    }
}

const CUSTOMER_DATA: &str = "customer_data";
const REPLICA_GENERATION: &str = "replica_generation";
const REPLICA_SWITCH: &str = "replica_switch_ms";

async fn setting(db: &Db, name: &str) -> Result<Option<String>, Error> {
    Ok(
        sqlx::query_scalar("SELECT value FROM ordering_settings WHERE name = $1")
            .bind(name.to_owned())
            .fetch_optional(db.pool())
            .await?,
    )
}

async fn set_setting(db: &Db, name: &str, value: &str) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO ordering_settings (name, value) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )
    .bind(name.to_owned())
    .bind(value.to_owned())
    .execute(db.pool())
    .await?;
    Ok(())
}

pub async fn customer_data(db: &Db) -> Result<CustomerData, Error> {
    match setting(db, CUSTOMER_DATA).await? {
        None => Ok(CustomerData::default()),
        Some(value) => CustomerData::parse(&value).ok_or(Error::Corrupt("customer_data setting")),
    }
}

pub async fn set_customer_data(db: &Db, mode: CustomerData) -> Result<(), Error> {
    set_setting(db, CUSTOMER_DATA, mode.as_str()).await
}

/// The generation of the replica consumers (bumped by each rebuild); 0 at first.
pub async fn replica_generation(db: &Db) -> Result<u64, Error> {
    match setting(db, REPLICA_GENERATION).await? {
        None => Ok(0),
        Some(value) => value
            .parse()
            .map_err(|_| Error::Corrupt("replica generation")),
    }
}

/// When the consumers of the current replica generation start reading the bus, when
/// the replicas catch up from the owners' feeds (see [`crate::ReplicaFeeds`]); `None`
/// for a generation that reads the streams from their start.
pub async fn replica_switch(db: &Db) -> Result<Option<SystemTime>, Error> {
    match setting(db, REPLICA_SWITCH).await? {
        None => Ok(None),
        Some(value) => value
            .parse::<u64>()
            .map(|ms| Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)))
            .map_err(|_| Error::Corrupt("replica switch time")),
    }
}

/// Moves the replica generation from `from` to `from + 1` and empties the replicas,
/// in one transaction, only if it is still `from`: `false` when another instance moved
/// it first. Whoever sees the new generation sees the replicas emptied, so no consumer
/// of the new generation can apply an event that the emptying then erases. `switch`:
/// the new generation's [`replica_switch`].
pub async fn advance_replica_generation(
    db: &Db,
    from: u64,
    switch: Option<SystemTime>,
) -> Result<bool, Error> {
    let mut tx = db.begin().await?;
    // The generation-0 row may not exist yet; the update below needs one to compare.
    sqlx::query(
        "INSERT INTO ordering_settings (name, value) VALUES ($1, '0')
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(REPLICA_GENERATION)
    .execute(&mut *tx)
    .await?;
    let moved =
        sqlx::query("UPDATE ordering_settings SET value = $1 WHERE name = $2 AND value = $3")
            .bind((from + 1).to_string())
            .bind(REPLICA_GENERATION)
            .bind(from.to_string())
            .execute(&mut *tx)
            .await?;
    if moved.rows_affected() != 1 {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query("DELETE FROM ordering_customer_replica")
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM ordering_product_replica")
        .execute(&mut *tx)
        .await?;
    match switch {
        Some(switch) => {
            let ms = switch
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            sqlx::query(
                "INSERT INTO ordering_settings (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )
            .bind(REPLICA_SWITCH)
            .bind(ms.to_string())
            .execute(&mut *tx)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM ordering_settings WHERE name = $1")
                .bind(REPLICA_SWITCH)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}

// ---------------------------------------------------------------------------------
// Prices and products

/// A product's price as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPrice {
    pub product_id: Uuid,
    pub amount_cents: i64,
    pub currency: String,
    pub version: u64,
}

fn price_of(row: &AnyRow) -> Result<StoredPrice, Error> {
    Ok(StoredPrice {
        product_id: uuid_of(row, "product_id")?,
        amount_cents: row.try_get("amount_cents")?,
        currency: row.try_get("currency")?,
        version: u64_of(row, "version")?,
    })
}

/// Every price of a product that is not deleted in the catalog replica, by product id.
pub async fn prices(db: &Db) -> Result<Vec<StoredPrice>, Error> {
    let rows = sqlx::query(
        "SELECT p.product_id, p.amount_cents, p.currency, p.version
         FROM ordering_prices p
         LEFT JOIN ordering_product_replica r ON r.product_id = p.product_id
         WHERE r.deleted IS NULL OR r.deleted = 0
         ORDER BY p.product_id",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(price_of).collect()
}

/// Sets a price in `tx`: the new version, or `None` when it is already this price
/// (nothing changes, no event).
pub async fn set_price(
    tx: &mut Transaction<'_, Any>,
    product_id: Uuid,
    amount_cents: i64,
    currency: &str,
    now_ms: i64,
) -> Result<Option<u64>, Error> {
    let current = sqlx::query(
        "SELECT product_id, amount_cents, currency, version FROM ordering_prices
         WHERE product_id = $1",
    )
    .bind(product_id.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    let current = current.as_ref().map(price_of).transpose()?;
    if let Some(current) = &current
        && current.amount_cents == amount_cents
        && current.currency == currency
    {
        return Ok(None);
    }
    // Concurrent setters of one price: the primary key lets one insert win, and the
    // version guard makes the other's update a no-op, reported as a conflict below.
    let version = current.as_ref().map_or(1, |c| c.version + 1);
    let done = match &current {
        None => {
            sqlx::query(
                "INSERT INTO ordering_prices (product_id, amount_cents, currency, version, updated_at_ms)
                 VALUES ($1, $2, $3, 1, $4) ON CONFLICT (product_id) DO NOTHING",
            )
            .bind(product_id.to_string())
            .bind(amount_cents)
            .bind(currency.to_owned())
            .bind(now_ms)
            .execute(&mut **tx)
            .await?
        }
        Some(current) => {
            sqlx::query(
                "UPDATE ordering_prices SET amount_cents = $1, currency = $2, version = $3,
                 updated_at_ms = $4 WHERE product_id = $5 AND version = $6",
            )
            .bind(amount_cents)
            .bind(currency.to_owned())
            .bind(i64_of(version)?)
            .bind(now_ms)
            .bind(product_id.to_string())
            .bind(i64_of(current.version)?)
            .execute(&mut **tx)
            .await?
        }
    };
    if done.rows_affected() != 1 {
        return Err(Error::Conflict);
    }
    Ok(Some(version))
}

/// What checkout knows of a product: its price (if any) and its replicated name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductInfo {
    pub price: Option<(i64, String)>,
    pub name: Option<String>,
    pub deleted: bool,
}

/// The products among `ids` that ordering knows anything about.
pub async fn products(db: &Db, ids: &[Uuid]) -> Result<HashMap<Uuid, ProductInfo>, Error> {
    let mut known = HashMap::new();
    // One query per table with an IN list: at most 50 ids (Lines::MAX).
    if ids.is_empty() {
        return Ok(known);
    }
    let placeholders = (1..=ids.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut prices = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT product_id, amount_cents, currency, version FROM ordering_prices
         WHERE product_id IN ({placeholders})"
    )));
    for id in ids {
        prices = prices.bind(id.to_string());
    }
    for row in prices.fetch_all(db.pool()).await? {
        let price = price_of(&row)?;
        known.insert(
            price.product_id,
            ProductInfo {
                price: Some((price.amount_cents, price.currency)),
                name: None,
                deleted: false,
            },
        );
    }
    let mut names = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT product_id, name, deleted FROM ordering_product_replica
         WHERE product_id IN ({placeholders})"
    )));
    for id in ids {
        names = names.bind(id.to_string());
    }
    for row in names.fetch_all(db.pool()).await? {
        let id = uuid_of(&row, "product_id")?;
        let deleted: i64 = row.try_get("deleted")?;
        let entry = known.entry(id).or_insert(ProductInfo {
            price: None,
            name: None,
            deleted: false,
        });
        entry.name = row.try_get("name")?;
        entry.deleted = deleted != 0;
    }
    Ok(known)
}

// ---------------------------------------------------------------------------------
// Replicas

/// Ordering's copy of one customer's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerReplica {
    pub customer_id: Uuid,
    pub name: Option<String>,
    pub email: Option<String>,
    pub profile_version: u64,
    pub address: Option<Address>,
    /// When the customer changed the address (the event's `changed_at`), RFC 3339.
    pub address_as_of: Option<String>,
    pub address_version: u64,
    pub payment_method: Option<PaymentMethod>,
    pub payment_method_version: u64,
}

/// Ordering's copy of one product's name; `deleted` marks a tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductReplica {
    pub product_id: Uuid,
    pub name: Option<String>,
    pub deleted: bool,
    pub version: u64,
}

const CUSTOMER_COLUMNS: &str = "customer_id, name, email, profile_version, address, \
     address_as_of, address_version, payment_method, payment_method_version";

fn customer_of(row: &AnyRow) -> Result<CustomerReplica, Error> {
    let address: Option<String> = row.try_get("address")?;
    let payment_method: Option<String> = row.try_get("payment_method")?;
    Ok(CustomerReplica {
        customer_id: uuid_of(row, "customer_id")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        profile_version: u64_of(row, "profile_version")?,
        address: address
            .map(|a| serde_json::from_str(&a))
            .transpose()
            .map_err(|_| Error::Corrupt("replicated address"))?,
        address_as_of: row.try_get("address_as_of")?,
        address_version: u64_of(row, "address_version")?,
        payment_method: payment_method
            .map(|p| serde_json::from_str(&p))
            .transpose()
            .map_err(|_| Error::Corrupt("replicated payment method"))?,
        payment_method_version: u64_of(row, "payment_method_version")?,
    })
}

pub async fn customer_replica(db: &Db, id: Uuid) -> Result<Option<CustomerReplica>, Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CUSTOMER_COLUMNS} FROM ordering_customer_replica WHERE customer_id = $1"
    )))
    .bind(id.to_string())
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(customer_of).transpose()
}

/// Every replicated customer and product, ordered by id.
pub async fn replica_contents(
    db: &Db,
) -> Result<(Vec<CustomerReplica>, Vec<ProductReplica>), Error> {
    let customers = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CUSTOMER_COLUMNS} FROM ordering_customer_replica ORDER BY customer_id"
    )))
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(customer_of)
    .collect::<Result<Vec<_>, _>>()?;
    let products = sqlx::query(
        "SELECT product_id, name, deleted, version FROM ordering_product_replica
         ORDER BY product_id",
    )
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(|row| {
        let deleted: i64 = row.try_get("deleted")?;
        Ok(ProductReplica {
            product_id: uuid_of(row, "product_id")?,
            name: row.try_get("name")?,
            deleted: deleted != 0,
            version: u64_of(row, "version")?,
        })
    })
    .collect::<Result<Vec<_>, Error>>()?;
    Ok((customers, products))
}

/// Applies a registration if its version is newer than the profile's.
pub async fn apply_registered(
    tx: &mut Transaction<'_, Any>,
    customer_id: Uuid,
    name: &str,
    email: &str,
    version: u64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO ordering_customer_replica (customer_id, name, email, profile_version)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (customer_id) DO UPDATE SET name = excluded.name, email = excluded.email,
             profile_version = excluded.profile_version
         WHERE ordering_customer_replica.profile_version < excluded.profile_version",
    )
    .bind(customer_id.to_string())
    .bind(name.to_owned())
    .bind(email.to_owned())
    .bind(i64_of(version)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Applies an address if its version is newer than the address's.
pub async fn apply_address(
    tx: &mut Transaction<'_, Any>,
    customer_id: Uuid,
    address: &Address,
    changed_at: OffsetDateTime,
    version: u64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO ordering_customer_replica
             (customer_id, address, address_as_of, address_version)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (customer_id) DO UPDATE SET address = excluded.address,
             address_as_of = excluded.address_as_of,
             address_version = excluded.address_version
         WHERE ordering_customer_replica.address_version < excluded.address_version",
    )
    .bind(customer_id.to_string())
    .bind(json_text(address)?)
    .bind(rfc3339(changed_at))
    .bind(i64_of(version)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Applies a payment method if its version is newer than the method's.
pub async fn apply_payment_method(
    tx: &mut Transaction<'_, Any>,
    customer_id: Uuid,
    payment_method: &PaymentMethod,
    version: u64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO ordering_customer_replica
             (customer_id, payment_method, payment_method_version)
         VALUES ($1, $2, $3)
         ON CONFLICT (customer_id) DO UPDATE SET payment_method = excluded.payment_method,
             payment_method_version = excluded.payment_method_version
         WHERE ordering_customer_replica.payment_method_version
             < excluded.payment_method_version",
    )
    .bind(customer_id.to_string())
    .bind(json_text(payment_method)?)
    .bind(i64_of(version)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Applies a product's name (`None` and `deleted`: a tombstone) if its version is newer.
pub async fn apply_product(
    tx: &mut Transaction<'_, Any>,
    product_id: Uuid,
    name: Option<&str>,
    deleted: bool,
    version: u64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO ordering_product_replica (product_id, name, deleted, version)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (product_id) DO UPDATE SET name = excluded.name,
             deleted = excluded.deleted, version = excluded.version
         WHERE ordering_product_replica.version < excluded.version",
    )
    .bind(product_id.to_string())
    .bind(name.map(str::to_owned))
    .bind(i64::from(deleted))
    .bind(i64_of(version)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// Idempotency

/// The outcome of claiming an idempotency key for a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This request holds the key: go on, with this order id (reused from an earlier
    /// attempt that ended without an answer), and settle the claim at the end.
    /// `fresh`: no earlier attempt existed (so none can have reached payment).
    /// `attempt`: what the earlier attempt asked payment for (JSON, see
    /// `checkout::Attempt`), when it got that far.
    Mine {
        order_id: Uuid,
        claim: Uuid,
        fresh: bool,
        attempt: Option<String>,
    },
    /// The key was answered before: repeat this.
    Answered { status: u16, body: String },
    /// The key was used with another request body.
    OtherRequest,
    /// Another request holds the key right now.
    Busy,
}

/// Claims `(customer, key)` for a request with `fingerprint`. A pending claim not
/// renewed for `lease` is taken over (its holder crashed). The lease is written and
/// judged by the store's clock, which every instance shares.
pub async fn claim(
    db: &Db,
    customer_id: Uuid,
    key: &str,
    fingerprint: &str,
    lease: Duration,
) -> Result<Claim, Error> {
    let claim = Uuid::now_v7();
    let now = db.now_ms_sql();
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    // Races (a row deleted, a state changed between read and write) are retried, a few
    // rounds; past them the key is reported busy.
    for _ in 0..4 {
        let order_id = Uuid::now_v7();
        let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO ordering_idempotency
                 (customer_id, idempotency_key, fingerprint, state, claim, order_id,
                  updated_at_ms)
             VALUES ($1, $2, $3, 'pending', $4, $5, {now})
             ON CONFLICT (customer_id, idempotency_key) DO NOTHING"
        )))
        .bind(customer_id.to_string())
        .bind(key.to_owned())
        .bind(fingerprint.to_owned())
        .bind(claim.to_string())
        .bind(order_id.to_string())
        .execute(db.pool())
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Claim::Mine {
                order_id,
                claim,
                fresh: true,
                attempt: None,
            });
        }
        let Some(row) = idempotency_row(db, customer_id, key).await? else {
            continue;
        };
        if row.fingerprint != fingerprint {
            return Ok(Claim::OtherRequest);
        }
        if row.state == "done" {
            return Ok(row.answer());
        }
        // 'open', or a 'pending' past its lease: take it over if nobody else did
        // meanwhile.
        let taken = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE ordering_idempotency SET state = 'pending', claim = $1, updated_at_ms = {now}
             WHERE customer_id = $2 AND idempotency_key = $3 AND claim = $4 AND state = $5
               AND (state = 'open' OR updated_at_ms < {now} - $6)"
        )))
        .bind(claim.to_string())
        .bind(customer_id.to_string())
        .bind(key.to_owned())
        .bind(row.claim.clone())
        .bind(row.state.clone())
        .bind(lease_ms)
        .execute(db.pool())
        .await?;
        if taken.rows_affected() == 1 {
            return Ok(Claim::Mine {
                order_id: row.order_id,
                claim,
                fresh: false,
                attempt: row.attempt,
            });
        }
        if row.state == "pending" {
            // Held within its lease (or just taken over by another request).
            return Ok(Claim::Busy);
        }
    }
    Ok(Claim::Busy)
}

/// The state of a key as another request sees it while waiting.
#[derive(Clone, Debug)]
pub struct IdempotencyRow {
    pub fingerprint: String,
    pub state: String,
    pub claim: String,
    pub order_id: Uuid,
    pub status: Option<i64>,
    pub body: Option<String>,
    pub attempt: Option<String>,
}

impl IdempotencyRow {
    pub fn answer(&self) -> Claim {
        match (self.status.and_then(|s| u16::try_from(s).ok()), &self.body) {
            (Some(status), Some(body)) => Claim::Answered {
                status,
                body: body.clone(),
            },
            _ => Claim::Busy,
        }
    }
}

pub async fn idempotency_row(
    db: &Db,
    customer_id: Uuid,
    key: &str,
) -> Result<Option<IdempotencyRow>, Error> {
    let row = sqlx::query(
        "SELECT fingerprint, state, claim, order_id, status, body, attempt
         FROM ordering_idempotency WHERE customer_id = $1 AND idempotency_key = $2",
    )
    .bind(customer_id.to_string())
    .bind(key.to_owned())
    .fetch_optional(db.pool())
    .await?;
    row.map(|row| {
        Ok(IdempotencyRow {
            fingerprint: row.try_get("fingerprint")?,
            state: row.try_get("state")?,
            claim: row.try_get("claim")?,
            order_id: uuid_of(&row, "order_id")?,
            status: row.try_get("status")?,
            body: row.try_get("body")?,
            attempt: row.try_get("attempt")?,
        })
    })
    .transpose()
}

/// Stores the final answer of the claim holder, in `tx`; `false` if the claim was lost
/// (taken over as stale), and then nothing may be committed.
pub async fn answer(
    tx: &mut Transaction<'_, Any>,
    customer_id: Uuid,
    key: &str,
    claim: Uuid,
    status: u16,
    body: &str,
    now_ms: i64,
) -> Result<bool, Error> {
    let done = sqlx::query(
        "UPDATE ordering_idempotency SET state = 'done', status = $1, body = $2,
             updated_at_ms = $3
         WHERE customer_id = $4 AND idempotency_key = $5 AND claim = $6 AND state = 'pending'",
    )
    .bind(i64::from(status))
    .bind(body.to_owned())
    .bind(now_ms)
    .bind(customer_id.to_string())
    .bind(key.to_owned())
    .bind(claim.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Forgets a fresh claim whose request never reached payment: the key is unused.
pub async fn forget(db: &Db, customer_id: Uuid, key: &str, claim: Uuid) -> Result<(), Error> {
    sqlx::query(
        "DELETE FROM ordering_idempotency
         WHERE customer_id = $1 AND idempotency_key = $2 AND claim = $3 AND state = 'pending'",
    )
    .bind(customer_id.to_string())
    .bind(key.to_owned())
    .bind(claim.to_string())
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Releases a claim without an answer: a retry may claim the key again, and asks
/// payment for `attempt` (the first attempt's request, kept once written).
pub async fn reopen(
    db: &Db,
    customer_id: Uuid,
    key: &str,
    claim: Uuid,
    attempt: Option<&str>,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE ordering_idempotency SET state = 'open', attempt = COALESCE(attempt, $1)
         WHERE customer_id = $2 AND idempotency_key = $3 AND claim = $4 AND state = 'pending'",
    )
    .bind(attempt.map(str::to_owned))
    .bind(customer_id.to_string())
    .bind(key.to_owned())
    .bind(claim.to_string())
    .execute(db.pool())
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// Orders

/// One line of an order as stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredLine {
    pub product_id: Uuid,
    pub name: Option<String>,
    pub quantity: u32,
    pub unit_price_cents: i64,
}

/// One step of an order's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    pub status: OrderStatus,
    pub at_ms: i64,
    pub reason: Option<String>,
}

/// An order as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub status: OrderStatus,
    pub lines: Vec<StoredLine>,
    pub total_cents: i64,
    pub currency: String,
    pub shipping_address: Address,
    pub address_source: AddressSource,
    pub payment_authorization_id: Uuid,
    pub version: u64,
    pub created_at_ms: i64,
    pub history: Vec<HistoryEntry>,
}

/// Writes a new order, its lines and its history, in `tx`.
pub async fn insert_order(tx: &mut Transaction<'_, Any>, order: &Order) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO ordering_orders (id, customer_id, status, total_cents, currency,
             shipping_address, address_source, payment_authorization_id, version, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(order.id.to_string())
    .bind(order.customer_id.to_string())
    .bind(order.status.as_str())
    .bind(order.total_cents)
    .bind(order.currency.clone())
    .bind(json_text(&order.shipping_address)?)
    .bind(order.address_source.as_str().to_owned())
    .bind(order.payment_authorization_id.to_string())
    .bind(i64_of(order.version)?)
    .bind(order.created_at_ms)
    .execute(&mut **tx)
    .await?;
    for (line_no, line) in order.lines.iter().enumerate() {
        sqlx::query(
            "INSERT INTO ordering_order_lines
                 (order_id, line_no, product_id, name, quantity, unit_price_cents)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(order.id.to_string())
        .bind(i64::try_from(line_no).map_err(|_| Error::Corrupt("line number"))?)
        .bind(line.product_id.to_string())
        .bind(line.name.clone())
        .bind(i64::from(line.quantity))
        .bind(line.unit_price_cents)
        .execute(&mut **tx)
        .await?;
    }
    for (seq, entry) in order.history.iter().enumerate() {
        sqlx::query(
            "INSERT INTO ordering_order_history (order_id, seq, status, at_ms, reason)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(order.id.to_string())
        .bind(i64::try_from(seq).map_err(|_| Error::Corrupt("history sequence"))?)
        .bind(entry.status.as_str())
        .bind(entry.at_ms)
        .bind(entry.reason.clone())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// What the status projection needs of an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusRow {
    pub customer_id: Uuid,
    pub status: OrderStatus,
    pub version: u64,
}

/// The status of order `id`, read in `tx`.
pub async fn order_status(
    tx: &mut Transaction<'_, Any>,
    id: Uuid,
) -> Result<Option<StatusRow>, Error> {
    let row = sqlx::query("SELECT customer_id, status, version FROM ordering_orders WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|row| {
        Ok(StatusRow {
            customer_id: uuid_of(&row, "customer_id")?,
            status: status_of(&row)?,
            version: u64_of(&row, "version")?,
        })
    })
    .transpose()
}

/// Moves order `id` from `from_version` to `status` at `from_version + 1` and appends
/// `entries` to its history (an entry whose status is already there is skipped).
/// [`Error::Conflict`] when the order is no longer at `from_version`.
pub async fn advance_status(
    tx: &mut Transaction<'_, Any>,
    id: Uuid,
    from_version: u64,
    status: OrderStatus,
    entries: &[HistoryEntry],
) -> Result<(), Error> {
    let done = sqlx::query(
        "UPDATE ordering_orders SET status = $1, version = $2 WHERE id = $3 AND version = $4",
    )
    .bind(status.as_str())
    .bind(i64_of(from_version + 1)?)
    .bind(id.to_string())
    .bind(i64_of(from_version)?)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(Error::Conflict);
    }
    // Each entry takes the next sequence number of the order's history in the same
    // statement (one round trip per entry, not two).
    for entry in entries {
        sqlx::query(
            "INSERT INTO ordering_order_history (order_id, seq, status, at_ms, reason)
             SELECT $1, COALESCE(MAX(seq), -1) + 1, $2, $3, $4
               FROM ordering_order_history WHERE order_id = $1
             ON CONFLICT (order_id, status) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(entry.status.as_str())
        .bind(entry.at_ms)
        .bind(entry.reason.clone())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

const ORDER_COLUMNS: &str = "id, customer_id, status, total_cents, currency, shipping_address, \
     address_source, payment_authorization_id, version, created_at_ms";

/// The `status` column, through [`OrderStatus::parse`].
fn status_of(row: &AnyRow) -> Result<OrderStatus, Error> {
    let raw: String = row.try_get("status")?;
    OrderStatus::parse(&raw).ok_or(Error::Corrupt("order status"))
}

fn order_of(row: &AnyRow) -> Result<Order, Error> {
    let address: String = row.try_get("shipping_address")?;
    let source: String = row.try_get("address_source")?;
    Ok(Order {
        id: uuid_of(row, "id")?,
        customer_id: uuid_of(row, "customer_id")?,
        status: status_of(row)?,
        lines: Vec::new(),
        total_cents: row.try_get("total_cents")?,
        currency: row.try_get("currency")?,
        shipping_address: serde_json::from_str(&address)
            .map_err(|_| Error::Corrupt("shipping address"))?,
        address_source: AddressSource::from(source),
        payment_authorization_id: uuid_of(row, "payment_authorization_id")?,
        version: u64_of(row, "version")?,
        created_at_ms: row.try_get("created_at_ms")?,
        history: Vec::new(),
    })
}

pub async fn order(db: &Db, id: Uuid) -> Result<Option<Order>, Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM ordering_orders WHERE id = $1"
    )))
    .bind(id.to_string())
    .fetch_optional(db.pool())
    .await?;
    let Some(order) = row.as_ref().map(order_of).transpose()? else {
        return Ok(None);
    };
    let mut orders = with_details(db, vec![order]).await?;
    Ok(orders.pop())
}

/// The orders whose id has this human reference (its last 40 bits): those of
/// `customer_id` when given (a customer's lookup, served by the index on customer),
/// else all of them (an admin's). Newest first, at most two: more would not change
/// the answer (one, or ambiguous).
pub async fn orders_by_reference(
    db: &Db,
    reference: OrderReference,
    customer_id: Option<Uuid>,
) -> Result<Vec<Order>, Error> {
    // Ids are stored as lower-case hyphenated text, whose last 12 characters are hex:
    // the reference's 10 hex digits are a plain suffix (LIKE: both dialects).
    let pattern = format!("%{}", reference.id_suffix());
    let rows = match customer_id {
        Some(customer_id) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {ORDER_COLUMNS} FROM ordering_orders WHERE customer_id = $1 AND id LIKE $2
                 ORDER BY created_at_ms DESC LIMIT 2"
            )))
            .bind(customer_id.to_string())
            .bind(pattern)
            .fetch_all(db.pool())
            .await?
        }
        None => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {ORDER_COLUMNS} FROM ordering_orders WHERE id LIKE $1
                 ORDER BY created_at_ms DESC LIMIT 2"
            )))
            .bind(pattern)
            .fetch_all(db.pool())
            .await?
        }
    };
    let orders = rows.iter().map(order_of).collect::<Result<Vec<_>, _>>()?;
    // The suffix match is exact, but say so in code rather than trust the SQL alone.
    let orders = orders
        .into_iter()
        .filter(|o| reference.matches(o.id))
        .collect();
    with_details(db, orders).await
}

/// Where a page of a customer's orders starts: after the order made at
/// `created_at_ms` with `id` (newest first). Shown to clients as an opaque string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderCursor {
    pub created_at_ms: i64,
    pub id: Uuid,
}

impl OrderCursor {
    /// The cursor after `order`.
    pub fn after(order: &Order) -> Self {
        Self {
            created_at_ms: order.created_at_ms,
            id: order.id,
        }
    }

    /// `<created_at_ms>.<id without dashes>`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at_ms, self.id.simple())
    }

    /// `None` for anything [`OrderCursor::encode`] did not make.
    pub fn decode(text: &str) -> Option<Self> {
        let (ms, id) = text.split_once('.')?;
        if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) || id.len() != 32 {
            return None;
        }
        Some(Self {
            created_at_ms: ms.parse().ok()?,
            id: Uuid::try_parse(id).ok()?,
        })
    }
}

/// At most `limit` orders of `customer_id`, newest first, after `cursor` if given;
/// and the cursor of the next page when there are more.
pub async fn orders_of(
    db: &Db,
    customer_id: Uuid,
    limit: u32,
    cursor: Option<OrderCursor>,
) -> Result<(Vec<Order>, Option<OrderCursor>), Error> {
    let fetch = i64::from(limit) + 1;
    let query = match cursor {
        None => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ORDER_COLUMNS} FROM ordering_orders WHERE customer_id = $1
             ORDER BY created_at_ms DESC, id DESC LIMIT $2"
        )))
        .bind(customer_id.to_string())
        .bind(fetch),
        Some(cursor) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ORDER_COLUMNS} FROM ordering_orders WHERE customer_id = $1
               AND (created_at_ms < $2 OR (created_at_ms = $2 AND id < $3))
             ORDER BY created_at_ms DESC, id DESC LIMIT $4"
        )))
        .bind(customer_id.to_string())
        .bind(cursor.created_at_ms)
        .bind(cursor.id.to_string())
        .bind(fetch),
    };
    let rows = query.fetch_all(db.pool()).await?;
    let mut orders = rows.iter().map(order_of).collect::<Result<Vec<_>, _>>()?;
    let more = orders.len() > limit as usize;
    orders.truncate(limit as usize);
    let next = if more {
        orders.last().map(OrderCursor::after)
    } else {
        None
    };
    Ok((with_details(db, orders).await?, next))
}

/// `orders` with their lines and history.
async fn with_details(db: &Db, mut orders: Vec<Order>) -> Result<Vec<Order>, Error> {
    if orders.is_empty() {
        return Ok(orders);
    }
    let ids: Vec<String> = orders.iter().map(|o| o.id.to_string()).collect();
    let placeholders = (1..=ids.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut details: HashMap<Uuid, (Vec<StoredLine>, Vec<HistoryEntry>)> = HashMap::new();
    let sql = format!(
        "SELECT order_id, product_id, name, quantity, unit_price_cents
         FROM ordering_order_lines WHERE order_id IN ({placeholders})
         ORDER BY order_id, line_no"
    );
    let mut lines = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in &ids {
        lines = lines.bind(id.clone());
    }
    for row in lines.fetch_all(db.pool()).await? {
        let quantity: i64 = row.try_get("quantity")?;
        details
            .entry(uuid_of(&row, "order_id")?)
            .or_default()
            .0
            .push(StoredLine {
                product_id: uuid_of(&row, "product_id")?,
                name: row.try_get("name")?,
                quantity: u32::try_from(quantity).map_err(|_| Error::Corrupt("quantity"))?,
                unit_price_cents: row.try_get("unit_price_cents")?,
            });
    }
    let sql = format!(
        "SELECT order_id, status, at_ms, reason
         FROM ordering_order_history WHERE order_id IN ({placeholders})
         ORDER BY order_id, seq"
    );
    let mut history = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in &ids {
        history = history.bind(id.clone());
    }
    for row in history.fetch_all(db.pool()).await? {
        details
            .entry(uuid_of(&row, "order_id")?)
            .or_default()
            .1
            .push(HistoryEntry {
                status: status_of(&row)?,
                at_ms: row.try_get("at_ms")?,
                reason: row.try_get("reason")?,
            });
    }
    for order in &mut orders {
        if let Some((lines, history)) = details.remove(&order.id) {
            order.lines = lines;
            order.history = history;
        }
    }
    Ok(orders)
}

/// How many orders are stored (for tests and tools).
pub async fn count_orders(db: &Db) -> Result<u64, Error> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ordering_orders")
        .fetch_one(db.pool())
        .await?;
    u64::try_from(n).map_err(|_| Error::Corrupt("order count"))
}

// ---------------------------------------------------------------------------------
// Conversions

fn uuid_of(row: &AnyRow, column: &str) -> Result<Uuid, Error> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|_| Error::Corrupt("id"))
}

fn u64_of(row: &AnyRow, column: &str) -> Result<u64, Error> {
    let value: i64 = row.try_get(column)?;
    u64::try_from(value).map_err(|_| Error::Corrupt("version"))
}

fn i64_of(version: u64) -> Result<i64, Error> {
    i64::try_from(version).map_err(|_| Error::Corrupt("version out of range"))
}

fn json_text<T: serde::Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|_| Error::Corrupt("json"))
}

pub fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub fn time_of_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub fn ms_of(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}
