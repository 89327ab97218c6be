//! Customer's own table: one profile per customer, keyed by the identity user id. The
//! SQL is the dialect SQLite and PostgreSQL share; ids are UUID strings, times Unix
//! milliseconds.
//!
//! Every change is one upsert, so that a write for a customer without a profile creates
//! it and concurrent changes of one profile bump its version one after the other. An
//! upsert that would change nothing writes nothing and returns no row: no version bump,
//! no event.

use agora_contracts::{Address, PaymentMethod};
use agora_messaging::{Db, Migration};
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Error;
use crate::domain;

const PROFILES: &str = "
CREATE TABLE customer_profiles (
    -- The identity user id.
    id TEXT PRIMARY KEY,
    -- Both NULL until the user's UserSignedUp has been handled.
    name TEXT,
    email TEXT,
    -- When the user signed up; NULL until UserSignedUp has been handled.
    registered_at_ms BIGINT,
    -- The shipping address: all NULL or line1, city, postal_code and country set.
    address_line1 TEXT,
    address_line2 TEXT,
    address_city TEXT,
    address_postal_code TEXT,
    -- ISO 3166-1 alpha-2, upper case.
    address_country TEXT,
    address_changed_at_ms BIGINT,
    -- The payment provider's token and the card's last four digits, never a card number.
    payment_token TEXT,
    payment_last4 TEXT,
    payment_changed_at_ms BIGINT,
    -- Bumped by every change; the version each event carries.
    version BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
";

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "customer profiles",
    sqlite: PROFILES,
    postgres: PROFILES,
}];

/// A customer profile as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub id: Uuid,
    /// `None` until the sign-up event has reached the customer service.
    pub name: Option<String>,
    pub email: Option<String>,
    pub address: Option<Address>,
    pub payment_method: Option<PaymentMethod>,
    /// 0 for a customer without a profile yet.
    pub version: u64,
    pub updated_at: OffsetDateTime,
}

impl Profile {
    /// What is known of a customer who has no profile yet: nothing but the id.
    pub fn unknown(id: Uuid) -> Profile {
        Profile {
            id,
            name: None,
            email: None,
            address: None,
            payment_method: None,
            version: 0,
            updated_at: OffsetDateTime::UNIX_EPOCH,
        }
    }
}

const COLUMNS: &str = "id, name, email, address_line1, address_line2, address_city,
    address_postal_code, address_country, payment_token, payment_last4, version,
    updated_at_ms";

fn profile_of(row: &AnyRow) -> Result<Profile, Error> {
    let id: String = row.try_get("id")?;
    let version: i64 = row.try_get("version")?;
    let line1: Option<String> = row.try_get("address_line1")?;
    let address = match line1 {
        None => None,
        Some(line1) => Some(Address {
            line1,
            line2: row.try_get("address_line2")?,
            city: required(row, "address_city")?,
            postal_code: required(row, "address_postal_code")?,
            country: required(row, "address_country")?,
        }),
    };
    let token: Option<String> = row.try_get("payment_token")?;
    let payment_method = match token {
        None => None,
        Some(token) => Some(PaymentMethod {
            token,
            last4: required(row, "payment_last4")?,
        }),
    };
    Ok(Profile {
        id: Uuid::parse_str(&id).map_err(|_| Error::Corrupt("customer id"))?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        address,
        payment_method,
        version: u64::try_from(version).map_err(|_| Error::Corrupt("customer version"))?,
        updated_at: time_of_ms(row.try_get("updated_at_ms")?)?,
    })
}

fn required(row: &AnyRow, column: &'static str) -> Result<String, Error> {
    let value: Option<String> = row.try_get(column)?;
    value.ok_or(Error::Corrupt(column))
}

pub async fn profile(db: &Db, id: Uuid) -> Result<Option<Profile>, Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM customer_profiles WHERE id = $1"
    )))
    .bind(id.to_string())
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(profile_of).transpose()
}

async fn profile_in(tx: &mut Transaction<'_, Any>, id: Uuid) -> Result<Profile, Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM customer_profiles WHERE id = $1"
    )))
    .bind(id.to_string())
    .fetch_one(&mut **tx)
    .await?;
    profile_of(&row)
}

/// What a change did.
#[derive(Debug)]
pub enum Change {
    /// The profile changed; it is now at `profile.version`.
    Changed(Profile),
    /// The profile already held this; nothing was written.
    Unchanged(Profile),
}

/// Sets the shipping address of `id`, creating the profile if there is none.
pub async fn set_address(
    tx: &mut Transaction<'_, Any>,
    id: Uuid,
    address: &domain::Address,
    now: OffsetDateTime,
) -> Result<Change, Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO customer_profiles
            (id, address_line1, address_line2, address_city, address_postal_code,
             address_country, address_changed_at_ms, version, created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $7, $7)
         ON CONFLICT (id) DO UPDATE SET
            address_line1 = excluded.address_line1,
            address_line2 = excluded.address_line2,
            address_city = excluded.address_city,
            address_postal_code = excluded.address_postal_code,
            address_country = excluded.address_country,
            address_changed_at_ms = excluded.address_changed_at_ms,
            version = customer_profiles.version + 1,
            updated_at_ms = excluded.updated_at_ms
         WHERE customer_profiles.address_line1 IS DISTINCT FROM excluded.address_line1
            OR customer_profiles.address_line2 IS DISTINCT FROM excluded.address_line2
            OR customer_profiles.address_city IS DISTINCT FROM excluded.address_city
            OR customer_profiles.address_postal_code
                IS DISTINCT FROM excluded.address_postal_code
            OR customer_profiles.address_country IS DISTINCT FROM excluded.address_country
         RETURNING {COLUMNS}"
    )))
    .bind(id.to_string())
    .bind(address.line1().to_owned())
    .bind(address.line2().map(str::to_owned))
    .bind(address.city().to_owned())
    .bind(address.postal_code().to_owned())
    .bind(address.country().as_str().to_owned())
    .bind(ms_of(now))
    .fetch_optional(&mut **tx)
    .await?;
    change_of(tx, id, row).await
}

/// Sets the payment method of `id`, creating the profile if there is none.
pub async fn set_payment_method(
    tx: &mut Transaction<'_, Any>,
    id: Uuid,
    method: &domain::PaymentMethod,
    now: OffsetDateTime,
) -> Result<Change, Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO customer_profiles
            (id, payment_token, payment_last4, payment_changed_at_ms, version,
             created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, 1, $4, $4)
         ON CONFLICT (id) DO UPDATE SET
            payment_token = excluded.payment_token,
            payment_last4 = excluded.payment_last4,
            payment_changed_at_ms = excluded.payment_changed_at_ms,
            version = customer_profiles.version + 1,
            updated_at_ms = excluded.updated_at_ms
         WHERE customer_profiles.payment_token IS DISTINCT FROM excluded.payment_token
            OR customer_profiles.payment_last4 IS DISTINCT FROM excluded.payment_last4
         RETURNING {COLUMNS}"
    )))
    .bind(id.to_string())
    .bind(method.token_str().to_owned())
    .bind(method.last4().to_owned())
    .bind(ms_of(now))
    .fetch_optional(&mut **tx)
    .await?;
    change_of(tx, id, row).await
}

async fn change_of(
    tx: &mut Transaction<'_, Any>,
    id: Uuid,
    row: Option<AnyRow>,
) -> Result<Change, Error> {
    match row {
        Some(row) => Ok(Change::Changed(profile_of(&row)?)),
        // The conflict's WHERE was false: the row exists and already holds the value.
        None => Ok(Change::Unchanged(profile_in(tx, id).await?)),
    }
}

/// A user who signed up, as the profile records it.
#[derive(Debug)]
pub struct Registration<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub email: &'a str,
    pub signed_up_at: OffsetDateTime,
    pub now: OffsetDateTime,
}

/// Records the sign-up of a user in its profile, creating the profile or completing
/// one that a write created earlier. The new version, or `None` when the profile was
/// registered already (nothing written).
pub async fn register(
    tx: &mut Transaction<'_, Any>,
    registration: &Registration<'_>,
) -> Result<Option<u64>, Error> {
    let row = sqlx::query(
        "INSERT INTO customer_profiles
            (id, name, email, registered_at_ms, version, created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, 1, $5, $5)
         ON CONFLICT (id) DO UPDATE SET
            name = excluded.name,
            email = excluded.email,
            registered_at_ms = excluded.registered_at_ms,
            version = customer_profiles.version + 1,
            updated_at_ms = excluded.updated_at_ms
         WHERE customer_profiles.registered_at_ms IS NULL
         RETURNING version",
    )
    .bind(registration.id.to_string())
    .bind(registration.name.to_owned())
    .bind(registration.email.to_owned())
    .bind(ms_of(registration.signed_up_at))
    .bind(ms_of(registration.now))
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let version: i64 = row.try_get("version")?;
    Ok(Some(
        u64::try_from(version).map_err(|_| Error::Corrupt("customer version"))?,
    ))
}

pub fn ms_of(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn time_of_ms(ms: i64) -> Result<OffsetDateTime, Error> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|_| Error::Corrupt("customer time"))
}

/// Now, to the millisecond: what the store keeps, so that an event and the profile it
/// reports carry the same times.
pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(u32::from(now.millisecond()) * 1_000_000)
        .unwrap_or(now)
}
