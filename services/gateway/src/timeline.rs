//! The event timeline of the ops console: every event of every service's stream, kept
//! by the gateway in its own store and read by correlation id (the order or user a
//! flow is about), oldest first. A projection like any other: complete once every
//! stream's consumer has caught up.

use agora_bus::SharedBus;
use agora_messaging::{
    Db, Envelope, Handler, HandlerError, Migration, Subscriber, SubscriberConfig, SubscriberHandle,
};
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

impl Timeline {
    /// At most `limit` events about `correlation_id`, oldest first.
    pub async fn events(
        &self,
        correlation_id: &str,
        limit: u32,
    ) -> Result<Vec<TimelineEvent>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, event_type, source, subject, time, correlation_id, causation_id, data
             FROM gateway_events WHERE correlation_id = $1 ORDER BY time_ms, id LIMIT $2",
        )
        .bind(correlation_id)
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
        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
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
        .bind(envelope.data.to_string())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
