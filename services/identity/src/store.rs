//! Identity's own tables: users and signing keys. The SQL is the dialect SQLite and
//! PostgreSQL share; ids are UUID strings, times Unix milliseconds.

use agora_contracts::Role;
use agora_contracts::UserSignedUp;
use agora_messaging::{Context, Db, Envelope, Migration, Outbox};
use sqlx::{Any, Row, Transaction};
use uuid::Uuid;

use crate::Error;
use crate::tokens::SigningKey;

const USERS_AND_KEYS: &str = "
CREATE TABLE identity_users (
    id TEXT PRIMARY KEY,
    -- Lower-cased by Email::parse: unique regardless of case.
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    -- Argon2id, PHC string format.
    password_hash TEXT NOT NULL,
    -- Comma-separated roles, e.g. 'customer' or 'admin'.
    roles TEXT NOT NULL,
    -- Bumped on every event published about the user.
    version BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    -- Tokens issued before this are refused.
    password_changed_at_ms BIGINT NOT NULL
);
CREATE TABLE identity_signing_keys (
    kid TEXT PRIMARY KEY,
    -- The Ed25519 seed, hex. Never leaves this table but as a public key.
    private_key TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
";

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "users and signing keys",
    sqlite: USERS_AND_KEYS,
    postgres: USERS_AND_KEYS,
}];

/// A user as stored.
#[derive(Clone)]
pub struct User {
    pub id: Uuid,
    pub password_hash: String,
    pub roles: Vec<Role>,
    pub version: u64,
    pub password_changed_at_ms: i64,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("roles", &self.roles)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// A user to create.
#[derive(Debug)]
pub struct NewUser<'a> {
    pub id: Uuid,
    pub email: &'a str,
    pub name: &'a str,
    pub password_hash: &'a str,
    pub role: Role,
    pub now: time::OffsetDateTime,
}

const USER_COLUMNS: &str = "id, password_hash, roles, version, password_changed_at_ms";

pub fn roles_to_text(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str().to_owned())
        .collect::<Vec<_>>()
        .join(",")
}

fn roles_of(text: &str) -> Vec<Role> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| Role::from(s.to_owned()))
        .collect()
}

fn user_of(row: &sqlx::any::AnyRow) -> Result<User, Error> {
    let id: String = row.try_get("id")?;
    let version: i64 = row.try_get("version")?;
    let roles: String = row.try_get("roles")?;
    Ok(User {
        id: Uuid::parse_str(&id).map_err(|_| Error::Corrupt("user id"))?,
        password_hash: row.try_get("password_hash")?,
        roles: roles_of(&roles),
        version: u64::try_from(version).map_err(|_| Error::Corrupt("user version"))?,
        password_changed_at_ms: row.try_get("password_changed_at_ms")?,
    })
}

pub async fn user_by_email(db: &Db, email: &str) -> Result<Option<User>, Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM identity_users WHERE email = $1"
    )))
    .bind(email.to_owned())
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(user_of).transpose()
}

pub async fn user_by_id(db: &Db, id: Uuid) -> Result<Option<User>, Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM identity_users WHERE id = $1"
    )))
    .bind(id.to_string())
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(user_of).transpose()
}

/// Inserts `user` at version 1; `false` when the email is taken.
/// Creates the user and appends its `UserSignedUp` to the outbox, in `tx`: the two
/// commit together or not at all. `false` when the email is taken (nothing written).
pub async fn create_user(tx: &mut Transaction<'_, Any>, user: &NewUser<'_>) -> Result<bool, Error> {
    let now_ms = i64::try_from(user.now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
    let done = sqlx::query(
        "INSERT INTO identity_users
            (id, email, name, password_hash, roles, version, created_at_ms,
             password_changed_at_ms)
         VALUES ($1, $2, $3, $4, $5, 1, $6, $6)
         ON CONFLICT (email) DO NOTHING",
    )
    .bind(user.id.to_string())
    .bind(user.email.to_owned())
    .bind(user.name.to_owned())
    .bind(user.password_hash.to_owned())
    .bind(roles_to_text(std::slice::from_ref(&user.role)))
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    let event = UserSignedUp {
        user_id: user.id,
        email: user.email.to_owned(),
        name: user.name.to_owned(),
        role: user.role.clone(),
        signed_up_at: user.now,
        version: 1,
    };
    Outbox::append(
        tx,
        &Envelope::new(&event, &Context::new(user.id.to_string()))?,
    )
    .await?;
    Ok(true)
}

/// Records a sign-in: bumps the version of the user if its password hash is still
/// `expected_hash` (a password change since the check refuses the sign-in). The new
/// version and the user's roles, or `None`.
pub async fn record_sign_in(
    tx: &mut Transaction<'_, Any>,
    id: Uuid,
    expected_hash: &str,
) -> Result<Option<(u64, Vec<Role>)>, Error> {
    let row = sqlx::query(
        "UPDATE identity_users SET version = version + 1
         WHERE id = $1 AND password_hash = $2
         RETURNING version, roles",
    )
    .bind(id.to_string())
    .bind(expected_hash.to_owned())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let version: i64 = row.try_get("version")?;
    let roles: String = row.try_get("roles")?;
    Ok(Some((
        u64::try_from(version).map_err(|_| Error::Corrupt("user version"))?,
        roles_of(&roles),
    )))
}

/// Replaces the password hash if it is still `expected_hash` (no concurrent change),
/// bumping the version; the new version, or `None` when the hash changed meanwhile.
pub async fn change_password(
    tx: &mut Transaction<'_, Any>,
    id: Uuid,
    expected_hash: &str,
    new_hash: &str,
    now_ms: i64,
) -> Result<Option<u64>, Error> {
    let row = sqlx::query(
        "UPDATE identity_users
         SET password_hash = $1, password_changed_at_ms = $2, version = version + 1
         WHERE id = $3 AND password_hash = $4
         RETURNING version",
    )
    .bind(new_hash.to_owned())
    .bind(now_ms)
    .bind(id.to_string())
    .bind(expected_hash.to_owned())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let version: i64 = row.try_get("version")?;
    Ok(Some(
        u64::try_from(version).map_err(|_| Error::Corrupt("user version"))?,
    ))
}

/// The signing keys, oldest first; the first one signs.
pub async fn signing_keys(db: &Db) -> Result<Vec<SigningKey>, Error> {
    let rows =
        sqlx::query("SELECT private_key FROM identity_signing_keys ORDER BY created_at_ms, kid")
            .fetch_all(db.pool())
            .await?;
    rows.iter()
        .map(|row| {
            let hex: String = row.try_get("private_key")?;
            SigningKey::from_seed_hex(&hex).map_err(|_| Error::Corrupt("signing key"))
        })
        .collect()
}

/// Stores `key` unless a key with its `kid` exists.
pub async fn insert_signing_key(db: &Db, key: &SigningKey, now_ms: i64) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO identity_signing_keys (kid, private_key, created_at_ms) VALUES ($1, $2, $3)
         ON CONFLICT (kid) DO NOTHING",
    )
    .bind(key.kid().to_owned())
    .bind(key.seed_hex())
    .bind(now_ms)
    .execute(db.pool())
    .await?;
    Ok(())
}
