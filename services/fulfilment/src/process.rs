//! The order-fulfilment process: one instance per order, waiting for the order to be
//! accepted, billed and reserved, and compensating when any of that fails or does not
//! happen in time.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use agora_contracts::{
    CancelReason, CustomerBilled, Event, FulfilmentFailed, OrderAccepted, OrderReadyForShipping,
    PaymentFailed, PaymentOperation, StockReservationFailed, StockReserved,
};
use agora_messaging::{Context, Decision, Envelope, HandlerError, Process, Turn};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::compensation::Compensator;

/// The events the process waits for or reacts to, as recorded in its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Received {
    OrderAccepted,
    CustomerBilled,
    StockReserved,
    StockReservationFailed,
    PaymentFailed,
}

/// A compensation the process ran (its call succeeded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompensationKind {
    Refund,
    Void,
    Release,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompensationRecord {
    pub kind: CompensationKind,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// What the process published, once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    ReadyForShipping,
    Failed,
}

/// The durable state of one order's fulfilment.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FulfilmentState {
    pub order_id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    pub authorization_id: Option<Uuid>,
    pub received: BTreeSet<Received>,
    /// Why the order is given up, from the first failure (or the timeout).
    pub failure: Option<CancelReason>,
    pub failure_detail: Option<String>,
    pub outcome: Option<Outcome>,
    pub compensations: Vec<CompensationRecord>,
}

impl FulfilmentState {
    fn has(&self, event: Received) -> bool {
        self.received.contains(&event)
    }

    fn compensated(&self, kind: CompensationKind) -> bool {
        self.compensations.iter().any(|c| c.kind == kind)
    }

    /// For the ops console: where the process stands.
    pub fn status(&self) -> &'static str {
        match (self.outcome, &self.failure) {
            (Some(Outcome::ReadyForShipping), _) => "ready_for_shipping",
            (Some(Outcome::Failed), _) => "failed",
            (None, Some(_)) => "compensating",
            (None, None) => "waiting",
        }
    }

    /// Nothing of the payment can still need undoing: it was refunded, or it failed.
    fn payment_settled(&self) -> bool {
        self.compensated(CompensationKind::Refund) || self.has(Received::PaymentFailed)
    }

    /// Nothing of the stock can still need releasing.
    fn stock_settled(&self) -> bool {
        self.compensated(CompensationKind::Release) || self.has(Received::StockReservationFailed)
    }
}

/// A compensation to run, before the turn that asks for it commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compensation {
    Refund {
        authorization_id: Uuid,
        order_id: Uuid,
        reason: CancelReason,
    },
    Void {
        authorization_id: Uuid,
        order_id: Uuid,
        reason: CancelReason,
    },
    Release {
        order_id: Uuid,
        reason: CancelReason,
    },
}

/// The process definition, run by [`agora_messaging::ProcessManager`].
pub struct FulfilmentProcess {
    pub(crate) compensator: Arc<dyn Compensator>,
    pub(crate) timeout: Duration,
}

impl std::fmt::Debug for FulfilmentProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FulfilmentProcess")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

pub(crate) const NAME: &str = "fulfilment";

#[async_trait]
impl Process for FulfilmentProcess {
    type State = FulfilmentState;
    type Step = Compensation;
    const NAME: &'static str = NAME;

    fn correlate(&self, envelope: &Envelope) -> Result<Option<Uuid>, HandlerError> {
        let order_id = if envelope.is::<OrderAccepted>() {
            envelope.decode::<OrderAccepted>().map(|e| e.order_id)
        } else if envelope.is::<CustomerBilled>() {
            envelope.decode::<CustomerBilled>().map(|e| e.order_id)
        } else if envelope.is::<PaymentFailed>() {
            envelope.decode::<PaymentFailed>().map(|e| e.order_id)
        } else if envelope.is::<StockReserved>() {
            envelope.decode::<StockReserved>().map(|e| e.order_id)
        } else if envelope.is::<StockReservationFailed>() {
            envelope
                .decode::<StockReservationFailed>()
                .map(|e| e.order_id)
        } else {
            return Ok(None);
        };
        // An event the process takes that does not decode is dead-lettered (permanent).
        Ok(Some(order_id?))
    }

    fn handle(
        &self,
        state: &mut FulfilmentState,
        envelope: &Envelope,
        turn: &Turn,
    ) -> Result<Decision<Compensation>, HandlerError> {
        state.order_id = Some(turn.id);
        if envelope.is::<OrderAccepted>() {
            let event: OrderAccepted = envelope.decode()?;
            state.customer_id = Some(event.customer_id);
            state.authorization_id = Some(event.payment_authorization_id);
            state.received.insert(Received::OrderAccepted);
        } else if envelope.is::<CustomerBilled>() {
            let event: CustomerBilled = envelope.decode()?;
            state.customer_id = Some(event.customer_id);
            state.authorization_id = Some(event.authorization_id);
            state.received.insert(Received::CustomerBilled);
        } else if envelope.is::<PaymentFailed>() {
            let event: PaymentFailed = envelope.decode()?;
            // Failures of refunds and voids are payment's to retry; only a failed
            // authorization or capture means the order cannot be paid.
            if !matches!(
                event.operation,
                PaymentOperation::Authorize | PaymentOperation::Capture
            ) {
                return Ok(Decision::none());
            }
            state.customer_id = Some(event.customer_id);
            state.authorization_id = Some(event.authorization_id);
            state.received.insert(Received::PaymentFailed);
            fail(
                state,
                CancelReason::PaymentFailed,
                format!("payment {}: {}", event.operation, event.reason),
            );
        } else if envelope.is::<StockReserved>() {
            let _: StockReserved = envelope.decode()?;
            state.received.insert(Received::StockReserved);
        } else if envelope.is::<StockReservationFailed>() {
            let event: StockReservationFailed = envelope.decode()?;
            state.received.insert(Received::StockReservationFailed);
            let lines = event.shortages.len();
            fail(
                state,
                CancelReason::OutOfStock,
                format!("{lines} line(s) could not be reserved"),
            );
        } else {
            return Ok(Decision::none());
        }
        self.settle(state, turn, &envelope.context_for_effects(), false)
    }

    fn on_timeout(
        &self,
        state: &mut FulfilmentState,
        turn: &Turn,
    ) -> Result<Decision<Compensation>, HandlerError> {
        let missing: Vec<&str> = [
            (Received::OrderAccepted, "OrderAccepted"),
            (Received::CustomerBilled, "CustomerBilled"),
            (Received::StockReserved, "StockReserved"),
        ]
        .into_iter()
        .filter(|(event, _)| !state.has(*event))
        .map(|(_, name)| name)
        .collect();
        fail(
            state,
            CancelReason::Timeout,
            format!(
                "not complete within {} s; missing: {}",
                self.timeout.as_secs(),
                missing.join(", ")
            ),
        );
        let context = Context::new(turn.id.to_string());
        self.settle(state, turn, &context, true)
    }

    async fn run(&self, step: &Compensation) -> Result<(), HandlerError> {
        let done = match step {
            Compensation::Refund {
                authorization_id,
                order_id,
                reason,
            } => {
                self.compensator
                    .refund(*authorization_id, *order_id, reason)
                    .await
            }
            Compensation::Void {
                authorization_id,
                order_id,
                reason,
            } => {
                self.compensator
                    .void(*authorization_id, *order_id, reason)
                    .await
            }
            Compensation::Release { order_id, reason } => {
                self.compensator.release(*order_id, reason).await
            }
        };
        done.map_err(HandlerError::transient)
    }
}

/// Records the first failure; later ones keep the first reason.
fn fail(state: &mut FulfilmentState, reason: CancelReason, detail: String) {
    if state.failure.is_none() && state.outcome.is_none() {
        state.failure = Some(reason);
        state.failure_detail = Some(detail);
    }
}

impl FulfilmentProcess {
    /// Decides what the state calls for: publish the ready event, or compensate what
    /// needs it and publish the failure; arm the timeout on the first event.
    fn settle(
        &self,
        state: &mut FulfilmentState,
        turn: &Turn,
        context: &Context,
        timeout_fired: bool,
    ) -> Result<Decision<Compensation>, HandlerError> {
        let order_id = turn.id;
        let Some(reason) = state.failure.clone() else {
            let complete = state.has(Received::OrderAccepted)
                && state.has(Received::CustomerBilled)
                && state.has(Received::StockReserved);
            if complete && state.outcome.is_none() {
                let customer_id = state.customer_id.unwrap_or_default();
                state.outcome = Some(Outcome::ReadyForShipping);
                let ready = OrderReadyForShipping {
                    order_id,
                    customer_id,
                    ready_at: turn.now,
                    version: turn.version,
                };
                return Ok(Decision::none().emit(envelope(&ready, context)?).terminal());
            }
            if turn.timeout_at.is_none() && !timeout_fired {
                return Ok(Decision::none().timeout_at(turn.now + self.timeout));
            }
            return Ok(Decision::none());
        };

        let mut decision = Decision::none().clear_timeout();
        let record = |state: &mut FulfilmentState, kind| {
            state
                .compensations
                .push(CompensationRecord { kind, at: turn.now });
        };
        if let Some(authorization_id) = state.authorization_id {
            if state.has(Received::CustomerBilled) {
                // Billed, possibly after a void was issued: pay it back.
                if !state.compensated(CompensationKind::Refund) {
                    record(state, CompensationKind::Refund);
                    decision = decision.step(Compensation::Refund {
                        authorization_id,
                        order_id,
                        reason: reason.clone(),
                    });
                }
            } else if !state.has(Received::PaymentFailed)
                && !state.compensated(CompensationKind::Void)
            {
                record(state, CompensationKind::Void);
                decision = decision.step(Compensation::Void {
                    authorization_id,
                    order_id,
                    reason: reason.clone(),
                });
            }
        }
        if state.has(Received::StockReserved) && !state.compensated(CompensationKind::Release) {
            record(state, CompensationKind::Release);
            decision = decision.step(Compensation::Release {
                order_id,
                reason: reason.clone(),
            });
        }
        // The failure is published once, when the customer is known (only inventory's
        // events arrived so far: wait for the order or the payment to say whose it is).
        if state.outcome.is_none()
            && let Some(customer_id) = state.customer_id
        {
            state.outcome = Some(Outcome::Failed);
            let failed = FulfilmentFailed {
                order_id,
                customer_id,
                reason,
                detail: state.failure_detail.clone(),
                failed_at: turn.now,
                version: turn.version,
            };
            decision = decision.emit(envelope(&failed, context)?);
        }
        // Stay open while a late CustomerBilled or StockReserved could still need undoing.
        if state.outcome.is_some() && state.payment_settled() && state.stock_settled() {
            decision = decision.terminal();
        }
        Ok(decision)
    }
}

fn envelope<E: Event>(event: &E, context: &Context) -> Result<Envelope, HandlerError> {
    Ok(Envelope::new(event, context)?)
}
