//! Events published by payment, the master of authorizations, captures and refunds.
//!
//! The aggregate is the authorization: the subject is the authorization id, and every
//! event also names the order it pays for (ordering chooses the order id before it asks
//! for the authorization).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::schema::Rfc3339;
use crate::values::{Money, PaymentOperation};

const SOURCE: &str = "payment";

/// The provider authorized (held) an amount on the customer's payment method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentAuthorized {
    pub authorization_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub amount: Money,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub authorized_at: OffsetDateTime,
    /// When the hold lapses if it is neither captured nor voided.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<Rfc3339>")]
    pub expires_at: Option<OffsetDateTime>,
    pub version: u64,
}
impl_event!(
    PaymentAuthorized,
    source = SOURCE,
    subject = authorization_id
);

/// The authorization was captured: the customer is charged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CustomerBilled {
    pub authorization_id: Uuid,
    pub capture_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub amount: Money,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub billed_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(CustomerBilled, source = SOURCE, subject = authorization_id);

/// A captured amount was paid back to the customer (compensation after billing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentRefunded {
    pub authorization_id: Uuid,
    pub refund_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub amount: Money,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub refunded_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(PaymentRefunded, source = SOURCE, subject = authorization_id);

/// An authorization was released without being captured (compensation before billing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuthorizationVoided {
    pub authorization_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    /// The amount that was held and is now released.
    pub amount: Money,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub voided_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(
    AuthorizationVoided,
    source = SOURCE,
    subject = authorization_id
);

/// An operation on an authorization failed for good (the provider declined it, or
/// retries are exhausted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentFailed {
    pub authorization_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub operation: PaymentOperation,
    /// A short machine-readable code, e.g. `"card_declined"`, `"provider_unavailable"`.
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub failed_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(PaymentFailed, source = SOURCE, subject = authorization_id);
