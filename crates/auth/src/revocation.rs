//! Token revocation: after a password change, the user's older tokens are refused.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use agora_contracts::PasswordChanged;
use agora_messaging::{Db, Envelope, Handler, HandlerError, Migration};
use async_trait::async_trait;
use sqlx::{Any, Row, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Claims, Error, MAX_TOKEN_TTL};

/// The component name of this crate's migrations in a service's [`Db`].
pub const MIGRATION_COMPONENT: &str = "auth";

/// The revocation table, in the consuming service's own store.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "token revocations by password change",
    sqlite: "CREATE TABLE auth_revocations (
        user_id TEXT PRIMARY KEY NOT NULL,
        revoked_before_ms BIGINT NOT NULL
    );",
    postgres: "CREATE TABLE auth_revocations (
        user_id TEXT PRIMARY KEY NOT NULL,
        revoked_before_ms BIGINT NOT NULL
    );",
}];

/// For each user, the instant before which their tokens are refused. Cheap to clone;
/// clones share the same entries.
#[derive(Debug, Clone, Default)]
pub struct Revocations {
    by_user: Arc<RwLock<HashMap<Uuid, i64>>>,
}

impl Revocations {
    /// An empty store, for a service that does not persist revocations (or tests).
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the migrations to `db` and loads what is recorded there, so that a
    /// restarted service still refuses revoked tokens; entries too old to matter are
    /// deleted.
    pub async fn load(db: &Db) -> Result<Self, Error> {
        let store = |e: agora_messaging::Error| Error::Store(e.to_string());
        db.migrate(MIGRATION_COMPONENT, MIGRATIONS)
            .await
            .map_err(store)?;
        let horizon = horizon_ms();
        sqlx::query("DELETE FROM auth_revocations WHERE revoked_before_ms < $1")
            .bind(horizon)
            .execute(db.pool())
            .await
            .map_err(|e| Error::Store(e.to_string()))?;
        let rows = sqlx::query(
            "SELECT user_id, revoked_before_ms FROM auth_revocations
             WHERE revoked_before_ms >= $1",
        )
        .bind(horizon)
        .fetch_all(db.pool())
        .await
        .map_err(|e| Error::Store(e.to_string()))?;
        let revocations = Self::new();
        for row in rows {
            let user: String = row.try_get(0).map_err(|e| Error::Store(e.to_string()))?;
            let before: i64 = row.try_get(1).map_err(|e| Error::Store(e.to_string()))?;
            if let Ok(user) = Uuid::parse_str(&user) {
                revocations.record_ms(user, before);
            }
        }
        Ok(revocations)
    }

    /// Refuses `user_id`'s tokens issued before `changed_at` (an earlier time than one
    /// already recorded changes nothing).
    pub fn record(&self, user_id: Uuid, changed_at: OffsetDateTime) {
        self.record_ms(user_id, datetime_ms(changed_at));
    }

    fn record_ms(&self, user_id: Uuid, before_ms: i64) {
        let mut by_user = self.by_user.write().unwrap_or_else(|e| e.into_inner());
        // Password changes are rare: sweeping on each keeps the map small for free.
        let horizon = horizon_ms();
        by_user.retain(|_, before| *before >= horizon);
        if before_ms < horizon {
            return;
        }
        let entry = by_user.entry(user_id).or_insert(before_ms);
        *entry = (*entry).max(before_ms);
    }

    /// The instant before which `user_id`'s tokens are refused, in Unix milliseconds.
    pub fn revoked_before_ms(&self, user_id: Uuid) -> Option<i64> {
        let by_user = self.by_user.read().unwrap_or_else(|e| e.into_inner());
        by_user.get(&user_id).copied()
    }

    /// Whether the token with `claims` was issued before its user's revocation.
    pub fn is_revoked(&self, claims: &Claims) -> bool {
        self.revoked_before_ms(claims.sub)
            .is_some_and(|before| claims.issued_at_ms() < before)
    }
}

/// Consumes `PasswordChanged`: records the revocation in the consuming service's store
/// (in the delivery's transaction) and in memory. Other event types are ignored.
///
/// The store needs [`MIGRATIONS`], which [`Revocations::load`] applies.
#[derive(Debug, Clone)]
pub struct PasswordChangedHandler {
    revocations: Revocations,
}

impl PasswordChangedHandler {
    pub fn new(revocations: Revocations) -> Self {
        Self { revocations }
    }
}

#[async_trait]
impl Handler for PasswordChangedHandler {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        if !envelope.is::<PasswordChanged>() {
            return Ok(());
        }
        let event: PasswordChanged = envelope.decode().map_err(HandlerError::permanent)?;
        let before = datetime_ms(event.changed_at);
        sqlx::query(
            "INSERT INTO auth_revocations (user_id, revoked_before_ms) VALUES ($1, $2)
             ON CONFLICT (user_id) DO UPDATE SET revoked_before_ms = CASE
                 WHEN excluded.revoked_before_ms > auth_revocations.revoked_before_ms
                 THEN excluded.revoked_before_ms
                 ELSE auth_revocations.revoked_before_ms END",
        )
        .bind(event.user_id.to_string())
        .bind(before)
        .execute(&mut **tx)
        .await?;
        // Recorded before the commit: if the commit fails the event is redelivered, and
        // refusing the user's old tokens meanwhile is right anyway (the password did
        // change).
        self.revocations.record_ms(event.user_id, before);
        Ok(())
    }
}

/// Revocations older than this can only refuse tokens that have expired anyway (with
/// a margin for clock leeway), so they are neither kept in memory nor loaded.
fn horizon_ms() -> i64 {
    now_ms() - ms(MAX_TOKEN_TTL) - ms(REVOCATION_MARGIN)
}

const REVOCATION_MARGIN: std::time::Duration = std::time::Duration::from_secs(5 * 60);

fn datetime_ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn ms(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn now_ms() -> i64 {
    datetime_ms(OffsetDateTime::now_utc())
}
