//! The W3C trace context as the logs carry it: a span that handles a request or a
//! delivery records the `trace_id` it belongs to and a `span_id` of its own, so that
//! every log line written inside it can be joined with the other lines of the trace.
//!
//! This is not the tracer (that is `agora_telemetry::trace`, whose spans record their
//! own ids): these are the checks the logger applies to recorded ids, and the span ids
//! a delivery's span records when no tracer is installed (tests, tools).

use std::hash::{Hash, Hasher};

/// The ids of a valid version-00 `traceparent`
/// (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lower case, ids not all
/// zeros).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    /// The id of the span that sent it.
    pub parent_id: String,
}

impl TraceParent {
    /// The ids of `value`, or `None` when it is not a valid `traceparent`.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let mut parts = value.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let valid = version == "00"
            && parts.next().is_none()
            && is_id(trace, 32)
            && is_id(parent, 16)
            && is_hex(flags, 2);
        valid.then(|| TraceParent {
            trace_id: trace.to_owned(),
            parent_id: parent.to_owned(),
        })
    }
}

/// `len` lower-case hex digits.
fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `len` lower-case hex digits, not all zeros (an invalid id in W3C trace context).
fn is_id(s: &str, len: usize) -> bool {
    is_hex(s, len) && s.bytes().any(|b| b != b'0')
}

/// Whether `value` is a trace id (32 lower-case hex digits, not all zeros).
pub fn is_trace_id(value: &str) -> bool {
    is_id(value, 32)
}

/// Whether `value` is a span id (16 lower-case hex digits, not all zeros).
pub fn is_span_id(value: &str) -> bool {
    is_id(value, 16)
}

/// A span id (16 hex digits) derived from `parts`: the same parts give the same id, so
/// that the spans handling one delivery (its handler, then its settling) share it.
pub fn span_id_of(parts: impl Hash) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut hasher);
    // All zeros is not a valid id.
    format!("{:016x}", hasher.finish().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_traceparents_only() {
        let parsed = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("valid");
        assert_eq!(parsed.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.parent_id, "00f067aa0ba902b7");
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
            "",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn derived_span_ids_are_stable_valid_and_distinct() {
        let a = span_id_of(("01a2513b-6fd9-77da-829e-d29171dc623f", 1u64));
        assert_eq!(
            a,
            span_id_of(("01a2513b-6fd9-77da-829e-d29171dc623f", 1u64))
        );
        assert!(is_span_id(&a), "{a}");
        assert_ne!(
            a,
            span_id_of(("01a2513b-6fd9-77da-829e-d29171dc623f", 2u64))
        );
    }
}
