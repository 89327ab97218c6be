//! Catalog's own table: products. The SQL is the dialect SQLite and PostgreSQL share;
//! ids are UUID strings, times Unix milliseconds.
//!
//! Every change of a product bumps its version and appends its event to the outbox in
//! the same transaction: the event reports exactly the state it committed with.

use agora_contracts::{ProductAdded, ProductDeleted, ProductUpdated};
use agora_messaging::{Context, Db, Envelope, Migration, Outbox};
use sqlx::{Any, Row, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Error;
use crate::demo::DemoProduct;

const PRODUCTS: &str = "
CREATE TABLE catalog_products (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    image_url TEXT,
    -- Bumped by every change, and carried by the event that reports it.
    version BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    -- A deleted product stays as a tombstone: its id is never reused, and its
    -- version goes on from where it was.
    deleted_at_ms BIGINT
);
CREATE INDEX catalog_products_by_creation ON catalog_products (created_at_ms, id);
";

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "products",
    sqlite: PRODUCTS,
    postgres: PRODUCTS,
}];

/// A product as stored (not deleted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Product {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub image_url: Option<String>,
    pub version: u64,
}

/// A product's master data, as an admin writes it (already parsed).
#[derive(Clone, Copy, Debug)]
pub struct ProductData<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub image_url: Option<&'a str>,
}

const COLUMNS: &str = "id, name, description, image_url, version";

fn product_of(row: &sqlx::any::AnyRow) -> Result<Product, Error> {
    let id: String = row.try_get("id")?;
    let version: i64 = row.try_get("version")?;
    Ok(Product {
        id: Uuid::parse_str(&id).map_err(|_| Error::Corrupt("product id"))?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        image_url: row.try_get("image_url")?,
        version: u64::try_from(version).map_err(|_| Error::Corrupt("product version"))?,
    })
}

fn ms_of(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The products that are not deleted, oldest first (ties by id).
pub async fn list(db: &Db) -> Result<Vec<Product>, Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM catalog_products WHERE deleted_at_ms IS NULL
         ORDER BY created_at_ms, id"
    )))
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(product_of).collect()
}

/// The product `id`, unless it is unknown or deleted.
pub async fn get(db: &Db, id: Uuid) -> Result<Option<Product>, Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM catalog_products WHERE id = $1 AND deleted_at_ms IS NULL"
    )))
    .bind(id.to_string())
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(product_of).transpose()
}

/// Inserts product `id` at version 1 with its `ProductAdded`, in `tx`; `None` (and
/// nothing written) when a product with this id exists, deleted or not.
pub async fn add(
    tx: &mut Transaction<'_, Any>,
    id: Uuid,
    data: ProductData<'_>,
    now: OffsetDateTime,
    context: &Context,
) -> Result<Option<Product>, Error> {
    let done = sqlx::query(
        "INSERT INTO catalog_products
            (id, name, description, image_url, version, created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, 1, $5, $5)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(data.name.to_owned())
    .bind(data.description.to_owned())
    .bind(data.image_url.map(str::to_owned))
    .bind(ms_of(now))
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(None);
    }
    let product = Product {
        id,
        name: data.name.to_owned(),
        description: data.description.to_owned(),
        image_url: data.image_url.map(str::to_owned),
        version: 1,
    };
    let event = ProductAdded {
        product_id: id,
        name: product.name.clone(),
        description: product.description.clone(),
        image_url: product.image_url.clone(),
        added_at: now,
        version: 1,
    };
    Outbox::append(tx, &Envelope::new(&event, context)?).await?;
    Ok(Some(product))
}

/// What [`update`] did.
#[derive(Debug)]
pub enum Updated {
    /// The product changed: its new state, at a new version, and its `ProductUpdated`
    /// is in the outbox.
    Changed(Product),
    /// The product already had this data: nothing written, no event.
    Unchanged(Product),
    /// No such product (or it is deleted).
    NotFound,
}

/// Replaces the master data of product `id`, bumping its version, with its
/// `ProductUpdated`, in `tx`. Data equal to the stored data changes nothing.
pub async fn update(
    tx: &mut Transaction<'_, Any>,
    id: Uuid,
    data: ProductData<'_>,
    now: OffsetDateTime,
    context: &Context,
) -> Result<Updated, Error> {
    let current = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM catalog_products WHERE id = $1 AND deleted_at_ms IS NULL"
    )))
    .bind(id.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(current) = current.as_ref().map(product_of).transpose()? else {
        return Ok(Updated::NotFound);
    };
    if current.name == data.name
        && current.description == data.description
        && current.image_url.as_deref() == data.image_url
    {
        return Ok(Updated::Unchanged(current));
    }
    // The version comes from the row as this statement leaves it, so that two racing
    // updates on PostgreSQL still publish two distinct, increasing versions.
    let row = sqlx::query(
        "UPDATE catalog_products
         SET name = $1, description = $2, image_url = $3, updated_at_ms = $4,
             version = version + 1
         WHERE id = $5 AND deleted_at_ms IS NULL
         RETURNING version",
    )
    .bind(data.name.to_owned())
    .bind(data.description.to_owned())
    .bind(data.image_url.map(str::to_owned))
    .bind(ms_of(now))
    .bind(id.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(Updated::NotFound);
    };
    let version: i64 = row.try_get("version")?;
    let product = Product {
        id,
        name: data.name.to_owned(),
        description: data.description.to_owned(),
        image_url: data.image_url.map(str::to_owned),
        version: u64::try_from(version).map_err(|_| Error::Corrupt("product version"))?,
    };
    let event = ProductUpdated {
        product_id: id,
        name: product.name.clone(),
        description: product.description.clone(),
        image_url: product.image_url.clone(),
        updated_at: now,
        version: product.version,
    };
    Outbox::append(tx, &Envelope::new(&event, context)?).await?;
    Ok(Updated::Changed(product))
}

/// Marks product `id` deleted, bumping its version, with its `ProductDeleted`, in
/// `tx`; `false` when there is no such product or it is already deleted.
pub async fn delete(
    tx: &mut Transaction<'_, Any>,
    id: Uuid,
    now: OffsetDateTime,
    context: &Context,
) -> Result<bool, Error> {
    let row = sqlx::query(
        "UPDATE catalog_products
         SET deleted_at_ms = $1, updated_at_ms = $1, version = version + 1
         WHERE id = $2 AND deleted_at_ms IS NULL
         RETURNING version",
    )
    .bind(ms_of(now))
    .bind(id.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(false) };
    let version: i64 = row.try_get("version")?;
    let event = ProductDeleted {
        product_id: id,
        deleted_at: now,
        version: u64::try_from(version).map_err(|_| Error::Corrupt("product version"))?,
    };
    Outbox::append(tx, &Envelope::new(&event, context)?).await?;
    Ok(true)
}

/// Adds `products` in one transaction if the catalog has never held a product
/// (deleted ones count: a shop whose admin deleted everything is not reseeded). The
/// number added. Two processes seeding at once add each product once: the fixed ids
/// are the arbiter.
pub async fn seed(db: &Db, outbox: &Outbox, products: &[DemoProduct]) -> Result<usize, Error> {
    let mut tx = db.begin().await?;
    let row = sqlx::query("SELECT COUNT(*) AS n FROM catalog_products")
        .fetch_one(&mut *tx)
        .await?;
    let existing: i64 = row.try_get("n")?;
    if existing > 0 {
        tx.rollback().await?;
        return Ok(0);
    }
    let start = OffsetDateTime::now_utc();
    let mut added = 0;
    for (product, offset) in products.iter().zip(0i64..) {
        // One millisecond apart, so that the list shows them in this order.
        let now = start + time::Duration::milliseconds(offset);
        let data = ProductData {
            name: product.name,
            description: product.description,
            image_url: None,
        };
        let context = Context::new(product.id.to_string());
        if add(&mut tx, product.id, data, now, &context)
            .await?
            .is_some()
        {
            added += 1;
        }
    }
    outbox.commit(tx).await?;
    Ok(added)
}
