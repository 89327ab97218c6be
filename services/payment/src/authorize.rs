//! Authorizing a payment exactly once per request id, whatever the retries.
//!
//! The store is the arbiter: the caller whose insert of the pending request goes in
//! holds the *claim* and is the only one to ask the provider; a duplicate that finds
//! the request pending waits for its answer (woken in process, polling the store for
//! other processes). A final answer (authorized or declined) is recorded and replayed
//! to every retry; "provider unavailable" is not: the pending request is deleted and a
//! retry asks the provider again.
//!
//! The caller's deadline (`Agora-Budget-Ms`, see `agora_resilience::deadline`) bounds
//! what this request starts and how long a duplicate waits, never a provider call
//! already under way: its answer is recorded for the retry that will come.
//!
//! The provider call runs in a task of its own, so that a caller that gives up (its
//! deadline passed, the connection dropped) does not leave the request pending. If the
//! process dies during the call, the claim goes stale and, after the lease, the next
//! retry takes it over and asks the provider again: the one case where the provider
//! may see a request twice (a real provider's idempotency key closes it).

use std::sync::Arc;
use std::time::Duration;

use agora_messaging::{Context, Db, Outbox};
use agora_resilience::Deadline;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use crate::domain::AuthorizationRequest;
use crate::provider::{PaymentProvider, ProviderError};
use crate::store::{self, Authorization, RequestState};

/// What authorizing needs.
#[derive(Clone)]
pub struct Authorizer {
    pub db: Db,
    pub outbox: Outbox,
    pub provider: Arc<dyn PaymentProvider>,
    pub provider_timeout: Duration,
    /// Woken whenever a pending request is settled in this process.
    pub settled: Arc<Notify>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("provider_timeout", &self.provider_timeout)
            .finish_non_exhaustive()
    }
}

/// A final answer, the same for every retry of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Authorized(Authorization),
    Declined { reason: String },
}

/// Why there is no final answer (yet).
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    #[error("the request id was used for a different request")]
    RequestIdReused,
    #[error("the payment provider is unavailable")]
    Unavailable,
    #[error("a request with this id is still being processed")]
    InProgress,
    #[error("the caller's deadline passed")]
    DeadlineExceeded,
    #[error(transparent)]
    Internal(#[from] crate::Error),
}

/// How often a duplicate re-reads a request pending in another process.
const POLL: Duration = Duration::from_millis(20);

impl Authorizer {
    /// How long a duplicate waits for the claim holder's answer before answering
    /// "in progress".
    fn wait_limit(&self) -> Duration {
        self.provider_timeout + Duration::from_secs(1)
    }

    /// How old a claim must be to be taken over: its holder's provider call has timed
    /// out long ago, so the holder is gone.
    fn lease(&self) -> Duration {
        self.provider_timeout * 2 + Duration::from_secs(5)
    }

    pub async fn authorize(
        &self,
        request: AuthorizationRequest,
        context: Context,
    ) -> Result<Outcome, AuthorizeError> {
        let caller_deadline = Deadline::current();
        let mut deadline = Instant::now() + self.wait_limit();
        if let Some(caller) = caller_deadline {
            deadline = deadline.min(caller.0);
        }
        let mut waited_for_another = false;
        loop {
            if caller_deadline.is_some_and(|d| d.is_expired()) {
                // Nobody waits for the answer any more: start nothing new.
                return Err(AuthorizeError::DeadlineExceeded);
            }
            // Registered before the store is read, so that a settlement in between
            // is not missed.
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();

            let claim_id = Uuid::now_v7();
            if store::claim(&self.db, &request, claim_id, now_ms()).await? {
                match self.ask_provider(&request, claim_id, &context).await? {
                    Some(outcome) => return Ok(outcome),
                    None => continue,
                }
            }
            let Some(stored) = store::request(&self.db, request.request_id).await? else {
                if waited_for_another {
                    // The request we waited for ended without an answer: so does
                    // this duplicate of it, rather than hitting a failing provider
                    // again.
                    return Err(AuthorizeError::Unavailable);
                }
                continue;
            };
            if !stored.is_repeated_by(&request) {
                return Err(AuthorizeError::RequestIdReused);
            }
            match stored.state {
                RequestState::Authorized { authorization_id } => {
                    let authorization = store::authorization(&self.db, authorization_id)
                        .await?
                        .ok_or(crate::Error::Corrupt("authorization of a request"))?;
                    return Ok(Outcome::Authorized(authorization));
                }
                RequestState::Declined { reason } => return Ok(Outcome::Declined { reason }),
                RequestState::Pending {
                    claim_id: holder,
                    claimed_at_ms,
                } => {
                    let lease_ms = i64::try_from(self.lease().as_millis()).unwrap_or(i64::MAX);
                    if now_ms().saturating_sub(claimed_at_ms) > lease_ms {
                        let claim_id = Uuid::now_v7();
                        if store::take_over(
                            &self.db,
                            request.request_id,
                            holder,
                            claim_id,
                            now_ms(),
                        )
                        .await?
                        {
                            tracing::warn!(request_id = %request.request_id, "stale claim taken over");
                            match self.ask_provider(&request, claim_id, &context).await? {
                                Some(outcome) => return Ok(outcome),
                                None => continue,
                            }
                        }
                        continue;
                    }
                    waited_for_another = true;
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(if caller_deadline.is_some_and(|d| d.is_expired()) {
                            AuthorizeError::DeadlineExceeded
                        } else {
                            AuthorizeError::InProgress
                        });
                    }
                    let _ = tokio::time::timeout(POLL.min(deadline - now), settled).await;
                }
            }
        }
    }

    /// Asks the provider for the request pending under `claim_id` and records its
    /// answer, in a task that outlives the caller. `None` when the claim was lost
    /// meanwhile (taken over as stale): the caller then reads the answer recorded.
    async fn ask_provider(
        &self,
        request: &AuthorizationRequest,
        claim_id: Uuid,
        context: &Context,
    ) -> Result<Option<Outcome>, AuthorizeError> {
        let this = self.clone();
        let request = request.clone();
        let context = context.clone();
        let task = tokio::spawn(async move {
            let answer = this.call_and_record(&request, claim_id, &context).await;
            this.settled.notify_waiters();
            answer
        });
        task.await
            .map_err(|_| crate::Error::Corrupt("the provider call task"))?
    }

    async fn call_and_record(
        &self,
        request: &AuthorizationRequest,
        claim_id: Uuid,
        context: &Context,
    ) -> Result<Option<Outcome>, AuthorizeError> {
        let money = request.money();
        let key = request.request_id.to_string();
        let call = self
            .provider
            .authorize(request.token.as_str(), &money, &key);
        let answer = match tokio::time::timeout(self.provider_timeout, call).await {
            Ok(answer) => answer,
            Err(_) => Err(ProviderError::Unavailable),
        };
        match answer {
            Ok(hold) => {
                let authorization = Authorization {
                    id: Uuid::now_v7(),
                    request_id: request.request_id,
                    order_id: request.order_id,
                    customer_id: request.customer_id,
                    amount_cents: money.amount_cents,
                    currency: money.currency,
                    status: store::Status::Authorized,
                    provider_reference: hold.reference,
                    // As the store will give it back: every answer is the same.
                    authorized_at: store::time_of_ms(now_ms()),
                    expires_at: hold.expires_at.map(|t| store::time_of_ms(store::ms_of(t))),
                    version: 1,
                    operations: Vec::new(),
                };
                let mut tx = self.db.begin().await.map_err(crate::Error::from)?;
                if !store::record_authorized(&mut tx, claim_id, &authorization, context).await? {
                    tx.rollback().await.map_err(crate::Error::from)?;
                    return Ok(None);
                }
                self.outbox.commit(tx).await.map_err(crate::Error::from)?;
                tracing::info!(
                    authorization_id = %authorization.id,
                    request_id = %request.request_id,
                    order_id = %request.order_id,
                    "payment authorized"
                );
                Ok(Some(Outcome::Authorized(authorization)))
            }
            Err(ProviderError::Declined { reason }) => {
                let recorded = store::record_declined(
                    &self.db,
                    request.request_id,
                    claim_id,
                    &reason,
                    now_ms(),
                )
                .await?;
                if !recorded {
                    return Ok(None);
                }
                tracing::info!(request_id = %request.request_id, %reason, "payment declined");
                Ok(Some(Outcome::Declined { reason }))
            }
            Err(ProviderError::Unavailable) => {
                store::release(&self.db, request.request_id, claim_id).await?;
                tracing::warn!(request_id = %request.request_id, "payment provider unavailable");
                Err(AuthorizeError::Unavailable)
            }
        }
    }
}

fn now_ms() -> i64 {
    store::ms_of(OffsetDateTime::now_utc())
}
