//! W3C trace context at the edge: every request gets a `traceparent` (the caller's
//! trace id, or a new one), passed to the service and returned to the caller; an API
//! request is the gateway's server span of the trace.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use rand::RngCore;
use tracing::Instrument;

pub(crate) const TRACEPARENT: &str = "traceparent";

/// A trace id (32 hex digits) and this hop's span id (16 hex digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TraceParent {
    pub trace_id: String,
    pub span_id: String,
}

impl TraceParent {
    /// Continues the caller's trace when its header is valid; starts one otherwise.
    pub fn continue_or_start(header: Option<&HeaderValue>) -> Self {
        let trace_id = header
            .and_then(|h| h.to_str().ok())
            .and_then(parse_trace_id)
            .unwrap_or_else(random_hex::<16>);
        Self {
            trace_id,
            span_id: random_hex::<8>(),
        }
    }

    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&format!("00-{}-{}-01", self.trace_id, self.span_id))
            .expect("hex digits are a valid header value")
    }
}

/// The trace id of a valid version-00 `traceparent`.
fn parse_trace_id(value: &str) -> Option<String> {
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    valid.then(|| trace.to_owned())
}

fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Handles an API request (`/api/…`) in the gateway's server span: the caller's
/// `traceparent` is its parent, its context is what the request carries on to the
/// services (the resilient client sends its own call span's) and what the answer
/// carries back. Other paths (the UI's files, probes) are not traced, and get a
/// `traceparent` of this hop all the same.
pub(crate) async fn layer(mut request: Request, next: Next) -> Response {
    let incoming = request.headers().get(TRACEPARENT).cloned();
    // This hop's ids when no tracer records the span (tests, tools): for the logs
    // and the answer.
    let fallback = TraceParent::continue_or_start(incoming.as_ref());
    let path = request.uri().path();
    let span = if path.starts_with("/api/") {
        let method = agora_telemetry::method_label(request.method());
        agora_telemetry::trace::server_span("gateway", method, &route_of(path), incoming.as_ref())
    } else {
        tracing::info_span!(
            "request",
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty
        )
    };
    let value = match agora_telemetry::trace::traceparent_of(&span)
        .and_then(|value| HeaderValue::from_str(&value).ok())
    {
        Some(value) => value,
        None => {
            span.record("trace_id", fallback.trace_id.as_str());
            span.record("span_id", fallback.span_id.as_str());
            fallback.header_value()
        }
    };
    request.headers_mut().insert(TRACEPARENT, value.clone());
    let mut response = next.run(request).instrument(span.clone()).await;
    agora_telemetry::trace::record_status(&span, response.status().as_u16());
    response.headers_mut().insert(TRACEPARENT, value);
    response
}

/// A span name's route: the first two segments of an API path (`/api/ordering`,
/// `/api/ops`), never the ids after them; a second segment that cannot be a
/// service's prefix (too long, or more than lower-case letters, digits, `.` and `-`)
/// is not repeated: whatever a caller puts in a path stays out of the trace.
fn route_of(path: &str) -> String {
    let second = path
        .strip_prefix("/api/")
        .and_then(|rest| rest.split('/').next())
        .filter(|s| {
            (1..=32).contains(&s.len())
                && s.bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-'))
        });
    match second {
        Some(second) => format!("/api/{second}"),
        None => "/api/{other}".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_a_valid_trace_and_starts_one_otherwise() {
        let caller =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let trace = TraceParent::continue_or_start(Some(&caller));
        assert_eq!(trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(trace.span_id, "00f067aa0ba902b7");
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let trace = TraceParent::continue_or_start(Some(&HeaderValue::from_static(bad)));
            assert_ne!(trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(trace.trace_id.len(), 32);
        }
        let value = TraceParent::continue_or_start(None).header_value();
        assert!(parse_trace_id(value.to_str().expect("ascii")).is_some());
    }

    #[test]
    fn span_names_keep_the_prefix_and_nothing_a_caller_made_up() {
        assert_eq!(route_of("/api/ordering/orders/0193"), "/api/ordering");
        assert_eq!(route_of("/api/openapi.json"), "/api/openapi.json");
        assert_eq!(route_of("/api/ops/traces/4bf9"), "/api/ops");
        assert_eq!(
            route_of(&format!("/api/{}/x", "a".repeat(33))),
            "/api/{other}"
        );
        assert_eq!(route_of("/api/eyJhbGciOi.J9_x/orders"), "/api/{other}");
        assert_eq!(route_of("/api/"), "/api/{other}");
    }
}
