//! The last spans of the process, in memory: what the ops console draws an order's
//! trace from in `agora up`, with or without an OTLP collector. Bounded by a number of
//! spans: the oldest go first.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{Context, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use parking_lot::Mutex;

use super::{CORRELATION_ATTRIBUTE, SERVICE_ATTRIBUTE};

/// How many spans `agora up` keeps by default (a checkout's trace has about 45).
pub const DEFAULT_CAPACITY: usize = 20_000;

/// One finished span, as the waterfall needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedSpan {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// `None` for the root of the trace.
    pub parent_span_id: Option<String>,
    pub service: String,
    /// `POST /api/ordering/orders`, `process ordering.OrderAccepted`, …
    pub name: String,
    /// `server`, `client`, `producer`, `consumer` or `internal`.
    pub kind: &'static str,
    /// Since the Unix epoch.
    pub start_unix_micros: u64,
    pub duration_micros: u64,
    pub error: bool,
    /// The order or user it is about, for messages.
    pub correlation_id: Option<String>,
    /// A few attributes worth showing (route, status, destination, consumer).
    pub attributes: Vec<(String, String)>,
}

/// The attributes a [`RecordedSpan`] keeps, besides the service and the correlation id.
const SHOWN: [&str; 6] = [
    "http.request.method",
    "http.route",
    "http.response.status_code",
    "messaging.destination.name",
    "messaging.consumer.group.name",
    "deliveries",
];

/// A trace of [`Recent::traces_about`]: its id, when it began, how many spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSummary {
    pub trace_id: String,
    pub start_unix_micros: u64,
    pub spans: usize,
    /// The name of its earliest span.
    pub root: String,
}

/// The bounded store of recent spans.
#[derive(Debug)]
pub struct Recent {
    capacity: usize,
    spans: Mutex<VecDeque<RecordedSpan>>,
}

static RECENT: OnceLock<Recent> = OnceLock::new();

/// The process's store, if [`super::install`] was asked to keep spans.
pub fn recent() -> Option<&'static Recent> {
    RECENT.get()
}

/// Sets up the process's store (once) and returns the processor that fills it.
pub(crate) fn processor(capacity: usize) -> RecentProcessor {
    let _ = RECENT.set(Recent {
        capacity: capacity.max(1),
        spans: Mutex::new(VecDeque::new()),
    });
    RecentProcessor
}

impl Recent {
    /// The spans of `trace_id` still kept, earliest first.
    pub fn trace(&self, trace_id: &str) -> Vec<RecordedSpan> {
        let mut spans: Vec<RecordedSpan> = self
            .spans
            .lock()
            .iter()
            .filter(|span| span.trace_id == trace_id)
            .cloned()
            .collect();
        spans.sort_by_key(|span| span.start_unix_micros);
        spans
    }

    /// The traces with a span about `correlation_id` (an event of that order or user),
    /// earliest first, at most `limit`.
    pub fn traces_about(&self, correlation_id: &str, limit: usize) -> Vec<TraceSummary> {
        let spans = self.spans.lock();
        let mut ids: Vec<&str> = Vec::new();
        for span in spans.iter() {
            if span.correlation_id.as_deref() == Some(correlation_id)
                && !ids.contains(&span.trace_id.as_str())
            {
                ids.push(&span.trace_id);
            }
        }
        let mut traces: Vec<TraceSummary> = ids
            .into_iter()
            .map(|id| {
                let mut summary = TraceSummary {
                    trace_id: id.to_owned(),
                    start_unix_micros: u64::MAX,
                    spans: 0,
                    root: String::new(),
                };
                for span in spans.iter().filter(|span| span.trace_id == id) {
                    summary.spans += 1;
                    if span.start_unix_micros < summary.start_unix_micros {
                        summary.start_unix_micros = span.start_unix_micros;
                        summary.root = span.name.clone();
                    }
                }
                summary
            })
            .collect();
        traces.sort_by_key(|trace| trace.start_unix_micros);
        traces.truncate(limit);
        traces
    }

    fn push(&self, span: RecordedSpan) {
        let mut spans = self.spans.lock();
        if spans.len() >= self.capacity {
            spans.pop_front();
        }
        spans.push_back(span);
    }
}

/// The span processor that keeps every finished span in [`recent`].
#[derive(Debug)]
pub(crate) struct RecentProcessor;

impl SpanProcessor for RecentProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if let Some(recent) = RECENT.get() {
            recent.push(record(&span));
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

fn micros_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.as_str().to_owned(),
        other => other.to_string(),
    }
}

fn record(span: &SpanData) -> RecordedSpan {
    let mut service = String::from("unknown");
    let mut correlation_id = None;
    let mut attributes = Vec::new();
    for kv in &span.attributes {
        let key = kv.key.as_str();
        if key == SERVICE_ATTRIBUTE {
            service = text(&kv.value);
        } else if key == CORRELATION_ATTRIBUTE || key == "correlation_id" {
            correlation_id = Some(text(&kv.value));
        } else if SHOWN.contains(&key) {
            attributes.push((key.to_owned(), text(&kv.value)));
        }
    }
    let start = micros_since_epoch(span.start_time);
    RecordedSpan {
        trace_id: span.span_context.trace_id().to_string(),
        span_id: span.span_context.span_id().to_string(),
        parent_span_id: (span.parent_span_id != opentelemetry::trace::SpanId::INVALID)
            .then(|| span.parent_span_id.to_string()),
        service,
        name: span.name.to_string(),
        kind: match span.span_kind {
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
            SpanKind::Internal => "internal",
        },
        start_unix_micros: start,
        duration_micros: micros_since_epoch(span.end_time).saturating_sub(start),
        error: matches!(span.status, Status::Error { .. }),
        correlation_id,
        attributes,
    }
}
