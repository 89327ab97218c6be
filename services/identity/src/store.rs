//! Identity's own tables: users, signing keys, sign-in attempts and signed-out tokens.
//! The SQL is the dialect SQLite and PostgreSQL share; ids are UUID strings, times Unix
//! milliseconds.

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

const THROTTLE_AND_SIGN_OUTS: &str = "
-- The user's version set by the last password change: tokens stamped with a lower
-- version (`ver`) are refused. 0: no change since versions were recorded.
ALTER TABLE identity_users ADD COLUMN password_changed_version BIGINT NOT NULL DEFAULT 0;
CREATE TABLE identity_sign_in_attempts (
    -- As Email::parse makes it: one row per address, whether an account has it or not.
    email TEXT PRIMARY KEY,
    -- Attempts since the last success, each counted when it starts.
    attempts BIGINT NOT NULL,
    -- No attempt for this address is checked before this.
    blocked_until_ms BIGINT NOT NULL,
    last_attempt_ms BIGINT NOT NULL
);
CREATE INDEX identity_sign_in_attempts_last ON identity_sign_in_attempts (last_attempt_ms);
CREATE TABLE identity_signed_out_tokens (
    token_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    -- The token has expired by then: the row can go.
    forget_after_ms BIGINT NOT NULL
);
CREATE INDEX identity_signed_out_tokens_forget ON identity_signed_out_tokens (forget_after_ms);
";

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "users and signing keys",
        sqlite: USERS_AND_KEYS,
        postgres: USERS_AND_KEYS,
    },
    Migration {
        version: 2,
        description: "password versions, sign-in throttle, signed-out tokens",
        sqlite: THROTTLE_AND_SIGN_OUTS,
        postgres: THROTTLE_AND_SIGN_OUTS,
    },
];

/// A user as stored.
#[derive(Clone)]
pub struct User {
    pub id: Uuid,
    pub password_hash: String,
    pub roles: Vec<Role>,
    pub version: u64,
    pub password_changed_at_ms: i64,
    /// The version the last password change gave the user (0: none recorded).
    pub password_changed_version: u64,
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

const USER_COLUMNS: &str =
    "id, password_hash, roles, version, password_changed_at_ms, password_changed_version";

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
        password_changed_version: u64::try_from(row.try_get::<i64, _>("password_changed_version")?)
            .map_err(|_| Error::Corrupt("password version"))?,
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
/// version (the token's `ver`: see [`change_password`]) and the user's roles, or
/// `None`.
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
///
/// Tokens stamped with a lower version are revoked by it. The row lock this update
/// takes orders it against [`record_sign_in`]: a sign-in that checked the old hash
/// either commits first (its token's version is lower: revoked) or finds the hash
/// changed (refused), whatever the clocks say.
pub async fn change_password(
    tx: &mut Transaction<'_, Any>,
    id: Uuid,
    expected_hash: &str,
    new_hash: &str,
    now_ms: i64,
) -> Result<Option<u64>, Error> {
    let row = sqlx::query(
        "UPDATE identity_users
         SET password_hash = $1, password_changed_at_ms = $2, version = version + 1,
             password_changed_version = version + 1
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

/// Where an attempt to sign in as an address stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Go on and check the password: this is the `n`-th attempt since the last success.
    Counted(u32),
    /// Refused without a check until `until_ms`.
    Blocked { until_ms: i64 },
}

/// Counts an attempt to sign in as `email` at `now_ms`, unless the address is blocked;
/// attempts last counted before `forget_before_ms` are forgotten. `block_for` says how
/// long the `n`-th attempt blocks the next ones (0: not at all), and is applied in the
/// same transaction, so that concurrent attempts see it: however many race, no more
/// than the free ones are checked before the block.
pub async fn count_sign_in_attempt(
    db: &Db,
    email: &str,
    now_ms: i64,
    forget_before_ms: i64,
    block_for: impl Fn(u32) -> i64,
) -> Result<Attempt, Error> {
    let mut tx = db.begin().await?;
    let counted = sqlx::query(
        "INSERT INTO identity_sign_in_attempts (email, attempts, blocked_until_ms, last_attempt_ms)
         VALUES ($1, 1, 0, $2)
         ON CONFLICT (email) DO UPDATE SET
             attempts = CASE WHEN identity_sign_in_attempts.last_attempt_ms < $3 THEN 1
                             ELSE identity_sign_in_attempts.attempts + 1 END,
             last_attempt_ms = excluded.last_attempt_ms
         WHERE identity_sign_in_attempts.blocked_until_ms <= excluded.last_attempt_ms
         RETURNING attempts",
    )
    .bind(email.to_owned())
    .bind(now_ms)
    .bind(forget_before_ms)
    .fetch_optional(&mut *tx)
    .await?;
    let attempt = match counted {
        Some(row) => {
            let n: i64 = row.try_get("attempts")?;
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            let block = block_for(n);
            if block > 0 {
                sqlx::query(
                    "UPDATE identity_sign_in_attempts SET blocked_until_ms = $1 WHERE email = $2",
                )
                .bind(now_ms.saturating_add(block))
                .bind(email.to_owned())
                .execute(&mut *tx)
                .await?;
            }
            Attempt::Counted(n)
        }
        None => {
            let until_ms: i64 = sqlx::query_scalar(
                "SELECT blocked_until_ms FROM identity_sign_in_attempts WHERE email = $1",
            )
            .bind(email.to_owned())
            .fetch_one(&mut *tx)
            .await?;
            Attempt::Blocked { until_ms }
        }
    };
    tx.commit().await?;
    Ok(attempt)
}

/// A successful sign-in: the address starts afresh.
pub async fn clear_sign_in_attempts(
    tx: &mut Transaction<'_, Any>,
    email: &str,
) -> Result<(), Error> {
    sqlx::query("DELETE FROM identity_sign_in_attempts WHERE email = $1")
        .bind(email.to_owned())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Deletes what no longer counts: addresses last tried before `forget_before_ms` (and
/// not blocked at `now_ms`), tokens expired before `now_ms`.
pub async fn forget_old_entries(db: &Db, forget_before_ms: i64, now_ms: i64) -> Result<(), Error> {
    sqlx::query(
        "DELETE FROM identity_sign_in_attempts
         WHERE last_attempt_ms < $1 AND blocked_until_ms < $2",
    )
    .bind(forget_before_ms)
    .bind(now_ms)
    .execute(db.pool())
    .await?;
    sqlx::query("DELETE FROM identity_signed_out_tokens WHERE forget_after_ms < $1")
        .bind(now_ms)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Records that the token `token_id` of `user_id` was signed out with, bumping the
/// user's version; the new version, or `None` if it was signed out with already.
pub async fn sign_out(
    tx: &mut Transaction<'_, Any>,
    user_id: Uuid,
    token_id: Uuid,
    forget_after_ms: i64,
) -> Result<Option<u64>, Error> {
    let done = sqlx::query(
        "INSERT INTO identity_signed_out_tokens (token_id, user_id, forget_after_ms)
         VALUES ($1, $2, $3)
         ON CONFLICT (token_id) DO NOTHING",
    )
    .bind(token_id.to_string())
    .bind(user_id.to_string())
    .bind(forget_after_ms)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(None);
    }
    let version: Option<i64> = sqlx::query_scalar(
        "UPDATE identity_users SET version = version + 1 WHERE id = $1 RETURNING version",
    )
    .bind(user_id.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    version
        .map(|v| u64::try_from(v).map_err(|_| Error::Corrupt("user version")))
        .transpose()
}

/// Whether the token `token_id` was signed out with.
pub async fn is_signed_out(db: &Db, token_id: Uuid) -> Result<bool, Error> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT token_id FROM identity_signed_out_tokens WHERE token_id = $1")
            .bind(token_id.to_string())
            .fetch_optional(db.pool())
            .await?;
    Ok(found.is_some())
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
