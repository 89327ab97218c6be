//! Events published by inventory, the master of stock on hand and reservations.
//!
//! The aggregate is an order's reservation: at most one per order, so the subject is
//! the order id.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::schema::Rfc3339;
use crate::values::{CancelReason, StockLine, StockShortage};

const SOURCE: &str = "inventory";

/// Every line of an order is reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockReserved {
    pub order_id: Uuid,
    pub lines: Vec<StockLine>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub reserved_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(StockReserved, source = SOURCE, subject = order_id);

/// An order could not be reserved; nothing of it is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockReservationFailed {
    pub order_id: Uuid,
    /// The lines that could not be served.
    pub shortages: Vec<StockShortage>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub failed_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(StockReservationFailed, source = SOURCE, subject = order_id);

/// An order's reservation was given back to stock (compensation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockReleased {
    pub order_id: Uuid,
    pub lines: Vec<StockLine>,
    /// Why the order was given up, when the release was asked for with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<CancelReason>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub released_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(StockReleased, source = SOURCE, subject = order_id);
