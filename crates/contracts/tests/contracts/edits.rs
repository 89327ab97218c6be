//! The checker on schemas that `schemars` derives from Rust types: the edits a
//! developer makes to an event struct, what the checker says of each, and what serde
//! then does with the JSON that one side of a rolling upgrade writes for the other.
//!
//! Each module below is one version of a small `Parcel` event; `committed` is the one
//! whose schema is on file.

// The types exist for their derived schemas and serde impls; not every field is read.
#![allow(dead_code)]

use schemars::JsonSchema;
use schemars::generate::Contract;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::compat::{Rule, breaks};
use super::schemas::generate;

const PARCEL: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0010);

mod committed {
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};
    use uuid::Uuid;

    /// A parcel was weighed.
    #[derive(Debug, Serialize, Deserialize, JsonSchema)]
    pub struct Parcel {
        pub parcel_id: Uuid,
        pub weight_grams: u32,
        pub status: Status,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub note: Option<String>,
    }

    #[derive(Debug, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum Status {
        Packed,
        Sent,
    }
}

/// What an old writer writes.
fn old_writer() -> committed::Parcel {
    committed::Parcel {
        parcel_id: PARCEL,
        weight_grams: 1200,
        status: committed::Status::Sent,
        note: Some("fragile".into()),
    }
}

/// What the checker finds from the committed `Parcel` to `New`.
fn verdict<New: JsonSchema>() -> Vec<(String, Rule)> {
    let old = generate::<committed::Parcel>(Contract::Deserialize);
    let new = generate::<New>(Contract::Deserialize);
    breaks(&old, &new)
        .into_iter()
        .map(|found| (found.path, found.rule))
        .collect()
}

fn one(path: &str, rule: Rule) -> Vec<(String, Rule)> {
    vec![(path.to_owned(), rule)]
}

/// Whether a reader of type `R` takes what a writer of type `W` wrote.
fn reads<R: DeserializeOwned>(written: &impl Serialize) -> bool {
    let json = serde_json::to_value(written).expect("serializes");
    serde_json::from_value::<R>(json).is_ok()
}

#[test]
fn a_new_option_field_passes_and_each_side_reads_the_other() {
    mod new {
        use super::committed::Status;
        use schemars::JsonSchema;
        use serde::{Deserialize, Serialize};
        use uuid::Uuid;

        #[derive(Serialize, Deserialize, JsonSchema)]
        pub struct Parcel {
            pub parcel_id: Uuid,
            pub weight_grams: u32,
            pub status: Status,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub note: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub carrier: Option<String>,
        }
    }
    assert_eq!(verdict::<new::Parcel>(), []);
    let written = new::Parcel {
        parcel_id: PARCEL,
        weight_grams: 1200,
        status: committed::Status::Packed,
        note: None,
        carrier: Some("DHL".into()),
    };
    assert!(reads::<committed::Parcel>(&written), "old reader");
    assert!(reads::<new::Parcel>(&old_writer()), "new reader");
}

#[test]
fn a_new_field_with_a_serde_default_passes_and_each_side_reads_the_other() {
    mod new {
        use super::committed::Status;
        use schemars::JsonSchema;
        use serde::{Deserialize, Serialize};
        use uuid::Uuid;

        #[derive(Serialize, Deserialize, JsonSchema)]
        pub struct Parcel {
            pub parcel_id: Uuid,
            pub weight_grams: u32,
            pub status: Status,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub note: Option<String>,
            /// Always written; old writers leave it out, and it reads as 1.
            #[serde(default = "one_piece")]
            pub pieces: u32,
        }

        fn one_piece() -> u32 {
            1
        }
    }
    assert_eq!(verdict::<new::Parcel>(), []);
    let written = new::Parcel {
        parcel_id: PARCEL,
        weight_grams: 1200,
        status: committed::Status::Packed,
        note: None,
        pieces: 3,
    };
    assert!(reads::<committed::Parcel>(&written), "old reader");
    assert!(reads::<new::Parcel>(&old_writer()), "new reader");
}

#[test]
fn a_new_required_field_is_refused_as_old_writers_lack_it() {
    mod new {
        use super::committed::Status;
        use schemars::JsonSchema;
        use serde::{Deserialize, Serialize};
        use uuid::Uuid;

        #[derive(Serialize, Deserialize, JsonSchema)]
        pub struct Parcel {
            pub parcel_id: Uuid,
            pub weight_grams: u32,
            pub status: Status,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub note: Option<String>,
            pub pieces: u32,
        }
    }
    assert_eq!(
        verdict::<new::Parcel>(),
        one("pieces", Rule::NewRequiredField)
    );
    assert!(!reads::<new::Parcel>(&old_writer()), "new reader");
}

#[test]
fn a_removed_field_is_refused_as_old_readers_require_it() {
    mod new {
        use super::committed::Status;
        use schemars::JsonSchema;
        use serde::{Deserialize, Serialize};
        use uuid::Uuid;

        #[derive(Serialize, Deserialize, JsonSchema)]
        pub struct Parcel {
            pub parcel_id: Uuid,
            pub status: Status,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub note: Option<String>,
        }
    }
    assert_eq!(
        verdict::<new::Parcel>(),
        one("weight_grams", Rule::FieldRemoved)
    );
    let written = new::Parcel {
        parcel_id: PARCEL,
        status: committed::Status::Packed,
        note: None,
    };
    assert!(!reads::<committed::Parcel>(&written), "old reader");
}

#[test]
fn a_retyped_field_is_refused_as_neither_side_reads_the_other() {
    mod new {
        use super::committed::Status;
        use schemars::JsonSchema;
        use serde::{Deserialize, Serialize};
        use uuid::Uuid;

        #[derive(Serialize, Deserialize, JsonSchema)]
        pub struct Parcel {
            pub parcel_id: Uuid,
            /// Now with its unit: `"1.2 kg"`.
            pub weight_grams: String,
            pub status: Status,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub note: Option<String>,
        }
    }
    // The integer's `minimum: 0` went with it: a changed constraint as well.
    assert_eq!(
        verdict::<new::Parcel>(),
        [
            ("weight_grams".to_owned(), Rule::Retyped),
            ("weight_grams".to_owned(), Rule::ConstraintChanged)
        ]
    );
    let written = new::Parcel {
        parcel_id: PARCEL,
        weight_grams: "1.2 kg".into(),
        status: committed::Status::Packed,
        note: None,
    };
    assert!(!reads::<committed::Parcel>(&written), "old reader");
    assert!(!reads::<new::Parcel>(&old_writer()), "new reader");
}

#[test]
fn a_removed_enum_variant_is_refused_as_old_writers_use_it() {
    mod new {
        use schemars::JsonSchema;
        use serde::{Deserialize, Serialize};
        use uuid::Uuid;

        #[derive(Serialize, Deserialize, JsonSchema)]
        pub struct Parcel {
            pub parcel_id: Uuid,
            pub weight_grams: u32,
            pub status: Status,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub note: Option<String>,
        }

        #[derive(Serialize, Deserialize, JsonSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum Status {
            Packed,
        }
    }
    assert_eq!(
        verdict::<new::Parcel>(),
        one("status", Rule::EnumValueRemoved)
    );
    assert!(!reads::<new::Parcel>(&old_writer()), "new reader");
}

#[test]
fn a_new_variant_of_a_closed_enum_is_refused_as_old_readers_do_not_know_it() {
    mod new {
        use schemars::JsonSchema;
        use serde::{Deserialize, Serialize};
        use uuid::Uuid;

        #[derive(Serialize, Deserialize, JsonSchema)]
        pub struct Parcel {
            pub parcel_id: Uuid,
            pub weight_grams: u32,
            pub status: Status,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub note: Option<String>,
        }

        #[derive(Serialize, Deserialize, JsonSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum Status {
            Packed,
            Sent,
            Lost,
        }
    }
    assert_eq!(
        verdict::<new::Parcel>(),
        one("status", Rule::EnumValueAdded)
    );
    let written = new::Parcel {
        parcel_id: PARCEL,
        weight_grams: 1200,
        status: new::Status::Lost,
        note: None,
    };
    assert!(!reads::<committed::Parcel>(&written), "old reader");
}
