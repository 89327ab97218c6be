//! The durable message bus every Agora service stands on.
//!
//! One trait, [`Bus`], with two backends that keep the same semantics (modelled on NATS
//! JetStream): [`embedded`] — a durable log in a SQLite file, in-process, the default —
//! and [`nats`] — NATS JetStream, for multi-process runs.
//!
//! Semantics, for both backends:
//! - subjects are grouped into streams; a publish names a message id and is deduplicated
//!   by it; a publish is acknowledged only once the message is durable;
//! - durable named consumers: every worker that opens the same consumer shares its
//!   messages (a consumer group);
//! - explicit ack, nak with a delay, terminate; a delivery not acked within the
//!   consumer's `ack_wait` is delivered again;
//! - after `max_deliver` failed deliveries a message goes to the dead letters with the
//!   reason and the delivery count; dead letters can be listed and redriven;
//! - a consumer starts from the beginning, a sequence, a time, or new messages only.
//!
//! This crate must never know about events, envelopes or services: it moves bytes.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

pub mod embedded;
pub mod nats;
mod subject;
mod switch;

pub use subject::{subject_matches, validate_subject, validate_subject_pattern};
pub use switch::{BusSwitch, SwitchedBus};

/// The largest payload a publish accepts. Larger messages are refused with
/// [`BusError::PayloadTooLarge`] before anything is written.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Message headers: ordered so that their encoding is deterministic.
pub type Headers = BTreeMap<String, String>;

/// Header names the bus sets on dead-letter and redriven messages.
pub mod header {
    /// On a redriven message: the id of the dead letter it came from.
    pub const REDRIVEN_FROM: &str = "Agora-Redriven-From";
    /// On a redriven message: the message id it had when it was first published.
    pub const ORIGINAL_ID: &str = "Agora-Original-Id";
}

/// A shared handle on a bus backend.
pub type SharedBus = Arc<dyn Bus>;

/// A message to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The deduplication key: publishing the same id twice stores the message once.
    pub id: String,
    pub subject: String,
    pub headers: Headers,
    pub payload: Bytes,
}

impl OutgoingMessage {
    pub fn new(
        id: impl Into<String>,
        subject: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> Self {
        Self {
            id: id.into(),
            subject: subject.into(),
            headers: Headers::new(),
            payload: payload.into(),
        }
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Checks what every backend refuses before writing anything.
    pub fn validate(&self) -> Result<(), BusError> {
        if self.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(BusError::PayloadTooLarge {
                size: self.payload.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        if self.id.is_empty() || self.id.len() > 256 {
            return Err(BusError::InvalidMessage(
                "message id must be 1 to 256 bytes".into(),
            ));
        }
        validate_subject(&self.subject)?;
        for (name, value) in &self.headers {
            let bad_name =
                name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
            if bad_name || value.contains(['\r', '\n']) {
                return Err(BusError::InvalidMessage(format!("invalid header {name:?}")));
            }
        }
        Ok(())
    }
}

/// What a successful publish tells: where the message is, and whether it was a
/// duplicate of a message already stored (in which case nothing new was stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishAck {
    pub stream: String,
    pub sequence: u64,
    pub duplicate: bool,
}

/// A named, durable group of subjects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// Letters, digits, `-` and `_` only.
    pub name: String,
    /// Subject patterns (`orders.*`, `customer.>`): a published subject belongs to the
    /// first stream with a matching pattern.
    pub subjects: Vec<String>,
}

impl StreamConfig {
    pub fn new(
        name: impl Into<String>,
        subjects: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            name: name.into(),
            subjects: subjects.into_iter().map(Into::into).collect(),
        }
    }
}

/// Where a new consumer starts reading its stream. Ignored when the consumer exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeliverPolicy {
    /// From the first message still in the stream.
    #[default]
    All,
    /// From this stream sequence (inclusive).
    FromSequence(u64),
    /// From the first message published at or after this time.
    FromTime(SystemTime),
    /// Only messages published after the consumer is created.
    New,
}

/// A durable named consumer of one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerConfig {
    pub stream: String,
    /// The durable name; letters, digits, `-` and `_` only. Every worker that opens the
    /// same name shares the consumer's messages.
    pub name: String,
    /// Only messages whose subject matches this pattern; all when `None`.
    pub filter_subject: Option<String>,
    pub deliver: DeliverPolicy,
    /// A delivery not acked (or nak'ed) within this time is delivered again.
    pub ack_wait: Duration,
    /// Deliveries after which a failing message goes to the dead letters.
    pub max_deliver: u32,
    /// `Some`: a consumer of one process, not of a group that outlives it (e.g. one per
    /// instance, for state every instance must see): the bus deletes it once no worker
    /// has fetched from it for this long, so that such consumers never pile up after
    /// their processes are gone. On the embedded bus, whose consumers live in its
    /// process, reopening the bus deletes them too. `None`: kept until deleted.
    pub inactive_threshold: Option<Duration>,
}

/// The shortest [`ConsumerConfig::inactive_threshold`]: well above a fetch's wait, so
/// that a worker between two fetches never looks gone.
pub const MIN_INACTIVE_THRESHOLD: Duration = Duration::from_secs(1);

impl ConsumerConfig {
    /// A consumer of every message of `stream`, from the start, with the defaults:
    /// 30 s ack wait, 5 deliveries.
    pub fn new(stream: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            name: name.into(),
            filter_subject: None,
            deliver: DeliverPolicy::All,
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            inactive_threshold: None,
        }
    }

    pub fn filter(mut self, subject_pattern: impl Into<String>) -> Self {
        self.filter_subject = Some(subject_pattern.into());
        self
    }

    pub fn deliver(mut self, policy: DeliverPolicy) -> Self {
        self.deliver = policy;
        self
    }

    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    pub fn max_deliver(mut self, max_deliver: u32) -> Self {
        self.max_deliver = max_deliver;
        self
    }

    /// See [`ConsumerConfig::inactive_threshold`].
    pub fn inactive_threshold(mut self, threshold: Duration) -> Self {
        self.inactive_threshold = Some(threshold);
        self
    }

    pub fn validate(&self) -> Result<(), BusError> {
        validate_name("stream", &self.stream)?;
        validate_name("consumer", &self.name)?;
        if let Some(filter) = &self.filter_subject {
            validate_subject_pattern(filter)?;
        }
        if self.max_deliver == 0 {
            return Err(BusError::InvalidConfig(
                "max_deliver must be at least 1".into(),
            ));
        }
        if self.ack_wait < Duration::from_millis(10) {
            return Err(BusError::InvalidConfig(
                "ack_wait must be at least 10 ms".into(),
            ));
        }
        if self
            .inactive_threshold
            .is_some_and(|threshold| threshold < MIN_INACTIVE_THRESHOLD)
        {
            return Err(BusError::InvalidConfig(format!(
                "inactive_threshold must be at least {MIN_INACTIVE_THRESHOLD:?}"
            )));
        }
        Ok(())
    }
}

/// Checks a stream or consumer name: 1 to 64 letters, digits, `-` or `_`.
pub fn validate_name(what: &str, name: &str) -> Result<(), BusError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(BusError::InvalidConfig(format!(
            "invalid {what} name {name:?}: use 1 to 64 letters, digits, '-' or '_'"
        )))
    }
}

/// Counters of one consumer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConsumerInfo {
    pub stream: String,
    pub name: String,
    /// Messages of the stream not yet delivered to this consumer.
    pub pending: u64,
    /// Messages delivered and not yet acked.
    pub ack_pending: u64,
    /// Messages currently delivered more than once and not yet acked.
    pub redelivered: u64,
    /// Dead letters of this consumer waiting to be redriven.
    pub dead_letters: u64,
}

/// A message that a consumer gave up on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The dead letter's own id, for [`Bus::redrive`].
    pub id: u64,
    pub stream: String,
    pub consumer: String,
    pub stream_sequence: u64,
    pub message_id: String,
    pub subject: String,
    pub headers: Headers,
    pub payload: Bytes,
    pub reason: String,
    pub deliveries: u32,
    /// When it was dead-lettered.
    pub time: SystemTime,
}

/// A message handed to a consumer. Settle it with [`ack`](Self::ack),
/// [`nak`](Self::nak) or [`term`](Self::term); dropped unsettled, it is delivered again
/// after the consumer's ack wait.
pub struct Delivery {
    pub stream: String,
    pub consumer: String,
    pub stream_sequence: u64,
    pub message_id: String,
    pub subject: String,
    pub headers: Headers,
    pub payload: Bytes,
    /// When the message was stored.
    pub published: SystemTime,
    /// When the message's commit completed, where the backend knows it: the embedded
    /// bus stamps messages it delivers from memory once their transaction is durable;
    /// JetStream's stored time stands for it on NATS. `None` for history read back
    /// from disk. Measures commit-to-consumer latency.
    pub committed: Option<SystemTime>,
    /// 1 on the first delivery.
    pub deliveries: u32,
    /// The consumer's max deliveries: when `deliveries == max_deliver`, a nak
    /// dead-letters the message.
    pub max_deliver: u32,
    acker: Box<dyn Acker>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .field("stream_sequence", &self.stream_sequence)
            .field("message_id", &self.message_id)
            .field("subject", &self.subject)
            .field("deliveries", &self.deliveries)
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

/// Everything a backend needs to build a [`Delivery`], besides its acker.
#[derive(Clone, Debug)]
pub struct DeliveryParts {
    pub stream: String,
    pub consumer: String,
    pub stream_sequence: u64,
    pub message_id: String,
    pub subject: String,
    pub headers: Headers,
    pub payload: Bytes,
    pub published: SystemTime,
    pub committed: Option<SystemTime>,
    pub deliveries: u32,
    pub max_deliver: u32,
}

impl Delivery {
    /// For backends: joins a message with the handle that settles it.
    pub fn new(parts: DeliveryParts, acker: Box<dyn Acker>) -> Self {
        let DeliveryParts {
            stream,
            consumer,
            stream_sequence,
            message_id,
            subject,
            headers,
            payload,
            published,
            committed,
            deliveries,
            max_deliver,
        } = parts;
        Self {
            stream,
            consumer,
            stream_sequence,
            message_id,
            subject,
            headers,
            payload,
            published,
            committed,
            deliveries,
            max_deliver,
            acker,
        }
    }

    /// Done: never deliver this message to this consumer again.
    pub async fn ack(self) -> Result<(), BusError> {
        self.acker.ack().await
    }

    /// This attempt failed because of `reason`: deliver again after `delay`, or, when
    /// this was the last allowed delivery, move the message to the dead letters with
    /// `reason`.
    pub async fn nak(self, delay: Duration, reason: &str) -> Result<(), BusError> {
        self.acker.nak(delay, reason).await
    }

    /// Give up now: move the message to the dead letters with `reason`.
    pub async fn term(self, reason: &str) -> Result<(), BusError> {
        self.acker.term(reason).await
    }

    /// Still working on it: the ack wait starts again from now, so the message is not
    /// delivered again meanwhile (and no delivery is counted).
    pub async fn progress(&self) -> Result<(), BusError> {
        self.acker.progress().await
    }

    /// Whether a failure now would dead-letter the message.
    pub fn is_last_attempt(&self) -> bool {
        self.deliveries >= self.max_deliver
    }
}

/// How a backend settles one delivery.
#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(&self) -> Result<(), BusError>;
    async fn nak(&self, delay: Duration, reason: &str) -> Result<(), BusError>;
    async fn term(&self, reason: &str) -> Result<(), BusError>;
    /// Restarts the delivery's ack wait.
    async fn progress(&self) -> Result<(), BusError>;
}

/// A handle on a durable consumer. Clone the `Arc` (or open the consumer again) to add
/// workers: all of them share the consumer's messages.
#[async_trait]
pub trait Consumer: Send + Sync {
    /// Up to `max` deliveries; waits up to `wait` for the first one and returns an
    /// empty batch when none came.
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError>;

    async fn info(&self) -> Result<ConsumerInfo, BusError>;
}

/// A durable message bus. See the crate documentation for the semantics.
#[async_trait]
pub trait Bus: Send + Sync {
    /// Creates the stream, or updates its subjects; idempotent.
    async fn ensure_stream(&self, config: &StreamConfig) -> Result<(), BusError>;

    /// Publishes one message; returns once it is durable.
    async fn publish(&self, message: OutgoingMessage) -> Result<PublishAck, BusError>;

    /// Publishes messages in order, pipelined; returns once all are durable. Either
    /// every message is validated and published, or an error is returned (some of the
    /// messages may then be stored: publishing them again is safe, by their ids).
    async fn publish_batch(
        &self,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<PublishAck>, BusError>;

    /// Opens a durable consumer, creating it if needed; idempotent. An existing
    /// consumer keeps its position; its ack wait and max deliveries are updated.
    async fn consumer(&self, config: &ConsumerConfig) -> Result<Arc<dyn Consumer>, BusError>;

    /// Deletes a consumer and its position (not its dead letters).
    async fn delete_consumer(&self, stream: &str, name: &str) -> Result<(), BusError>;

    /// The sequence of the last message of a stream (0 when empty).
    async fn last_sequence(&self, stream: &str) -> Result<u64, BusError>;

    /// Every durable consumer with its counts, for the ops console: on NATS every
    /// consumer of every stream; on the embedded bus (in-process) the consumers opened
    /// since it was opened.
    async fn consumers(&self) -> Result<Vec<ConsumerInfo>, BusError>;

    /// All dead letters, oldest first.
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError>;

    /// Publishes a dead letter again, to its original subject, with a new message id
    /// (so deduplication lets it through) and the [`header::REDRIVEN_FROM`] and
    /// [`header::ORIGINAL_ID`] headers, and removes it from the dead letters.
    async fn redrive(&self, dead_letter_id: u64) -> Result<PublishAck, BusError>;
}

/// The message id a redriven dead letter is published with.
pub fn redrive_message_id(original_id: &str, dead_letter_id: u64) -> String {
    format!("{original_id}~redrive-{dead_letter_id}")
}

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("payload of {size} bytes is larger than the {max} bytes a message may carry")]
    PayloadTooLarge { size: usize, max: usize },
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    #[error("invalid subject {subject:?}: {why}")]
    InvalidSubject { subject: String, why: &'static str },
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("no stream takes subject {0:?}")]
    NoStream(String),
    #[error("stream {0:?} does not exist")]
    StreamNotFound(String),
    #[error("consumer {stream}/{name} does not exist")]
    ConsumerNotFound { stream: String, name: String },
    #[error("dead letter {0} does not exist")]
    DeadLetterNotFound(u64),
    #[error("the bus is unavailable: {0}")]
    Unavailable(String),
    #[error("the bus is closed")]
    Closed,
    #[error("storage failed: {0}")]
    Storage(String),
}

impl BusError {
    /// Whether trying the same operation again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, BusError::Unavailable(_) | BusError::Storage(_))
    }
}
