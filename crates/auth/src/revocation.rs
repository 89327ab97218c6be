//! Token revocation: after a password change, the user's older tokens are refused; after
//! a sign-out, the token signed out with is refused.
//!
//! Revocations live in memory only, in each instance of a service: every instance
//! learns every revoking event from its own consumer (see [`crate::ServiceAuth`]), and
//! a starting instance replays the events young enough to matter ([`REPLAY`]) from the
//! bus. Nothing of it is in the service's store, which several instances may share.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use agora_contracts::{PasswordChanged, UserSignedOut};
use agora_messaging::{Envelope, Migration};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Claims, MAX_TOKEN_TTL};

/// The component name of this crate's migrations in a service's [`Db`].
pub const MIGRATION_COMPONENT: &str = "auth";

const SIGNED_OUT_TOKENS: &str = "
    ALTER TABLE auth_revocations ADD COLUMN revoked_below_version BIGINT;
    CREATE TABLE auth_signed_out_tokens (
        token_id TEXT PRIMARY KEY NOT NULL,
        user_id TEXT NOT NULL,
        -- The token has expired by then, whatever it said: the row can go.
        forget_after_ms BIGINT NOT NULL
    );
    CREATE INDEX auth_signed_out_tokens_forget ON auth_signed_out_tokens (forget_after_ms);
";

/// Revocations were once kept in the consuming service's own store; they are replayed
/// from the bus now, and the last migration drops those tables.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
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
    },
    Migration {
        version: 2,
        description: "revocation by user version and by sign-out",
        sqlite: SIGNED_OUT_TOKENS,
        postgres: SIGNED_OUT_TOKENS,
    },
    Migration {
        version: 3,
        description: "revocations replayed from the bus, not stored",
        sqlite: DROP_TABLES,
        postgres: DROP_TABLES,
    },
];

const DROP_TABLES: &str = "
    DROP TABLE auth_signed_out_tokens;
    DROP TABLE auth_revocations;
";

/// How far back a starting instance replays identity's revoking events: a token lives
/// at most [`MAX_TOKEN_TTL`], so an older revocation refuses only expired tokens (with
/// a margin for clock leeway and skew between identity and the bus).
pub const REPLAY: std::time::Duration = MAX_TOKEN_TTL.saturating_add(REVOCATION_MARGIN);

/// What revokes a user's tokens: a password change, known by its time and (from
/// identity's events) by the user's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UserRevocation {
    /// Tokens issued before this instant (Unix ms) are refused, unless they carry a
    /// version and the version is known (then the version decides).
    before_ms: i64,
    /// Tokens whose `ver` is below this are refused.
    below_version: Option<u64>,
}

#[derive(Debug, Default)]
struct Entries {
    by_user: HashMap<Uuid, UserRevocation>,
    /// Signed-out token ids, and when each may be forgotten (Unix ms).
    by_token: HashMap<Uuid, i64>,
    /// When `by_token` was last swept of forgettable entries.
    swept_at_ms: i64,
}

/// For each user, what refuses their older tokens, and the tokens signed out with. Cheap
/// to clone; clones share the same entries.
#[derive(Debug, Clone, Default)]
pub struct Revocations {
    entries: Arc<RwLock<Entries>>,
}

/// How often the signed-out tokens are swept of those that expired: sign-outs are
/// frequent, so not on every one.
const SWEEP_EVERY_MS: i64 = 10_000;

impl Revocations {
    /// An empty store, for a service that does not persist revocations (or tests).
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a revoking event of identity's (`PasswordChanged`, `UserSignedOut`);
    /// any other event is ignored. Applying one twice, or an older one after a newer
    /// one, changes nothing.
    pub fn apply(&self, envelope: &Envelope) -> Result<(), agora_messaging::Error> {
        if envelope.is::<PasswordChanged>() {
            self.record_password_change(&envelope.decode()?);
        } else if envelope.is::<UserSignedOut>() {
            let event: UserSignedOut = envelope.decode()?;
            self.record_sign_out(event.token_id, event.signed_out_at);
        }
        Ok(())
    }

    /// Refuses `user_id`'s tokens issued before `changed_at` (an earlier time than one
    /// already recorded changes nothing).
    pub fn record(&self, user_id: Uuid, changed_at: OffsetDateTime) {
        self.record_user(
            user_id,
            UserRevocation {
                before_ms: datetime_ms(changed_at),
                below_version: None,
            },
        );
    }

    /// Applies a password change: refuses the user's tokens whose version is below the
    /// event's (tokens without a version: those issued before `changed_at`).
    pub fn record_password_change(&self, event: &PasswordChanged) {
        self.record_user(
            event.user_id,
            UserRevocation {
                before_ms: datetime_ms(event.changed_at),
                below_version: Some(event.version),
            },
        );
    }

    /// Applies a sign-out: refuses the token `token_id` from now on.
    pub fn record_sign_out(&self, token_id: Uuid, signed_out_at: OffsetDateTime) {
        self.record_token(token_id, forget_after_ms(signed_out_at));
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Entries> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn record_user(&self, user_id: Uuid, revocation: UserRevocation) {
        let mut entries = self.write();
        // Password changes are rare: sweeping on each keeps the map small for free.
        let horizon = horizon_ms();
        entries.by_user.retain(|_, r| r.before_ms >= horizon);
        if revocation.before_ms < horizon {
            return;
        }
        let entry = entries.by_user.entry(user_id).or_insert(revocation);
        entry.before_ms = entry.before_ms.max(revocation.before_ms);
        entry.below_version = entry.below_version.max(revocation.below_version);
    }

    fn record_token(&self, token_id: Uuid, forget_after_ms: i64) {
        let now = now_ms();
        let mut entries = self.write();
        if now - entries.swept_at_ms >= SWEEP_EVERY_MS {
            entries.by_token.retain(|_, forget| *forget >= now);
            entries.swept_at_ms = now;
        }
        if forget_after_ms < now {
            return;
        }
        let entry = entries.by_token.entry(token_id).or_insert(forget_after_ms);
        *entry = (*entry).max(forget_after_ms);
    }

    /// The instant before which `user_id`'s tokens are refused, in Unix milliseconds.
    pub fn revoked_before_ms(&self, user_id: Uuid) -> Option<i64> {
        self.read().by_user.get(&user_id).map(|r| r.before_ms)
    }

    /// Whether the token `token_id` was signed out with.
    pub fn is_signed_out(&self, token_id: Uuid) -> bool {
        self.read().by_token.contains_key(&token_id)
    }

    /// Whether the token with `claims` was signed out with, or is older than its user's
    /// last password change: by version when both the token and the change carry one
    /// (exact, whatever the clocks), by time otherwise.
    pub fn is_revoked(&self, claims: &Claims) -> bool {
        let entries = self.read();
        if entries.by_token.contains_key(&claims.jti) {
            return true;
        }
        let Some(user) = entries.by_user.get(&claims.sub) else {
            return false;
        };
        match (claims.ver, user.below_version) {
            (Some(version), Some(below)) => version < below,
            _ => claims.issued_at_ms() < user.before_ms,
        }
    }
}

/// Revocations older than this can only refuse tokens that have expired anyway (with
/// a margin for clock leeway), so they are not kept.
fn horizon_ms() -> i64 {
    now_ms() - ms(REPLAY)
}

/// A token signed out with at `signed_out_at` was issued before, so it has expired by
/// this instant (with the same margin).
fn forget_after_ms(signed_out_at: OffsetDateTime) -> i64 {
    datetime_ms(signed_out_at).saturating_add(ms(REPLAY))
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
