//! The committed JSON Schemas of the events (`crates/contracts/schemas/`, one file per
//! event type and version, `ordering.OrderAccepted.v1.json`): they match the types,
//! and a change that older readers or writers could not live with is refused.
//!
//! `AGORA_UPDATE_SCHEMAS=1 cargo test -p agora-contracts` rewrites the files whose
//! new schema is compatible; a breaking one is never written.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::{env, fs, io};

use schemars::generate::{Contract, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

use super::compat::{self, Rule};
use super::{Case, cases};

const UPDATE: &str = "AGORA_UPDATE_SCHEMAS";
const UPDATE_COMMAND: &str = "AGORA_UPDATE_SCHEMAS=1 cargo test -p agora-contracts";

/// The schema of `T` as readers (`Contract::Deserialize`) or writers see it.
pub fn generate<T: JsonSchema>(contract: Contract) -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.contract = contract;
    settings
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

fn directory() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

/// The file of an event type's schema: `{source}.{name}.v{version}.json`.
fn file_name(case: &Case) -> String {
    let (name, version) = name_and_version(case.ty);
    format!("{}.{name}.v{version}.json", case.source)
}

/// An event type's name and version: a breaking change to `OrderAccepted` is a new type
/// `OrderAcceptedV2`, version 2 of `OrderAccepted`; a type without such a suffix is
/// version 1.
fn name_and_version(ty: &str) -> (&str, u32) {
    let name = ty.trim_end_matches(|c: char| c.is_ascii_digit());
    let version = ty[name.len()..].parse::<u32>();
    match (name.strip_suffix('V'), version) {
        (Some(name), Ok(version)) if !name.is_empty() && version >= 2 => (name, version),
        _ => (ty, 1),
    }
}

#[test]
fn a_schema_file_is_named_by_source_type_and_version() {
    for (ty, expected) in [
        ("OrderAccepted", ("OrderAccepted", 1)),
        ("OrderAcceptedV2", ("OrderAccepted", 2)),
        ("OrderAcceptedV12", ("OrderAccepted", 12)),
        // Not a version suffix: version 1 of a type with that name.
        ("OrderAcceptedV1", ("OrderAcceptedV1", 1)),
        ("OrderAcceptedV", ("OrderAcceptedV", 1)),
        ("Order2", ("Order2", 1)),
        ("V2", ("V2", 1)),
    ] {
        assert_eq!(name_and_version(ty), expected, "{ty}");
    }
    let case = cases()
        .into_iter()
        .find(|case| case.ty == "OrderAccepted")
        .expect("OrderAccepted is sampled");
    assert_eq!(file_name(&case), "ordering.OrderAccepted.v1.json");
}

/// The file's text: schemars puts the keywords a reader looks for first (`title`,
/// `type`…) and `$defs` last; the others are sorted here, so that the text does not
/// depend on how `serde_json` orders maps in this build.
fn render(schema: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let map: Map<String, Value> = keys
                    .into_iter()
                    .map(|key| (key.clone(), sorted(&map[key])))
                    .collect();
                Value::Object(map)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    let schema = Schema::try_from(sorted(schema)).expect("a schema is an object");
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema is JSON");
    text.push('\n');
    text
}

/// The committed schema of an event, if there is one.
fn committed(name: &str) -> Option<Value> {
    match fs::read_to_string(directory().join(name)) {
        Ok(text) => Some(
            serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("schemas/{name} is not JSON: {error}")),
        ),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => panic!("schemas/{name}: {error}"),
    }
}

#[test]
fn committed_schemas_match_the_event_types() {
    let update = env::var_os(UPDATE).is_some();
    let mut breaking = Vec::new();
    let mut stale = Vec::new();
    let mut expected = BTreeSet::new();
    for case in cases() {
        let name = file_name(&case);
        let new = (case.schema)(Contract::Deserialize);
        assert!(
            expected.insert(name.clone()),
            "two event types share the schema file {name}"
        );
        match committed(&name) {
            Some(old) if old == new => continue,
            Some(old) => {
                let found = compat::breaks(&old, &new);
                if !found.is_empty() {
                    breaking.extend(found.iter().map(|b| format!("{}: {b}", case.ty)));
                    continue;
                }
            }
            None => {}
        }
        if update {
            fs::create_dir_all(directory()).expect("creates schemas/");
            fs::write(directory().join(&name), render(&new)).expect("writes the schema");
        }
        stale.push(name);
    }

    let mut retired = Vec::new();
    for entry in fs::read_dir(directory()).into_iter().flatten() {
        let name = entry.expect("lists schemas/").file_name();
        let name = name.to_string_lossy().into_owned();
        if name.ends_with(".json") && !expected.contains(&name) {
            retired.push(name);
        }
    }

    assert!(
        breaking.is_empty(),
        "{} breaking change(s) to committed event schemas:\n  {}\n\
         Events stay stored, and during a rolling upgrade old and new instances read each \
         other's events: keep the change compatible, or make it a new version of the event, \
         a new event type (`OrderAcceptedV2`) whose schema gets a file of its own \
         (`ordering.OrderAccepted.v2.json`) beside the old one. `{UPDATE_COMMAND}` never \
         writes a breaking schema.",
        breaking.len(),
        breaking.join("\n  ")
    );
    assert!(
        retired.is_empty(),
        "schemas/ holds schemas of event types that no longer exist: {retired:?}. Old \
         writers and stored events still use such a type; delete its file by hand once no \
         deployed instance reads or writes it."
    );
    assert!(
        update || stale.is_empty(),
        "the event schemas changed compatibly, or are new: {stale:?}. Run `{UPDATE_COMMAND}` \
         and commit crates/contracts/schemas/."
    );
}

/// The committed schema is the readers' one (`Contract::Deserialize`): a field with
/// `#[serde(default)]` is optional in it even when writers always write it. What
/// must not happen is the other way round: a field that writers may leave out
/// (`skip_serializing_if`) and readers require.
#[test]
fn writers_write_every_field_their_readers_require() {
    for case in cases() {
        let writers = (case.schema)(Contract::Serialize);
        let readers = (case.schema)(Contract::Deserialize);
        let mismatches: Vec<String> = compat::breaks(&writers, &readers)
            .iter()
            .filter(|found| found.rule != Rule::FieldMadeOptional)
            .map(ToString::to_string)
            .collect();
        assert!(
            mismatches.is_empty(),
            "{}: readers and writers of one version disagree: {mismatches:?}",
            case.ty
        );
    }
}

#[test]
fn every_sample_event_conforms_to_its_schema() {
    for case in cases() {
        let schema = (case.schema)(Contract::Deserialize);
        if let Err(error) = conforms(&schema, &schema, &case.json, "") {
            panic!(
                "{}: the sample does not conform to the schema: {error}",
                case.ty
            );
        }
        // And the check can fail: a sample with a field of the wrong type does not.
        let mut wrong = case.json.clone();
        wrong["version"] = json!("one");
        assert!(
            conforms(&schema, &schema, &wrong, "").is_err(),
            "{}",
            case.ty
        );
    }
}

/// Whether `value` is what `schema` describes, for the keywords the event schemas use:
/// enough to show that the hand-written schemas (times, open enums) match the JSON
/// that serde writes.
fn conforms(root: &Value, schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    if let Some(Value::String(reference)) = schema.get("$ref") {
        let target = root
            .pointer(reference.trim_start_matches('#'))
            .ok_or_else(|| format!("{path}: {reference} points nowhere"))?;
        return conforms(root, target, value, path);
    }
    if let Some(Value::Array(alternatives)) = schema.get("anyOf")
        && !alternatives
            .iter()
            .any(|alternative| conforms(root, alternative, value, path).is_ok())
    {
        return Err(format!("{path}: {value} matches no alternative"));
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            one => one.as_str().into_iter().collect(),
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        // An integer is a number too.
        let allowed = types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
        if !allowed {
            return Err(format!("{path}: {value} is not {types:?}"));
        }
    }
    if let (Some(format), Value::String(text)) = (schema.get("format"), value) {
        let valid = match format.as_str() {
            Some("uuid") => uuid::Uuid::parse_str(text).is_ok(),
            Some("date-time") => {
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .is_ok()
            }
            _ => true,
        };
        if !valid {
            return Err(format!("{path}: {text:?} is no {format}"));
        }
    }
    if let (Some(minimum), Some(number)) = (schema.get("minimum"), value.as_f64())
        && minimum.as_f64().is_some_and(|minimum| number < minimum)
    {
        return Err(format!("{path}: {number} is below {minimum}"));
    }
    if let Value::Object(object) = value {
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    return Err(format!("{path}: {name} is missing"));
                }
            }
        }
        let fields = schema.get("properties").and_then(Value::as_object);
        for (name, field) in object {
            let declared = fields
                .and_then(|fields| fields.get(name))
                .ok_or_else(|| format!("{path}: {name} is not in the schema"))?;
            conforms(root, declared, field, &format!("{path}.{name}"))?;
        }
    }
    if let (Some(items), Value::Array(values)) = (schema.get("items"), value) {
        for (i, item) in values.iter().enumerate() {
            conforms(root, items, item, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

/// The breaks the checker finds when `edit` is applied to the schema of `case`.
///
/// The schema is the generated one, which the test above holds equal to the
/// committed file, so that an update run that writes new files does not race with
/// this test reading them.
fn breaks_after(case: &Case, edit: impl FnOnce(&mut Value)) -> Vec<(String, Rule)> {
    let old = (case.schema)(Contract::Deserialize);
    let mut new = old.clone();
    edit(&mut new);
    compat::breaks(&old, &new)
        .into_iter()
        .map(|found| (found.path, found.rule))
        .collect()
}

fn fields(schema: &Value) -> Vec<String> {
    schema["properties"]
        .as_object()
        .map(|fields| fields.keys().cloned().collect())
        .unwrap_or_default()
}

fn is_required(schema: &Value, field: &str) -> bool {
    schema["required"]
        .as_array()
        .is_some_and(|required| required.contains(&json!(field)))
}

/// Breaking edits of every field of every event schema, each refused by the rule that
/// names it: the checker is not vacuous on the schemas it guards.
#[test]
fn the_checker_refuses_breaking_edits_of_every_committed_schema() {
    for case in cases() {
        let name = case.ty;
        let schema = (case.schema)(Contract::Deserialize);
        assert_eq!(breaks_after(&case, |_| {}), [], "{name} against itself");

        for field in fields(&schema) {
            let here = |rule| vec![(field.clone(), rule)];
            let removed = breaks_after(&case, |s| {
                s["properties"].as_object_mut().unwrap().remove(&field);
            });
            assert_eq!(removed, here(Rule::FieldRemoved), "{name}: {field} removed");

            let retyped = breaks_after(&case, |s| {
                s["properties"][&field] = json!({"type": "boolean"});
            });
            assert!(
                retyped.contains(&(field.clone(), Rule::Retyped)),
                "{name}: {field} retyped: {retyped:?}"
            );

            let toggled = breaks_after(&case, |s| {
                let required = s["required"].as_array_mut().unwrap();
                if is_required(&schema, &field) {
                    required.retain(|name| name != &json!(field));
                } else {
                    required.push(json!(field));
                }
            });
            let rule = if is_required(&schema, &field) {
                Rule::FieldMadeOptional
            } else {
                Rule::FieldMadeRequired
            };
            assert_eq!(toggled, here(rule), "{name}: {field} required toggled");
        }

        let added = breaks_after(&case, |s| {
            s["properties"]["added"] = json!({"type": "string"});
            s["required"].as_array_mut().unwrap().push(json!("added"));
        });
        assert_eq!(
            added,
            [("added".to_owned(), Rule::NewRequiredField)],
            "{name}"
        );
        let optional = breaks_after(&case, |s| {
            s["properties"]["added"] = json!({"type": ["string", "null"]});
        });
        assert_eq!(optional, [], "{name}: a new optional field");
    }
}

/// The same for what lies behind references: the fields of shared value types and
/// the values of open enums.
#[test]
fn the_checker_refuses_breaking_edits_behind_references() {
    let mut definitions_seen = 0;
    let mut enum_values_seen = 0;
    for case in cases() {
        let name = case.ty;
        let schema = (case.schema)(Contract::Deserialize);
        let Some(definitions) = schema["$defs"].as_object() else {
            continue;
        };
        for (definition, body) in definitions {
            for field in fields(body) {
                definitions_seen += 1;
                let found = breaks_after(&case, |s| {
                    s["$defs"][definition]["properties"]
                        .as_object_mut()
                        .unwrap()
                        .remove(&field);
                });
                assert!(
                    !found.is_empty()
                        && found.iter().all(|(path, rule)| {
                            *rule == Rule::FieldRemoved && path.ends_with(&format!(".{field}"))
                        }),
                    "{name}: {definition}.{field} removed: {found:?}"
                );
            }
            if let Some(values) = body["x-extensible-enum"].as_array() {
                enum_values_seen += values.len();
                let first = values[0].clone();
                let removed = breaks_after(&case, |s| {
                    s["$defs"][definition]["x-extensible-enum"]
                        .as_array_mut()
                        .unwrap()
                        .retain(|value| value != &first);
                });
                assert!(
                    !removed.is_empty()
                        && removed
                            .iter()
                            .all(|(_, rule)| *rule == Rule::EnumValueRemoved),
                    "{name}: {definition} lost {first}: {removed:?}"
                );
                let added = breaks_after(&case, |s| {
                    s["$defs"][definition]["x-extensible-enum"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!("added_value"));
                });
                assert_eq!(added, [], "{name}: {definition} gained a value");
            }
        }
    }
    assert!(definitions_seen > 0 && enum_values_seen > 0);
}
