//! Whether a new JSON Schema of an event may replace the committed one.
//!
//! During a rolling upgrade old and new instances run side by side, and events stay
//! stored for replays: new readers must read what old writers wrote, and old readers
//! what new writers write. Readers ignore fields they do not know; writers write the
//! fields their schema declares. So the new schema may add optional fields and add
//! values to an open enum (`x-extensible-enum`, whose readers keep unknown values),
//! and change annotations (descriptions, titles); anything else that differs breaks
//! one side or the other.
//!
//! The comparison walks both schemas together, through `properties`, `items`,
//! `additionalProperties`, `anyOf`/`oneOf`/`allOf` and `$ref` (resolved in each
//! schema's own `$defs` or `definitions`, so a renamed definition is no change).
//! Keywords it does not know must be equal, so that a new kind of constraint is
//! refused until someone teaches the checker what it means.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use serde_json::{Map, Value};

/// A kind of change that some reader or writer cannot live with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    FieldRemoved,
    NewRequiredField,
    FieldMadeRequired,
    FieldMadeOptional,
    /// The JSON type or the format changed.
    Retyped,
    EnumValueRemoved,
    /// A value added to a closed `enum` (an open one may grow).
    EnumValueAdded,
    /// An `anyOf`, `oneOf` or `allOf` gained or lost alternatives.
    AlternativesChanged,
    /// Any other validation keyword (`minimum`, `additionalProperties`, `enum` added…).
    ConstraintChanged,
    /// A `$ref` that points nowhere in its schema.
    UnresolvedReference,
}

impl Rule {
    /// Who cannot live with the change, and what to do instead.
    fn consequence(self) -> &'static str {
        match self {
            Rule::FieldRemoved => {
                "old readers may require it, and stored events carry it (a field later added \
                 under that name would have to read them); keep the field"
            }
            Rule::NewRequiredField => {
                "events of old writers, and those already stored, lack it; make it an `Option` \
                 with `#[serde(default, skip_serializing_if = \"Option::is_none\")]`"
            }
            Rule::FieldMadeRequired => "old writers, and stored events, may leave it out",
            Rule::FieldMadeOptional => "new writers may leave it out, and old readers require it",
            Rule::Retyped => {
                "readers on one side of the upgrade may refuse what writers on the other write \
                 (a wider type too: old readers refuse the new values)"
            }
            Rule::EnumValueRemoved => {
                "old writers, and stored events, use it (a reader of an open enum would take \
                 it for a value it does not know)"
            }
            Rule::EnumValueAdded => {
                "old readers refuse a value of a closed enum they do not know; use an open \
                 enum (`string_enum!`) whose readers keep it"
            }
            Rule::AlternativesChanged => "one side writes shapes the other cannot read",
            Rule::ConstraintChanged => "one side may write what the other refuses",
            Rule::UnresolvedReference => "the schema does not say what is there",
        }
    }
}

/// One breaking difference: where, which rule, and what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The field, as a path from the event: `shipping_address.city`, `lines[].quantity`.
    pub path: String,
    pub rule: Rule,
    pub detail: String,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(the event)"
        } else {
            &self.path
        };
        write!(
            f,
            "`{path}`: {:?}: {}: {}",
            self.rule,
            self.detail,
            self.rule.consequence()
        )
    }
}

/// Every breaking difference from the `old` schema to the `new` one; none when the new
/// one may replace it.
pub fn breaks(old: &Value, new: &Value) -> Vec<Break> {
    let mut walk = Walk {
        old_root: old,
        new_root: new,
        seen: HashSet::new(),
        breaks: Vec::new(),
    };
    walk.compare(old, new, "");
    walk.breaks
}

/// Keywords that describe and do not constrain: they may change freely. `$defs` and
/// `definitions` are reached through `$ref`.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "$defs",
    "definitions",
    "title",
    "description",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// Keywords that [`Walk::compare`] handles itself.
const STRUCTURE: &[&str] = &[
    "$ref",
    "type",
    "format",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "enum",
    "x-extensible-enum",
    "anyOf",
    "oneOf",
    "allOf",
];

struct Walk<'a> {
    old_root: &'a Value,
    new_root: &'a Value,
    /// The pairs of references being compared, so that a recursive type ends.
    seen: HashSet<(String, String)>,
    breaks: Vec<Break>,
}

impl Walk<'_> {
    fn report(&mut self, path: &str, rule: Rule, detail: String) {
        self.breaks.push(Break {
            path: path.to_owned(),
            rule,
            detail,
        });
    }

    fn compare(&mut self, old: &Value, new: &Value, path: &str) {
        let (old, old_ref) = match resolve(self.old_root, old) {
            Ok(resolved) => resolved,
            Err(reference) => {
                return self.report(path, Rule::UnresolvedReference, format!("old {reference}"));
            }
        };
        let (new, new_ref) = match resolve(self.new_root, new) {
            Ok(resolved) => resolved,
            Err(reference) => {
                return self.report(path, Rule::UnresolvedReference, format!("new {reference}"));
            }
        };
        let Some(pair) = old_ref.zip(new_ref) else {
            return self.compare_resolved(&old, &new, path);
        };
        // Within a comparison of these two definitions already: a recursive type.
        if self.seen.insert(pair.clone()) {
            self.compare_resolved(&old, &new, path);
            self.seen.remove(&pair);
        }
    }

    fn compare_resolved(&mut self, old: &Value, new: &Value, path: &str) {
        let (Value::Object(old), Value::Object(new)) = (old, new) else {
            // `true`, `false`: schemas that accept everything or nothing.
            if old != new {
                self.report(
                    path,
                    Rule::ConstraintChanged,
                    format!("schema {old} became {new}"),
                );
            }
            return;
        };

        let (old_kind, new_kind) = (kind(old), kind(new));
        if old_kind != new_kind {
            self.report(
                path,
                Rule::Retyped,
                format!("retyped from {old_kind} to {new_kind}"),
            );
        }
        self.compare_properties(old, new, path);
        self.compare_enums(old, new, path);
        for keyword in ["items", "additionalProperties"] {
            let nested = if keyword == "items" {
                format!("{path}[]")
            } else {
                format!("{path}{{}}")
            };
            match (old.get(keyword), new.get(keyword)) {
                (Some(old @ Value::Object(_)), Some(new @ Value::Object(_))) => {
                    self.compare(old, new, &nested);
                }
                (old, new) => self.compare_keyword(keyword, old, new, path),
            }
        }
        for keyword in ["anyOf", "oneOf", "allOf"] {
            match (old.get(keyword), new.get(keyword)) {
                (Some(Value::Array(old)), Some(Value::Array(new))) if old.len() == new.len() => {
                    for (i, (old, new)) in old.iter().zip(new).enumerate() {
                        self.compare(old, new, &format!("{path}<{keyword} {i}>"));
                    }
                }
                (None, None) => {}
                (old, new) => self.report(
                    path,
                    Rule::AlternativesChanged,
                    format!(
                        "{keyword} went from {} to {} alternatives",
                        alternatives(old),
                        alternatives(new)
                    ),
                ),
            }
        }
        let keywords: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        for keyword in keywords {
            if !ANNOTATIONS.contains(&keyword.as_str()) && !STRUCTURE.contains(&keyword.as_str()) {
                self.compare_keyword(keyword, old.get(keyword), new.get(keyword), path);
            }
        }
    }

    fn compare_keyword(
        &mut self,
        keyword: &str,
        old: Option<&Value>,
        new: Option<&Value>,
        path: &str,
    ) {
        if old != new {
            let show = |value: Option<&Value>| value.map_or("absent".to_owned(), Value::to_string);
            self.report(
                path,
                Rule::ConstraintChanged,
                format!("`{keyword}` went from {} to {}", show(old), show(new)),
            );
        }
    }

    fn compare_properties(
        &mut self,
        old: &Map<String, Value>,
        new: &Map<String, Value>,
        path: &str,
    ) {
        let (old_fields, new_fields) = (properties(old), properties(new));
        let (old_required, new_required) = (required(old), required(new));
        let field_path = |name: &str| {
            if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}.{name}")
            }
        };
        for (name, old_schema) in &old_fields {
            let here = field_path(name);
            let was_required = old_required.contains(name.as_str());
            let is_required = new_required.contains(name.as_str());
            let Some(new_schema) = new_fields.get(name) else {
                let which = if was_required { "required" } else { "optional" };
                self.report(&here, Rule::FieldRemoved, format!("{which} field removed"));
                continue;
            };
            match (was_required, is_required) {
                (false, true) => self.report(
                    &here,
                    Rule::FieldMadeRequired,
                    "optional field made required".into(),
                ),
                (true, false) => self.report(
                    &here,
                    Rule::FieldMadeOptional,
                    "required field made optional".into(),
                ),
                _ => {}
            }
            self.compare(old_schema, new_schema, &here);
        }
        for name in new_fields.keys() {
            if !old_fields.contains_key(name) && new_required.contains(name.as_str()) {
                self.report(
                    &field_path(name),
                    Rule::NewRequiredField,
                    "new required field".into(),
                );
            }
        }
    }

    fn compare_enums(&mut self, old: &Map<String, Value>, new: &Map<String, Value>, path: &str) {
        match (old.get("enum"), new.get("enum")) {
            (Some(Value::Array(old)), Some(Value::Array(new))) => {
                for value in old.iter().filter(|value| !new.contains(value)) {
                    self.report(
                        path,
                        Rule::EnumValueRemoved,
                        format!("value {value} removed"),
                    );
                }
                for value in new.iter().filter(|value| !old.contains(value)) {
                    self.report(path, Rule::EnumValueAdded, format!("value {value} added"));
                }
            }
            (old, new) => self.compare_keyword("enum", old, new, path),
        }
        match (old.get("x-extensible-enum"), new.get("x-extensible-enum")) {
            (Some(Value::Array(old)), Some(Value::Array(new))) => {
                for value in old.iter().filter(|value| !new.contains(value)) {
                    self.report(
                        path,
                        Rule::EnumValueRemoved,
                        format!("value {value} removed"),
                    );
                }
            }
            (old, new) => self.compare_keyword("x-extensible-enum", old, new, path),
        }
    }
}

/// Follows `$ref` (also a chain of them) within `root`; keywords beside a `$ref` apply
/// on top of what it points to. Gives the schema and the last reference followed, or
/// the reference that points nowhere.
fn resolve(root: &Value, schema: &Value) -> Result<(Value, Option<String>), String> {
    let mut schema = schema.clone();
    let mut followed = None;
    for _ in 0..32 {
        let Some(Value::String(reference)) = schema.get("$ref") else {
            return Ok((schema, followed));
        };
        let reference = reference.clone();
        let target = reference
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer))
            .ok_or_else(|| format!("reference {reference} points nowhere"))?;
        let mut merged = target.clone();
        if let (Value::Object(merged), Value::Object(beside)) = (&mut merged, &schema) {
            for (keyword, value) in beside {
                if keyword != "$ref" {
                    merged.insert(keyword.clone(), value.clone());
                }
            }
        }
        schema = merged;
        followed = Some(reference);
    }
    Err("reference chain too long".into())
}

/// The JSON types and format a schema allows, as text: `string (uuid)`,
/// `[integer, null] (uint32)`, `any`.
fn kind(schema: &Map<String, Value>) -> String {
    let types: BTreeSet<&str> = match schema.get("type") {
        Some(Value::String(one)) => [one.as_str()].into(),
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => BTreeSet::new(),
    };
    let types = match types.len() {
        0 => "any".to_owned(),
        1 => types.into_iter().collect(),
        _ => format!("[{}]", Vec::from_iter(types).join(", ")),
    };
    match schema.get("format").and_then(Value::as_str) {
        Some(format) => format!("{types} ({format})"),
        None => types,
    }
}

fn properties(schema: &Map<String, Value>) -> BTreeMap<String, Value> {
    match schema.get("properties") {
        Some(Value::Object(fields)) => fields.clone().into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

fn required(schema: &Map<String, Value>) -> BTreeSet<&str> {
    match schema.get("required") {
        Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect(),
        _ => BTreeSet::new(),
    }
}

fn alternatives(keyword: Option<&Value>) -> usize {
    keyword.and_then(Value::as_array).map_or(0, Vec::len)
}

/// The rules one at a time, on schemas small enough to read.
mod tests {
    use serde_json::{Value, json};

    use super::{Rule, breaks};

    /// Each break as `(path, rule)`.
    fn found(old: &Value, new: &Value) -> Vec<(String, Rule)> {
        breaks(old, new)
            .into_iter()
            .map(|found| (found.path, found.rule))
            .collect()
    }

    fn one(path: &str, rule: Rule) -> Vec<(String, Rule)> {
        vec![(path.to_owned(), rule)]
    }

    /// An event with a required `id`, a required `name` and an optional `note`.
    fn event() -> Value {
        json!({
            "title": "Event",
            "type": "object",
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "name": {"type": "string"},
                "note": {"type": ["string", "null"]},
            },
            "required": ["id", "name"],
        })
    }

    /// `event()` with `edit` applied.
    fn edited(edit: impl FnOnce(&mut Value)) -> Value {
        let mut schema = event();
        edit(&mut schema);
        schema
    }

    #[test]
    fn the_same_schema_is_compatible() {
        assert_eq!(found(&event(), &event()), []);
    }

    #[test]
    fn descriptions_and_titles_may_change() {
        let new = edited(|s| {
            s["title"] = json!("Renamed");
            s["description"] = json!("Now documented.");
            s["properties"]["name"]["description"] = json!("Who.");
            s["properties"]["name"]["examples"] = json!(["Ada"]);
        });
        assert_eq!(found(&event(), &new), []);
    }

    #[test]
    fn a_new_optional_field_is_compatible() {
        let new = edited(|s| s["properties"]["extra"] = json!({"type": ["integer", "null"]}));
        assert_eq!(found(&event(), &new), []);
    }

    /// A field with `#[serde(default)]`: not required of writers, whatever they write.
    #[test]
    fn a_new_field_with_a_default_is_compatible() {
        let new = edited(|s| {
            s["properties"]["pieces"] =
                json!({"type": "integer", "format": "uint32", "default": 1});
        });
        assert_eq!(found(&event(), &new), []);
    }

    #[test]
    fn a_new_required_field_breaks_old_writers() {
        let new = edited(|s| {
            s["properties"]["extra"] = json!({"type": "integer"});
            s["required"] = json!(["id", "name", "extra"]);
        });
        assert_eq!(found(&event(), &new), one("extra", Rule::NewRequiredField));
    }

    #[test]
    fn a_removed_required_field_breaks_old_readers() {
        let new = edited(|s| {
            s["properties"].as_object_mut().unwrap().remove("name");
            s["required"] = json!(["id"]);
        });
        assert_eq!(found(&event(), &new), one("name", Rule::FieldRemoved));
    }

    #[test]
    fn a_removed_optional_field_is_refused_too() {
        let new = edited(|s| {
            s["properties"].as_object_mut().unwrap().remove("note");
        });
        assert_eq!(found(&event(), &new), one("note", Rule::FieldRemoved));
    }

    #[test]
    fn a_retyped_field_breaks_both_sides() {
        let new = edited(|s| s["properties"]["name"] = json!({"type": "integer"}));
        assert_eq!(found(&event(), &new), one("name", Rule::Retyped));
        // And back: the check is not one-sided.
        assert_eq!(found(&new, &event()), one("name", Rule::Retyped));
    }

    #[test]
    fn a_changed_format_is_a_retyping() {
        let new = edited(|s| s["properties"]["id"] = json!({"type": "string"}));
        assert_eq!(found(&event(), &new), one("id", Rule::Retyped));
        let wider = json!({"properties": {"n": {"type": "integer", "format": "uint64"}}});
        let narrower = json!({"properties": {"n": {"type": "integer", "format": "uint32"}}});
        assert_eq!(found(&wider, &narrower), one("n", Rule::Retyped));
    }

    #[test]
    fn a_field_made_nullable_or_not_nullable_is_a_retyping() {
        let nullable = edited(|s| s["properties"]["name"]["type"] = json!(["string", "null"]));
        assert_eq!(found(&event(), &nullable), one("name", Rule::Retyped));
        let not_nullable = edited(|s| s["properties"]["note"]["type"] = json!("string"));
        assert_eq!(found(&event(), &not_nullable), one("note", Rule::Retyped));
    }

    #[test]
    fn an_optional_field_made_required_breaks_old_writers() {
        let new = edited(|s| s["required"] = json!(["id", "name", "note"]));
        assert_eq!(found(&event(), &new), one("note", Rule::FieldMadeRequired));
    }

    #[test]
    fn a_required_field_made_optional_breaks_old_readers() {
        let new = edited(|s| s["required"] = json!(["id"]));
        assert_eq!(found(&event(), &new), one("name", Rule::FieldMadeOptional));
    }

    #[test]
    fn the_order_of_required_fields_does_not_matter() {
        let new = edited(|s| s["required"] = json!(["name", "id"]));
        assert_eq!(found(&event(), &new), []);
    }

    #[test]
    fn a_closed_enum_may_neither_lose_nor_gain_values() {
        let old = json!({"type": "string", "enum": ["a", "b"]});
        let fewer = json!({"type": "string", "enum": ["a"]});
        let more = json!({"type": "string", "enum": ["a", "b", "c"]});
        assert_eq!(found(&old, &fewer), one("", Rule::EnumValueRemoved));
        assert_eq!(found(&old, &more), one("", Rule::EnumValueAdded));
        let reordered = json!({"type": "string", "enum": ["b", "a"]});
        assert_eq!(found(&old, &reordered), []);
    }

    #[test]
    fn an_open_enum_may_gain_values_but_not_lose_them() {
        let old = json!({"type": "string", "x-extensible-enum": ["a", "b"]});
        let more = json!({"type": "string", "x-extensible-enum": ["a", "b", "c"]});
        let fewer = json!({"type": "string", "x-extensible-enum": ["b"]});
        assert_eq!(found(&old, &more), []);
        assert_eq!(found(&old, &fewer), one("", Rule::EnumValueRemoved));
    }

    #[test]
    fn closing_an_open_enum_is_refused() {
        let open = json!({"type": "string", "x-extensible-enum": ["a"]});
        let closed = json!({"type": "string", "enum": ["a"]});
        let rules: Vec<Rule> = found(&open, &closed).into_iter().map(|(_, r)| r).collect();
        assert_eq!(rules, [Rule::ConstraintChanged, Rule::ConstraintChanged]);
    }

    #[test]
    fn a_changed_constraint_is_refused() {
        let new = edited(|s| s["properties"]["name"]["maxLength"] = json!(80));
        assert_eq!(found(&event(), &new), one("name", Rule::ConstraintChanged));
        let strict = edited(|s| s["additionalProperties"] = json!(false));
        assert_eq!(found(&event(), &strict), one("", Rule::ConstraintChanged));
    }

    /// An order with lines and an address, both behind `$ref`.
    fn order() -> Value {
        json!({
            "type": "object",
            "properties": {
                "address": {"$ref": "#/$defs/Address"},
                "lines": {"type": "array", "items": {"$ref": "#/$defs/Line"}},
                "backup": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]},
            },
            "required": ["address", "lines"],
            "$defs": {
                "Address": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
                "Line": {
                    "type": "object",
                    "properties": {"quantity": {"type": "integer", "format": "uint32"}},
                    "required": ["quantity"],
                },
            },
        })
    }

    #[test]
    fn changes_behind_references_are_found_with_their_path() {
        let mut new = order();
        new["$defs"]["Address"]["properties"]["city"] = json!({"type": "integer"});
        new["$defs"]["Line"]["required"] = json!([]);
        assert_eq!(
            found(&order(), &new),
            [
                ("address.city".to_owned(), Rule::Retyped),
                ("backup<anyOf 0>.city".to_owned(), Rule::Retyped),
                ("lines[].quantity".to_owned(), Rule::FieldMadeOptional),
            ]
        );
    }

    #[test]
    fn a_renamed_or_inlined_definition_is_no_change() {
        let mut new = order();
        let address = new["$defs"]["Address"].take();
        new["$defs"]["PostalAddress"] = address.clone();
        new["$defs"].as_object_mut().unwrap().remove("Address");
        new["properties"]["address"] = json!({"$ref": "#/$defs/PostalAddress"});
        new["properties"]["backup"]["anyOf"][0] = address;
        assert_eq!(found(&order(), &new), []);
    }

    #[test]
    fn an_added_alternative_is_refused() {
        let mut new = order();
        new["properties"]["backup"]["anyOf"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "string"}));
        assert_eq!(
            found(&order(), &new),
            one("backup", Rule::AlternativesChanged)
        );
    }

    #[test]
    fn a_reference_that_points_nowhere_is_refused() {
        let mut new = order();
        new["$defs"].as_object_mut().unwrap().remove("Line");
        assert_eq!(
            found(&order(), &new),
            one("lines[]", Rule::UnresolvedReference)
        );
    }

    #[test]
    fn recursive_types_are_compared_to_the_end() {
        let tree = json!({
            "$ref": "#/$defs/Node",
            "$defs": {"Node": {
                "type": "object",
                "properties": {
                    "label": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                },
                "required": ["label", "children"],
            }},
        });
        assert_eq!(found(&tree, &tree), []);
        let mut new = tree.clone();
        new["$defs"]["Node"]["properties"]["label"] = json!({"type": "integer"});
        assert_eq!(found(&tree, &new), one("label", Rule::Retyped));
    }

    #[test]
    fn a_break_reads_as_field_rule_and_consequence() {
        let new = edited(|s| s["properties"]["name"] = json!({"type": "integer"}));
        let message = breaks(&event(), &new)[0].to_string();
        assert_eq!(
            message,
            "`name`: Retyped: retyped from string to integer: readers on one side of the \
             upgrade may refuse what writers on the other write (a wider type too: old readers \
             refuse the new values)"
        );
    }
}
