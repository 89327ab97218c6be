//! Value types shared by several events. Their JSON shapes are the public API's.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An amount of money in integer minor units of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Money {
    /// Minor units (cents for EUR and USD).
    pub amount_cents: i64,
    /// ISO 4217 code, e.g. `"EUR"`.
    pub currency: String,
}

/// A postal address, as the customer gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Address {
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 code, e.g. `"DE"`.
    pub country: String,
}

/// How a customer pays: a token from the payment provider, never a card number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentMethod {
    /// The provider's token, e.g. `"tok_visa"`.
    pub token: String,
    /// The last four digits of the card, for display only.
    pub last4: String,
}

/// One line of an order, priced when the order was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub quantity: u32,
    /// Unit price in minor units of the order's currency.
    pub unit_price_cents: i64,
}

/// A quantity of one product, as reserved or released by inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockLine {
    pub product_id: Uuid,
    pub quantity: u32,
}

/// Why a reservation failed for one product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockShortage {
    pub product_id: Uuid,
    pub requested: u32,
    /// What was available when the reservation was attempted (0 for an unknown product).
    pub available: u32,
}

string_enum! {
    /// Why an order was cancelled, or why fulfilment gave up on it.
    pub enum CancelReason {
        /// Inventory could not reserve every line.
        OutOfStock = "out_of_stock",
        /// The payment could not be captured.
        PaymentFailed = "payment_failed",
        /// The fulfilment process did not complete in time.
        Timeout = "timeout",
    }
}

string_enum! {
    /// A user's role, as carried in tokens.
    pub enum Role {
        Customer = "customer",
        Admin = "admin",
    }
}

string_enum! {
    /// Where the shipping address of an order came from.
    pub enum AddressSource {
        /// Ordering's replica of the customer's address.
        Replica = "replica",
        /// Fetched live from the customer service (sync mode).
        CustomerService = "customer_service",
        /// Given by the customer at checkout.
        Override = "override",
    }
}

string_enum! {
    /// An operation on a payment authorization.
    pub enum PaymentOperation {
        Authorize = "authorize",
        Capture = "capture",
        Refund = "refund",
        Void = "void",
    }
}
