//! The "online users" projection (design.md, sign-in flow): identity's `UserSignedIn`
//! and `UserSignedOut` events, folded into the sessions whose token has not expired.
//! Eventually consistent, like every projection: a sign-in shows up once its event
//! has been delivered.

use agora_bus::SharedBus;
use agora_contracts::{UserSignedIn, UserSignedOut};
use agora_messaging::{
    Db, Envelope, Handler, HandlerError, Migration, Subscriber, SubscriberConfig, SubscriberHandle,
};
use async_trait::async_trait;
use sqlx::{Any, Row, Transaction};
use time::OffsetDateTime;

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "sessions of signed-in users",
    sqlite: "CREATE TABLE gateway_sessions (
        token_id TEXT PRIMARY KEY NOT NULL,
        user_id TEXT NOT NULL,
        expires_at_ms BIGINT NOT NULL
    );",
    postgres: "CREATE TABLE gateway_sessions (
        token_id TEXT PRIMARY KEY NOT NULL,
        user_id TEXT NOT NULL,
        expires_at_ms BIGINT NOT NULL
    );",
}];

/// Reads the projection.
#[derive(Debug, Clone)]
pub(crate) struct OnlineUsers {
    db: Db,
}

impl OnlineUsers {
    /// Users with at least one session whose token has not expired.
    pub async fn count(&self) -> Result<u64, sqlx::Error> {
        let row = sqlx::query(
            "SELECT COUNT(DISTINCT user_id) AS n FROM gateway_sessions WHERE expires_at_ms > $1",
        )
        .bind(now_ms())
        .fetch_one(self.db.pool())
        .await?;
        let n: i64 = row.try_get("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// Applies the migrations and starts the consumer `gateway-online-users`.
pub(crate) async fn start(
    db: &Db,
    bus: &SharedBus,
) -> Result<(OnlineUsers, SubscriberHandle), agora_messaging::Error> {
    db.migrate(crate::SOURCE, MIGRATIONS).await?;
    let config = SubscriberConfig::on_source("gateway-online-users", "identity");
    let handle = Subscriber::spawn(db, bus, config, Sessions).await?;
    Ok((OnlineUsers { db: db.clone() }, handle))
}

struct Sessions;

#[async_trait]
impl Handler for Sessions {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        if envelope.is::<UserSignedIn>() {
            let event: UserSignedIn = envelope.decode().map_err(HandlerError::permanent)?;
            // Expired sessions go as new ones come, so the table stays small.
            sqlx::query("DELETE FROM gateway_sessions WHERE expires_at_ms <= $1")
                .bind(now_ms())
                .execute(&mut **tx)
                .await?;
            sqlx::query(
                "INSERT INTO gateway_sessions (token_id, user_id, expires_at_ms)
                 VALUES ($1, $2, $3) ON CONFLICT (token_id) DO NOTHING",
            )
            .bind(event.token_id.to_string())
            .bind(event.user_id.to_string())
            .bind(ms(event.expires_at))
            .execute(&mut **tx)
            .await?;
        } else if envelope.is::<UserSignedOut>() {
            let event: UserSignedOut = envelope.decode().map_err(HandlerError::permanent)?;
            sqlx::query("DELETE FROM gateway_sessions WHERE token_id = $1")
                .bind(event.token_id.to_string())
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

fn ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn now_ms() -> i64 {
    ms(OffsetDateTime::now_utc())
}
