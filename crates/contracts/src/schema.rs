//! How the wire forms that have no derive of their own appear in the JSON Schemas.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

/// A time as the events write it (`time::serde::rfc3339`): an RFC 3339 string.
///
/// Fields of type `OffsetDateTime` name it with `#[schemars(with = "Rfc3339")]`.
pub(crate) struct Rfc3339;

impl JsonSchema for Rfc3339 {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Rfc3339".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "date-time",
        })
    }
}
