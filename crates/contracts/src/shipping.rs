//! Events published by shipping, the master of shipments.
//!
//! The aggregate is the shipment: the subject is the shipment id.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::schema::Rfc3339;
use crate::values::Address;

const SOURCE: &str = "shipping";

/// A shipment left the warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShipmentDispatched {
    pub shipment_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    /// Where it is going: shipping's copy of the order's shipping address.
    pub address: Address,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_number: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub dispatched_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(ShipmentDispatched, source = SOURCE, subject = shipment_id);
