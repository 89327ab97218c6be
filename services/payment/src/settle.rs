//! What happens to a hold after it was granted: its capture when the order is accepted,
//! and giving the money back when fulfilment compensates.
//!
//! Every operation runs in one transaction that first takes the authorization's write
//! lock ([`store::lock_authorization`]), then reads its status, asks the provider,
//! and records the outcome, the new status and its event (outbox) before committing.
//! So operations on one authorization happen one after the other, each sees what the
//! previous one did, and each happens at most once (also guarded by the primary key
//! of `payment_operations`). A provider that gives no answer changes nothing: the
//! transaction is rolled back and the caller (the bus, or fulfilment) retries.
//!
//! The price of that simplicity: the lock (on SQLite, the store's only connection) is
//! held during the provider call, at most `provider_timeout`.
//!
//! - Capture ([`CaptureOnAcceptance`], consumer [`crate::CONSUMER_ORDERS`]): on
//!   `OrderAccepted`, an `authorized` hold is captured (`CustomerBilled`), or its
//!   capture is declined (`capture_failed`, `PaymentFailed{operation: capture}`); any
//!   other status means the order's payment was settled already (captured, failed, or
//!   compensated first): nothing happens.
//! - Compensation ([`Settler::give_back`]): whatever the status, the money goes back —
//!   a captured hold is refunded (`PaymentRefunded`), an uncaptured one (`authorized`,
//!   `capture_failed`) is voided (`AuthorizationVoided`), a refunded or voided one is
//!   answered as it is.

use std::sync::Arc;
use std::time::Duration;

use agora_contracts::{
    AuthorizationVoided, CustomerBilled, Money, OrderAccepted, PaymentFailed, PaymentOperation,
    PaymentRefunded,
};
use agora_messaging::{Context, Db, Envelope, Handler, HandlerError, Outbox};
use agora_resilience::Deadline;
use async_trait::async_trait;
use sqlx::{Any, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::provider::{PaymentProvider, ProviderError};
use crate::store::{self, Authorization, Operation, OperationKind, Status};

/// The provider key of an operation on an authorization: the same for every attempt.
fn idempotency_key(kind: OperationKind, authorization_id: Uuid) -> String {
    format!("{}-{authorization_id}", kind.as_str())
}

/// `call` under `timeout`; a call that takes longer counts as unavailable.
async fn bounded<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or(Err(ProviderError::Unavailable))
}

/// The time as the store gives it back, so that an event and a later read agree.
fn now() -> OffsetDateTime {
    store::time_of_ms(store::ms_of(OffsetDateTime::now_utc()))
}

/// Captures the authorization of each accepted order (see the module's doc).
pub struct CaptureOnAcceptance {
    pub provider: Arc<dyn PaymentProvider>,
    pub provider_timeout: Duration,
}

fn handler_error(error: crate::Error) -> HandlerError {
    match error {
        crate::Error::Corrupt(_) => HandlerError::permanent(error),
        // The store's failures spend no delivery (see `HandlerError::not_the_message`).
        crate::Error::Database(error) => HandlerError::from(error),
        crate::Error::Messaging(error) => HandlerError::from(error),
    }
}

#[async_trait]
impl Handler for CaptureOnAcceptance {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let order: OrderAccepted = envelope.decode()?;
        let Some(authorization) = store::lock_authorization(tx, order.payment_authorization_id)
            .await
            .map_err(handler_error)?
        else {
            return Err(HandlerError::permanent(format!(
                "order {} names the payment authorization {}, which payment does not know",
                order.order_id, order.payment_authorization_id
            )));
        };
        if authorization.order_id != order.order_id {
            return Err(HandlerError::permanent(format!(
                "order {} names the payment authorization {}, which is for another order",
                order.order_id, authorization.id
            )));
        }
        if authorization.status != Status::Authorized {
            // Captured before (a new event id for the same order), failed, or already
            // compensated (voided before the capture came): never capture now.
            tracing::info!(
                authorization_id = %authorization.id,
                order_id = %order.order_id,
                status = authorization.status.as_str(),
                "not capturing: the authorization is settled already"
            );
            return Ok(());
        }
        if order.currency != authorization.currency
            || order.total_cents <= 0
            || order.total_cents > authorization.amount_cents
        {
            return Err(HandlerError::permanent(format!(
                "order {} totals {} {}, which its authorization {} ({} {}) does not cover",
                order.order_id,
                order.total_cents,
                order.currency,
                authorization.id,
                authorization.amount_cents,
                authorization.currency
            )));
        }
        let amount = Money {
            amount_cents: order.total_cents,
            currency: order.currency.clone(),
        };
        let key = idempotency_key(OperationKind::Capture, authorization.id);
        let call = self
            .provider
            .capture(&authorization.provider_reference, &amount, &key);
        let answer = bounded(self.provider_timeout, call).await;
        let context = envelope.context_for_effects();
        let at = now();
        let version = authorization.version + 1;
        let (status, operation, event) = match answer {
            Ok(capture) => {
                let operation = Operation {
                    kind: OperationKind::Capture,
                    id: Uuid::now_v7(),
                    amount_cents: amount.amount_cents,
                    provider_reference: Some(capture.reference),
                    reason: None,
                    at,
                };
                let event = CustomerBilled {
                    authorization_id: authorization.id,
                    capture_id: operation.id,
                    order_id: authorization.order_id,
                    customer_id: authorization.customer_id,
                    amount,
                    billed_at: at,
                    version,
                };
                (
                    Status::Captured,
                    operation,
                    Envelope::new(&event, &context)?,
                )
            }
            Err(ProviderError::Declined { reason }) => {
                let operation = Operation {
                    kind: OperationKind::CaptureFailed,
                    id: Uuid::now_v7(),
                    amount_cents: amount.amount_cents,
                    provider_reference: None,
                    reason: Some(reason.clone()),
                    at,
                };
                let event = PaymentFailed {
                    authorization_id: authorization.id,
                    order_id: authorization.order_id,
                    customer_id: authorization.customer_id,
                    operation: PaymentOperation::Capture,
                    reason,
                    failed_at: at,
                    version,
                };
                (
                    Status::CaptureFailed,
                    operation,
                    Envelope::new(&event, &context)?,
                )
            }
            Err(ProviderError::Unavailable) => {
                tracing::warn!(
                    authorization_id = %authorization.id,
                    "payment provider unavailable for a capture"
                );
                return Err(HandlerError::transient(
                    "the payment provider is unavailable (capture)",
                ));
            }
        };
        store::record_operation(tx, &authorization, status, &operation, &event)
            .await
            .map_err(handler_error)?;
        tracing::info!(
            authorization_id = %authorization.id,
            order_id = %authorization.order_id,
            status = status.as_str(),
            "capture settled"
        );
        Ok(())
    }
}

/// A request to give an authorization's money back, from fulfilment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GiveBack {
    /// The order the caller compensates: must be the authorization's.
    pub order_id: Uuid,
    /// Why, for the record (at most [`GiveBack::MAX_REASON`] bytes).
    pub reason: Option<String>,
}

impl GiveBack {
    pub const MAX_REASON: usize = 200;
}

/// Where the money of an authorization stands after [`Settler::give_back`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GivenBack {
    Refunded { refund_id: Uuid },
    Voided,
}

/// Why the money was not given back (yet).
#[derive(Debug, thiserror::Error)]
pub enum GiveBackError {
    #[error("no such authorization")]
    NotFound,
    #[error("the authorization is for another order")]
    OtherOrder,
    #[error("the payment provider is unavailable")]
    Unavailable,
    #[error("the payment provider refused: {0}")]
    Refused(String),
    #[error("the caller's deadline passed")]
    DeadlineExceeded,
    #[error(transparent)]
    Internal(#[from] crate::Error),
}

impl From<sqlx::Error> for GiveBackError {
    fn from(error: sqlx::Error) -> Self {
        GiveBackError::Internal(error.into())
    }
}

impl From<agora_messaging::Error> for GiveBackError {
    fn from(error: agora_messaging::Error) -> Self {
        GiveBackError::Internal(error.into())
    }
}

/// Compensations, for the internal routes.
#[derive(Clone)]
pub struct Settler {
    pub db: Db,
    pub outbox: Outbox,
    pub provider: Arc<dyn PaymentProvider>,
    pub provider_timeout: Duration,
}

impl std::fmt::Debug for Settler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settler")
            .field("provider_timeout", &self.provider_timeout)
            .finish_non_exhaustive()
    }
}

impl Settler {
    /// Gives the money of authorization `id` back, whatever its state: refunds a
    /// captured one, voids an uncaptured one, once; answers a refunded or voided one as
    /// it is, without asking the provider or publishing anything.
    pub async fn give_back(
        &self,
        id: Uuid,
        request: &GiveBack,
        context: &Context,
    ) -> Result<GivenBack, GiveBackError> {
        if Deadline::current().is_some_and(|d| d.is_expired()) {
            return Err(GiveBackError::DeadlineExceeded);
        }
        let mut tx = self.db.begin().await?;
        let Some(authorization) = store::lock_authorization(&mut tx, id).await? else {
            tx.rollback().await?;
            return Err(GiveBackError::NotFound);
        };
        if authorization.order_id != request.order_id {
            tx.rollback().await?;
            return Err(GiveBackError::OtherOrder);
        }
        let done = match authorization.status {
            Status::Refunded => {
                let refund = authorization
                    .operation(OperationKind::Refund)
                    .ok_or(crate::Error::Corrupt("refund of a refunded authorization"))?;
                Some(GivenBack::Refunded {
                    refund_id: refund.id,
                })
            }
            Status::Voided => Some(GivenBack::Voided),
            Status::Captured | Status::Authorized | Status::CaptureFailed => None,
        };
        if let Some(done) = done {
            tx.rollback().await?;
            return Ok(done);
        }
        let outcome = if authorization.status == Status::Captured {
            self.refund(&mut tx, &authorization, request, context).await
        } else {
            self.void(&mut tx, &authorization, request, context).await
        };
        match outcome {
            Ok(given) => {
                self.outbox.commit(tx).await?;
                tracing::info!(
                    authorization_id = %authorization.id,
                    order_id = %authorization.order_id,
                    outcome = ?given,
                    "payment given back"
                );
                Ok(given)
            }
            Err(error) => {
                tx.rollback().await?;
                tracing::warn!(authorization_id = %authorization.id, %error, "payment not given back");
                Err(error)
            }
        }
    }

    async fn refund(
        &self,
        tx: &mut Transaction<'static, Any>,
        authorization: &Authorization,
        request: &GiveBack,
        context: &Context,
    ) -> Result<GivenBack, GiveBackError> {
        let capture = authorization
            .operation(OperationKind::Capture)
            .ok_or(crate::Error::Corrupt("capture of a captured authorization"))?;
        let capture_reference = capture
            .provider_reference
            .as_deref()
            .ok_or(crate::Error::Corrupt("provider reference of a capture"))?;
        let amount = Money {
            amount_cents: capture.amount_cents,
            currency: authorization.currency.clone(),
        };
        let key = idempotency_key(OperationKind::Refund, authorization.id);
        let call = self.provider.refund(capture_reference, &amount, &key);
        let refund = match bounded(self.provider_timeout, call).await {
            Ok(refund) => refund,
            Err(ProviderError::Declined { reason }) => return Err(GiveBackError::Refused(reason)),
            Err(ProviderError::Unavailable) => return Err(GiveBackError::Unavailable),
        };
        let at = now();
        let operation = Operation {
            kind: OperationKind::Refund,
            id: Uuid::now_v7(),
            amount_cents: amount.amount_cents,
            provider_reference: Some(refund.reference),
            reason: request.reason.clone(),
            at,
        };
        let event = PaymentRefunded {
            authorization_id: authorization.id,
            refund_id: operation.id,
            order_id: authorization.order_id,
            customer_id: authorization.customer_id,
            amount,
            refunded_at: at,
            version: authorization.version + 1,
        };
        let envelope = Envelope::new(&event, context)?;
        store::record_operation(tx, authorization, Status::Refunded, &operation, &envelope).await?;
        Ok(GivenBack::Refunded {
            refund_id: operation.id,
        })
    }

    async fn void(
        &self,
        tx: &mut Transaction<'static, Any>,
        authorization: &Authorization,
        request: &GiveBack,
        context: &Context,
    ) -> Result<GivenBack, GiveBackError> {
        let key = idempotency_key(OperationKind::Void, authorization.id);
        let call = self.provider.void(&authorization.provider_reference, &key);
        match bounded(self.provider_timeout, call).await {
            Ok(()) => {}
            Err(ProviderError::Declined { reason }) => return Err(GiveBackError::Refused(reason)),
            Err(ProviderError::Unavailable) => return Err(GiveBackError::Unavailable),
        }
        let at = now();
        let operation = Operation {
            kind: OperationKind::Void,
            id: Uuid::now_v7(),
            amount_cents: authorization.amount_cents,
            provider_reference: None,
            reason: request.reason.clone(),
            at,
        };
        let event = AuthorizationVoided {
            authorization_id: authorization.id,
            order_id: authorization.order_id,
            customer_id: authorization.customer_id,
            amount: authorization.money(),
            voided_at: at,
            version: authorization.version + 1,
        };
        let envelope = Envelope::new(&event, context)?;
        store::record_operation(tx, authorization, Status::Voided, &operation, &envelope).await?;
        Ok(GivenBack::Voided)
    }
}
