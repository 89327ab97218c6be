//! Events published by ordering (sales), the master of prices, orders and their lines.
//!
//! Two aggregates: a product's price (subject: the product id) and an order (subject:
//! the order id).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::schema::Rfc3339;
use crate::values::{Address, AddressSource, CancelReason, Money, OrderLine};

const SOURCE: &str = "ordering";

/// A product's price was set or changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PriceChanged {
    pub product_id: Uuid,
    pub price: Money,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub changed_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(PriceChanged, source = SOURCE, subject = product_id);

/// An order was accepted: its payment is authorized and it is stored. Fulfilment
/// starts from here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderAccepted {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub lines: Vec<OrderLine>,
    /// Sum of the lines, in minor units of `currency`.
    pub total_cents: i64,
    /// ISO 4217 code of the total and of every line's unit price.
    pub currency: String,
    pub shipping_address: Address,
    pub address_source: AddressSource,
    /// The authorization that payment granted at checkout; capture it to bill.
    pub payment_authorization_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub accepted_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(OrderAccepted, source = SOURCE, subject = order_id);

/// An order reached its terminal `cancelled` state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub reason: CancelReason,
    /// Human-readable detail for support and the ops console, never shown as an error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub cancelled_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(OrderCancelled, source = SOURCE, subject = order_id);

/// An order reached its terminal `shipped` state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderShipped {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub shipment_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_number: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub shipped_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(OrderShipped, source = SOURCE, subject = order_id);
