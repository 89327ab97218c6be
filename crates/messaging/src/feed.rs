//! A service's own events as a feed, and catching up from another service's feed.
//!
//! Every published event of a store takes the next *feed position* (1, 2, 3…) as the
//! relay marks it published, so an owner can serve its whole history, oldest first, in
//! pages that never change once full: [`Outbox::feed`]. The outbox keeps published
//! events for that (see [`crate::RelayConfig::retention`]), long after a bus stream
//! dropped them.
//!
//! A consumer that needs more history than the stream keeps (a new service, or a replica
//! rebuilt after the stream's retention) runs a [`CatchUp`]: it reads the owner's
//! [`Feed`] from the start, applying each event through its [`Handler`] and the same
//! inbox key as its bus consumer, while that consumer reads the bus from a *switch time*
//! a little in the past. An event in both is applied once (the inbox), and none falls
//! between the two: the feed is read to its end, and until no event committed before
//! the switch time is still waiting for the owner's relay.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::FutureExt;
use sqlx::{Connection, Row};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::db::Db;
use crate::envelope::Envelope;
use crate::outbox::Outbox;
use crate::subscriber::{Handler, Inbox};
use crate::{Backoff, Error};

/// Events per feed page served by [`Outbox::feed`]'s callers.
pub const FEED_PAGE: usize = 500;

/// One event of a feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedEvent {
    /// Its feed position: 1 for the first event published, then one more each.
    pub position: u64,
    /// The envelope, as JSON (what the bus message carried).
    pub envelope: String,
}

impl FeedEvent {
    pub fn decode(&self) -> Result<Envelope, Error> {
        Envelope::from_json(self.envelope.as_bytes())
    }
}

/// A page of a feed: the events after a position, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedPage {
    pub events: Vec<FeedEvent>,
    /// When the oldest event committed but not yet published was written (the owner's
    /// clock); `None` when the relay has published everything, and on a full page (one
    /// that never changes; the question is for the feed's end). Such an event may be on
    /// the bus already (published, not yet marked), and joins the feed when marked.
    pub pending_since: Option<SystemTime>,
}

/// Where a [`CatchUp`] reads an owner's events: its [`Outbox`] in process, or its
/// `/internal/<service>/events` over HTTP.
#[async_trait]
pub trait Feed: Send + Sync + fmt::Debug + 'static {
    /// The events after `after` (0: from the first), at most one page of them.
    async fn page(&self, after: u64) -> Result<FeedPage, Error>;
}

impl Outbox {
    /// The published events after feed position `after`, oldest first, at most `limit`.
    /// A page of `limit` events never changes.
    pub async fn feed(&self, after: u64, limit: usize) -> Result<FeedPage, Error> {
        let rows = sqlx::query(
            "SELECT feed_position, payload FROM messaging_outbox
             WHERE feed_position > $1 ORDER BY feed_position LIMIT $2",
        )
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.db().pool())
        .await?;
        let events = rows
            .into_iter()
            .map(|row| {
                let position: i64 = row.try_get("feed_position")?;
                Ok(FeedEvent {
                    position: u64::try_from(position).unwrap_or_default(),
                    envelope: row.try_get("payload")?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        if events.len() >= limit {
            return Ok(FeedPage {
                events,
                pending_since: None,
            });
        }
        let oldest: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(created_at_ms) FROM messaging_outbox WHERE published_at_ms IS NULL",
        )
        .fetch_one(self.db().pool())
        .await?;
        Ok(FeedPage {
            events,
            pending_since: oldest.map(crate::ms_system_time),
        })
    }
}

#[async_trait]
impl Feed for Outbox {
    async fn page(&self, after: u64) -> Result<FeedPage, Error> {
        self.feed(after, FEED_PAGE).await
    }
}

/// How far a [`CatchUp`] got, kept in the consumer's store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatchUpState {
    /// The feed position applied up to.
    pub position: u64,
    /// Whether the feed was read up to the switch time.
    pub done: bool,
}

/// Reads an owner's feed into a consumer's store. See the module documentation.
#[derive(Clone)]
pub struct CatchUp {
    db: Db,
    feed: Arc<dyn Feed>,
    consumer: String,
    handler: Arc<dyn Handler>,
    switch: SystemTime,
}

impl fmt::Debug for CatchUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatchUp")
            .field("feed", &self.feed)
            .field("consumer", &self.consumer)
            .field("switch", &self.switch)
            .finish_non_exhaustive()
    }
}

/// How long a [`CatchUp`] waits for an owner's relay to publish an event committed
/// before the switch time, and between failed attempts at first.
const CATCH_UP_RETRY: Backoff = Backoff {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(5),
};

impl CatchUp {
    /// Applies `feed`'s events with `handler`, recording each in the inbox of
    /// `consumer` (the bus consumer's name), until the feed is read to its end and holds
    /// everything committed before `switch` (the time from which that bus consumer
    /// reads).
    pub fn new(
        db: &Db,
        feed: Arc<dyn Feed>,
        consumer: impl Into<String>,
        handler: impl Handler,
        switch: SystemTime,
    ) -> Self {
        Self {
            db: db.clone(),
            feed,
            consumer: consumer.into(),
            handler: Arc::new(handler),
            switch,
        }
    }

    /// Reads the feed to its end; the progress is committed page by page, so a second
    /// run (after a crash, or by another process sharing the store) goes on from there.
    /// `Ok(true)`: caught up; `Ok(false)`: an event committed before the switch time is
    /// not published yet, try again shortly.
    pub async fn run_once(&self) -> Result<bool, Error> {
        let mut state = Self::state(&self.db, &self.consumer).await?;
        if state.done {
            return Ok(true);
        }
        loop {
            let page = self.feed.page(state.position).await?;
            if page.events.is_empty() {
                if page.pending_since.is_some_and(|since| since < self.switch) {
                    return Ok(false);
                }
                self.record(state.position, true).await?;
                return Ok(true);
            }
            state.position = self.apply(&page.events).await?;
        }
    }

    /// Applies one page in one transaction, with the progress; returns the position
    /// reached.
    async fn apply(&self, events: &[FeedEvent]) -> Result<u64, Error> {
        let mut tx = self.db.begin().await?;
        let mut skipped = 0;
        for event in events {
            let envelope = event.decode()?;
            let mut savepoint = tx.begin().await?;
            if !Inbox::record(&mut savepoint, &self.consumer, envelope.id).await? {
                savepoint.rollback().await?;
                continue;
            }
            let handled =
                std::panic::AssertUnwindSafe(self.handler.handle(&mut savepoint, &envelope))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| {
                        Err(crate::HandlerError::transient("the handler panicked"))
                    });
            match handled {
                Ok(()) => savepoint.commit().await?,
                Err(error) if error.is_permanent() => {
                    // What the bus consumer would dead-letter; a feed has no such place.
                    savepoint.rollback().await?;
                    skipped += 1;
                    tracing::warn!(
                        event_id = %envelope.id,
                        reason = error.reason(),
                        "a feed event cannot be applied; skipped"
                    );
                }
                Err(error) => {
                    return Err(Error::Feed(format!(
                        "applying event {}: {}",
                        envelope.id,
                        error.reason()
                    )));
                }
            }
        }
        let reached = events.last().map_or(0, |event| event.position);
        record(&mut tx, &self.consumer, reached, false).await?;
        tx.commit().await?;
        tracing::debug!(
            consumer = %self.consumer,
            reached,
            applied = events.len() - skipped,
            "feed page applied"
        );
        Ok(reached)
    }

    async fn record(&self, position: u64, done: bool) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        record(&mut tx, &self.consumer, position, done).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Where the catch-up of `consumer` stands in `db` (position 0, not done, when it
    /// never ran).
    pub async fn state(db: &Db, consumer: &str) -> Result<CatchUpState, Error> {
        let row =
            sqlx::query("SELECT position, done FROM messaging_feed_cursors WHERE consumer = $1")
                .bind(consumer)
                .fetch_optional(db.pool())
                .await?;
        Ok(match row {
            Some(row) => CatchUpState {
                position: u64::try_from(row.try_get::<i64, _>("position")?).unwrap_or_default(),
                done: row.try_get::<i64, _>("done")? != 0,
            },
            None => CatchUpState {
                position: 0,
                done: false,
            },
        })
    }

    /// Runs [`CatchUp::run_once`] until caught up, trying again after failures; stops
    /// early on [`CatchUpHandle::shutdown`].
    pub fn spawn(self) -> CatchUpHandle {
        let (stop, mut stopped) = watch::channel(false);
        let span = tracing::info_span!("feed_catch_up", consumer = %self.consumer);
        let task = tokio::spawn(
            async move {
                let mut attempts: u32 = 0;
                loop {
                    match self.run_once().await {
                        Ok(true) => {
                            tracing::info!("caught up from the owner's feed");
                            return;
                        }
                        Ok(false) => {
                            attempts = 1;
                            tracing::debug!("waiting for the owner's relay");
                        }
                        Err(error) => {
                            attempts = attempts.saturating_add(1);
                            tracing::warn!(%error, attempts, "feed catch-up failed; trying again");
                        }
                    }
                    tokio::select! {
                        () = tokio::time::sleep(CATCH_UP_RETRY.delay(attempts)) => {}
                        _ = stopped.wait_for(|stop| *stop) => return,
                    }
                }
            }
            .instrument(span),
        );
        CatchUpHandle { stop, task }
    }
}

/// A running [`CatchUp`].
#[derive(Debug)]
pub struct CatchUpHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl CatchUpHandle {
    /// Stops after the page being applied (its progress is kept) and waits.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }

    /// Whether it has ended (caught up, or stopped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Moves the cursor of `consumer` forward (never back: another process may be ahead).
async fn record(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    consumer: &str,
    position: u64,
    done: bool,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO messaging_feed_cursors (consumer, position, done) VALUES ($1, $2, $3)
         ON CONFLICT (consumer) DO UPDATE SET
             position = CASE WHEN excluded.position > messaging_feed_cursors.position
                             THEN excluded.position ELSE messaging_feed_cursors.position END,
             done = CASE WHEN excluded.done > messaging_feed_cursors.done
                         THEN excluded.done ELSE messaging_feed_cursors.done END",
    )
    .bind(consumer)
    .bind(i64::try_from(position).unwrap_or(i64::MAX))
    .bind(i64::from(done))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
