//! The SQLite side of the embedded bus: the schema, the single writer thread that group
//! commits every change, and a reader for history that is no longer cached.
//!
//! One thread owns the write connection. It takes the first waiting operation, drains
//! whatever else is queued behind it (up to [`MAX_BATCH`]), applies them all in one
//! transaction and commits once: one fsync for the lot. That is what lets many
//! concurrent publishers reach a high durable rate on a disk that does only a few
//! thousand fsyncs a second.
//!
//! The WAL is checkpointed by SQLite itself, inside the writer, between two commits
//! (every 1000 pages). A checkpoint on another thread was tried: it never catches up
//! with a writer that keeps appending, so the WAL can never restart from its beginning,
//! the file keeps growing, and every fsync then carries metadata — slower commits.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use crate::{BusError, DeadLetter, Headers, OutgoingMessage, PublishAck};

/// Operations drained into one transaction at most.
const MAX_BATCH: usize = 8192;

/// A message as stored in a stream.
#[derive(Debug)]
pub(super) struct StoredMessage {
    pub seq: u64,
    pub id: String,
    pub subject: String,
    pub headers: Headers,
    pub payload: Bytes,
    pub time: SystemTime,
    /// When its transaction became durable; known only for messages that went through
    /// the writer in this process (stamped right after the commit).
    pub committed: Option<SystemTime>,
}

/// Where a consumer's acks wait for the next commit. Acks need not be durable before
/// they return (a lost ack means one redelivery, which the inbox absorbs), so every ack
/// between two commits is folded into one slot and written once.
#[derive(Debug)]
pub(super) struct PositionSlot {
    pub stream: String,
    pub consumer: String,
    unsaved: parking_lot::Mutex<Unsaved>,
}

#[derive(Debug, Default)]
struct Unsaved {
    floor: u64,
    above_floor: Vec<u64>,
    delivered: u64,
    redeliveries: Vec<(u64, u32)>,
    /// Whether the slot is already in the writer's queue.
    queued: bool,
}

impl PositionSlot {
    pub fn new(stream: String, consumer: String) -> Self {
        Self {
            stream,
            consumer,
            unsaved: parking_lot::Mutex::new(Unsaved::default()),
        }
    }

    /// Records that `settled` is settled and that everything up to `floor` is. Returns
    /// true when the caller must queue the slot for the writer.
    pub fn record(&self, floor: u64, settled: u64) -> bool {
        let mut u = self.unsaved.lock();
        u.floor = u.floor.max(floor);
        if settled > floor {
            u.above_floor.push(settled);
        }
        !std::mem::replace(&mut u.queued, true)
    }

    /// Records that everything up to `delivered` has been handed out at least once, and
    /// how often each of `redeliveries` has. Returns true when the caller must queue the
    /// slot for the writer.
    pub fn record_deliveries(&self, delivered: u64, redeliveries: &[(u64, u32)]) -> bool {
        let mut u = self.unsaved.lock();
        u.delivered = u.delivered.max(delivered);
        u.redeliveries.extend_from_slice(redeliveries);
        !std::mem::replace(&mut u.queued, true)
    }

    fn take(&self) -> AckUpdate {
        let mut u = self.unsaved.lock();
        u.queued = false;
        AckUpdate {
            stream: self.stream.clone(),
            consumer: self.consumer.clone(),
            floor: u.floor,
            above_floor: std::mem::take(&mut u.above_floor),
            delivered: u.delivered,
            redeliveries: std::mem::take(&mut u.redeliveries),
        }
    }
}

/// A change of a consumer's durable position.
#[derive(Debug)]
pub(super) struct AckUpdate {
    pub stream: String,
    pub consumer: String,
    /// Every sequence up to here is settled.
    pub floor: u64,
    /// Sequences settled out of order, above the floor.
    pub above_floor: Vec<u64>,
    /// Every sequence up to here has been delivered at least once.
    pub delivered: u64,
    /// Delivery counts of the messages delivered more than once.
    pub redeliveries: Vec<(u64, u32)>,
}

pub(super) struct NewDeadLetter {
    pub stream: String,
    pub consumer: String,
    pub message: Arc<StoredMessage>,
    pub reason: String,
    pub deliveries: u32,
}

pub(super) enum Op {
    EnsureStream {
        name: String,
        subjects: Vec<String>,
        reply: oneshot::Sender<Result<(), BusError>>,
    },
    /// Messages with the stream each goes to, stored in order.
    Publish {
        messages: Vec<(String, OutgoingMessage)>,
        reply: oneshot::Sender<Result<Vec<PublishAck>, BusError>>,
    },
    EnsureConsumer {
        stream: String,
        name: String,
        config_json: String,
        initial_floor: u64,
        reply: oneshot::Sender<Result<ConsumerRow, BusError>>,
    },
    DeleteConsumer {
        stream: String,
        name: String,
        reply: oneshot::Sender<Result<(), BusError>>,
    },
    /// Write the consumer's unsaved acks with the next commit.
    SavePosition(Arc<PositionSlot>),
    DeadLetter {
        letter: NewDeadLetter,
        position: AckUpdate,
        reply: oneshot::Sender<Result<(), BusError>>,
    },
    RemoveDeadLetter {
        id: u64,
        reply: oneshot::Sender<Result<bool, BusError>>,
    },
    /// Calls back after the commit that includes everything queued before this.
    Flush(oneshot::Sender<()>),
    /// Commits what is queued, then stops the writer.
    Shutdown,
    /// Stops the writer the way a crash would: what is queued is not written.
    Abandon,
}

/// What the writer reports after each commit, so that the in-memory state can follow:
/// the messages stored, with their streams, in order.
pub(super) type Committed = Vec<(String, StoredMessage)>;

/// A consumer's durable row.
#[derive(Debug, Clone)]
pub(super) struct ConsumerRow {
    pub floor: u64,
    pub acked_above_floor: Vec<u64>,
    /// Every sequence up to here was delivered at least once before.
    pub delivered: u64,
    /// Above the floor, the messages delivered more than once and how often.
    pub redeliveries: Vec<(u64, u32)>,
}

/// What the store knows at open.
pub(super) struct Snapshot {
    pub streams: Vec<(String, Vec<String>, u64)>,
}

fn storage(e: rusqlite::Error) -> BusError {
    BusError::Storage(e.to_string())
}

pub(super) fn to_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn from_nanos(n: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(n).unwrap_or(0))
}

fn table(stream: &str) -> String {
    // Stream names are validated to [A-Za-z0-9_-]; quoting keeps '-' legal.
    format!("\"stream_{stream}\"")
}

fn encode_headers(headers: &Headers) -> Vec<u8> {
    if headers.is_empty() {
        Vec::new()
    } else {
        serde_json::to_vec(headers).expect("headers serialize")
    }
}

fn decode_headers(raw: &[u8]) -> Headers {
    if raw.is_empty() {
        Headers::new()
    } else {
        serde_json::from_slice(raw).unwrap_or_default()
    }
}

pub(super) fn open_connection(path: &Path) -> Result<Connection, BusError> {
    let conn = Connection::open(path).map_err(storage)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA busy_timeout = 5000;",
    )
    .map_err(storage)?;
    Ok(conn)
}

pub(super) fn migrate(conn: &Connection) -> Result<Snapshot, BusError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS streams (
             name TEXT PRIMARY KEY,
             subjects TEXT NOT NULL
         );
         CREATE TABLE IF NOT EXISTS consumers (
             stream TEXT NOT NULL,
             name TEXT NOT NULL,
             config TEXT NOT NULL,
             ack_floor INTEGER NOT NULL,
             PRIMARY KEY (stream, name)
         );
         CREATE TABLE IF NOT EXISTS consumer_acks (
             stream TEXT NOT NULL,
             consumer TEXT NOT NULL,
             seq INTEGER NOT NULL,
             PRIMARY KEY (stream, consumer, seq)
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS consumer_deliveries (
             stream TEXT NOT NULL,
             consumer TEXT NOT NULL,
             seq INTEGER NOT NULL,
             deliveries INTEGER NOT NULL,
             PRIMARY KEY (stream, consumer, seq)
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS dead_letters (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             stream TEXT NOT NULL,
             consumer TEXT NOT NULL,
             stream_seq INTEGER NOT NULL,
             msg_id TEXT NOT NULL,
             subject TEXT NOT NULL,
             headers BLOB NOT NULL,
             payload BLOB NOT NULL,
             reason TEXT NOT NULL,
             deliveries INTEGER NOT NULL,
             time_ns INTEGER NOT NULL,
             UNIQUE (stream, consumer, stream_seq)
         );",
    )
    .map_err(storage)?;
    // Consumers with an inactive threshold belong to the process that opened them, and
    // that process has gone: the bus is in-process.
    conn.execute_batch(
        "DELETE FROM consumer_acks WHERE (stream, consumer) IN
             (SELECT stream, name FROM consumers
              WHERE json_extract(config, '$.inactive_threshold_ms') IS NOT NULL);
         DELETE FROM consumer_deliveries WHERE (stream, consumer) IN
             (SELECT stream, name FROM consumers
              WHERE json_extract(config, '$.inactive_threshold_ms') IS NOT NULL);
         DELETE FROM consumers WHERE json_extract(config, '$.inactive_threshold_ms') IS NOT NULL;",
    )
    .map_err(storage)?;
    // Files written before delivery counts were durable lack the column.
    let has_delivered: bool = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('consumers') WHERE name = 'delivered'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(storage)?
        > 0;
    if !has_delivered {
        conn.execute_batch(
            "ALTER TABLE consumers ADD COLUMN delivered INTEGER NOT NULL DEFAULT 0;",
        )
        .map_err(storage)?;
    }
    let mut streams = Vec::new();
    let mut stmt = conn
        .prepare("SELECT name, subjects FROM streams ORDER BY rowid")
        .map_err(storage)?;
    let rows = stmt
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .map_err(storage)?;
    for row in rows {
        let (name, subjects) = row.map_err(storage)?;
        let subjects: Vec<String> = serde_json::from_str(&subjects).unwrap_or_default();
        let last: Option<i64> = conn
            .query_row(&format!("SELECT max(seq) FROM {}", table(&name)), [], |r| {
                r.get(0)
            })
            .map_err(storage)?;
        streams.push((name, subjects, last.unwrap_or(0) as u64));
    }
    Ok(Snapshot { streams })
}

/// Runs the writer loop until every sender is gone or the channel is closed.
pub(super) fn run_writer(
    mut conn: Connection,
    snapshot: &Snapshot,
    mut ops: mpsc::UnboundedReceiver<Op>,
    on_commit: impl Fn(Committed),
) {
    let mut last_seqs: HashMap<String, u64> = snapshot
        .streams
        .iter()
        .map(|(name, _, last)| (name.clone(), *last))
        .collect();
    let mut batch = Vec::with_capacity(256);
    let mut stop = false;
    while !stop {
        let Some(first) = ops.blocking_recv() else {
            break;
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if batch.iter().any(|op| matches!(op, Op::Abandon)) {
            // Dropping the replies' senders tells every waiter the bus is gone.
            batch.clear();
            return;
        }
        stop = batch.iter().any(|op| matches!(op, Op::Shutdown));
        apply_batch(&mut conn, &mut last_seqs, &mut batch, &on_commit);
    }
    // Leave a tidy file behind: fold the WAL back into the database.
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
}

/// Replies that wait for the commit.
enum Reply {
    Unit(oneshot::Sender<Result<(), BusError>>, Result<(), BusError>),
    Acks(
        oneshot::Sender<Result<Vec<PublishAck>, BusError>>,
        Result<Vec<PublishAck>, BusError>,
    ),
    Consumer(
        oneshot::Sender<Result<ConsumerRow, BusError>>,
        Result<ConsumerRow, BusError>,
    ),
    Removed(
        oneshot::Sender<Result<bool, BusError>>,
        Result<bool, BusError>,
    ),
    Flushed(oneshot::Sender<()>),
}

/// Applies a batch in one transaction.
fn apply_batch(
    conn: &mut Connection,
    last_seqs: &mut HashMap<String, u64>,
    batch: &mut Vec<Op>,
    on_commit: &impl Fn(Committed),
) {
    let mut replies = Vec::with_capacity(batch.len());
    let mut committed = Vec::new();
    // Sequences handed out in a transaction that then fails must be handed out again.
    let seqs_before = last_seqs.clone();
    // IMMEDIATE: take the write lock up front, so a commit never fails half-way on a
    // lock held by a reader or a checkpoint.
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            fail_all(batch.drain(..), &storage(e));
            return;
        }
    };
    let mut positions: Positions = HashMap::new();
    let mut poisoned: Option<BusError> = None;
    for op in batch.drain(..) {
        match op {
            Op::EnsureStream {
                name,
                subjects,
                reply,
            } => {
                let result = ensure_stream(&tx, &name, &subjects);
                if result.is_ok() {
                    last_seqs.entry(name).or_insert(0);
                }
                replies.push(Reply::Unit(reply, result));
            }
            Op::Publish { messages, reply } => {
                let result = insert_messages(&tx, last_seqs, messages, &mut committed);
                if let Err(e) = &result {
                    // Part of it may be written: roll the whole batch back rather than
                    // commit half a publish.
                    poisoned.get_or_insert_with(|| BusError::Storage(e.to_string()));
                }
                replies.push(Reply::Acks(reply, result));
            }
            Op::EnsureConsumer {
                stream,
                name,
                config_json,
                initial_floor,
                reply,
            } => {
                let result = ensure_consumer(&tx, &stream, &name, &config_json, initial_floor);
                replies.push(Reply::Consumer(reply, result));
            }
            Op::DeleteConsumer {
                stream,
                name,
                reply,
            } => {
                positions.remove(&(stream.clone(), name.clone()));
                let result = tx
                    .execute(
                        "DELETE FROM consumers WHERE stream = ?1 AND name = ?2",
                        params![stream, name],
                    )
                    .and_then(|_| {
                        tx.execute(
                            "DELETE FROM consumer_acks WHERE stream = ?1 AND consumer = ?2",
                            params![stream, name],
                        )
                    })
                    .and_then(|_| {
                        tx.execute(
                            "DELETE FROM consumer_deliveries WHERE stream = ?1 AND consumer = ?2",
                            params![stream, name],
                        )
                    })
                    .map(|_| ())
                    .map_err(storage);
                replies.push(Reply::Unit(reply, result));
            }
            Op::SavePosition(slot) => merge_position(&mut positions, slot.take()),
            Op::DeadLetter {
                letter,
                position,
                reply,
            } => {
                let result = insert_dead_letter(&tx, &letter);
                if result.is_ok() {
                    merge_position(&mut positions, position);
                }
                replies.push(Reply::Unit(reply, result));
            }
            Op::RemoveDeadLetter { id, reply } => {
                let result = tx
                    .execute("DELETE FROM dead_letters WHERE id = ?1", params![id as i64])
                    .map(|n| n > 0)
                    .map_err(storage);
                replies.push(Reply::Removed(reply, result));
            }
            Op::Flush(reply) => replies.push(Reply::Flushed(reply)),
            Op::Shutdown | Op::Abandon => {}
        }
    }
    let commit = match poisoned {
        Some(e) => Err(e),
        None => write_positions(&tx, positions).and_then(|()| tx.commit().map_err(storage)),
    };
    match commit {
        Ok(()) => {
            on_commit(committed);
            for reply in replies {
                send(reply, None);
            }
        }
        Err(e) => {
            *last_seqs = seqs_before;
            for reply in replies {
                send(reply, Some(&e));
            }
        }
    }
}

fn send(reply: Reply, failure: Option<&BusError>) {
    let fail =
        |_: &BusError| BusError::Storage(failure.map(ToString::to_string).unwrap_or_default());
    match reply {
        Reply::Unit(tx, r) => {
            let _ = tx.send(failure.map_or(r, |e| Err(fail(e))));
        }
        Reply::Acks(tx, r) => {
            let _ = tx.send(failure.map_or(r, |e| Err(fail(e))));
        }
        Reply::Consumer(tx, r) => {
            let _ = tx.send(failure.map_or(r, |e| Err(fail(e))));
        }
        Reply::Removed(tx, r) => {
            let _ = tx.send(failure.map_or(r, |e| Err(fail(e))));
        }
        Reply::Flushed(tx) => {
            let _ = tx.send(());
        }
    }
}

fn fail_all(ops: impl Iterator<Item = Op>, e: &BusError) {
    let err = || BusError::Storage(e.to_string());
    for op in ops {
        match op {
            Op::EnsureStream { reply, .. }
            | Op::DeleteConsumer { reply, .. }
            | Op::DeadLetter { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            Op::Publish { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            Op::EnsureConsumer { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            Op::RemoveDeadLetter { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            Op::Flush(reply) => {
                let _ = reply.send(());
            }
            Op::SavePosition(_) | Op::Shutdown | Op::Abandon => {}
        }
    }
}

fn ensure_stream(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    subjects: &[String],
) -> Result<(), BusError> {
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {} (
             seq INTEGER PRIMARY KEY,
             msg_id TEXT NOT NULL UNIQUE,
             subject TEXT NOT NULL,
             headers BLOB NOT NULL,
             payload BLOB NOT NULL,
             time_ns INTEGER NOT NULL
         );",
        table(name)
    ))
    .map_err(storage)?;
    tx.execute(
        "INSERT INTO streams (name, subjects) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET subjects = excluded.subjects",
        params![
            name,
            serde_json::to_string(subjects).expect("subjects serialize")
        ],
    )
    .map_err(storage)?;
    Ok(())
}

/// Inserts in order, each stream's sequence counting on from its last; a message whose
/// id its stream already holds is acknowledged as a duplicate with the stored sequence.
/// On error nothing of this call is reported as committed.
fn insert_messages(
    tx: &rusqlite::Transaction<'_>,
    last_seqs: &mut HashMap<String, u64>,
    messages: Vec<(String, OutgoingMessage)>,
    committed: &mut Committed,
) -> Result<Vec<PublishAck>, BusError> {
    let mut acks = Vec::with_capacity(messages.len());
    let mut stored = Vec::with_capacity(messages.len());
    let now = SystemTime::now();
    let now_ns = to_nanos(now);
    for (stream, m) in messages {
        let (insert_sql, select_sql) = statements(&stream);
        let last = last_seqs
            .get_mut(&stream)
            .ok_or_else(|| BusError::StreamNotFound(stream.clone()))?;
        let seq = *last + 1;
        let inserted = tx
            .prepare_cached(&insert_sql)
            .and_then(|mut insert| {
                insert.execute(params![
                    seq as i64,
                    m.id,
                    m.subject,
                    encode_headers(&m.headers),
                    &m.payload[..],
                    now_ns
                ])
            })
            .map_err(storage)?;
        if inserted == 1 {
            *last = seq;
            acks.push(PublishAck {
                stream: stream.clone(),
                sequence: seq,
                duplicate: false,
            });
            stored.push((
                stream,
                StoredMessage {
                    seq,
                    id: m.id,
                    subject: m.subject,
                    headers: m.headers,
                    payload: m.payload,
                    time: now,
                    committed: None,
                },
            ));
        } else {
            let existing: i64 = tx
                .prepare_cached(&select_sql)
                .and_then(|mut s| s.query_row(params![m.id], |r| r.get(0)))
                .map_err(storage)?;
            acks.push(PublishAck {
                stream,
                sequence: existing as u64,
                duplicate: true,
            });
        }
    }
    committed.extend(stored);
    Ok(acks)
}

/// A stream's insert and duplicate look-up statements.
type StreamSql = (std::rc::Rc<str>, std::rc::Rc<str>);

/// The insert and the duplicate look-up of a stream's table, built once per stream and
/// thread: the writer runs them for every message.
fn statements(stream: &str) -> StreamSql {
    use std::cell::RefCell;
    thread_local! {
        static SQL: RefCell<HashMap<String, StreamSql>> = RefCell::new(HashMap::new());
    }
    SQL.with(|sql| {
        let mut sql = sql.borrow_mut();
        if let Some(s) = sql.get(stream) {
            return s.clone();
        }
        let table = table(stream);
        let s: StreamSql = (
            format!(
                "INSERT INTO {table} (seq, msg_id, subject, headers, payload, time_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (msg_id) DO NOTHING"
            )
            .into(),
            format!("SELECT seq FROM {table} WHERE msg_id = ?1").into(),
        );
        sql.insert(stream.to_owned(), s.clone());
        s
    })
}

fn ensure_consumer(
    tx: &rusqlite::Transaction<'_>,
    stream: &str,
    name: &str,
    config_json: &str,
    initial_floor: u64,
) -> Result<ConsumerRow, BusError> {
    tx.execute(
        "INSERT INTO consumers (stream, name, config, ack_floor) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (stream, name) DO UPDATE SET config = excluded.config",
        params![stream, name, config_json, initial_floor as i64],
    )
    .map_err(storage)?;
    let (floor, delivered): (i64, i64) = tx
        .query_row(
            "SELECT ack_floor, delivered FROM consumers WHERE stream = ?1 AND name = ?2",
            params![stream, name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(storage)?;
    let mut stmt = tx
        .prepare(
            "SELECT seq FROM consumer_acks WHERE stream = ?1 AND consumer = ?2 AND seq > ?3
             ORDER BY seq",
        )
        .map_err(storage)?;
    let acked = stmt
        .query_map(params![stream, name, floor], |r| r.get::<_, i64>(0))
        .map_err(storage)?
        .map(|r| r.map(|s| s as u64))
        .collect::<Result<Vec<_>, _>>()
        .map_err(storage)?;
    let mut stmt = tx
        .prepare(
            "SELECT seq, deliveries FROM consumer_deliveries
             WHERE stream = ?1 AND consumer = ?2 AND seq > ?3",
        )
        .map_err(storage)?;
    let redeliveries = stmt
        .query_map(params![stream, name, floor], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, u32>(1)?))
        })
        .map_err(storage)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(storage)?;
    Ok(ConsumerRow {
        floor: floor as u64,
        acked_above_floor: acked,
        delivered: delivered as u64,
        redeliveries,
    })
}

/// Position changes gathered in one transaction, by `(stream, consumer)`.
type Positions = HashMap<(String, String), AckUpdate>;

fn merge_position(positions: &mut Positions, update: AckUpdate) {
    let key = (update.stream.clone(), update.consumer.clone());
    match positions.get_mut(&key) {
        Some(entry) => {
            entry.floor = entry.floor.max(update.floor);
            entry.above_floor.extend(update.above_floor);
            entry.delivered = entry.delivered.max(update.delivered);
            entry.redeliveries.extend(update.redeliveries);
        }
        None => {
            positions.insert(key, update);
        }
    }
}

fn write_positions(tx: &rusqlite::Transaction<'_>, positions: Positions) -> Result<(), BusError> {
    for update in positions.into_values() {
        let AckUpdate {
            stream,
            consumer,
            floor,
            above_floor: above,
            delivered,
            redeliveries,
        } = update;
        tx.prepare_cached(
            "UPDATE consumers SET ack_floor = max(ack_floor, ?3), delivered = max(delivered, ?4)
             WHERE stream = ?1 AND name = ?2",
        )
        .and_then(|mut s| s.execute(params![stream, consumer, floor as i64, delivered as i64]))
        .map_err(storage)?;
        if !redeliveries.is_empty() {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO consumer_deliveries (stream, consumer, seq, deliveries)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (stream, consumer, seq)
                     DO UPDATE SET deliveries = max(deliveries, excluded.deliveries)",
                )
                .map_err(storage)?;
            for (seq, deliveries) in redeliveries.into_iter().filter(|&(s, _)| s > floor) {
                upsert
                    .execute(params![stream, consumer, seq as i64, deliveries])
                    .map_err(storage)?;
            }
        }
        let mut insert = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO consumer_acks (stream, consumer, seq) VALUES (?1, ?2, ?3)",
            )
            .map_err(storage)?;
        for seq in above.into_iter().filter(|&s| s > floor) {
            insert
                .execute(params![stream, consumer, seq as i64])
                .map_err(storage)?;
        }
        tx.prepare_cached(
            "DELETE FROM consumer_acks WHERE stream = ?1 AND consumer = ?2 AND seq <= ?3",
        )
        .and_then(|mut s| s.execute(params![stream, consumer, floor as i64]))
        .map_err(storage)?;
        tx.prepare_cached(
            "DELETE FROM consumer_deliveries WHERE stream = ?1 AND consumer = ?2 AND seq <= ?3",
        )
        .and_then(|mut s| s.execute(params![stream, consumer, floor as i64]))
        .map_err(storage)?;
    }
    Ok(())
}

fn insert_dead_letter(
    tx: &rusqlite::Transaction<'_>,
    letter: &NewDeadLetter,
) -> Result<(), BusError> {
    let m = &letter.message;
    tx.execute(
        "INSERT INTO dead_letters
             (stream, consumer, stream_seq, msg_id, subject, headers, payload, reason,
              deliveries, time_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (stream, consumer, stream_seq) DO NOTHING",
        params![
            letter.stream,
            letter.consumer,
            m.seq as i64,
            m.id,
            m.subject,
            encode_headers(&m.headers),
            &m.payload[..],
            letter.reason,
            letter.deliveries,
            to_nanos(SystemTime::now()),
        ],
    )
    .map_err(storage)?;
    Ok(())
}

/// Read-only queries, run on a connection of their own (WAL lets them run beside the
/// writer).
pub(super) struct Reader {
    conn: Connection,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Self, BusError> {
        Ok(Self {
            conn: open_connection(path)?,
        })
    }

    /// Up to `limit` messages of `stream` from `from_seq` on, in order.
    pub fn messages_from(
        &self,
        stream: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Arc<StoredMessage>>, BusError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT seq, msg_id, subject, headers, payload, time_ns FROM {}
                 WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
                table(stream)
            ))
            .map_err(storage)?;
        let rows = stmt
            .query_map(params![from_seq as i64, limit as i64], |r| {
                Ok(Arc::new(StoredMessage {
                    seq: r.get::<_, i64>(0)? as u64,
                    id: r.get(1)?,
                    subject: r.get(2)?,
                    headers: decode_headers(&r.get::<_, Vec<u8>>(3)?),
                    payload: Bytes::from(r.get::<_, Vec<u8>>(4)?),
                    time: from_nanos(r.get(5)?),
                    committed: None,
                }))
            })
            .map_err(storage)?;
        rows.collect::<Result<_, _>>().map_err(storage)
    }

    /// The sequence of the first message stored at or after `time`, if any.
    pub fn first_seq_at_or_after(
        &self,
        stream: &str,
        time: SystemTime,
    ) -> Result<Option<u64>, BusError> {
        // A binary search on the sequence, a few primary-key lookups instead of a scan
        // of the stream: publish times grow with the sequence (each commit stamps its
        // messages with the wall clock; a clock stepped back can only make the start
        // a little early, never skip a message published after `time`).
        let table = table(stream);
        let (first, last): (Option<i64>, Option<i64>) = self
            .conn
            .query_row(
                &format!("SELECT min(seq), max(seq) FROM {table}"),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(storage)?;
        let (Some(mut lo), Some(mut hi)) = (first, last) else {
            return Ok(None);
        };
        let at_or_after =
            format!("SELECT seq, time_ns FROM {table} WHERE seq >= ?1 ORDER BY seq LIMIT 1");
        let mut stmt = self.conn.prepare_cached(&at_or_after).map_err(storage)?;
        let wanted = to_nanos(time);
        let mut first_from = |seq: i64| -> Result<(i64, i64), BusError> {
            stmt.query_row(params![seq], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(storage)
        };
        if first_from(hi)?.1 < wanted {
            return Ok(None);
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if first_from(mid)?.1 >= wanted {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(Some(first_from(lo)?.0 as u64))
    }

    /// Subjects of the messages from `from_seq` on, to count what a filtered consumer
    /// has pending.
    pub fn subjects_from(
        &self,
        stream: &str,
        from_seq: u64,
    ) -> Result<Vec<(u64, String)>, BusError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT seq, subject FROM {} WHERE seq >= ?1 ORDER BY seq",
                table(stream)
            ))
            .map_err(storage)?;
        let rows = stmt
            .query_map(params![from_seq as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
            })
            .map_err(storage)?;
        rows.collect::<Result<_, _>>().map_err(storage)
    }

    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, stream, consumer, stream_seq, msg_id, subject, headers, payload,
                        reason, deliveries, time_ns
                 FROM dead_letters ORDER BY id",
            )
            .map_err(storage)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(DeadLetter {
                    id: r.get::<_, i64>(0)? as u64,
                    stream: r.get(1)?,
                    consumer: r.get(2)?,
                    stream_sequence: r.get::<_, i64>(3)? as u64,
                    message_id: r.get(4)?,
                    subject: r.get(5)?,
                    headers: decode_headers(&r.get::<_, Vec<u8>>(6)?),
                    payload: Bytes::from(r.get::<_, Vec<u8>>(7)?),
                    reason: r.get(8)?,
                    deliveries: r.get(9)?,
                    time: from_nanos(r.get(10)?),
                })
            })
            .map_err(storage)?;
        rows.collect::<Result<_, _>>().map_err(storage)
    }

    pub fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, BusError> {
        Ok(self.dead_letters()?.into_iter().find(|d| d.id == id))
    }

    pub fn dead_letter_count(&self, stream: &str, consumer: &str) -> Result<u64, BusError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM dead_letters WHERE stream = ?1 AND consumer = ?2",
                params![stream, consumer],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|n| n.unwrap_or(0) as u64)
            .map_err(storage)
    }
}
