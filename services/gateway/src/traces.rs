//! The ops console's traces (admin only): the traces about an order (or a user) among
//! the spans this process keeps in memory, and one trace's spans as a waterfall —
//! service, operation, start offset and duration of each, with its parent.
//!
//! Only a process that keeps spans answers (`agora up`, where every service's spans
//! are in the gateway's process: [`agora_telemetry::trace::recent`]); elsewhere these
//! routes answer 404 and the traces are in the OTLP backend.

use agora_auth::Caller;
use agora_contracts::Role;
use agora_httpkit::Problem;
use agora_telemetry::trace::recent::{Recent, RecordedSpan, recent};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State as AxumState};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::State;

/// `GET /api/ops/traces` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TracesQuery {
    /// The order or user the traces are about (an order also by its reference,
    /// `AG-XXXX-XXXX`).
    pub correlation_id: Option<String>,
}

/// A trace about the flow, as [`traces`] lists them.
#[derive(Debug, Serialize, ToSchema)]
pub struct TraceSummaryView {
    /// 32 hex digits.
    pub trace_id: String,
    /// When its first span began (RFC 3339).
    pub start: String,
    /// Its spans kept.
    pub spans: usize,
    /// The operation of its first span (`POST /api/ordering`, …).
    pub root: String,
}

/// One trace as a waterfall.
#[derive(Debug, Serialize, ToSchema)]
pub struct TraceView {
    pub trace_id: String,
    /// When its first span began (RFC 3339).
    pub start: String,
    /// From the first span's start to the last one's end, in microseconds.
    pub duration_us: u64,
    /// The services it went through, in the order they first appear.
    pub services: Vec<String>,
    /// Its spans, by start.
    pub spans: Vec<SpanView>,
}

/// One span of a [`TraceView`].
#[derive(Debug, Serialize, ToSchema)]
pub struct SpanView {
    /// 16 hex digits.
    pub span_id: String,
    /// `null` for the trace's root (or a parent no longer kept).
    pub parent_span_id: Option<String>,
    pub service: String,
    /// `POST /api/ordering/orders`, `process ordering.OrderAccepted`, …
    pub name: String,
    /// `server`, `client`, `producer` (an event written or sent), `consumer` (a
    /// delivery handled) or `internal`.
    pub kind: String,
    /// From the trace's start, in microseconds.
    pub start_offset_us: u64,
    pub duration_us: u64,
    pub error: bool,
    /// A few attributes: route, status, destination, consumer.
    pub attributes: std::collections::BTreeMap<String, String>,
}

fn not_kept() -> Response {
    Problem::not_found()
        .with_detail(
            "This process keeps no traces: `agora up` does; elsewhere, see your OTLP backend.",
        )
        .into_response()
}

fn rfc3339(micros: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The traces kept about an order or a user, earliest first.
#[utoipa::path(get, path = "/api/ops/traces", tag = "ops",
    security(("bearer" = [])),
    params(TracesQuery),
    responses(
        (status = 200, description = "The traces about it, earliest first", body = [TraceSummaryView]),
        (status = 400, description = "No or a malformed correlation id", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "This process keeps no traces", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn traces(
    AxumState(state): AxumState<State>,
    caller: Caller,
    query: Result<Query<TracesQuery>, QueryRejection>,
) -> Response {
    if let Err(error) = caller.require(Role::Admin) {
        return error.into_response();
    }
    let Some(correlation_id) = query
        .ok()
        .and_then(|Query(query)| query.correlation_id)
        .filter(|id| !id.is_empty() && id.len() <= 100)
    else {
        return Problem::bad_request("Give the correlation_id of an order or a user.")
            .into_response();
    };
    let Some(recent) = recent() else {
        return not_kept();
    };
    // An order's reference names its id: the timeline knows which.
    let correlation_id = match agora_contracts::OrderReference::parse(&correlation_id) {
        Some(reference) => match state.timeline.events_of_reference(reference, 1).await {
            Ok(events) => match events.into_iter().next() {
                Some(event) => event.correlation_id,
                None => return Json(Vec::<TraceSummaryView>::new()).into_response(),
            },
            Err(error) => {
                tracing::error!(%error, "timeline unavailable");
                return Problem::internal().into_response();
            }
        },
        None => correlation_id,
    };
    Json(summaries(recent, &correlation_id)).into_response()
}

fn summaries(recent: &Recent, correlation_id: &str) -> Vec<TraceSummaryView> {
    recent
        .traces_about(correlation_id, 100)
        .into_iter()
        .map(|trace| TraceSummaryView {
            start: rfc3339(trace.start_unix_micros),
            trace_id: trace.trace_id,
            spans: trace.spans,
            root: trace.root,
        })
        .collect()
}

/// One trace's spans kept, as a waterfall.
#[utoipa::path(get, path = "/api/ops/traces/{trace_id}", tag = "ops",
    security(("bearer" = [])),
    params(("trace_id" = String, Path, description = "The trace id: 32 lower-case hex digits")),
    responses(
        (status = 200, description = "The trace's spans, by start", body = TraceView),
        (status = 400, description = "Not a trace id", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No span of it is kept (or this process keeps none)", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn trace(caller: Caller, Path(trace_id): Path<String>) -> Response {
    if let Err(error) = caller.require(Role::Admin) {
        return error.into_response();
    }
    let valid = trace_id.len() == 32
        && trace_id
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && trace_id.bytes().any(|b| b != b'0');
    if !valid {
        return Problem::bad_request("A trace id is 32 lower-case hex digits.").into_response();
    }
    let Some(recent) = recent() else {
        return not_kept();
    };
    let spans = recent.trace(&trace_id);
    if spans.is_empty() {
        return Problem::not_found().into_response();
    }
    Json(waterfall(trace_id, spans)).into_response()
}

fn waterfall(trace_id: String, spans: Vec<RecordedSpan>) -> TraceView {
    let start = spans
        .iter()
        .map(|s| s.start_unix_micros)
        .min()
        .unwrap_or_default();
    let end = spans
        .iter()
        .map(|s| s.start_unix_micros + s.duration_micros)
        .max()
        .unwrap_or(start);
    let mut services: Vec<String> = Vec::new();
    for span in &spans {
        if !services.contains(&span.service) {
            services.push(span.service.clone());
        }
    }
    TraceView {
        trace_id,
        start: rfc3339(start),
        duration_us: end - start,
        services,
        spans: spans
            .into_iter()
            .map(|span| SpanView {
                start_offset_us: span.start_unix_micros - start,
                duration_us: span.duration_micros,
                span_id: span.span_id,
                parent_span_id: span.parent_span_id,
                service: span.service,
                name: span.name,
                kind: span.kind.to_owned(),
                error: span.error,
                attributes: span.attributes.into_iter().collect(),
            })
            .collect(),
    }
}
