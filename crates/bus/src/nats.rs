//! NATS JetStream backend of the [`Bus`]: the same semantics as the embedded backend, on a
//! `nats-server -js`, for runs with several processes or machines.
//!
//! How the bus maps onto JetStream:
//! - a stream is a JetStream stream on file storage; a publish carries its id in
//!   `Nats-Msg-Id`, so JetStream's duplicate window deduplicates it, and is acknowledged
//!   by JetStream once stored;
//! - a consumer is a durable pull consumer with explicit acks; [`Consumer::fetch`] sends a
//!   one-shot pull request that waits for the first message and then takes what is ready,
//!   so nothing is pulled that is not handed out at once (a message pulled but left in a
//!   buffer would run down its ack wait there). Each consumer handle keeps one
//!   subscription for the replies, and its workers pull in turn;
//! - ack and nak are plain JetStream acks: written to the connection, not confirmed by
//!   the server. A lost one (connection cut, server crash) only means the message is delivered again after its ack wait,
//!   which at-least-once delivery (and the inbox) already allows; a server stopped
//!   gracefully keeps every ack it got. A single JetStream server also writes consumer
//!   state to disk lazily (nats-server 2.9: at most every 100 ms), so a crash may bring
//!   back acked messages all the same, never lose an unacked one. Dead-lettering is
//!   confirmed at every step (see below);
//! - dead letters are messages of the `AGORA_DLQ` stream, one subject per consumer
//!   (`agora.dlq.<stream>.<consumer>`), with the original payload and headers plus
//!   `Agora-Dlq-*` metadata headers; a dead letter's id is its sequence in that stream.
//!
//! JetStream counts deliveries, but dead-lettering is ours: the JetStream consumer has no
//! delivery limit, a nak or term on the last allowed attempt dead-letters the message,
//! and a delivery past `max_deliver` (a last attempt whose ack wait expired) is
//! dead-lettered by `fetch` instead of being handed out. With no server-side limit, a
//! message never gets stuck between "JetStream gave up" and "it is in the dead letters":
//! if dead-lettering fails, the message simply comes back and is tried again. Both steps
//! wait for the server: the dead letter's publish for its storage ack, the term for its
//! confirmation.
//!
//! Stream and consumer information goes through the raw JetStream API
//! ([`jetstream::Context::request`]) because the typed helpers fold "stream not found"
//! into a generic request error, and the bus must tell that case apart.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::pull::BatchConfig;
use async_nats::jetstream::context::{
    CreateStreamError, CreateStreamErrorKind, PublishAckFuture, PublishError, PublishErrorKind,
};
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::response::Response;
use async_nats::jetstream::stream::{
    ConsumerError, ConsumerErrorKind, RawMessageError, RawMessageErrorKind,
};
use async_nats::jetstream::{self, AckKind, ErrorCode, consumer, stream};
use async_nats::{HeaderMap, HeaderName, StatusCode};
use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

use crate::{
    Acker, Bus, BusError, Consumer, ConsumerConfig, ConsumerInfo, DeadLetter, DeliverPolicy,
    Delivery, DeliveryParts, Headers, MAX_PAYLOAD_BYTES, OutgoingMessage, PublishAck, StreamConfig,
    header, redrive_message_id, validate_name, validate_subject_pattern,
};

/// The stream holding every dead letter.
const DLQ_STREAM: &str = "AGORA_DLQ";
/// Dead letters of consumer `c` of stream `s` are published to `agora.dlq.s.c`.
const DLQ_SUBJECT_PREFIX: &str = "agora.dlq";
/// How long the dead-letter stream remembers ids. Dead-lettering again after a crash
/// (before the term) happens one ack wait later, so this must outlast any ack wait.
const DLQ_DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// The metadata a dead letter carries next to the original headers.
mod dlq_header {
    /// Percent-encoded (see `encode_reason`): a reason may hold line breaks.
    pub const REASON: &str = "Agora-Dlq-Reason";
    pub const DELIVERIES: &str = "Agora-Dlq-Deliveries";
    pub const SUBJECT: &str = "Agora-Dlq-Subject";
    pub const MESSAGE_ID: &str = "Agora-Dlq-Message-Id";
    pub const STREAM: &str = "Agora-Dlq-Stream";
    pub const CONSUMER: &str = "Agora-Dlq-Consumer";
    pub const STREAM_SEQUENCE: &str = "Agora-Dlq-Stream-Sequence";
    /// Every metadata header starts with this: none of them is copied into a redrive.
    pub const PREFIX: &str = "Agora-Dlq-";
}

/// Publishes in flight (sent, ack not yet received) across the whole bus. The JetStream
/// context gets the same limit, so a publish that holds one of our slots always finds a
/// context permit and never waits for one while holding others.
const PUBLISH_SLOTS: usize = 4096;
/// A batch is sent in windows of this many messages: all sent, then all acks awaited.
const PUBLISH_WINDOW: usize = 1024;
/// Deliveries of one consumer out and not yet acked, across all its workers, beyond which
/// JetStream delivers no more (its default, 1000, is one batch: a worker fetching 1000
/// would wait for the acks of the last batch to land before getting the next).
const MAX_ACK_PENDING: i64 = 20_000;
/// How long after its expiry a pull request is given for the server's closing status
/// before the client stops listening (the server is gone, or the status got lost).
const PULL_GRACE: Duration = Duration::from_secs(1);
/// The pause before pulling again when a pull ended early with nothing to hand out.
const PULL_RETRY_PAUSE: Duration = Duration::from_millis(10);

/// A [`Bus`] on NATS JetStream.
pub struct NatsBus {
    inner: Arc<Inner>,
}

impl fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBus").finish_non_exhaustive()
    }
}

/// What the bus, its consumers and their ackers share.
struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    dlq: stream::Stream<()>,
    publish_slots: Semaphore,
    options: NatsOptions,
    /// The subject patterns of the streams this bus made sure of: a publish to one of
    /// them that nobody answers met a stream between leaders, not a missing stream.
    known_subjects: parking_lot::RwLock<Vec<String>>,
}

/// How the bus creates its streams on JetStream: durability is stated, not left to
/// the server's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatsOptions {
    /// Copies of each stream (1 on a single server; 3 in a 3-node cluster: a publish is
    /// acknowledged once a majority stored it, so losing one node loses nothing
    /// acknowledged).
    pub replicas: usize,
    /// How long JetStream remembers a message id to drop a duplicate publish: longer
    /// than any relay takes to publish a row again after a crash.
    pub duplicate_window: Duration,
}

/// The default [`NatsOptions::duplicate_window`]: 2 minutes (JetStream's own default,
/// set explicitly).
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

impl Default for NatsOptions {
    /// One replica, a 2-minute duplicate window.
    fn default() -> Self {
        Self {
            replicas: 1,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
        }
    }
}

impl NatsBus {
    /// Connects to the NATS server at `url` with [`NatsOptions::default`].
    pub async fn connect(url: &str) -> Result<NatsBus, BusError> {
        Self::connect_with(url, NatsOptions::default()).await
    }

    /// Connects to the NATS server at `url` (or to the members of a cluster: their URLs
    /// separated by commas) and makes sure the
    /// dead-letter stream exists, with `options.replicas` copies.
    pub async fn connect_with(url: &str, options: NatsOptions) -> Result<NatsBus, BusError> {
        if options.replicas == 0 || options.replicas > 5 {
            return Err(BusError::InvalidConfig(
                "a JetStream stream has 1 to 5 replicas".into(),
            ));
        }
        let client = async_nats::ConnectOptions::new()
            .name("agora-bus")
            // A cluster's members, comma-separated: the client fails over between them.
            .connect(
                url.split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .collect::<Vec<&str>>(),
            )
            .await
            // The kind only: the error text may quote the URL, and a URL may hold a password.
            .map_err(|e| unavailable(format!("cannot connect to NATS: {}", e.kind())))?;
        let js = jetstream::ContextBuilder::new()
            .max_ack_inflight(PUBLISH_SLOTS)
            .build(client.clone());
        let dlq = js
            .get_stream_no_info(DLQ_STREAM)
            .await
            .map_err(|e| unavailable(format!("dead-letter stream: {e}")))?;
        let inner = Inner {
            client,
            js,
            dlq,
            publish_slots: Semaphore::new(PUBLISH_SLOTS),
            known_subjects: parking_lot::RwLock::new(Vec::new()),
            options,
        };
        inner
            .ensure_stream(stream::Config {
                duplicate_window: DLQ_DUPLICATE_WINDOW,
                ..inner.stream_config(DLQ_STREAM, &[format!("{DLQ_SUBJECT_PREFIX}.>")])
            })
            .await?;
        Ok(NatsBus {
            inner: Arc::new(inner),
        })
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn ensure_stream(&self, config: &StreamConfig) -> Result<(), BusError> {
        validate_name("stream", &config.name)?;
        if config.name == DLQ_STREAM {
            return Err(BusError::InvalidConfig(format!(
                "stream name {DLQ_STREAM:?} is reserved for dead letters"
            )));
        }
        if config.subjects.is_empty() {
            // JetStream would default the subjects to the stream's name.
            return Err(BusError::InvalidConfig(format!(
                "stream {:?} needs at least one subject pattern",
                config.name
            )));
        }
        for pattern in &config.subjects {
            validate_subject_pattern(pattern)?;
        }
        self.inner
            .ensure_stream(self.inner.stream_config(&config.name, &config.subjects))
            .await
    }

    async fn publish(&self, message: OutgoingMessage) -> Result<PublishAck, BusError> {
        self.inner.publish_one(message).await
    }

    async fn publish_batch(
        &self,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<PublishAck>, BusError> {
        self.inner.publish(&messages).await
    }

    async fn consumer(&self, config: &ConsumerConfig) -> Result<Arc<dyn Consumer>, BusError> {
        config.validate()?;
        let info = self.inner.open_consumer(config).await?;
        Ok(Arc::new(NatsConsumer {
            inner: self.inner.clone(),
            ident: Arc::new(ConsumerIdent {
                stream: config.stream.clone(),
                name: config.name.clone(),
                max_deliver: config.max_deliver,
                created: unix_nanos(SystemTime::from(info.created)),
            }),
            next_subject: format!(
                "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
                config.stream, config.name
            ),
            puller: Mutex::new(Puller {
                inbox: self.inner.client.new_inbox(),
                replies: None,
                requests: 0,
            }),
        }))
    }

    async fn delete_consumer(&self, stream: &str, name: &str) -> Result<(), BusError> {
        validate_name("stream", stream)?;
        validate_name("consumer", name)?;
        self.inner
            .js
            .delete_consumer_from_stream(name, stream)
            .await
            .map_err(|e| consumer_error(e, stream, name))?;
        Ok(())
    }

    async fn last_sequence(&self, stream: &str) -> Result<u64, BusError> {
        validate_name("stream", stream)?;
        Ok(self.inner.stream_info(stream).await?.state.last_sequence)
    }

    async fn consumers(&self) -> Result<Vec<ConsumerInfo>, BusError> {
        let mut names = Vec::new();
        let mut listed = self.inner.js.stream_names();
        while let Some(name) = listed.next().await {
            let name = name.map_err(|e| unavailable(format!("cannot list streams: {e}")))?;
            if name != DLQ_STREAM {
                names.push(name);
            }
        }
        names.sort();
        let mut infos = Vec::new();
        for stream in names {
            let handle = match self.inner.js.get_stream_no_info(&stream).await {
                Ok(handle) => handle,
                Err(error) => return Err(unavailable(format!("cannot list consumers: {error}"))),
            };
            let mut consumers = handle.consumers();
            while let Some(info) = consumers.next().await {
                let info = info.map_err(|e| unavailable(format!("cannot list consumers: {e}")))?;
                let dead_letters = self.inner.dead_letter_count(&stream, &info.name).await?;
                infos.push(ConsumerInfo {
                    stream: stream.clone(),
                    name: info.name.clone(),
                    pending: info.num_pending,
                    ack_pending: info.num_ack_pending as u64,
                    redelivered: info.num_redelivered as u64,
                    dead_letters,
                });
            }
        }
        infos.sort_by(|a, b| (&a.stream, &a.name).cmp(&(&b.stream, &b.name)));
        Ok(infos)
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError> {
        let every_letter = format!("{DLQ_SUBJECT_PREFIX}.>");
        let mut letters = Vec::new();
        let mut from = 1;
        // "The next message at or after `from`" skips the holes redrives leave.
        loop {
            match self
                .inner
                .dlq
                .get_first_raw_message_by_subject(&every_letter, from)
                .await
            {
                Ok(stored) => {
                    from = stored.sequence + 1;
                    letters.push(dead_letter_from(stored));
                }
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(letters),
                Err(e) => return Err(raw_message_error(e)),
            }
        }
    }

    async fn redrive(&self, dead_letter_id: u64) -> Result<PublishAck, BusError> {
        let stored = match self.inner.dlq.get_raw_message(dead_letter_id).await {
            Ok(stored) => stored,
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => {
                return Err(BusError::DeadLetterNotFound(dead_letter_id));
            }
            Err(e) => return Err(raw_message_error(e)),
        };
        let letter = dead_letter_from(stored);
        let ack = self.inner.publish_one(redrive_message(letter)).await?;
        // Published first, deleted second: a crash in between leaves the dead letter in
        // place, and redriving it again publishes the same id, which is deduplicated.
        match self.inner.dlq.delete_message(dead_letter_id).await {
            Ok(_) => Ok(ack),
            Err(e) => Err(unavailable(format!(
                "dead letter {dead_letter_id} was redriven but not removed: {e}"
            ))),
        }
    }
}

/// The message a dead letter is redriven as: its original subject, payload and headers,
/// a new id so that deduplication lets it through, and where it came from.
fn redrive_message(letter: DeadLetter) -> OutgoingMessage {
    let mut headers = letter.headers;
    // A message redriven a second time keeps the id it was first published with.
    let original_id = headers
        .get(header::ORIGINAL_ID)
        .cloned()
        .unwrap_or_else(|| letter.message_id.clone());
    headers.insert(header::REDRIVEN_FROM.into(), letter.id.to_string());
    headers.insert(header::ORIGINAL_ID.into(), original_id);
    OutgoingMessage {
        id: redrive_message_id(&letter.message_id, letter.id),
        subject: letter.subject,
        headers,
        payload: letter.payload,
    }
}

/// A new stream's configuration: file storage, JetStream's defaults otherwise.
impl Inner {
    /// A stream on file storage with the bus's replicas and duplicate window.
    fn stream_config(&self, name: &str, subjects: &[String]) -> stream::Config {
        stream::Config {
            name: name.to_string(),
            subjects: subjects.to_vec(),
            storage: stream::StorageType::File,
            num_replicas: self.options.replicas,
            duplicate_window: self.options.duplicate_window,
            ..Default::default()
        }
    }

    /// Creates the stream, or updates its subjects. Settings an operator may have changed
    /// on an existing stream (limits, replicas) are left alone.
    async fn ensure_stream(&self, wanted: stream::Config) -> Result<(), BusError> {
        let subjects = wanted.subjects.clone();
        let wanted_replicas = wanted.num_replicas;
        let stream = self
            .js
            .get_or_create_stream(wanted)
            .await
            .map_err(stream_config_error)?;
        let current = &stream.cached_info().config;
        if current.num_replicas < wanted_replicas {
            tracing::warn!(
                stream = %current.name,
                replicas = current.num_replicas,
                wanted = wanted_replicas,
                "the stream has fewer replicas than configured; left as the operator set it"
            );
        }
        if current.subjects != subjects {
            let mut updated = current.clone();
            updated.subjects = subjects.clone();
            self.js
                .update_stream(&updated)
                .await
                .map_err(stream_config_error)?;
        }
        let mut known = self.known_subjects.write();
        for pattern in subjects {
            if !known.contains(&pattern) {
                known.push(pattern);
            }
        }
        Ok(())
    }

    async fn stream_info(&self, stream: &str) -> Result<stream::Info, BusError> {
        self.api(format!("STREAM.INFO.{stream}"), &serde_json::json!({}))
            .await
            .map_err(|failure| match failure {
                ApiFailure::Refused(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                    BusError::StreamNotFound(stream.to_string())
                }
                other => other.into(),
            })
    }

    async fn consumer_info(&self, stream: &str, name: &str) -> Result<consumer::Info, BusError> {
        self.api(
            format!("CONSUMER.INFO.{stream}.{name}"),
            &serde_json::json!({}),
        )
        .await
        .map_err(|failure| match failure {
            ApiFailure::Refused(e) => consumer_refusal(&e, stream, name),
            ApiFailure::Unavailable(e) => e,
        })
    }

    /// Creates the durable consumer, or brings an existing one's ack wait, filter and
    /// limits up to date; an existing consumer keeps its position (and its deliver policy, which
    /// JetStream does not let change).
    async fn open_consumer(&self, config: &ConsumerConfig) -> Result<consumer::Info, BusError> {
        let wanted = match self.consumer_info(&config.stream, &config.name).await {
            Ok(existing) => match updated_consumer_config(&existing.config, config) {
                Some(updated) => updated,
                None => return Ok(existing),
            },
            Err(BusError::ConsumerNotFound { .. }) => new_consumer_config(config),
            Err(e) => return Err(e),
        };
        let created = self
            .js
            .create_consumer_on_stream(wanted, &config.stream)
            .await
            .map_err(|e| consumer_error(e, &config.stream, &config.name))?;
        Ok(created.cached_info().clone())
    }

    /// The number of dead letters of one consumer: the message count of its subject.
    async fn dead_letter_count(&self, stream: &str, consumer: &str) -> Result<u64, BusError> {
        #[derive(Deserialize)]
        struct SubjectCounts {
            state: SubjectCountsState,
        }
        #[derive(Deserialize)]
        struct SubjectCountsState {
            #[serde(default)]
            subjects: Option<HashMap<String, u64>>,
        }
        let subject = dlq_subject(stream, consumer);
        let counts: SubjectCounts = self
            .api(
                format!("STREAM.INFO.{DLQ_STREAM}"),
                &serde_json::json!({ "subjects_filter": subject }),
            )
            .await
            .map_err(BusError::from)?;
        Ok(counts
            .state
            .subjects
            .and_then(|subjects| subjects.get(&subject).copied())
            .unwrap_or(0))
    }

    /// One JetStream API request, telling the server's refusals from transport failures.
    async fn api<T: DeserializeOwned>(
        &self,
        subject: String,
        body: &serde_json::Value,
    ) -> Result<T, ApiFailure> {
        match self.js.request(subject, body).await {
            Ok(Response::Ok(value)) => Ok(value),
            Ok(Response::Err { error }) => Err(ApiFailure::Refused(error)),
            Err(e) => Err(ApiFailure::Unavailable(unavailable(format!(
                "JetStream request failed: {}",
                e.kind()
            )))),
        }
    }

    async fn publish_one(&self, message: OutgoingMessage) -> Result<PublishAck, BusError> {
        let mut acks = self.publish(std::slice::from_ref(&message)).await?;
        acks.pop()
            .ok_or_else(|| unavailable("publish returned no ack".into()))
    }

    /// Validates every message, then publishes them in order, window by window.
    async fn publish(&self, messages: &[OutgoingMessage]) -> Result<Vec<PublishAck>, BusError> {
        for message in messages {
            message.validate()?;
            refuse_reserved_headers(message)?;
        }
        let mut acks = Vec::with_capacity(messages.len());
        for window in messages.chunks(PUBLISH_WINDOW) {
            acks.extend(self.publish_window(window).await?);
        }
        Ok(acks)
    }

    /// Sends every message of the window, then awaits their acks in order. Every ack
    /// sent is awaited, even after a failure, so that none is left to time out in the
    /// background holding a context permit.
    async fn publish_window(
        &self,
        window: &[OutgoingMessage],
    ) -> Result<Vec<PublishAck>, BusError> {
        // All the window's slots at once: a batch never holds some while waiting for more.
        let slots = u32::try_from(window.len()).expect("a window is small");
        let _slots = self
            .publish_slots
            .acquire_many(slots)
            .await
            .map_err(|_| BusError::Closed)?;
        let mut in_flight = Vec::with_capacity(window.len());
        let mut send_error = None;
        for message in window {
            match self.send(message).await {
                Ok(ack) => in_flight.push((message, ack)),
                Err(e) => {
                    send_error = Some(e);
                    break;
                }
            }
        }
        let mut acks = Vec::with_capacity(in_flight.len());
        let mut first_error = None;
        for (message, ack) in in_flight {
            match ack.await {
                Ok(ack) => acks.push(PublishAck {
                    stream: ack.stream,
                    sequence: ack.sequence,
                    duplicate: ack.duplicate,
                }),
                Err(e) => {
                    first_error.get_or_insert_with(|| self.publish_error(e, message));
                }
            }
        }
        match first_error.or(send_error) {
            Some(e) => Err(e),
            None => Ok(acks),
        }
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<PublishAckFuture, BusError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &message.headers {
            let name = HeaderName::from_str(name)
                .map_err(|_| BusError::InvalidMessage(format!("invalid header {name:?}")))?;
            headers.insert(name, value.as_str());
        }
        headers.insert(async_nats::header::NATS_MESSAGE_ID, message.id.as_str());
        self.js
            .publish_with_headers(message.subject.clone(), headers, message.payload.clone())
            .await
            .map_err(|e| self.publish_error(e, message))
    }

    /// Whether a stream this bus made sure of takes `subject`.
    fn is_known(&self, subject: &str) -> bool {
        self.known_subjects
            .read()
            .iter()
            .any(|pattern| crate::subject_matches(pattern, subject))
    }

    fn publish_error(&self, error: PublishError, message: &OutgoingMessage) -> BusError {
        let too_large = || BusError::PayloadTooLarge {
            size: message.payload.len(),
            max: self.client.server_info().max_payload.min(MAX_PAYLOAD_BYTES),
        };
        match error.kind() {
            // JetStream answers "no responders" when no stream takes the subject — or
            // when the stream that does has no leader for a moment (a node lost).
            PublishErrorKind::StreamNotFound if self.is_known(&message.subject) => {
                unavailable(format!(
                    "no stream answered for {:?}; its leader may be changing",
                    message.subject
                ))
            }
            PublishErrorKind::StreamNotFound => BusError::NoStream(message.subject.clone()),
            PublishErrorKind::MaxPayloadExceeded => too_large(),
            _ if refusal_code(&error) == Some(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM) => {
                too_large()
            }
            _ => unavailable(format!("publish to NATS failed: {error}")),
        }
    }

    /// Copies a failed message into the dead letters. Its id names the consumer (down to
    /// its creation, as a consumer deleted and created again is another one) and the
    /// message, so doing it again after a crash before the term stores it once.
    async fn dead_letter(&self, failure: &Failure<'_>) -> Result<(), BusError> {
        let message = failure.message;
        let mut headers = user_headers(message.headers.as_ref());
        let metadata = [
            (dlq_header::REASON, encode_reason(failure.reason)),
            (dlq_header::DELIVERIES, failure.deliveries.to_string()),
            (dlq_header::SUBJECT, message.subject.to_string()),
            (
                dlq_header::MESSAGE_ID,
                message_id(message, &failure.ident.stream, failure.stream_sequence),
            ),
            (dlq_header::STREAM, failure.ident.stream.clone()),
            (dlq_header::CONSUMER, failure.ident.name.clone()),
            (
                dlq_header::STREAM_SEQUENCE,
                failure.stream_sequence.to_string(),
            ),
        ];
        headers.extend(metadata.map(|(name, value)| (name.to_string(), value)));
        let letter = OutgoingMessage {
            id: format!(
                "dlq.{}.{}.{}.{}",
                failure.ident.stream,
                failure.ident.name,
                failure.ident.created,
                failure.stream_sequence
            ),
            subject: dlq_subject(&failure.ident.stream, &failure.ident.name),
            headers,
            payload: message.payload.clone(),
        };
        self.publish_one(letter).await?;
        Ok(())
    }

    /// Sends an ack or a nak without waiting for the server to confirm it: it returns once
    /// the ack is written to the connection, so that it reaches a server stopped (or a
    /// client dropped) right after. A lost one only means a redelivery after the ack wait
    /// (see the module documentation).
    async fn settle_plain(
        &self,
        message: &async_nats::Message,
        kind: AckKind,
    ) -> Result<(), BusError> {
        let reply = message
            .reply
            .clone()
            .ok_or_else(|| unavailable("a delivery without an ack subject".into()))?;
        self.client
            .publish(reply, kind.into())
            .await
            .map_err(|e| unavailable(format!("cannot send an ack to NATS: {e}")))?;
        // Acks sent together are written together: the connection flushes once for all
        // the flushes waiting.
        self.client
            .flush()
            .await
            .map_err(|e| unavailable(format!("cannot send an ack to NATS: {e}")))
    }

    /// Sends an ack of any kind and waits for the server to confirm it: when it returns,
    /// the server has applied it (see the module documentation for when it is on disk).
    /// For the term that ends dead-lettering.
    async fn settle(
        &self,
        message: &async_nats::Message,
        kind: AckKind,
        ident: &ConsumerIdent,
    ) -> Result<(), BusError> {
        let reply = message
            .reply
            .clone()
            .ok_or_else(|| unavailable("a delivery without an ack subject".into()))?;
        match self.client.request(reply, kind.into()).await {
            Ok(_) => Ok(()),
            // Nobody takes acks for a consumer that no longer exists.
            Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => {
                Err(BusError::ConsumerNotFound {
                    stream: ident.stream.clone(),
                    name: ident.name.clone(),
                })
            }
            Err(e) => Err(unavailable(format!(
                "NATS did not confirm the ack: {}",
                e.kind()
            ))),
        }
    }
}

/// Why a JetStream API request failed.
enum ApiFailure {
    /// The server answered with an error.
    Refused(jetstream::Error),
    /// No answer: connection lost, timeout, JetStream not running.
    Unavailable(BusError),
}

impl From<ApiFailure> for BusError {
    fn from(failure: ApiFailure) -> Self {
        match failure {
            ApiFailure::Refused(e) => refused(&e),
            ApiFailure::Unavailable(e) => e,
        }
    }
}

/// A refusal with no specific mapping: the request was wrong (4xx) or the server could
/// not serve it (anything else).
fn refused(refusal: &jetstream::Error) -> BusError {
    if (400..500).contains(&refusal.code()) {
        BusError::InvalidConfig(format!("JetStream refused: {refusal}"))
    } else {
        unavailable(format!("JetStream failed: {refusal}"))
    }
}

fn consumer_refusal(refusal: &jetstream::Error, stream: &str, name: &str) -> BusError {
    match refusal.error_code() {
        ErrorCode::STREAM_NOT_FOUND => BusError::StreamNotFound(stream.to_string()),
        ErrorCode::CONSUMER_NOT_FOUND => BusError::ConsumerNotFound {
            stream: stream.to_string(),
            name: name.to_string(),
        },
        _ => refused(refusal),
    }
}

fn consumer_error(error: ConsumerError, stream: &str, name: &str) -> BusError {
    match error.kind() {
        ConsumerErrorKind::JetStream(refusal) => consumer_refusal(&refusal, stream, name),
        ConsumerErrorKind::InvalidName => {
            BusError::InvalidConfig(format!("invalid consumer name {name:?}"))
        }
        kind => unavailable(format!("JetStream consumer request failed: {kind}")),
    }
}

fn stream_config_error(error: CreateStreamError) -> BusError {
    match error.kind() {
        CreateStreamErrorKind::JetStream(refusal) => refused(&refusal),
        kind @ (CreateStreamErrorKind::EmptyStreamName
        | CreateStreamErrorKind::InvalidStreamName
        | CreateStreamErrorKind::DomainAndExternalSet) => BusError::InvalidConfig(kind.to_string()),
        kind => unavailable(format!("JetStream stream request failed: {kind}")),
    }
}

fn raw_message_error(error: RawMessageError) -> BusError {
    match error.kind() {
        RawMessageErrorKind::JetStream(refusal) => refused(&refusal),
        kind => unavailable(format!("reading the dead letters failed: {kind}")),
    }
}

/// The JetStream error code inside a publish error, when the server refused the message.
fn refusal_code(error: &PublishError) -> Option<ErrorCode> {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .map(jetstream::Error::error_code)
}

fn unavailable(message: String) -> BusError {
    BusError::Unavailable(message)
}

fn new_consumer_config(config: &ConsumerConfig) -> consumer::Config {
    consumer::Config {
        durable_name: Some(config.name.clone()),
        deliver_policy: deliver_policy(config.deliver),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        // No server-side limit: dead-lettering is ours (see the module documentation).
        max_deliver: -1,
        max_ack_pending: MAX_ACK_PENDING,
        filter_subject: config.filter_subject.clone().unwrap_or_default(),
        // Zero: none.
        inactive_threshold: config.inactive_threshold.unwrap_or_default(),
        ..Default::default()
    }
}

/// The existing consumer's configuration with the settings a reopen may change, or `None`
/// when it already has them.
fn updated_consumer_config(
    existing: &consumer::Config,
    config: &ConsumerConfig,
) -> Option<consumer::Config> {
    let filter = config.filter_subject.clone().unwrap_or_default();
    let inactive_threshold = config.inactive_threshold.unwrap_or_default();
    if existing.ack_wait == config.ack_wait
        && existing.filter_subject == filter
        && existing.inactive_threshold == inactive_threshold
        && existing.max_deliver == -1
        && existing.max_ack_pending == MAX_ACK_PENDING
    {
        return None;
    }
    Some(consumer::Config {
        ack_wait: config.ack_wait,
        filter_subject: filter,
        inactive_threshold,
        max_deliver: -1,
        max_ack_pending: MAX_ACK_PENDING,
        ..existing.clone()
    })
}

fn deliver_policy(policy: DeliverPolicy) -> consumer::DeliverPolicy {
    match policy {
        DeliverPolicy::All | DeliverPolicy::FromSequence(0) => consumer::DeliverPolicy::All,
        DeliverPolicy::FromSequence(start_sequence) => {
            consumer::DeliverPolicy::ByStartSequence { start_sequence }
        }
        DeliverPolicy::FromTime(time) => consumer::DeliverPolicy::ByStartTime {
            start_time: async_nats::datetime::DateTime::from(time),
        },
        DeliverPolicy::New => consumer::DeliverPolicy::New,
    }
}

/// What identifies a consumer, shared by its handle and every delivery's acker.
struct ConsumerIdent {
    stream: String,
    name: String,
    max_deliver: u32,
    /// When JetStream created the consumer, in nanoseconds since the Unix epoch.
    created: u128,
}

fn unix_nanos(time: SystemTime) -> u128 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos())
}

struct NatsConsumer {
    inner: Arc<Inner>,
    ident: Arc<ConsumerIdent>,
    /// Where pull requests go.
    next_subject: String,
    /// Workers sharing this handle pull in turn, on one subscription.
    puller: Mutex<Puller>,
}

/// A handle's end of its pull requests: one long-lived subscription to a wildcard inbox,
/// each request answered on a subject of its own under it, so that the closing status of
/// an earlier request is never taken for the current one's.
struct Puller {
    /// Request `n` is answered on `<inbox>.<n>`.
    inbox: String,
    /// Opened on first use, and again after the connection closed it.
    replies: Option<async_nats::Subscriber>,
    /// The number of the last request sent.
    requests: u64,
}

#[async_trait]
impl Consumer for NatsConsumer {
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + wait;
        let Ok(mut puller) = tokio::time::timeout_at(deadline, self.puller.lock()).await else {
            // Another worker of this handle pulled for the whole wait.
            return Ok(Vec::new());
        };
        loop {
            let expires = deadline.saturating_duration_since(Instant::now());
            let mut deliveries = Vec::new();
            for message in self.pull(&mut puller, max, expires).await? {
                deliveries.extend(self.admit(message).await);
            }
            let now = Instant::now();
            if !deliveries.is_empty() || now >= deadline {
                return Ok(deliveries);
            }
            // The pull ended before the wait with nothing to hand out (the server turned
            // it down for now, or every message was a dead letter): pull again.
            tokio::time::sleep(PULL_RETRY_PAUSE.min(deadline - now)).await;
        }
    }

    async fn info(&self) -> Result<ConsumerInfo, BusError> {
        let ConsumerIdent { stream, name, .. } = &*self.ident;
        let info = self.inner.consumer_info(stream, name).await?;
        let dead_letters = self.inner.dead_letter_count(stream, name).await?;
        Ok(ConsumerInfo {
            stream: stream.clone(),
            name: name.clone(),
            pending: info.num_pending,
            ack_pending: info.num_ack_pending as u64,
            redelivered: info.num_redelivered as u64,
            dead_letters,
        })
    }
}

impl NatsConsumer {
    /// One pull request: up to `max` messages, waiting up to `expires` for the first.
    ///
    /// `no_wait` with `expires` is JetStream's one-shot pull: the server holds the request
    /// until a message comes or it expires, then sends what is ready and closes it with a
    /// status, instead of holding it until the whole batch is filled. So nothing is pulled
    /// that is not handed out at once (and left to run down its ack wait in a buffer).
    async fn pull(
        &self,
        puller: &mut Puller,
        max: usize,
        expires: Duration,
    ) -> Result<Vec<async_nats::Message>, BusError> {
        let client = &self.inner.client;
        let mut replies = match puller.replies.take() {
            Some(replies) => replies,
            None => client
                .subscribe(format!("{}.*", puller.inbox))
                .await
                .map_err(|e| unavailable(format!("cannot subscribe to NATS: {e}")))?,
        };
        puller.requests += 1;
        let reply_to = format!("{}.{}", puller.inbox, puller.requests);
        let request = BatchConfig {
            batch: max,
            expires: (!expires.is_zero()).then_some(expires),
            no_wait: true,
            ..Default::default()
        };
        let body = serde_json::to_vec(&request)
            .map_err(|e| unavailable(format!("cannot encode a pull request: {e}")))?;
        client
            .publish_with_reply(self.next_subject.clone(), reply_to.clone(), body.into())
            .await
            .map_err(|e| unavailable(format!("cannot send a pull request: {e}")))?;
        let give_up = Instant::now() + expires + PULL_GRACE;
        let mut messages = Vec::new();
        while messages.len() < max {
            let Ok(reply) = tokio::time::timeout_at(give_up, replies.next()).await else {
                // The closing status never came: the pull was lost in a server restart,
                // or the consumer is gone (JetStream then ignores pulls without a word).
                if messages.is_empty() {
                    puller.replies = Some(replies);
                    self.inner
                        .consumer_info(&self.ident.stream, &self.ident.name)
                        .await?;
                    return Ok(messages);
                }
                break;
            };
            // The subscription ends with the connection; the next pull subscribes again.
            let reply = reply.ok_or_else(|| unavailable("the NATS connection closed".into()))?;
            match reply.status {
                // A message: the current request's, or a late one of an earlier request
                // (after a lost status), which is just as deliverable.
                None | Some(StatusCode::OK) => messages.push(reply),
                // The end of an earlier request.
                Some(_) if reply.subject.as_str() != reply_to => {}
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                // The request is over: 404 nothing to deliver, 408 it expired (or other
                // requests already wait for all that is ready).
                Some(StatusCode::NOT_FOUND | StatusCode::TIMEOUT) => break,
                // Nobody serves pulls for this consumer.
                Some(StatusCode::NO_RESPONDERS) => return Err(self.not_found()),
                Some(StatusCode::REQUEST_TERMINATED)
                    if reply
                        .description
                        .as_deref()
                        .is_some_and(|d| d.contains("Consumer Deleted")) =>
                {
                    return Err(self.not_found());
                }
                // Any other status (409 "Exceeded MaxWaiting", a leader change...) ends
                // this pull; `fetch` pulls again within its wait.
                Some(_) => break,
            }
        }
        puller.replies = Some(replies);
        Ok(messages)
    }

    /// Turns a pulled message into a delivery, or dead-letters it when its last allowed
    /// attempt expired unacked.
    async fn admit(&self, message: async_nats::Message) -> Option<Delivery> {
        let Some(meta) = message.reply.as_deref().and_then(AckMetadata::parse) else {
            tracing::warn!("ignoring a pulled message without JetStream metadata");
            return None;
        };
        let acker = NatsAcker {
            inner: self.inner.clone(),
            ident: self.ident.clone(),
            message,
            stream_sequence: meta.stream_sequence,
            deliveries: meta.deliveries,
        };
        if acker.deliveries > self.ident.max_deliver {
            acker.expire().await;
            return None;
        }
        let parts = acker.delivery_parts(meta.published);
        Some(Delivery::new(parts, Box::new(acker)))
    }

    fn not_found(&self) -> BusError {
        BusError::ConsumerNotFound {
            stream: self.ident.stream.clone(),
            name: self.ident.name.clone(),
        }
    }
}

/// What JetStream tells about a delivery in its ack subject:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`,
/// or, from newer servers, the same after a domain and an account hash (and maybe with
/// more tokens after).
#[derive(Debug, PartialEq)]
struct AckMetadata {
    deliveries: u32,
    stream_sequence: u64,
    published: SystemTime,
}

impl AckMetadata {
    fn parse(reply: &str) -> Option<AckMetadata> {
        let mut tokens: [&str; 12] = [""; 12];
        let mut count = 0;
        for token in reply
            .strip_prefix("$JS.ACK.")?
            .split('.')
            .take(tokens.len())
        {
            tokens[count] = token;
            count += 1;
        }
        // The tokens from the delivery count on.
        let tail = match count {
            7 => &tokens[2..7],
            9.. => &tokens[4..9],
            _ => return None,
        };
        let nanos: u64 = tail[3].parse().ok()?;
        Some(AckMetadata {
            deliveries: tail[0].parse::<u64>().ok()?.try_into().unwrap_or(u32::MAX),
            stream_sequence: tail[1].parse().ok()?,
            published: SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos),
        })
    }
}

/// Settles one delivery.
struct NatsAcker {
    inner: Arc<Inner>,
    ident: Arc<ConsumerIdent>,
    /// The delivered message: its reply subject is where acks go, and a dead letter
    /// copies its subject, headers and payload.
    message: async_nats::Message,
    stream_sequence: u64,
    deliveries: u32,
}

impl NatsAcker {
    fn delivery_parts(&self, published: SystemTime) -> DeliveryParts {
        DeliveryParts {
            stream: self.ident.stream.clone(),
            consumer: self.ident.name.clone(),
            stream_sequence: self.stream_sequence,
            message_id: message_id(&self.message, &self.ident.stream, self.stream_sequence),
            subject: self.message.subject.to_string(),
            headers: user_headers(self.message.headers.as_ref()),
            payload: self.message.payload.clone(),
            published,
            committed: Some(published),
            deliveries: self.deliveries,
            max_deliver: self.ident.max_deliver,
        }
    }

    fn failure<'a>(&'a self, reason: &'a str, deliveries: u32) -> Failure<'a> {
        Failure {
            ident: &self.ident,
            message: &self.message,
            stream_sequence: self.stream_sequence,
            deliveries,
            reason,
        }
    }

    /// A plain ack or nak: sent, not confirmed.
    async fn send(&self, kind: AckKind) -> Result<(), BusError> {
        self.inner.settle_plain(&self.message, kind).await
    }

    /// Dead letter first, term second: a crash in between redelivers the message, and
    /// dead-lettering it again is deduplicated.
    async fn give_up(&self, reason: &str, deliveries: u32) -> Result<(), BusError> {
        self.inner
            .dead_letter(&self.failure(reason, deliveries))
            .await?;
        self.inner
            .settle(&self.message, AckKind::Term, &self.ident)
            .await
    }

    /// The last allowed attempt was never settled: dead-letter the message. On failure it
    /// stays unacked and comes back after the ack wait, for another try.
    async fn expire(&self) {
        let attempts = self.ident.max_deliver;
        let reason = format!("ack wait expired after {attempts} deliveries");
        if let Err(e) = self.give_up(&reason, attempts).await {
            tracing::warn!(
                stream = %self.ident.stream,
                consumer = %self.ident.name,
                sequence = self.stream_sequence,
                error = %e,
                "could not dead-letter an expired message; it will be tried again"
            );
        }
    }
}

#[async_trait]
impl Acker for NatsAcker {
    async fn ack(&self) -> Result<(), BusError> {
        self.send(AckKind::Ack).await
    }

    async fn nak(&self, delay: Duration, reason: &str) -> Result<(), BusError> {
        if self.deliveries >= self.ident.max_deliver {
            return self.give_up(reason, self.deliveries).await;
        }
        let delay = (!delay.is_zero()).then_some(delay);
        self.send(AckKind::Nak(delay)).await
    }

    async fn term(&self, reason: &str) -> Result<(), BusError> {
        self.give_up(reason, self.deliveries).await
    }

    async fn progress(&self) -> Result<(), BusError> {
        self.send(AckKind::Progress).await
    }
}

/// A delivery given up on, and why.
struct Failure<'a> {
    ident: &'a ConsumerIdent,
    message: &'a async_nats::Message,
    stream_sequence: u64,
    deliveries: u32,
    reason: &'a str,
}

fn dlq_subject(stream: &str, consumer: &str) -> String {
    format!("{DLQ_SUBJECT_PREFIX}.{stream}.{consumer}")
}

/// The id a message was published with; a message published without one (by a client
/// other than this bus) is named after its place in the stream.
fn message_id(message: &async_nats::Message, stream: &str, stream_sequence: u64) -> String {
    message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|id| id.as_str().to_string())
        .unwrap_or_else(|| format!("{stream}:{stream_sequence}"))
}

/// Whether a header belongs to JetStream (`Nats-Msg-Id`, `Nats-Expected-*`, ...).
fn is_nats_header(name: &str) -> bool {
    name.get(..5)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("nats-"))
}

/// The application's headers of a message: all but JetStream's.
fn user_headers(headers: Option<&HeaderMap>) -> Headers {
    let Some(headers) = headers else {
        return Headers::new();
    };
    headers
        .iter()
        .filter(|(name, _)| !is_nats_header(name.as_ref()))
        .filter_map(|(name, values)| {
            let value = values.last()?;
            Some((name.to_string(), value.as_str().to_string()))
        })
        .collect()
}

/// JetStream acts on `Nats-*` headers (expected sequence, rollup, TTL...): a message
/// setting one would behave differently here than on the embedded bus.
fn refuse_reserved_headers(message: &OutgoingMessage) -> Result<(), BusError> {
    match message.headers.keys().find(|name| is_nats_header(name)) {
        Some(name) => Err(BusError::InvalidMessage(format!(
            "header {name:?}: names starting with \"Nats-\" are reserved"
        ))),
        None => Ok(()),
    }
}

/// Reads a message of the dead-letter stream back. Metadata that is missing (a message
/// not written by this bus) is left empty rather than failing the whole listing.
fn dead_letter_from(stored: StreamMessage) -> DeadLetter {
    let mut metadata = HashMap::new();
    let mut headers = Headers::new();
    for (name, values) in stored.headers.iter() {
        let Some(value) = values.last() else { continue };
        let name: &str = name.as_ref();
        if name.starts_with(dlq_header::PREFIX) {
            metadata.insert(name.to_string(), value.as_str().to_string());
        } else if !is_nats_header(name) {
            headers.insert(name.to_string(), value.as_str().to_string());
        }
    }
    let mut take = |name: &str| metadata.remove(name).unwrap_or_default();
    DeadLetter {
        id: stored.sequence,
        stream: take(dlq_header::STREAM),
        consumer: take(dlq_header::CONSUMER),
        stream_sequence: take(dlq_header::STREAM_SEQUENCE).parse().unwrap_or(0),
        message_id: take(dlq_header::MESSAGE_ID),
        subject: take(dlq_header::SUBJECT),
        reason: decode_reason(&take(dlq_header::REASON)),
        deliveries: take(dlq_header::DELIVERIES).parse().unwrap_or(0),
        headers,
        payload: stored.payload,
        time: SystemTime::from(stored.time),
    }
}

/// A header value cannot hold line breaks and loses surrounding spaces: percent-encode
/// `%`, control characters and spaces at either end, so any reason survives.
fn encode_reason(reason: &str) -> String {
    let last = reason.chars().count().saturating_sub(1);
    let mut encoded = String::with_capacity(reason.len());
    for (i, c) in reason.chars().enumerate() {
        let edge_space = c.is_whitespace() && (i == 0 || i == last);
        if c == '%' || c.is_control() || edge_space {
            let mut buf = [0; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                encoded.push_str(&format!("%{byte:02X}"));
            }
        } else {
            encoded.push(c);
        }
    }
    encoded
}

fn decode_reason(encoded: &str) -> String {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_survive_headers() {
        for reason in [
            "cannot handle",
            "",
            "50% off",
            "line\r\nbreak",
            " padded ",
            "é\u{85}x",
        ] {
            let encoded = encode_reason(reason);
            assert!(!encoded.contains(['\r', '\n']));
            assert_eq!(encoded.trim(), encoded);
            assert_eq!(decode_reason(&encoded), reason);
        }
    }

    #[test]
    fn ack_subjects_tell_the_delivery() {
        let at = |nanos| SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos);
        assert_eq!(
            AckMetadata::parse("$JS.ACK.ORDERS.reader.2.17.30.1700000000000000001.4"),
            Some(AckMetadata {
                deliveries: 2,
                stream_sequence: 17,
                published: at(1_700_000_000_000_000_001),
            })
        );
        // With a domain and an account hash, and a token of a later server.
        assert_eq!(
            AckMetadata::parse("$JS.ACK._.ACCHASH.ORDERS.reader.1.5.5.42.0.rand0m.x"),
            Some(AckMetadata {
                deliveries: 1,
                stream_sequence: 5,
                published: at(42),
            })
        );
        assert_eq!(AckMetadata::parse("_INBOX.abc"), None);
        assert_eq!(AckMetadata::parse("$JS.ACK.ORDERS.reader.x.5.5.42.0"), None);
        assert_eq!(AckMetadata::parse("$JS.ACK.ORDERS.reader.1.5.5.42"), None);
    }

    #[test]
    fn nats_headers_are_recognised() {
        assert!(is_nats_header("Nats-Msg-Id"));
        assert!(is_nats_header("nats-expected-stream"));
        assert!(!is_nats_header("Nats"));
        assert!(!is_nats_header("Trace"));
        assert!(!is_nats_header("é"));
    }
}
