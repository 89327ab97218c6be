//! Events published by customer, the master of customer name, shipping address and
//! payment method.
//!
//! The aggregate is the customer profile; its id is the identity user's id.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::schema::Rfc3339;
use crate::values::{Address, PaymentMethod};

const SOURCE: &str = "customer";

/// A customer profile was created (for a user who signed up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CustomerRegistered {
    /// The same id as the identity user.
    pub customer_id: Uuid,
    pub name: String,
    pub email: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub registered_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(CustomerRegistered, source = SOURCE, subject = customer_id);

/// A customer's shipping address changed; carries the whole new address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CustomerAddressChanged {
    pub customer_id: Uuid,
    pub address: Address,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub changed_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(
    CustomerAddressChanged,
    source = SOURCE,
    subject = customer_id
);

/// A customer's payment method changed; carries the whole new method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentMethodChanged {
    pub customer_id: Uuid,
    pub payment_method: PaymentMethod,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub changed_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(PaymentMethodChanged, source = SOURCE, subject = customer_id);
