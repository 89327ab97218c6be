//! Traces: `tracing` spans of one target ([`TARGET`]) become OpenTelemetry spans
//! (through `tracing-opentelemetry`), their context crosses every hop as a W3C
//! `traceparent`: HTTP headers in and out, and the event envelope on the bus.
//!
//! The spans Agora records, each carrying the service it belongs to
//! ([`SERVICE_ATTRIBUTE`]):
//!
//! - [`server_span`]: one per HTTP request a service answers (its parent: the
//!   caller's `traceparent`);
//! - [`client_span`]: one per call through a resilient client (its `traceparent` is
//!   what the call sends);
//! - [`producer_span`]: one per event written (`create <source>.<type>`): its context
//!   is the envelope's `traceparent`, so the message carries it;
//! - [`send_span`]: the outbox relay's publication of that event, its child;
//! - [`consumer_span`]: one per handled delivery (`process <subject>`), whose parent
//!   is the context in the envelope.
//!
//! What is done with them is decided once per process by [`install`]: kept in memory
//! ([`recent`], for the ops console of `agora up`), exported over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set ([`export`]), or neither. Until a tracer is
//! installed and [`layer`] is part of the process's subscriber, the spans are plain
//! `tracing` spans and nothing is recorded.
//!
//! What must never happen here: a token, a password or a request body in an
//! attribute. Spans carry methods, route templates, status codes, event types, message
//! and correlation ids, nothing a caller sent as a secret.

pub mod export;
pub mod recent;

use std::sync::OnceLock;

use axum::http::HeaderValue;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry_sdk::trace::SdkTracer;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

pub use export::{ExportSettings, Protocol, TraceConfig, Tracing, build, install};

/// The target of every span that becomes an OpenTelemetry span.
pub const TARGET: &str = "agora::trace";

/// The header (and envelope field) that carries a trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The span attribute naming the service a span belongs to (in `agora up` every
/// service shares the process: the exporter makes it each span's `service.name`).
pub const SERVICE_ATTRIBUTE: &str = "agora.service";

/// The attribute naming the order or user a message is about.
pub const CORRELATION_ATTRIBUTE: &str = "agora.correlation_id";

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The tracing layer that turns [`TARGET`]'s spans into OpenTelemetry spans, for the
/// process's subscriber: call it after [`install`] (before, there is no tracer, and the
/// layer it returns does nothing). Spans of other targets and log events are not its
/// business (a per-layer filter).
pub fn layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    TRACER.get().map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer.clone())
            // Parents come from the tracing span tree (or are set explicitly), not
            // from an OpenTelemetry context attached on every poll.
            .with_context_activation(false)
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            .with_target(false)
            .with_level(false)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(TARGET, tracing::Level::TRACE),
            )
    })
}

pub(crate) fn set_tracer(tracer: SdkTracer) {
    let _ = TRACER.set(tracer);
}

/// A valid version-00 `traceparent` as an OpenTelemetry span context (remote).
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if version != "00"
        || parts.next().is_some()
        || !hex(trace, 32)
        || !hex(parent, 16)
        || !hex(flags, 2)
    {
        return None;
    }
    let context = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(parent).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & 1),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// `00-<trace id>-<span id>-<flags>`.
pub fn format_traceparent(context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

/// The `traceparent` of `span` itself, when it is a recorded OpenTelemetry span.
pub fn traceparent_of(span: &Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| format_traceparent(&span_context))
}

/// The `traceparent` of the current span, when it is a recorded OpenTelemetry span.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&Span::current())
}

/// Sets `span`'s parent: the remote context of `traceparent`, or none (a new trace),
/// never whatever span happens to be current. Then records the span's ids in its
/// `trace_id` and `span_id` fields, for the log lines written inside it. Without a
/// tracer (tests, tools), the ids of `traceparent` are recorded with a span id of
/// `fallback_span_id`, so that logs still join.
fn root_at(
    span: Span,
    traceparent: Option<&str>,
    fallback_span_id: impl FnOnce() -> String,
) -> Span {
    let remote = traceparent.and_then(parse_traceparent);
    let _ = span.set_parent(context_of(remote.clone()));
    record_ids(&span, remote.as_ref(), fallback_span_id);
    span
}

/// A context whose span is `remote` (another process's), or an empty one: a parent
/// that starts a new trace.
fn context_of(remote: Option<SpanContext>) -> opentelemetry::Context {
    match remote {
        Some(remote) => opentelemetry::Context::new().with_remote_span_context(remote),
        None => opentelemetry::Context::new(),
    }
}

/// Records the span's own ids (or, without a tracer, the remote trace id and a span id
/// of `fallback`) in its `trace_id` and `span_id` fields.
fn record_ids(span: &Span, remote: Option<&SpanContext>, fallback: impl FnOnce() -> String) {
    if span.is_disabled() {
        return;
    }
    let context = span.context();
    let own = context.span().span_context().clone();
    if own.is_valid() {
        span.record("trace_id", tracing::field::display(own.trace_id()));
        span.record("span_id", tracing::field::display(own.span_id()));
    } else if let Some(remote) = remote {
        span.record("trace_id", tracing::field::display(remote.trace_id()));
        span.record("span_id", fallback());
    }
}

fn random_span_id() -> String {
    format!("{:016x}", rand_u64().max(1))
}

/// A random number without a dependency: a fresh random-keyed hasher per call.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default(),
    );
    hasher.finish()
}

/// The span of one HTTP request `service` answers, continuing the caller's trace when
/// `incoming` is a valid `traceparent`. `route` is a template or a prefix, never a raw
/// path. Record the answer with [`record_status`].
pub fn server_span(
    service: &'static str,
    method: &'static str,
    route: &str,
    incoming: Option<&HeaderValue>,
) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        agora.service = service,
        http.request.method = method,
        http.route = %route,
        http.response.status_code = Empty,
        trace_id = Empty,
        span_id = Empty,
    );
    let incoming = incoming.and_then(|value| value.to_str().ok());
    root_at(span, incoming, random_span_id)
}

/// Records an HTTP answer's status on a [`server_span`] or [`client_span`]; a 5xx
/// marks the span as an error.
pub fn record_status(span: &Span, status: u16) {
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
}

/// Marks `span` as failed (a call that got no answer, a handler that failed).
pub fn record_error(span: &Span) {
    span.record("otel.status_code", "error");
}

/// The span of one call `caller` makes to `target` through a resilient client, a child
/// of the current span. Send [`traceparent_of`] it with the call.
pub fn client_span(caller: &'static str, target: &str, method: &'static str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "call",
        otel.name = %format_args!("{method} {target}"),
        otel.kind = "client",
        otel.status_code = Empty,
        agora.service = caller,
        peer.service = %target,
        http.request.method = method,
        http.response.status_code = Empty,
    )
}

/// The span of an event's creation by `service` (`create <subject>`), a child of
/// the current span, or of `traceparent` when no span is current (an event caused by
/// another outside any delivery's span), or a new trace. Returns the span's
/// `traceparent`, the context the envelope carries, or `None` without a tracer.
pub fn producer_span(
    service: &str,
    subject: &str,
    correlation_id: &str,
    traceparent: Option<&str>,
) -> Option<String> {
    let span = tracing::info_span!(
        target: TARGET,
        "create",
        otel.name = %format_args!("create {subject}"),
        otel.kind = "producer",
        agora.service = %service,
        messaging.operation.type = "create",
        messaging.destination.name = %subject,
        agora.correlation_id = %correlation_id,
    );
    if span.is_disabled() {
        return None;
    }
    let current = Span::current().context();
    if !current.span().span_context().is_valid() {
        let _ = span.set_parent(context_of(traceparent.and_then(parse_traceparent)));
    }
    traceparent_of(&span)
}

/// The outbox relay's publication of one event (`send <subject>`), a child of the
/// context the event carries. Held while the batch is published.
pub fn send_span(service: &str, subject: &str, traceparent: Option<&str>) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "send",
        otel.name = %format_args!("send {subject}"),
        otel.kind = "producer",
        agora.service = %service,
        messaging.operation.type = "send",
        messaging.destination.name = %subject,
    );
    if let Some(remote) = traceparent.and_then(parse_traceparent) {
        let _ = span.set_parent(context_of(Some(remote)));
    }
    span
}

/// What a consumer span is about.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub consumer: &'a str,
    pub subject: &'a str,
    pub message_id: &'a str,
    pub deliveries: u64,
    pub event_type: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    /// The envelope's `traceparent`: the producer's context, this span's parent.
    pub traceparent: Option<&'a str>,
}

/// The span of one delivery's handling (`process <subject>`), whose parent is the
/// producer's context from the envelope. `fallback_span_id` names it in the logs when
/// no tracer is installed.
pub fn consumer_span(delivery: Delivery<'_>, fallback_span_id: impl FnOnce() -> String) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "handle",
        otel.name = %format_args!("process {}", delivery.subject),
        otel.kind = "consumer",
        otel.status_code = Empty,
        agora.service = crate::service_of_consumer(delivery.consumer),
        messaging.operation.type = "process",
        messaging.consumer.group.name = %delivery.consumer,
        messaging.destination.name = %delivery.subject,
        messaging.message.id = %delivery.message_id,
        deliveries = delivery.deliveries,
        event_type = delivery.event_type,
        correlation_id = delivery.correlation_id,
        trace_id = Empty,
        span_id = Empty,
    );
    root_at(span, delivery.traceparent, fallback_span_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse_and_format_both_ways() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = parse_traceparent(value).expect("valid");
        assert!(context.is_sampled() && context.is_remote());
        assert_eq!(format_traceparent(&context), value);
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "garbage",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn without_a_tracer_nothing_is_made_up() {
        assert_eq!(current_traceparent(), None);
        assert_eq!(
            producer_span("ordering", "ordering.OrderAccepted", "o", None),
            None
        );
    }
}
