//! The payload of an access token.

use std::time::Duration;

use agora_contracts::Role;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The `iss` of every access token: identity signs them all.
pub const ISSUER: &str = "agora-identity";

/// The `aud` of every access token: any Agora service may accept them.
pub const AUDIENCE: &str = "agora";

/// The longest life a token may have (`exp - iat`).
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// The claims of an Agora access token (RFC 7519 names; times in Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: [`ISSUER`].
    pub iss: String,
    /// Audience: [`AUDIENCE`].
    pub aud: String,
    /// The user the token was issued to.
    pub sub: Uuid,
    pub roles: Vec<Role>,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expires at; at most [`MAX_TOKEN_TTL`] after `iat`.
    pub exp: i64,
    /// The token's id, as carried by `UserSignedIn::token_id` (and by
    /// `UserSignedOut::token_id` when the user signs out with it).
    pub jti: Uuid,
    /// The user's version when identity issued the token (the version of its
    /// `UserSignedIn`). A `PasswordChanged` with a higher version revokes it, whatever
    /// the clocks say. Absent from tokens of older issuers: for those, the time of the
    /// change decides ([`Claims::issued_at_ms`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ver: Option<u64>,
}

impl Claims {
    /// Claims for `sub` with `roles`, issued at `now` (Unix seconds) and valid for `ttl`
    /// (capped at [`MAX_TOKEN_TTL`]), with a fresh `jti`.
    pub fn new(sub: Uuid, roles: Vec<Role>, now: i64, ttl: Duration) -> Self {
        let ttl = i64::try_from(ttl.min(MAX_TOKEN_TTL).as_secs()).unwrap_or(0);
        Self {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub,
            roles,
            iat: now,
            nbf: now,
            exp: now + ttl,
            jti: Uuid::now_v7(),
            ver: None,
        }
    }

    /// The same claims, stamped with the user's version at issue (see [`Claims::ver`]).
    pub fn with_version(mut self, version: u64) -> Self {
        self.ver = Some(version);
        self
    }
}

impl Claims {
    /// When the token was issued, in Unix milliseconds, as precisely as the claims say.
    ///
    /// `iat` has whole seconds only; a UUIDv7 `jti` (as [`Claims::new`] makes) carries
    /// the issuing millisecond, and is trusted when it falls within `iat`'s second.
    /// Otherwise the answer is the start of `iat`'s second, the earliest the token can
    /// have been issued, so that a revocation within that second still refuses it.
    pub fn issued_at_ms(&self) -> i64 {
        let second = self.iat.saturating_mul(1000);
        if let Some(ts) = self.jti.get_timestamp() {
            let (secs, nanos) = ts.to_unix();
            let ms = i64::try_from(secs)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000)
                .saturating_add(i64::from(nanos / 1_000_000));
            if (second..second + 1000).contains(&ms) {
                return ms;
            }
        }
        second
    }
}
