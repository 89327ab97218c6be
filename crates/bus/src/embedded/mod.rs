//! The embedded backend: a durable log in one SQLite file (WAL, `synchronous=FULL`),
//! in-process, nothing to install.
//!
//! Writes go through one writer thread that group commits (see [`store`]); a publish
//! returns once its transaction is fsync'd. Recent messages stay in a per-stream cache,
//! so consumers are fed from memory and woken by the commit itself (a [`Notify`]), not
//! by polling. Consumer positions (an ack floor plus the few acks above it) are written
//! lazily with the next commit: a crash can redeliver an acked message, never lose one.
//!
//! Consumers live in this process: every handle on the same durable name shares one
//! in-memory state, which is what makes them a consumer group.

mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use self::store::{AckUpdate, NewDeadLetter, Op, PositionSlot, Reader, StoredMessage};
use crate::{
    Acker, Bus, BusError, Consumer, ConsumerConfig, ConsumerInfo, DeadLetter, DeliverPolicy,
    Delivery, DeliveryParts, OutgoingMessage, PublishAck, StreamConfig, header, redrive_message_id,
    subject_matches, validate_name, validate_subject_pattern,
};

/// Messages kept in memory per stream for consumers that keep up.
const CACHE_MESSAGES: usize = 65_536;
/// Bytes of payload kept in memory per stream at most.
const CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Messages read from the file at a time by a consumer that fell behind the cache.
const READ_CHUNK: usize = 1024;
/// How long a message whose dead-letter write failed waits before it is tried again.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(1);

/// A bus in a SQLite file. Cheap to share behind an `Arc`.
pub struct EmbeddedBus {
    shared: Arc<Shared>,
    /// Serialises consumer creation, so that two workers opening a new consumer at once
    /// share one state.
    consumers: tokio::sync::Mutex<HashMap<(String, String), Arc<ConsumerCore>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for EmbeddedBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBus")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

/// What the bus, its consumers and their ackers share.
struct Shared {
    path: PathBuf,
    ops: mpsc::UnboundedSender<Op>,
    streams: Arc<RwLock<Vec<Arc<StreamState>>>>,
    reader: Arc<Mutex<Reader>>,
    closed: AtomicBool,
}

struct StreamState {
    name: String,
    subjects: RwLock<Vec<String>>,
    tail: Mutex<Tail>,
    /// Woken on every commit that adds to the stream, and whenever a consumer's
    /// pending set changes so that sleeping fetchers recompute their deadline.
    notify: Notify,
}

struct Tail {
    last_seq: u64,
    cache: VecDeque<Arc<StoredMessage>>,
    cache_bytes: usize,
}

impl Tail {
    fn push(&mut self, message: Arc<StoredMessage>) {
        self.last_seq = message.seq;
        self.cache_bytes += message.payload.len();
        self.cache.push_back(message);
        while self.cache.len() > CACHE_MESSAGES || self.cache_bytes > CACHE_BYTES {
            match self.cache.pop_front() {
                Some(old) => self.cache_bytes -= old.payload.len(),
                None => break,
            }
        }
    }

    /// Up to `max` messages from `from_seq` on, if the cache still holds `from_seq`.
    fn cached_from(&self, from_seq: u64, max: usize) -> Option<Vec<Arc<StoredMessage>>> {
        let first = self.cache.front()?.seq;
        if from_seq < first {
            return None;
        }
        let start = usize::try_from(from_seq - first).ok()?;
        Some(self.cache.iter().skip(start).take(max).cloned().collect())
    }
}

impl Shared {
    fn begin_stop(&self, how: Op) {
        let _ = self.ops.send(how);
        self.closed.store(true, Ordering::Release);
        for stream in self.streams.read().iter() {
            stream.notify.notify_waiters();
        }
    }

    fn send(&self, op: Op) -> Result<(), BusError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed);
        }
        self.ops.send(op).map_err(|_| BusError::Closed)
    }

    /// Waits until everything queued so far is committed.
    async fn flush(&self) -> Result<(), BusError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Flush(tx))?;
        rx.await.map_err(|_| BusError::Closed)
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, BusError>>) -> Op,
    ) -> Result<T, BusError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| BusError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Reader) -> Result<T, BusError> + Send + 'static,
    ) -> Result<T, BusError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || f(&reader.lock()))
            .await
            .map_err(|e| BusError::Storage(format!("reader task failed: {e}")))?
    }

    fn stream(&self, name: &str) -> Result<Arc<StreamState>, BusError> {
        self.streams
            .read()
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .ok_or_else(|| BusError::StreamNotFound(name.to_owned()))
    }

    fn stream_for_subject(&self, subject: &str) -> Result<String, BusError> {
        self.streams
            .read()
            .iter()
            .find(|s| {
                s.subjects
                    .read()
                    .iter()
                    .any(|p| subject_matches(p, subject))
            })
            .map(|s| s.name.clone())
            .ok_or_else(|| BusError::NoStream(subject.to_owned()))
    }
}

impl EmbeddedBus {
    /// Opens (or creates) the bus in the SQLite file at `path`.
    pub async fn open(path: impl AsRef<Path>) -> Result<EmbeddedBus, BusError> {
        let path = path.as_ref().to_path_buf();
        let opened_path = path.clone();
        let (conn, snapshot, reader) = tokio::task::spawn_blocking(move || {
            let conn = store::open_connection(&opened_path)?;
            let snapshot = store::migrate(&conn)?;
            let reader = Reader::open(&opened_path)?;
            Ok::<_, BusError>((conn, snapshot, reader))
        })
        .await
        .map_err(|e| BusError::Storage(e.to_string()))??;

        let streams: Vec<Arc<StreamState>> = snapshot
            .streams
            .iter()
            .map(|(name, subjects, last)| {
                Arc::new(StreamState {
                    name: name.clone(),
                    subjects: RwLock::new(subjects.clone()),
                    tail: Mutex::new(Tail {
                        last_seq: *last,
                        cache: VecDeque::new(),
                        cache_bytes: 0,
                    }),
                    notify: Notify::new(),
                })
            })
            .collect();
        let streams = Arc::new(RwLock::new(streams));
        let (ops, rx) = mpsc::unbounded_channel();
        let committed_streams = streams.clone();
        let writer = std::thread::Builder::new()
            .name("agora-bus-writer".into())
            .spawn(move || {
                store::run_writer(conn, &snapshot, rx, move |committed| {
                    publish_to_tails(&committed_streams, committed);
                });
            })
            .map_err(|e| BusError::Storage(format!("start the writer thread: {e}")))?;
        Ok(EmbeddedBus {
            shared: Arc::new(Shared {
                path,
                ops,
                streams,
                reader: Arc::new(Mutex::new(reader)),
                closed: AtomicBool::new(false),
            }),
            consumers: tokio::sync::Mutex::new(HashMap::new()),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Writes every queued change (acks included), stops the writer and closes the
    /// file. Every handle on this bus answers [`BusError::Closed`] afterwards.
    pub async fn close(&self) {
        self.stop(Op::Shutdown).await;
    }

    /// Stops the bus the way a crash would: what is queued (acks included) is not
    /// written, and every handle answers [`BusError::Closed`]. For crash tests.
    pub async fn abandon(&self) {
        self.stop(Op::Abandon).await;
    }

    /// Tells the writer how to stop, wakes every waiting fetch and waits for the
    /// writer to let go of the file.
    async fn stop(&self, how: Op) {
        self.shared.begin_stop(how);
        let writer = self.writer.lock().take();
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
    }

    /// Waits until everything queued so far (acks included) is committed.
    pub async fn flush(&self) -> Result<(), BusError> {
        self.shared.flush().await
    }
}

impl Drop for EmbeddedBus {
    fn drop(&mut self) {
        // The writer commits what is queued and stops; nothing waits for it here.
        self.shared.begin_stop(Op::Shutdown);
    }
}

/// Runs on the writer thread after each commit: makes the new messages visible to
/// consumers and wakes them.
fn publish_to_tails(streams: &RwLock<Vec<Arc<StreamState>>>, committed: store::Committed) {
    if committed.is_empty() {
        return;
    }
    let now = SystemTime::now();
    let streams = streams.read();
    let mut touched: Vec<&Arc<StreamState>> = Vec::new();
    let mut current: Option<(&Arc<StreamState>, parking_lot::MutexGuard<'_, Tail>)> = None;
    for (name, mut message) in committed {
        message.committed = Some(now);
        let message = Arc::new(message);
        if current.as_ref().is_none_or(|(s, _)| s.name != name) {
            current = None;
            let Some(stream) = streams.iter().find(|s| s.name == name) else {
                continue;
            };
            if !touched.iter().any(|s| Arc::ptr_eq(s, stream)) {
                touched.push(stream);
            }
            current = Some((stream, stream.tail.lock()));
        }
        if let Some((_, tail)) = current.as_mut() {
            tail.push(message);
        }
    }
    drop(current);
    for stream in touched {
        stream.notify.notify_waiters();
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn ensure_stream(&self, config: &StreamConfig) -> Result<(), BusError> {
        validate_name("stream", &config.name)?;
        if config.subjects.is_empty() {
            return Err(BusError::InvalidConfig(
                "a stream needs at least one subject".into(),
            ));
        }
        for pattern in &config.subjects {
            validate_subject_pattern(pattern)?;
        }
        let (name, subjects) = (config.name.clone(), config.subjects.clone());
        self.shared
            .call(|reply| Op::EnsureStream {
                name,
                subjects,
                reply,
            })
            .await?;
        let mut streams = self.shared.streams.write();
        match streams.iter().find(|s| s.name == config.name) {
            Some(existing) => *existing.subjects.write() = config.subjects.clone(),
            None => streams.push(Arc::new(StreamState {
                name: config.name.clone(),
                subjects: RwLock::new(config.subjects.clone()),
                tail: Mutex::new(Tail {
                    last_seq: 0,
                    cache: VecDeque::new(),
                    cache_bytes: 0,
                }),
                notify: Notify::new(),
            })),
        }
        Ok(())
    }

    async fn publish(&self, message: OutgoingMessage) -> Result<PublishAck, BusError> {
        let mut acks = self.publish_batch(vec![message]).await?;
        Ok(acks.remove(0))
    }

    async fn publish_batch(
        &self,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<PublishAck>, BusError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let mut routed = Vec::with_capacity(messages.len());
        for message in messages {
            message.validate()?;
            routed.push((self.shared.stream_for_subject(&message.subject)?, message));
        }
        self.shared
            .call(|reply| Op::Publish {
                messages: routed,
                reply,
            })
            .await
    }

    async fn consumer(&self, config: &ConsumerConfig) -> Result<Arc<dyn Consumer>, BusError> {
        config.validate()?;
        let stream = self.shared.stream(&config.stream)?;
        let key = (config.stream.clone(), config.name.clone());
        let mut consumers = self.consumers.lock().await;
        self.delete_inactive(&mut consumers).await?;
        if let Some(existing) = consumers.get(&key).filter(|c| !c.is_closed()) {
            *existing.config.lock() = config.clone();
            return Ok(Arc::new(ConsumerHandle(existing.clone())));
        }
        let initial_floor = match config.deliver {
            DeliverPolicy::All => 0,
            DeliverPolicy::FromSequence(seq) => seq.saturating_sub(1),
            DeliverPolicy::New => stream.tail.lock().last_seq,
            DeliverPolicy::FromTime(time) => {
                let name = config.stream.clone();
                let first = self
                    .shared
                    .read(move |r| r.first_seq_at_or_after(&name, time))
                    .await?;
                first.map_or(stream.tail.lock().last_seq, |seq| seq - 1)
            }
        };
        let config_json = serde_json::json!({
            "filter_subject": config.filter_subject,
            "ack_wait_ms": config.ack_wait.as_millis() as u64,
            "max_deliver": config.max_deliver,
            "inactive_threshold_ms": config.inactive_threshold.map(|t| t.as_millis() as u64),
        })
        .to_string();
        let (stream_name, name) = key.clone();
        let row = self
            .shared
            .call(|reply| Op::EnsureConsumer {
                stream: stream_name,
                name,
                config_json,
                initial_floor,
                reply,
            })
            .await?;
        let consumer = Arc::new(ConsumerCore {
            slot: Arc::new(PositionSlot::new(
                config.stream.clone(),
                config.name.clone(),
            )),
            shared: self.shared.clone(),
            stream,
            name: config.name.clone(),
            config: Mutex::new(config.clone()),
            activity: Mutex::new(Activity {
                fetching: 0,
                last: Instant::now(),
            }),
            state: tokio::sync::Mutex::new(ConsumerState {
                next_seq: row.floor + 1,
                pending: BTreeMap::new(),
                timers: BTreeSet::new(),
                acked_ahead: row.acked_above_floor.into_iter().collect(),
                delivered_before: row.delivered,
                redelivered_before: row.redeliveries.into_iter().collect(),
            }),
        });
        consumers.insert(key, consumer.clone());
        Ok(Arc::new(ConsumerHandle(consumer)))
    }

    async fn delete_consumer(&self, stream: &str, name: &str) -> Result<(), BusError> {
        self.consumers
            .lock()
            .await
            .remove(&(stream.to_owned(), name.to_owned()));
        let (stream, name) = (stream.to_owned(), name.to_owned());
        self.shared
            .call(|reply| Op::DeleteConsumer {
                stream,
                name,
                reply,
            })
            .await
    }

    async fn last_sequence(&self, stream: &str) -> Result<u64, BusError> {
        Ok(self.shared.stream(stream)?.tail.lock().last_seq)
    }

    async fn consumers(&self) -> Result<Vec<ConsumerInfo>, BusError> {
        let mut consumers = self.consumers.lock().await;
        self.delete_inactive(&mut consumers).await?;
        let mut cores: Vec<((String, String), Arc<ConsumerCore>)> = consumers
            .iter()
            .map(|(key, core)| (key.clone(), core.clone()))
            .collect();
        drop(consumers);
        cores.sort_by(|a, b| a.0.cmp(&b.0));
        let mut infos = Vec::with_capacity(cores.len());
        for (_, core) in cores {
            infos.push(core.info().await?);
        }
        Ok(infos)
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError> {
        self.shared.read(|r| r.dead_letters()).await
    }

    async fn redrive(&self, dead_letter_id: u64) -> Result<PublishAck, BusError> {
        let letter = self
            .shared
            .read(move |r| r.dead_letter(dead_letter_id))
            .await?
            .ok_or(BusError::DeadLetterNotFound(dead_letter_id))?;
        let mut headers = letter.headers;
        let original_id = headers
            .get(header::ORIGINAL_ID)
            .cloned()
            .unwrap_or(letter.message_id);
        headers.insert(header::ORIGINAL_ID.into(), original_id.clone());
        headers.insert(header::REDRIVEN_FROM.into(), dead_letter_id.to_string());
        // Published first, removed second: a crash in between redrives again with the
        // same derived id, which deduplication absorbs.
        let ack = self
            .publish(OutgoingMessage {
                id: redrive_message_id(&original_id, dead_letter_id),
                subject: letter.subject,
                headers,
                payload: letter.payload,
            })
            .await?;
        let removed = self
            .shared
            .call(|reply| Op::RemoveDeadLetter {
                id: dead_letter_id,
                reply,
            })
            .await?;
        if !removed {
            return Err(BusError::DeadLetterNotFound(dead_letter_id));
        }
        Ok(ack)
    }
}

impl EmbeddedBus {
    /// Deletes the consumers with an inactive threshold that nobody fetched from for
    /// that long. Done when consumers are opened or listed: a consumer nobody opens or
    /// lists again costs nothing but its row until then.
    async fn delete_inactive(
        &self,
        consumers: &mut HashMap<(String, String), Arc<ConsumerCore>>,
    ) -> Result<(), BusError> {
        let now = Instant::now();
        let gone: Vec<(String, String)> = consumers
            .iter()
            .filter(|(_, core)| core.is_inactive(now))
            .map(|(key, _)| key.clone())
            .collect();
        for (stream, name) in gone {
            consumers.remove(&(stream.clone(), name.clone()));
            self.shared
                .call(|reply| Op::DeleteConsumer {
                    stream,
                    name,
                    reply,
                })
                .await?;
        }
        Ok(())
    }
}

/// When a consumer was last fetched from, for its inactive threshold.
struct Activity {
    /// Fetches in progress: a consumer waiting for messages is in use.
    fetching: usize,
    /// When the last fetch ended (or the consumer was opened).
    last: Instant,
}

/// One durable consumer, shared by all its workers in this process.
struct ConsumerCore {
    slot: Arc<PositionSlot>,
    shared: Arc<Shared>,
    stream: Arc<StreamState>,
    name: String,
    config: Mutex<ConsumerConfig>,
    activity: Mutex<Activity>,
    state: tokio::sync::Mutex<ConsumerState>,
}

struct ConsumerState {
    /// The next sequence never delivered to this consumer.
    next_seq: u64,
    /// Delivered and not settled, by sequence.
    pending: BTreeMap<u64, Pending>,
    /// `(due, seq)` of every pending message: when it is to be delivered again.
    timers: BTreeSet<(Instant, u64)>,
    /// Sequences at or past `next_seq` already acked before a restart.
    acked_ahead: BTreeSet<u64>,
    /// Before the last restart, every message up to here was delivered at least once...
    delivered_before: u64,
    /// ...and these more often: a message that brings its consumer's process down
    /// still reaches its last delivery and the dead letters.
    redelivered_before: HashMap<u64, u32>,
}

struct Pending {
    message: Arc<StoredMessage>,
    deliveries: u32,
    due: Instant,
}

impl ConsumerState {
    /// Every sequence up to here is settled.
    fn floor(&self) -> u64 {
        let lowest_pending = self.pending.keys().next().copied().unwrap_or(u64::MAX);
        lowest_pending.min(self.next_seq) - 1
    }

    fn schedule(&mut self, seq: u64, due: Instant) {
        if let Some(p) = self.pending.get_mut(&seq) {
            self.timers.remove(&(p.due, seq));
            p.due = due;
            self.timers.insert((due, seq));
        }
    }

    fn settle(&mut self, seq: u64) -> Option<Pending> {
        let p = self.pending.remove(&seq)?;
        self.timers.remove(&(p.due, seq));
        Some(p)
    }

    /// How often `seq` was delivered before the last restart.
    fn deliveries_before(&mut self, seq: u64) -> u32 {
        if seq > self.delivered_before {
            return 0;
        }
        self.redelivered_before.remove(&seq).unwrap_or(1)
    }
}

impl ConsumerCore {
    fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Whether it has an inactive threshold and nobody fetched from it for that long.
    fn is_inactive(&self, now: Instant) -> bool {
        let Some(threshold) = self.config.lock().inactive_threshold else {
            return false;
        };
        let activity = self.activity.lock();
        activity.fetching == 0 && now.saturating_duration_since(activity.last) >= threshold
    }

    /// Counts a fetch in progress until the guard drops.
    fn fetching(&self) -> FetchGuard<'_> {
        self.activity.lock().fetching += 1;
        FetchGuard(self)
    }

    fn position(&self, state: &ConsumerState, settled: u64) -> AckUpdate {
        let floor = state.floor();
        AckUpdate {
            stream: self.stream.name.clone(),
            consumer: self.name.clone(),
            floor,
            above_floor: (settled > floor).then_some(settled).into_iter().collect(),
            delivered: 0,
            redeliveries: Vec::new(),
        }
    }

    fn delivery(self: &Arc<Self>, p: &Pending, max_deliver: u32) -> Delivery {
        let m = &p.message;
        Delivery::new(
            DeliveryParts {
                stream: self.stream.name.clone(),
                consumer: self.name.clone(),
                stream_sequence: m.seq,
                message_id: m.id.clone(),
                subject: m.subject.clone(),
                headers: m.headers.clone(),
                payload: m.payload.clone(),
                published: m.time,
                committed: m.committed,
                deliveries: p.deliveries,
                max_deliver,
            },
            Box::new(EmbeddedAcker {
                consumer: self.clone(),
                seq: m.seq,
                deliveries: p.deliveries,
            }),
        )
    }

    /// Moves a pending message to the dead letters, durably, and settles it. Until the
    /// dead letter is committed the message stays pending (the state lock is held
    /// throughout); if the write fails it is offered again after [`DEAD_LETTER_RETRY`].
    async fn dead_letter(
        &self,
        state: &mut ConsumerState,
        seq: u64,
        reason: String,
    ) -> Result<(), BusError> {
        let Some(pending) = state.settle(seq) else {
            return Ok(());
        };
        let letter = NewDeadLetter {
            stream: self.stream.name.clone(),
            consumer: self.name.clone(),
            message: pending.message.clone(),
            reason,
            deliveries: pending.deliveries,
        };
        // The position as it will be once the letter is written.
        let position = self.position(state, seq);
        let written = self
            .shared
            .call(|reply| Op::DeadLetter {
                letter,
                position,
                reply,
            })
            .await;
        if written.is_err() {
            let due = Instant::now() + DEAD_LETTER_RETRY;
            state.pending.insert(seq, Pending { due, ..pending });
            state.timers.insert((due, seq));
        }
        written
    }

    /// Takes what is ready now: pending messages whose time has come, then new ones.
    ///
    /// What was handed out is recorded with the next commit (a first delivery) or
    /// before the batch is returned (a redelivery: rare, and the count that must
    /// survive a consumer that keeps dying on the message).
    async fn take_ready(self: &Arc<Self>, max: usize) -> Result<Vec<Delivery>, BusError> {
        let (out, redeliveries) = self.take_ready_locked(max).await?;
        if out.is_empty() {
            return Ok(out);
        }
        let delivered = out.iter().map(|d| d.stream_sequence).max().unwrap_or(0);
        if self.slot.record_deliveries(delivered, &redeliveries) {
            self.shared.send(Op::SavePosition(self.slot.clone()))?;
        }
        if !redeliveries.is_empty() {
            self.shared.flush().await?;
        }
        Ok(out)
    }

    /// [`take_ready`](Self::take_ready) under the state lock: the deliveries, and the
    /// counts of those delivered before.
    async fn take_ready_locked(
        self: &Arc<Self>,
        max: usize,
    ) -> Result<(Vec<Delivery>, Vec<(u64, u32)>), BusError> {
        let config = self.config.lock().clone();
        let mut state = self.state.lock().await;
        let now = Instant::now();
        let mut out = Vec::new();
        let mut redeliveries = Vec::new();

        while out.len() < max {
            let Some(&(due, seq)) = state.timers.first() else {
                break;
            };
            if due > now {
                break;
            }
            let deliveries = state.pending[&seq].deliveries;
            if deliveries >= config.max_deliver {
                let reason = format!("ack wait expired after {deliveries} deliveries");
                self.dead_letter(&mut state, seq, reason).await?;
                continue;
            }
            state.schedule(seq, now + config.ack_wait);
            let p = state
                .pending
                .get_mut(&seq)
                .expect("scheduled message is pending");
            p.deliveries += 1;
            redeliveries.push((seq, p.deliveries));
            let p = &state.pending[&seq];
            out.push(self.delivery(p, config.max_deliver));
        }

        while out.len() < max {
            let last = self.stream.tail.lock().last_seq;
            if state.next_seq > last {
                break;
            }
            let from = state.next_seq;
            let cached = self.stream.tail.lock().cached_from(from, max - out.len());
            let chunk = match cached {
                Some(chunk) => chunk,
                None => {
                    let stream = self.stream.name.clone();
                    self.shared
                        .read(move |r| r.messages_from(&stream, from, READ_CHUNK))
                        .await?
                }
            };
            if chunk.is_empty() {
                break;
            }
            for message in chunk {
                if out.len() >= max {
                    break;
                }
                let seq = message.seq;
                state.next_seq = seq + 1;
                if state.acked_ahead.remove(&seq) {
                    continue;
                }
                let wanted = config
                    .filter_subject
                    .as_deref()
                    .is_none_or(|f| subject_matches(f, &message.subject));
                if !wanted {
                    continue;
                }
                let before = state.deliveries_before(seq);
                let due = now + config.ack_wait;
                state.pending.insert(
                    seq,
                    Pending {
                        message,
                        deliveries: before.max(1),
                        due,
                    },
                );
                state.timers.insert((due, seq));
                if before >= config.max_deliver {
                    let reason =
                        format!("delivered {before} times without being settled before a restart");
                    self.dead_letter(&mut state, seq, reason).await?;
                    continue;
                }
                let deliveries = before + 1;
                state
                    .pending
                    .get_mut(&seq)
                    .expect("just inserted")
                    .deliveries = deliveries;
                if deliveries > 1 {
                    redeliveries.push((seq, deliveries));
                }
                out.push(self.delivery(&state.pending[&seq], config.max_deliver));
            }
        }
        Ok((out, redeliveries))
    }

    async fn next_due(&self) -> Option<Instant> {
        self.state.lock().await.timers.first().map(|&(due, _)| due)
    }
}

/// What [`Bus::consumer`] hands out: a handle on the shared [`ConsumerCore`].
struct ConsumerHandle(Arc<ConsumerCore>);

/// A fetch in progress; dropping it (whatever way the fetch ends) marks the consumer
/// active now.
struct FetchGuard<'a>(&'a ConsumerCore);

impl Drop for FetchGuard<'_> {
    fn drop(&mut self) {
        let mut activity = self.0.activity.lock();
        activity.fetching -= 1;
        activity.last = Instant::now();
    }
}

#[async_trait]
impl Consumer for ConsumerHandle {
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        let this = &self.0;
        let _fetching = this.fetching();
        let deadline = Instant::now() + wait;
        loop {
            if this.is_closed() {
                return Err(BusError::Closed);
            }
            // Registered before looking, so a commit in between is not missed.
            let notified = this.stream.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let batch = this.take_ready(max.max(1)).await?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            let wake = this
                .next_due()
                .await
                .map_or(deadline, |due| due.min(deadline));
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn info(&self) -> Result<ConsumerInfo, BusError> {
        self.0.info().await
    }
}

impl ConsumerCore {
    async fn info(&self) -> Result<ConsumerInfo, BusError> {
        let filter = self.config.lock().filter_subject.clone();
        let (next_seq, ack_pending, redelivered, acked_ahead) = {
            let state = self.state.lock().await;
            (
                state.next_seq,
                state.pending.len() as u64,
                state.pending.values().filter(|p| p.deliveries > 1).count() as u64,
                state.acked_ahead.clone(),
            )
        };
        let last = self.stream.tail.lock().last_seq;
        let pending = match filter {
            None => (last + 1).saturating_sub(next_seq) - acked_ahead.len() as u64,
            Some(filter) => {
                let stream = self.stream.name.clone();
                let subjects = self
                    .shared
                    .read(move |r| r.subjects_from(&stream, next_seq))
                    .await?;
                subjects
                    .iter()
                    .filter(|(seq, s)| !acked_ahead.contains(seq) && subject_matches(&filter, s))
                    .count() as u64
            }
        };
        let (stream, name) = (self.stream.name.clone(), self.name.clone());
        let dead_letters = self
            .shared
            .read(move |r| r.dead_letter_count(&stream, &name))
            .await?;
        Ok(ConsumerInfo {
            stream: self.stream.name.clone(),
            name: self.name.clone(),
            pending,
            ack_pending,
            redelivered,
            dead_letters,
        })
    }
}

struct EmbeddedAcker {
    consumer: Arc<ConsumerCore>,
    seq: u64,
    deliveries: u32,
}

impl EmbeddedAcker {
    /// Whether this delivery is still the current one of its message (a late answer
    /// from a worker whose delivery timed out must not settle a newer delivery's fate
    /// differently than an ack would).
    fn is_current(&self, state: &ConsumerState) -> bool {
        state
            .pending
            .get(&self.seq)
            .is_some_and(|p| p.deliveries == self.deliveries)
    }
}

#[async_trait]
impl Acker for EmbeddedAcker {
    async fn ack(&self) -> Result<(), BusError> {
        let c = &self.consumer;
        let mut state = c.state.lock().await;
        if state.settle(self.seq).is_none() {
            return Ok(());
        }
        if c.slot.record(state.floor(), self.seq) {
            c.shared.send(Op::SavePosition(c.slot.clone()))?;
        }
        Ok(())
    }

    async fn nak(&self, delay: Duration, reason: &str) -> Result<(), BusError> {
        let c = &self.consumer;
        let mut state = c.state.lock().await;
        if !self.is_current(&state) {
            return Ok(());
        }
        let max_deliver = c.config.lock().max_deliver;
        if self.deliveries >= max_deliver {
            return c.dead_letter(&mut state, self.seq, reason.to_owned()).await;
        }
        state.schedule(self.seq, Instant::now() + delay);
        drop(state);
        // A fetcher asleep until a later deadline must see the earlier one.
        c.stream.notify.notify_waiters();
        Ok(())
    }

    async fn term(&self, reason: &str) -> Result<(), BusError> {
        let c = &self.consumer;
        let mut state = c.state.lock().await;
        if !state.pending.contains_key(&self.seq) {
            return Ok(());
        }
        c.dead_letter(&mut state, self.seq, reason.to_owned()).await
    }

    async fn progress(&self) -> Result<(), BusError> {
        let c = &self.consumer;
        let mut state = c.state.lock().await;
        if self.is_current(&state) {
            let ack_wait = c.config.lock().ack_wait;
            state.schedule(self.seq, Instant::now() + ack_wait);
        }
        Ok(())
    }
}
