//! The event timeline of the ops console: every event of every service's stream, kept
//! by the gateway in its own store and read by correlation id (the order or user a
//! flow is about), oldest first. A projection like any other: complete once every
//! stream's consumer has caught up.
//!
//! Bounded: events older than the configured age are pruned (at start, then every
//! minute). Payment method tokens never enter it: they are redacted when stored.

use agora_bus::SharedBus;
use agora_messaging::{
    Db, Envelope, Handler, HandlerError, Migration, Subscriber, SubscriberConfig, SubscriberHandle,
};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::{Any, Row, Transaction};
use utoipa::ToSchema;

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "the event timeline",
        sqlite: "CREATE TABLE gateway_events (
        id TEXT PRIMARY KEY NOT NULL,
        event_type TEXT NOT NULL,
        source TEXT NOT NULL,
        subject TEXT NOT NULL,
        time_ms BIGINT NOT NULL,
        time TEXT NOT NULL,
        correlation_id TEXT NOT NULL,
        causation_id TEXT,
        data TEXT NOT NULL
    );
    CREATE INDEX gateway_events_by_correlation ON gateway_events (correlation_id, time_ms);",
        postgres: "CREATE TABLE gateway_events (
        id TEXT PRIMARY KEY NOT NULL,
        event_type TEXT NOT NULL,
        source TEXT NOT NULL,
        subject TEXT NOT NULL,
        time_ms BIGINT NOT NULL,
        time TEXT NOT NULL,
        correlation_id TEXT NOT NULL,
        causation_id TEXT,
        data TEXT NOT NULL
    );
    CREATE INDEX gateway_events_by_correlation ON gateway_events (correlation_id, time_ms);",
    },
    Migration {
        version: 2,
        description: "the most recent events, for the live stream",
        sqlite: "CREATE INDEX gateway_events_by_time ON gateway_events (time_ms);",
        postgres: "CREATE INDEX gateway_events_by_time ON gateway_events (time_ms);",
    },
];

/// One event of the timeline.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TimelineEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub source: String,
    pub subject: String,
    /// RFC 3339.
    pub time: String,
    pub correlation_id: String,
    /// The id of the event (or request) that caused this one.
    pub causation_id: Option<String>,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

#[derive(Debug, Clone)]
pub(crate) struct Timeline {
    db: Db,
}

/// How often old events are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What a payment method token is shown as.
pub(crate) const REDACTED: &str = "[redacted]";

/// Fields of event data that carry a payment provider's token.
const SECRET_FIELDS: &[&str] = &["token", "payment_token", "payment_method_token"];

impl Timeline {
    /// Deletes the events older than `max_age`; how many went.
    pub async fn prune(&self, max_age: Duration) -> Result<u64, sqlx::Error> {
        let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let max_age_ms = i128::try_from(max_age.as_millis()).unwrap_or(i128::MAX);
        let cutoff = i64::try_from(now_ms.saturating_sub(max_age_ms)).unwrap_or(i64::MIN);
        let done = sqlx::query("DELETE FROM gateway_events WHERE time_ms < $1")
            .bind(cutoff)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// Prunes now, then every [`PRUNE_EVERY`], until the handle is aborted.
    pub fn spawn_pruner(&self, max_age: Duration) -> tokio::task::JoinHandle<()> {
        let timeline = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PRUNE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                match timeline.prune(max_age).await {
                    Ok(0) => {}
                    Ok(pruned) => tracing::debug!(pruned, "old timeline events pruned"),
                    Err(error) => tracing::warn!(%error, "timeline not pruned"),
                }
            }
        })
    }

    /// At most `limit` events about `correlation_id`, oldest first.
    pub async fn events(
        &self,
        correlation_id: &str,
        limit: u32,
    ) -> Result<Vec<TimelineEvent>, sqlx::Error> {
        self.events_where("correlation_id = $1", correlation_id, limit)
            .await
    }

    /// At most `limit` events about the orders with this human reference (the last 40
    /// bits of their id), oldest first.
    pub async fn events_of_reference(
        &self,
        reference: agora_contracts::OrderReference,
        limit: u32,
    ) -> Result<Vec<TimelineEvent>, sqlx::Error> {
        // Order ids are stored as lower-case hyphenated text ending in hex: a suffix.
        let pattern = format!("%{}", reference.id_suffix());
        let events = self
            .events_where("correlation_id LIKE $1", &pattern, limit)
            .await?;
        Ok(events
            .into_iter()
            .filter(|e| {
                uuid::Uuid::parse_str(&e.correlation_id).is_ok_and(|id| reference.matches(id))
            })
            .collect())
    }

    async fn events_where(
        &self,
        condition: &str,
        value: &str,
        limit: u32,
    ) -> Result<Vec<TimelineEvent>, sqlx::Error> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, event_type, source, subject, time, correlation_id, causation_id, data
             FROM gateway_events WHERE {condition} ORDER BY time_ms, id LIMIT $2"
        )))
        .bind(value)
        .bind(i64::from(limit))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(event).collect()
    }

    /// The `limit` most recent events of the whole shop, oldest first.
    pub async fn recent(&self, limit: u32) -> Result<Vec<TimelineEvent>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, event_type, source, subject, time, correlation_id, causation_id, data
             FROM gateway_events ORDER BY time_ms DESC, id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().rev().map(event).collect()
    }
}

fn event(row: &sqlx::any::AnyRow) -> Result<TimelineEvent, sqlx::Error> {
    let data: String = row.try_get("data")?;
    Ok(TimelineEvent {
        id: row.try_get("id")?,
        event_type: row.try_get("event_type")?,
        source: row.try_get("source")?,
        subject: row.try_get("subject")?,
        time: row.try_get("time")?,
        correlation_id: row.try_get("correlation_id")?,
        causation_id: row.try_get("causation_id")?,
        // Rows stored before redaction existed are redacted on the way out.
        data: redacted(serde_json::from_str(&data).unwrap_or(serde_json::Value::Null)),
    })
}

/// Applies the migration and starts one consumer per service stream.
pub(crate) async fn start(
    db: &Db,
    bus: &SharedBus,
) -> Result<(Timeline, Vec<SubscriberHandle>), agora_messaging::Error> {
    db.migrate("gateway-timeline", MIGRATIONS).await?;
    let mut sources: Vec<&str> = agora_contracts::ALL_TYPES.iter().map(|(s, _)| *s).collect();
    sources.dedup();
    let mut handles = Vec::new();
    for source in sources {
        let config = SubscriberConfig::on_source(format!("gateway-timeline-{source}"), source);
        handles.push(Subscriber::spawn(db, bus, config, Record).await?);
    }
    Ok((Timeline { db: db.clone() }, handles))
}

struct Record;

#[async_trait]
impl Handler for Record {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let time = envelope
            .time
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(HandlerError::permanent)?;
        let time_ms =
            i64::try_from(envelope.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO gateway_events
                (id, event_type, source, subject, time_ms, time, correlation_id, causation_id, data)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
        )
        .bind(envelope.id.to_string())
        .bind(&envelope.event_type)
        .bind(&envelope.source)
        .bind(&envelope.subject)
        .bind(time_ms)
        .bind(time)
        .bind(&envelope.correlation_id)
        .bind(envelope.causation_id.clone())
        .bind(redacted(envelope.data.clone()).to_string())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// Event data with every payment method token replaced by [`REDACTED`], at any depth.
pub(crate) fn redacted(mut data: serde_json::Value) -> serde_json::Value {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(fields) => {
                for (name, field) in fields.iter_mut() {
                    if SECRET_FIELDS.contains(&name.as_str()) && field.is_string() {
                        *field = serde_json::Value::String(REDACTED.to_owned());
                    } else {
                        walk(field);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut data);
    data
}

#[cfg(test)]
mod tests {
    use agora_contracts::{PaymentMethod, PaymentMethodChanged};
    use agora_messaging::Context;
    use uuid::Uuid;

    use super::*;

    async fn timeline(dir: &tempfile::TempDir) -> Timeline {
        let url = format!("sqlite://{}", dir.path().join("gateway.db").display());
        let db = Db::connect(&url).await.expect("a store");
        db.migrate("gateway-timeline", MIGRATIONS)
            .await
            .expect("migrated");
        Timeline { db }
    }

    async fn record(timeline: &Timeline, envelope: &Envelope) {
        let mut tx = timeline.db.pool().begin().await.expect("a transaction");
        Record.handle(&mut tx, envelope).await.expect("recorded");
        tx.commit().await.expect("committed");
    }

    fn payment_method_changed(customer: Uuid) -> Envelope {
        let event = PaymentMethodChanged {
            customer_id: customer,
            payment_method: PaymentMethod {
                token: "tok_visa".to_owned(),
                last4: "4242".to_owned(),
            },
            changed_at: time::OffsetDateTime::now_utc(),
            version: 1,
        };
        Envelope::new(&event, &Context::new(customer.to_string())).expect("an envelope")
    }

    #[tokio::test]
    async fn payment_tokens_are_never_stored() {
        let dir = tempfile::tempdir().expect("a dir");
        let timeline = timeline(&dir).await;
        let customer = Uuid::now_v7();
        record(&timeline, &payment_method_changed(customer)).await;
        let events = timeline
            .events(&customer.to_string(), 10)
            .await
            .expect("events");
        assert_eq!(events[0].data["payment_method"]["token"], REDACTED);
        assert_eq!(events[0].data["payment_method"]["last4"], "4242");
        let stored: String = sqlx::query_scalar("SELECT data FROM gateway_events")
            .fetch_one(timeline.db.pool())
            .await
            .expect("a row");
        assert!(!stored.contains("tok_visa"), "stored: {stored}");
        let recent = timeline.recent(10).await.expect("recent");
        assert_eq!(recent[0].data["payment_method"]["token"], REDACTED);
    }

    #[test]
    fn tokens_are_redacted_at_any_depth_and_ids_kept() {
        let data = serde_json::json!({
            "token_id": "0193a5b2-7c1e-7d3a-9f00-1234567890ab",
            "payment_token": "tok_declined",
            "lines": [{"payment_method": {"token": "tok_visa", "last4": "0002"}}],
        });
        let clean = redacted(data);
        assert_eq!(clean["token_id"], "0193a5b2-7c1e-7d3a-9f00-1234567890ab");
        assert_eq!(clean["payment_token"], REDACTED);
        assert_eq!(clean["lines"][0]["payment_method"]["token"], REDACTED);
        assert_eq!(clean["lines"][0]["payment_method"]["last4"], "0002");
    }

    #[tokio::test]
    async fn events_older_than_the_max_age_are_pruned() {
        let dir = tempfile::tempdir().expect("a dir");
        let timeline = timeline(&dir).await;
        let (old_customer, new_customer) = (Uuid::now_v7(), Uuid::now_v7());
        let mut old = payment_method_changed(old_customer);
        old.time -= time::Duration::hours(2);
        record(&timeline, &old).await;
        record(&timeline, &payment_method_changed(new_customer)).await;

        assert_eq!(
            timeline.prune(Duration::from_secs(3 * 3600)).await.ok(),
            Some(0)
        );
        assert_eq!(
            timeline.prune(Duration::from_secs(3600)).await.ok(),
            Some(1)
        );
        let count = |c: Uuid| {
            let timeline = timeline.clone();
            async move {
                timeline
                    .events(&c.to_string(), 10)
                    .await
                    .expect("events")
                    .len()
            }
        };
        assert_eq!(count(old_customer).await, 0, "the old event went");
        assert_eq!(count(new_customer).await, 1, "the recent one stays");

        // The pruner prunes at once when started.
        let pruner = timeline.spawn_pruner(Duration::ZERO);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while count(new_customer).await > 0 {
            assert!(tokio::time::Instant::now() < deadline, "not pruned in 5 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        pruner.abort();
    }
}
