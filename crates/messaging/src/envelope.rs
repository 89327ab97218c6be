//! The CloudEvents-shaped envelope every event travels in, and how it maps onto the bus.

use agora_bus::{OutgoingMessage, StreamConfig};
use agora_contracts::Event;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Error;

/// Bus headers copied from the envelope, so that routing and tracing need not parse the
/// payload.
pub mod header {
    pub const CE_TYPE: &str = "ce-type";
    pub const CE_ID: &str = "ce-id";
    pub const TRACEPARENT: &str = "traceparent";
}

pub const SPEC_VERSION: &str = "1.0";
pub const JSON: &str = "application/json";

/// One event, in CloudEvents JSON structured mode: this is the bus payload.
///
/// Decoding ignores unknown fields, so producers may add extensions and data fields
/// without breaking consumers (a breaking change is a new event type).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub specversion: String,
    /// UUIDv7: unique, and roughly ordered by creation time. Also the bus message id
    /// (deduplication) and the inbox key.
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The service that owns the aggregate.
    pub source: String,
    /// The aggregate id.
    pub subject: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    #[serde(default = "json_content_type")]
    pub datacontenttype: String,
    /// The order or user the whole flow is about.
    #[serde(rename = "correlationid")]
    pub correlation_id: String,
    /// The id of the envelope (or the request) that caused this event.
    #[serde(
        rename = "causationid",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub causation_id: Option<String>,
    /// W3C trace context of the operation that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The event itself; it carries the aggregate's `version`.
    pub data: serde_json::Value,
}

fn json_content_type() -> String {
    JSON.to_owned()
}

/// What an event is about and where it comes from, beyond its data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub traceparent: Option<String>,
}

impl Context {
    /// The context of the first event of a flow, e.g. one caused by an HTTP request.
    pub fn new(correlation_id: impl Into<String>) -> Self {
        Self {
            correlation_id: correlation_id.into(),
            causation_id: None,
            traceparent: None,
        }
    }

    pub fn with_causation(mut self, causation_id: impl Into<String>) -> Self {
        self.causation_id = Some(causation_id.into());
        self
    }

    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// The context of an event emitted while handling `cause`: same flow (correlation
    /// id) and trace, caused by `cause`.
    pub fn caused_by(cause: &Envelope) -> Self {
        Self {
            correlation_id: cause.correlation_id.clone(),
            causation_id: Some(cause.id.to_string()),
            traceparent: cause.traceparent.clone(),
        }
    }
}

impl Envelope {
    /// Wraps `event` with a fresh id and the current time.
    ///
    /// Its `traceparent` is the one place where events join traces: the context of
    /// the event's producer span (`create <source>.<type>`,
    /// [`agora_telemetry::trace::producer_span`]), a child of the current span (the
    /// request, or the delivery being handled, whose transaction writes the event) or
    /// else of `context.traceparent`. Without a tracer it is `context.traceparent`.
    pub fn new<E: Event>(event: &E, context: &Context) -> Result<Envelope, Error> {
        let data = serde_json::to_value(event).map_err(|e| Error::Encode(e.to_string()))?;
        let subject = format!("{}.{}", E::SOURCE, E::TYPE);
        let traceparent = agora_telemetry::trace::producer_span(
            E::SOURCE,
            &subject,
            &context.correlation_id,
            context.traceparent.as_deref(),
        )
        .or_else(|| context.traceparent.clone());
        Ok(Envelope {
            specversion: SPEC_VERSION.to_owned(),
            id: Uuid::now_v7(),
            event_type: E::TYPE.to_owned(),
            source: E::SOURCE.to_owned(),
            subject: event.subject(),
            time: OffsetDateTime::now_utc(),
            datacontenttype: JSON.to_owned(),
            correlation_id: context.correlation_id.clone(),
            causation_id: context.causation_id.clone(),
            traceparent,
            data,
        })
    }

    /// Whether this envelope holds an `E`.
    pub fn is<E: Event>(&self) -> bool {
        self.event_type == E::TYPE && self.source == E::SOURCE
    }

    /// The event, if this envelope holds an `E` whose data decodes.
    pub fn decode<E: Event>(&self) -> Result<E, Error> {
        if !self.is::<E>() {
            return Err(Error::WrongEventType {
                expected: format!("{}/{}", E::SOURCE, E::TYPE),
                found: format!("{}/{}", self.source, self.event_type),
            });
        }
        E::deserialize(&self.data).map_err(|e| Error::Decode(e.to_string()))
    }

    /// The context for events emitted while handling this one.
    pub fn context_for_effects(&self) -> Context {
        Context::caused_by(self)
    }

    /// `{source}.{type}`, as [`agora_contracts::bus_subject`] names it.
    pub fn bus_subject(&self) -> String {
        format!("{}.{}", self.source, self.event_type)
    }

    /// The bus payload: the envelope as JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(self).map_err(|e| Error::Encode(e.to_string()))
    }

    /// Parses a bus payload. Errors name the problem, never quote the payload.
    pub fn from_json(payload: &[u8]) -> Result<Envelope, Error> {
        let envelope: Envelope =
            serde_json::from_slice(payload).map_err(|e| Error::Decode(e.to_string()))?;
        if !envelope.specversion.starts_with("1.") {
            return Err(Error::Decode(format!(
                "unsupported CloudEvents specversion {:?}",
                envelope.specversion
            )));
        }
        Ok(envelope)
    }

    /// The bus message: id = envelope id (so the bus deduplicates republished events),
    /// subject = `{source}.{type}`, a few headers, the JSON envelope as payload.
    /// Validated, so that a message the bus would refuse is refused before it is
    /// committed to an outbox.
    pub fn to_message(&self) -> Result<OutgoingMessage, Error> {
        let mut message =
            OutgoingMessage::new(self.id.to_string(), self.bus_subject(), self.to_json()?)
                .with_header(header::CE_TYPE, self.event_type.clone())
                .with_header(header::CE_ID, self.id.to_string());
        if let Some(traceparent) = &self.traceparent {
            message = message.with_header(header::TRACEPARENT, traceparent.clone());
        }
        message.validate()?;
        Ok(message)
    }
}

/// The stream that holds every event of one source service: named after it in upper
/// case (`ordering` → `ORDERING`), with the subjects `{source}.>`.
pub fn stream_config(source: &str) -> StreamConfig {
    StreamConfig::new(source.to_uppercase(), [format!("{source}.>")])
}
