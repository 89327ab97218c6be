//! How `agora` logs, on standard error: text for people (the default) or JSON lines
//! (`AGORA_LOG_FORMAT=json`), filtered by `RUST_LOG` when it is set.
//!
//! Without `RUST_LOG` the console is quiet: warnings and errors, and the few lines a
//! person needs, written to the [`CONSOLE`] target (one line per service when it is
//! up, and the shutdown). `RUST_LOG=info` (or `debug`, or any `tracing` directive)
//! brings the detail back.
//!
//! A span that handles a request or a delivery records a `trace_id` and a `span_id`
//! (see [`agora_telemetry::trace`]). Such spans are always on, whatever the filter, so
//! that a warning inside one carries its trace; a JSON line also has the innermost
//! span's `trace_id` and `span_id` at its top level, beside its fields and its spans.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use agora_messaging::trace::{is_span_id, is_trace_id};
use anyhow::bail;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::filter::{EnvFilter, FilterExt as _, filter_fn};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The target of the lines the quiet console shows at INFO.
pub const CONSOLE: &str = "agora::console";

/// What the console shows without `RUST_LOG`: warnings, errors and [`CONSOLE`].
pub const QUIET: &str = "warn,agora::console=info";

/// The variable that picks the format.
pub const FORMAT_VARIABLE: &str = "AGORA_LOG_FORMAT";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One line per event, for people.
    #[default]
    Text,
    /// One JSON object per line, for machines.
    Json,
}

impl LogFormat {
    /// The format `value` names (`text` or `json`; unset or empty is `text`).
    pub fn parse(value: Option<&str>) -> anyhow::Result<LogFormat> {
        match value.map(str::trim) {
            None | Some("") => Ok(LogFormat::Text),
            Some(v) if v.eq_ignore_ascii_case("text") => Ok(LogFormat::Text),
            Some(v) if v.eq_ignore_ascii_case("json") => Ok(LogFormat::Json),
            Some(other) => {
                bail!("{FORMAT_VARIABLE} is {other:?}: it must be `text` or `json`")
            }
        }
    }

    /// The format `AGORA_LOG_FORMAT` names.
    pub fn from_env() -> anyhow::Result<LogFormat> {
        match std::env::var(FORMAT_VARIABLE) {
            Ok(value) => LogFormat::parse(Some(&value)),
            Err(std::env::VarError::NotPresent) => Ok(LogFormat::Text),
            Err(std::env::VarError::NotUnicode(_)) => {
                bail!("{FORMAT_VARIABLE} is not valid UTF-8: it must be `text` or `json`")
            }
        }
    }
}

/// The filter `RUST_LOG` names, or `default` when it is unset or empty. A value that
/// is not a filter is refused (silently logging less than asked would hide the very
/// lines someone set it for).
pub fn filter_from_env(default: &str) -> anyhow::Result<EnvFilter> {
    match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(value) if !value.trim().is_empty() => EnvFilter::try_new(&value).map_err(|e| {
            anyhow::anyhow!("RUST_LOG is {value:?}: {e} (e.g. `info`, `agora_ordering=debug`)")
        }),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(EnvFilter::new(default)),
        Err(std::env::VarError::NotUnicode(_)) => bail!("RUST_LOG is not valid UTF-8"),
    }
}

/// Installs the process's logger with `filter` (see [`filter_from_env`]).
pub fn init(format: LogFormat, filter: EnvFilter) {
    // Spans that carry a trace are on even when their level is filtered out.
    let filter = filter.or(filter_fn(carries_a_trace));
    // Spans of `agora_telemetry::trace::TARGET` also become OpenTelemetry spans, once a
    // tracer is installed (`agora_telemetry::trace::install`).
    let registry = tracing_subscriber::registry()
        .with(agora_telemetry::trace::layer())
        .with(TraceIds.with_filter(filter_fn(carries_a_trace)));
    match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_filter(filter),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .fmt_fields(JsonFields::new())
                    .event_format(JsonWithTrace(
                        tracing_subscriber::fmt::format()
                            .json()
                            .with_current_span(false)
                            .with_span_list(true),
                    ))
                    .with_filter(filter),
            )
            .init(),
    }
}

/// A span that records a trace id.
fn carries_a_trace(metadata: &Metadata<'_>) -> bool {
    metadata.is_span() && metadata.fields().field("trace_id").is_some()
}

/// The `trace_id` and `span_id` a span recorded (valid ids only), in its extensions.
#[derive(Debug, Clone, Default)]
struct TraceIdsOf {
    trace_id: Option<String>,
    span_id: Option<String>,
}

impl Visit for TraceIdsOf {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "trace_id" if is_trace_id(value) => self.trace_id = Some(value.to_owned()),
            "span_id" if is_span_id(value) => self.span_id = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if matches!(field.name(), "trace_id" | "span_id") {
            // `%id` fields come here; their Debug is their Display.
            self.record_str(field, &format!("{value:?}"));
        }
    }
}

/// Keeps each traced span's ids where the JSON formatter finds them.
struct TraceIds;

impl<S> Layer<S> for TraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut ids = TraceIdsOf::default();
        attrs.record(&mut ids);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(ids);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut extensions = span.extensions_mut();
            if let Some(ids) = extensions.get_mut::<TraceIdsOf>() {
                values.record(ids);
            }
        }
    }
}

/// tracing-subscriber's JSON lines, with the `trace_id` and `span_id` of the innermost
/// span that has them first.
struct JsonWithTrace(Format<Json>);

impl<S, N> FormatEvent<S, N> for JsonWithTrace
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let ids = ctx.event_scope().and_then(|scope| {
            scope.into_iter().find_map(|span| {
                let extensions = span.extensions();
                let ids = extensions.get::<TraceIdsOf>()?;
                ids.trace_id.as_ref().map(|_| ids.clone())
            })
        });
        match (ids, line.strip_prefix('{')) {
            (Some(ids), Some(rest)) => {
                // Both are hex digits (checked when recorded): nothing to escape.
                let mut head = String::from("{");
                if let Some(trace_id) = &ids.trace_id {
                    write!(head, "\"trace_id\":\"{trace_id}\",")?;
                }
                if let Some(span_id) = &ids.span_id {
                    write!(head, "\"span_id\":\"{span_id}\",")?;
                }
                writer.write_str(&head)?;
                writer.write_str(rest)
            }
            _ => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_is_text_or_json_and_nothing_else() {
        assert_eq!(LogFormat::parse(None).unwrap(), LogFormat::Text);
        assert_eq!(LogFormat::parse(Some("")).unwrap(), LogFormat::Text);
        assert_eq!(LogFormat::parse(Some("text")).unwrap(), LogFormat::Text);
        assert_eq!(LogFormat::parse(Some("JSON")).unwrap(), LogFormat::Json);
        assert_eq!(LogFormat::parse(Some(" json ")).unwrap(), LogFormat::Json);
        let error = LogFormat::parse(Some("yaml")).unwrap_err().to_string();
        assert!(error.contains("AGORA_LOG_FORMAT"), "{error}");
        assert!(error.contains("yaml"), "{error}");
        assert!(error.contains("`text` or `json`"), "{error}");
    }
}
