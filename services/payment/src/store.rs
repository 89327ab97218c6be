//! Payment's own tables. The SQL is the dialect SQLite and PostgreSQL share; ids are
//! UUID strings, times Unix milliseconds.
//!
//! `payment_requests` is the idempotency record, keyed by the caller's request id:
//! its primary key decides, across every process of the service, who asks the
//! provider (the one whose insert went in: the *claim*); the others read the answer
//! it records. `payment_authorizations` holds the holds themselves: the aggregate that
//! capture, void and refund change, each bumping its version (one event per version).
//! `payment_operations` records what happened to a hold after it was granted — its
//! capture, failed capture, refund, void — each at most once per authorization: its
//! primary key is the last guard against charging or refunding twice.
//!
//! Operations on one authorization are serialized by [`lock_authorization`], which
//! takes the row's write lock in the caller's transaction (PostgreSQL: the row lock;
//! SQLite: the database's, taken by `BEGIN IMMEDIATE` already).

use agora_contracts::PaymentAuthorized;
use agora_messaging::{Context, Db, Envelope, Migration, Outbox};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Error;
use crate::domain::AuthorizationRequest;

const TABLES: &str = "
CREATE TABLE payment_requests (
    request_id TEXT PRIMARY KEY,
    -- The request as first received: a retry must repeat it exactly.
    order_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    currency TEXT NOT NULL,
    payment_token TEXT NOT NULL,
    -- 'pending' while its claim holder asks the provider, then 'authorized' or
    -- 'declined' for good. A pending request whose provider call failed is deleted.
    state TEXT NOT NULL,
    claim_id TEXT NOT NULL,
    claimed_at_ms BIGINT NOT NULL,
    authorization_id TEXT,
    decline_reason TEXT,
    created_at_ms BIGINT NOT NULL,
    decided_at_ms BIGINT
);
CREATE TABLE payment_authorizations (
    id TEXT PRIMARY KEY,
    -- One authorization per request, whatever happens.
    request_id TEXT NOT NULL UNIQUE,
    order_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    provider_reference TEXT NOT NULL,
    authorized_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT,
    -- Bumped by every event about the authorization.
    version BIGINT NOT NULL
);
CREATE INDEX payment_authorizations_by_order ON payment_authorizations (order_id);
";

const OPERATIONS: &str = "
CREATE TABLE payment_operations (
    authorization_id TEXT NOT NULL REFERENCES payment_authorizations (id),
    -- 'capture', 'capture_failed', 'refund' or 'void': each once per authorization.
    kind TEXT NOT NULL,
    id TEXT NOT NULL UNIQUE,
    amount_cents BIGINT NOT NULL,
    -- The provider's id of the capture or refund.
    provider_reference TEXT,
    -- Why: the provider's decline code, or the caller's reason for a compensation.
    reason TEXT,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (authorization_id, kind)
);
";

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "authorization requests and authorizations",
        sqlite: TABLES,
        postgres: TABLES,
    },
    Migration {
        version: 2,
        description: "captures, failed captures, refunds and voids",
        sqlite: OPERATIONS,
        postgres: OPERATIONS,
    },
    Migration {
        version: 3,
        description: "accepted orders, for the orphan-hold sweep",
        sqlite: ACCEPTANCES,
        postgres: ACCEPTANCES,
    },
];

const ACCEPTANCES: &str = "
CREATE TABLE payment_accepted_orders (
    order_id TEXT PRIMARY KEY,
    accepted_at_ms BIGINT NOT NULL
);
CREATE INDEX payment_authorizations_by_status
    ON payment_authorizations (status, authorized_at_ms);
";

/// Records that `order_id` was accepted (once; a repeat changes nothing).
pub async fn record_acceptance(
    tx: &mut Transaction<'_, Any>,
    order_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payment_accepted_orders (order_id, accepted_at_ms) VALUES ($1, $2)
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id.to_string())
    .bind(ms_of(OffsetDateTime::now_utc()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Holds still `authorized` for longer than `hold` whose order was never seen
/// accepted: `(authorization id, order id)`, oldest first, at most 100.
pub async fn orphan_holds(db: &Db, hold: std::time::Duration) -> Result<Vec<(Uuid, Uuid)>, Error> {
    let before = ms_of(OffsetDateTime::now_utc() - hold);
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT a.id, a.order_id FROM payment_authorizations a
         WHERE a.status = 'authorized' AND a.authorized_at_ms < $1
           AND NOT EXISTS
               (SELECT 1 FROM payment_accepted_orders o WHERE o.order_id = a.order_id)
         ORDER BY a.authorized_at_ms LIMIT 100",
    )
    .bind(before)
    .fetch_all(db.pool())
    .await?;
    rows.into_iter()
        .map(|(id, order)| {
            Ok((
                Uuid::parse_str(&id).map_err(|_| Error::Corrupt("authorization id"))?,
                Uuid::parse_str(&order).map_err(|_| Error::Corrupt("order id"))?,
            ))
        })
        .collect()
}

/// Where an authorization stands. `authorized → captured → refunded`,
/// `authorized → voided`, `authorized → capture_failed → voided`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Authorized,
    Captured,
    CaptureFailed,
    Refunded,
    Voided,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Authorized => "authorized",
            Status::Captured => "captured",
            Status::CaptureFailed => "capture_failed",
            Status::Refunded => "refunded",
            Status::Voided => "voided",
        }
    }

    fn parse(raw: &str) -> Result<Status, Error> {
        Ok(match raw {
            "authorized" => Status::Authorized,
            "captured" => Status::Captured,
            "capture_failed" => Status::CaptureFailed,
            "refunded" => Status::Refunded,
            "voided" => Status::Voided,
            _ => return Err(Error::Corrupt("authorization status")),
        })
    }
}

/// What happened to a hold after it was granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationKind {
    Capture,
    CaptureFailed,
    Refund,
    Void,
}

impl OperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Capture => "capture",
            OperationKind::CaptureFailed => "capture_failed",
            OperationKind::Refund => "refund",
            OperationKind::Void => "void",
        }
    }

    fn parse(raw: &str) -> Result<OperationKind, Error> {
        Ok(match raw {
            "capture" => OperationKind::Capture,
            "capture_failed" => OperationKind::CaptureFailed,
            "refund" => OperationKind::Refund,
            "void" => OperationKind::Void,
            _ => return Err(Error::Corrupt("operation kind")),
        })
    }
}

/// One recorded operation on an authorization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub kind: OperationKind,
    /// The capture id, refund id, … (what the event names).
    pub id: Uuid,
    pub amount_cents: i64,
    pub provider_reference: Option<String>,
    pub reason: Option<String>,
    pub at: OffsetDateTime,
}

/// Where a recorded request stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestState {
    /// Someone holds the claim `claim_id` since `claimed_at_ms` and asks the provider.
    Pending {
        claim_id: Uuid,
        claimed_at_ms: i64,
    },
    Authorized {
        authorization_id: Uuid,
    },
    Declined {
        reason: String,
    },
}

/// A recorded request.
#[derive(Clone, Debug)]
pub struct StoredRequest {
    order_id: String,
    customer_id: String,
    amount_cents: i64,
    currency: String,
    payment_token: String,
    pub state: RequestState,
}

impl StoredRequest {
    /// Whether `request` repeats this one exactly (the request id aside).
    pub fn is_repeated_by(&self, request: &AuthorizationRequest) -> bool {
        self.order_id == request.order_id.to_string()
            && self.customer_id == request.customer_id.to_string()
            && self.amount_cents == request.amount.get()
            && self.currency == request.currency.as_str()
            && self.payment_token == request.token.as_str()
    }
}

/// An authorization as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    pub id: Uuid,
    pub request_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub amount_cents: i64,
    pub currency: String,
    pub status: Status,
    pub provider_reference: String,
    pub authorized_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub version: u64,
    /// In the order they happened.
    pub operations: Vec<Operation>,
}

impl Authorization {
    pub fn operation(&self, kind: OperationKind) -> Option<&Operation> {
        self.operations.iter().find(|o| o.kind == kind)
    }

    pub fn money(&self) -> agora_contracts::Money {
        agora_contracts::Money {
            amount_cents: self.amount_cents,
            currency: self.currency.clone(),
        }
    }
}

pub fn ms_of(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The time of `ms`: what a stored time reads back as.
pub fn time_of_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn uuid_of(text: &str, what: &'static str) -> Result<Uuid, Error> {
    Uuid::parse_str(text).map_err(|_| Error::Corrupt(what))
}

/// Records `request` as pending under `claim_id`; `false` (nothing written) when its
/// request id is recorded already.
pub async fn claim(
    db: &Db,
    request: &AuthorizationRequest,
    claim_id: Uuid,
    now_ms: i64,
) -> Result<bool, Error> {
    let done = sqlx::query(
        "INSERT INTO payment_requests
            (request_id, order_id, customer_id, amount_cents, currency, payment_token,
             state, claim_id, claimed_at_ms, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $8)
         ON CONFLICT (request_id) DO NOTHING",
    )
    .bind(request.request_id.to_string())
    .bind(request.order_id.to_string())
    .bind(request.customer_id.to_string())
    .bind(request.amount.get())
    .bind(request.currency.as_str().to_owned())
    .bind(request.token.as_str().to_owned())
    .bind(claim_id.to_string())
    .bind(now_ms)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Moves the claim on a pending request from `stale` to `claim_id`; `false` when the
/// request is no longer pending under `stale`.
pub async fn take_over(
    db: &Db,
    request_id: Uuid,
    stale: Uuid,
    claim_id: Uuid,
    now_ms: i64,
) -> Result<bool, Error> {
    let done = sqlx::query(
        "UPDATE payment_requests SET claim_id = $1, claimed_at_ms = $2
         WHERE request_id = $3 AND state = 'pending' AND claim_id = $4",
    )
    .bind(claim_id.to_string())
    .bind(now_ms)
    .bind(request_id.to_string())
    .bind(stale.to_string())
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The recorded request `request_id`, if any.
pub async fn request(db: &Db, request_id: Uuid) -> Result<Option<StoredRequest>, Error> {
    let row = sqlx::query(
        "SELECT order_id, customer_id, amount_cents, currency, payment_token, state,
                claim_id, claimed_at_ms, authorization_id, decline_reason
         FROM payment_requests WHERE request_id = $1",
    )
    .bind(request_id.to_string())
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else { return Ok(None) };
    let state: String = row.try_get("state")?;
    let state = match state.as_str() {
        "pending" => {
            let claim_id: String = row.try_get("claim_id")?;
            RequestState::Pending {
                claim_id: uuid_of(&claim_id, "claim id")?,
                claimed_at_ms: row.try_get("claimed_at_ms")?,
            }
        }
        "authorized" => {
            let id: Option<String> = row.try_get("authorization_id")?;
            RequestState::Authorized {
                authorization_id: uuid_of(
                    &id.ok_or(Error::Corrupt("authorization id"))?,
                    "authorization id",
                )?,
            }
        }
        "declined" => {
            let reason: Option<String> = row.try_get("decline_reason")?;
            RequestState::Declined {
                reason: reason.ok_or(Error::Corrupt("decline reason"))?,
            }
        }
        _ => return Err(Error::Corrupt("request state")),
    };
    Ok(Some(StoredRequest {
        order_id: row.try_get("order_id")?,
        customer_id: row.try_get("customer_id")?,
        amount_cents: row.try_get("amount_cents")?,
        currency: row.try_get("currency")?,
        payment_token: row.try_get("payment_token")?,
        state,
    }))
}

/// Records the provider's hold for the request pending under `claim_id`: marks it
/// authorized, inserts `authorization` and appends its `PaymentAuthorized`, in `tx`.
/// `false` (roll back) when the claim was lost meanwhile.
pub async fn record_authorized(
    tx: &mut Transaction<'_, Any>,
    claim_id: Uuid,
    authorization: &Authorization,
    context: &Context,
) -> Result<bool, Error> {
    let done = sqlx::query(
        "UPDATE payment_requests
         SET state = 'authorized', authorization_id = $1, decided_at_ms = $2
         WHERE request_id = $3 AND state = 'pending' AND claim_id = $4",
    )
    .bind(authorization.id.to_string())
    .bind(ms_of(authorization.authorized_at))
    .bind(authorization.request_id.to_string())
    .bind(claim_id.to_string())
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO payment_authorizations
            (id, request_id, order_id, customer_id, amount_cents, currency, status,
             provider_reference, authorized_at_ms, expires_at_ms, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(authorization.id.to_string())
    .bind(authorization.request_id.to_string())
    .bind(authorization.order_id.to_string())
    .bind(authorization.customer_id.to_string())
    .bind(authorization.amount_cents)
    .bind(authorization.currency.clone())
    .bind(authorization.status.as_str())
    .bind(authorization.provider_reference.clone())
    .bind(ms_of(authorization.authorized_at))
    .bind(authorization.expires_at.map(ms_of))
    .bind(i64::try_from(authorization.version).map_err(|_| Error::Corrupt("version"))?)
    .execute(&mut **tx)
    .await?;
    let event = PaymentAuthorized {
        authorization_id: authorization.id,
        order_id: authorization.order_id,
        customer_id: authorization.customer_id,
        amount: agora_contracts::Money {
            amount_cents: authorization.amount_cents,
            currency: authorization.currency.clone(),
        },
        authorized_at: authorization.authorized_at,
        expires_at: authorization.expires_at,
        version: authorization.version,
    };
    Outbox::append(tx, &Envelope::new(&event, context)?).await?;
    Ok(true)
}

/// Records the provider's refusal for the request pending under `claim_id`; `false`
/// when the claim was lost meanwhile.
pub async fn record_declined(
    db: &Db,
    request_id: Uuid,
    claim_id: Uuid,
    reason: &str,
    now_ms: i64,
) -> Result<bool, Error> {
    let done = sqlx::query(
        "UPDATE payment_requests
         SET state = 'declined', decline_reason = $1, decided_at_ms = $2
         WHERE request_id = $3 AND state = 'pending' AND claim_id = $4",
    )
    .bind(reason.to_owned())
    .bind(now_ms)
    .bind(request_id.to_string())
    .bind(claim_id.to_string())
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Forgets the request pending under `claim_id` (the provider gave no answer), so that
/// a retry asks again.
pub async fn release(db: &Db, request_id: Uuid, claim_id: Uuid) -> Result<(), Error> {
    sqlx::query(
        "DELETE FROM payment_requests
         WHERE request_id = $1 AND state = 'pending' AND claim_id = $2",
    )
    .bind(request_id.to_string())
    .bind(claim_id.to_string())
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The authorization `id`, if any.
pub async fn authorization(db: &Db, id: Uuid) -> Result<Option<Authorization>, Error> {
    let mut conn = db.pool().acquire().await?;
    authorization_in(&mut conn, id).await
}

/// Takes the write lock of the authorization `id` in `tx` and reads it; `None` when
/// there is no such authorization. Whoever holds the lock decides what happens to the
/// hold next; the others wait for the commit and read its outcome.
pub async fn lock_authorization(
    tx: &mut Transaction<'_, Any>,
    id: Uuid,
) -> Result<Option<Authorization>, Error> {
    // A write that changes nothing, in the SQL both backends accept (SQLite has no
    // `FOR UPDATE`).
    let locked = sqlx::query("UPDATE payment_authorizations SET version = version WHERE id = $1")
        .bind(id.to_string())
        .execute(&mut **tx)
        .await?;
    if locked.rows_affected() == 0 {
        return Ok(None);
    }
    authorization_in(&mut *tx, id).await
}

/// The authorization `id` and its operations, read on `conn`.
pub async fn authorization_in(
    conn: &mut AnyConnection,
    id: Uuid,
) -> Result<Option<Authorization>, Error> {
    let row = sqlx::query(
        "SELECT id, request_id, order_id, customer_id, amount_cents, currency, status,
                provider_reference, authorized_at_ms, expires_at_ms, version
         FROM payment_authorizations WHERE id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let text = |column: &str| -> Result<String, Error> { Ok(row.try_get(column)?) };
    let version: i64 = row.try_get("version")?;
    let expires_at_ms: Option<i64> = row.try_get("expires_at_ms")?;
    let operations = sqlx::query(
        "SELECT kind, id, amount_cents, provider_reference, reason, at_ms
         FROM payment_operations WHERE authorization_id = $1 ORDER BY at_ms, kind",
    )
    .bind(id.to_string())
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(operation_of)
    .collect::<Result<Vec<_>, Error>>()?;
    Ok(Some(Authorization {
        id: uuid_of(&text("id")?, "authorization id")?,
        request_id: uuid_of(&text("request_id")?, "request id")?,
        order_id: uuid_of(&text("order_id")?, "order id")?,
        customer_id: uuid_of(&text("customer_id")?, "customer id")?,
        amount_cents: row.try_get("amount_cents")?,
        currency: text("currency")?,
        status: Status::parse(&text("status")?)?,
        provider_reference: text("provider_reference")?,
        authorized_at: time_of_ms(row.try_get("authorized_at_ms")?),
        expires_at: expires_at_ms.map(time_of_ms),
        version: u64::try_from(version).map_err(|_| Error::Corrupt("version"))?,
        operations,
    }))
}

fn operation_of(row: &AnyRow) -> Result<Operation, Error> {
    let kind: String = row.try_get("kind")?;
    let id: String = row.try_get("id")?;
    Ok(Operation {
        kind: OperationKind::parse(&kind)?,
        id: uuid_of(&id, "operation id")?,
        amount_cents: row.try_get("amount_cents")?,
        provider_reference: row.try_get("provider_reference")?,
        reason: row.try_get("reason")?,
        at: time_of_ms(row.try_get("at_ms")?),
    })
}

/// Records `operation` on `authorization` (as read under [`lock_authorization`] in
/// `tx`), moves it to `status` with the next version, and appends `event` — which
/// must carry that version — to the outbox, all in `tx`.
pub async fn record_operation(
    tx: &mut Transaction<'_, Any>,
    authorization: &Authorization,
    status: Status,
    operation: &Operation,
    event: &Envelope,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO payment_operations
            (authorization_id, kind, id, amount_cents, provider_reference, reason, at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(authorization.id.to_string())
    .bind(operation.kind.as_str())
    .bind(operation.id.to_string())
    .bind(operation.amount_cents)
    .bind(operation.provider_reference.clone())
    .bind(operation.reason.clone())
    .bind(ms_of(operation.at))
    .execute(&mut **tx)
    .await?;
    let version = i64::try_from(authorization.version).map_err(|_| Error::Corrupt("version"))?;
    let done = sqlx::query(
        "UPDATE payment_authorizations SET status = $1, version = version + 1
         WHERE id = $2 AND version = $3",
    )
    .bind(status.as_str())
    .bind(authorization.id.to_string())
    .bind(version)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        // Cannot happen under the lock; refuse rather than write over a change.
        return Err(Error::Corrupt(
            "authorization version (changed under its lock)",
        ));
    }
    Outbox::append(tx, event).await?;
    Ok(())
}
