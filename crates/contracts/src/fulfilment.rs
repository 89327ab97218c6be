//! Events published by fulfilment, the process manager that runs once per order.
//!
//! The aggregate is the order's fulfilment process: the subject is the order id.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::schema::Rfc3339;
use crate::values::CancelReason;

const SOURCE: &str = "fulfilment";

/// The order is accepted, billed and reserved: shipping may dispatch it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderReadyForShipping {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub ready_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(OrderReadyForShipping, source = SOURCE, subject = order_id);

/// Fulfilment gave up on the order and has compensated (refunded or voided the
/// payment, released the stock); ordering cancels the order with this reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FulfilmentFailed {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub reason: CancelReason,
    /// Human-readable detail for support and the ops console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub failed_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(FulfilmentFailed, source = SOURCE, subject = order_id);
