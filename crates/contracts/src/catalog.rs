//! Events published by catalog, the master of product name, description and image.
//!
//! The aggregate is the product. Added and updated events carry the whole product, so
//! a replica overwrites its copy instead of merging a patch.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::schema::Rfc3339;

const SOURCE: &str = "catalog";

/// A product was added to the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProductAdded {
    pub product_id: Uuid,
    pub name: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub added_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(ProductAdded, source = SOURCE, subject = product_id);

/// A product's master data changed; carries the whole new state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProductUpdated {
    pub product_id: Uuid,
    pub name: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub updated_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(ProductUpdated, source = SOURCE, subject = product_id);

/// A product was removed from the catalog. Replicas keep a tombstone at this version,
/// so that an older add or update delivered late does not bring it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProductDeleted {
    pub product_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub deleted_at: OffsetDateTime,
    pub version: u64,
}
impl_event!(ProductDeleted, source = SOURCE, subject = product_id);
