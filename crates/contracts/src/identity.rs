//! Events published by identity, the master of users, password hashes and signing keys.
//!
//! The aggregate is the user: the subject is the user id, and identity bumps the user's
//! version on every event it publishes about that user, sign-ins and sign-outs included.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::schema::Rfc3339;
use crate::values::Role;

const SOURCE: &str = "identity";

/// A user account was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserSignedUp {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub signed_up_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(UserSignedUp, source = SOURCE, subject = user_id);

/// Identity verified a user's credentials and issued a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserSignedIn {
    pub user_id: Uuid,
    /// The token's `jti`, so that a later sign-out can be matched to this sign-in.
    pub token_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub signed_in_at: OffsetDateTime,
    /// When the token expires: a session without a sign-out ends here.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub expires_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(UserSignedIn, source = SOURCE, subject = user_id);

/// A user signed out; the token is no longer in use, and every service refuses it
/// from then on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserSignedOut {
    pub user_id: Uuid,
    /// The `jti` of the token the user signed out with.
    pub token_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub signed_out_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(UserSignedOut, source = SOURCE, subject = user_id);

/// A user's password changed. Every service refuses this user's tokens whose `ver`
/// claim (the user's version when the token was issued) is below `version`; tokens
/// without `ver`, those issued before `changed_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PasswordChanged {
    pub user_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub changed_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(PasswordChanged, source = SOURCE, subject = user_id);
