//! Agora's event contracts: the `data` of every event a service publishes, and the
//! small value types those events share.
//!
//! Services know each other only through these types and HTTP, so this crate is the
//! one place where the shape of an event is written down. Each event names its
//! CloudEvents `type` and `source` (the owning service), its `subject` (the id of the
//! aggregate it is about) and the aggregate `version` it carries, so that a replica
//! applies an update only when it is newer than what it holds.
//!
//! What this crate must never contain: business logic, validation, I/O, or a
//! dependency on a service crate or on the bus. It is data with serde and JSON Schema
//! (`schemars`) derives. The one derivation here is an order's human reference
//! ([`OrderReference`]): a pure function of the id that every service and the UI must
//! write alike, so it lives in one place.
//!
//! Forward compatibility rules, which every change here must keep:
//! - consumers ignore unknown fields, so no type uses `deny_unknown_fields`;
//! - a field added to an existing event is an `Option` or has `#[serde(default)]`, so
//!   that payloads from older producers still decode;
//! - string-backed enums keep unknown values in an `Other` variant instead of failing;
//! - a breaking change is a new event type, never an edit of an existing one: a new
//!   version, named with it (`OrderAcceptedV2`).
//!
//! The JSON Schema of every event type is committed under `schemas/`, one file per
//! type and version (`ordering.OrderAccepted.v1.json`); the crate's tests refuse a
//! change that breaks these rules against the committed schemas, and
//! `AGORA_UPDATE_SCHEMAS=1 cargo test -p agora-contracts` rewrites the files after a
//! compatible one.
//!
//! Times are RFC 3339 strings, ids are UUIDs, money is integer minor units
//! (`amount_cents`) with an ISO 4217 `currency`, as in the public HTTP API.

#![forbid(unsafe_code)]

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

#[macro_use]
mod macros;

pub mod catalog;
pub mod customer;
pub mod fulfilment;
pub mod identity;
pub mod inventory;
pub mod ordering;
pub mod payment;
pub mod reference;
mod schema;
pub mod shipping;
pub mod values;

pub use catalog::{ProductAdded, ProductDeleted, ProductUpdated};
pub use customer::{CustomerAddressChanged, CustomerRegistered, PaymentMethodChanged};
pub use fulfilment::{FulfilmentFailed, OrderReadyForShipping};
pub use identity::{PasswordChanged, UserSignedIn, UserSignedOut, UserSignedUp};
pub use inventory::{StockReleased, StockReservationFailed, StockReserved};
pub use ordering::{OrderAccepted, OrderCancelled, OrderShipped, PriceChanged};
pub use payment::{
    AuthorizationVoided, CustomerBilled, PaymentAuthorized, PaymentFailed, PaymentRefunded,
};
pub use reference::OrderReference;
pub use shipping::ShipmentDispatched;
pub use values::{
    Address, AddressSource, CancelReason, Money, OrderLine, PaymentMethod, PaymentOperation, Role,
    StockLine, StockShortage,
};

/// The data of one event type, with the envelope attributes that belong to it.
///
/// The event types of this crate also derive `schemars::JsonSchema`: their schemas are
/// committed under `crates/contracts/schemas/`, where a test refuses changes that older
/// readers or writers could not live with. (The trait does not require it, so that
/// tests elsewhere can define events of their own without schemas.)
pub trait Event:
    Serialize + DeserializeOwned + Clone + Debug + PartialEq + Send + Sync + 'static
{
    /// The CloudEvents `type`, e.g. `"OrderAccepted"`.
    const TYPE: &'static str;
    /// The CloudEvents `source`: the service that owns the aggregate, e.g. `"ordering"`.
    const SOURCE: &'static str;

    /// The CloudEvents `subject`: the id of the aggregate the event is about.
    fn subject(&self) -> String;

    /// The aggregate's version after this event; replicas apply only newer versions.
    fn version(&self) -> u64;
}

/// The bus subject an event is published on: `"{SOURCE}.{TYPE}"`.
pub fn bus_subject<E: Event>() -> String {
    format!("{}.{}", E::SOURCE, E::TYPE)
}

/// Every event type as `(source, type)`, grouped by owning service.
pub const ALL_TYPES: &[(&str, &str)] = &[
    (UserSignedUp::SOURCE, UserSignedUp::TYPE),
    (UserSignedIn::SOURCE, UserSignedIn::TYPE),
    (UserSignedOut::SOURCE, UserSignedOut::TYPE),
    (PasswordChanged::SOURCE, PasswordChanged::TYPE),
    (CustomerRegistered::SOURCE, CustomerRegistered::TYPE),
    (CustomerAddressChanged::SOURCE, CustomerAddressChanged::TYPE),
    (PaymentMethodChanged::SOURCE, PaymentMethodChanged::TYPE),
    (ProductAdded::SOURCE, ProductAdded::TYPE),
    (ProductUpdated::SOURCE, ProductUpdated::TYPE),
    (ProductDeleted::SOURCE, ProductDeleted::TYPE),
    (PriceChanged::SOURCE, PriceChanged::TYPE),
    (OrderAccepted::SOURCE, OrderAccepted::TYPE),
    (OrderCancelled::SOURCE, OrderCancelled::TYPE),
    (OrderShipped::SOURCE, OrderShipped::TYPE),
    (PaymentAuthorized::SOURCE, PaymentAuthorized::TYPE),
    (CustomerBilled::SOURCE, CustomerBilled::TYPE),
    (PaymentRefunded::SOURCE, PaymentRefunded::TYPE),
    (AuthorizationVoided::SOURCE, AuthorizationVoided::TYPE),
    (PaymentFailed::SOURCE, PaymentFailed::TYPE),
    (StockReserved::SOURCE, StockReserved::TYPE),
    (StockReservationFailed::SOURCE, StockReservationFailed::TYPE),
    (StockReleased::SOURCE, StockReleased::TYPE),
    (OrderReadyForShipping::SOURCE, OrderReadyForShipping::TYPE),
    (FulfilmentFailed::SOURCE, FulfilmentFailed::TYPE),
    (ShipmentDispatched::SOURCE, ShipmentDispatched::TYPE),
];
