//! The order status projection: each order's status and history, from the events of
//! payment, fulfilment and shipping; `OrderShipped` and `OrderCancelled` published when
//! an order reaches those terminal states. The rules are [`OrderStatusHandler`]'s.

use agora_contracts::{
    CancelReason, CustomerBilled, FulfilmentFailed, OrderCancelled, OrderReadyForShipping,
    OrderShipped, PaymentFailed, PaymentOperation, ShipmentDispatched,
};
use agora_messaging::{Envelope, Handler, HandlerError, Outbox};
use async_trait::async_trait;
use sqlx::{Any, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

pub use crate::domain::OrderStatus;
use crate::replica::handler_error;
use crate::store::{self, HistoryEntry};

/// What one event asks of an order.
#[derive(Clone, Debug)]
enum Step {
    Paid,
    ReadyForShipping,
    Shipped {
        shipment_id: Uuid,
        tracking_number: Option<String>,
    },
    Cancelled {
        reason: CancelReason,
        detail: Option<String>,
    },
}

impl Step {
    fn status(&self) -> OrderStatus {
        match self {
            Step::Paid => OrderStatus::Paid,
            Step::ReadyForShipping => OrderStatus::ReadyForShipping,
            Step::Shipped { .. } => OrderStatus::Shipped,
            Step::Cancelled { .. } => OrderStatus::Cancelled,
        }
    }
}

/// The order status projection. Applies `CustomerBilled` and `PaymentFailed` (payment),
/// `OrderReadyForShipping` and `FulfilmentFailed` (fulfilment), `ShipmentDispatched`
/// (shipping); ignores other events. Run by the consumers `ordering-payments`,
/// `ordering-fulfilment` and `ordering-shipments`.
///
/// The rules:
/// - The forward path is `accepted` → `paid` (`CustomerBilled`) → `ready_for_shipping`
///   (`OrderReadyForShipping`) → `shipped` (`ShipmentDispatched`, which publishes
///   `OrderShipped`). `cancelled` (`FulfilmentFailed{reason, detail}`, or
///   `PaymentFailed` of a capture, reason `payment_failed`) may follow any status that is
///   not terminal, and publishes `OrderCancelled{reason, detail}`.
/// - `shipped` and `cancelled` are terminal: nothing changes them.
/// - Statuses only move forward: an event for a status at or before the current one
///   (late or redelivered) changes nothing.
/// - An event that skips steps (e.g. `OrderReadyForShipping` before `CustomerBilled`)
///   moves to its status and records the skipped steps as implied, so a history always
///   walks the path in order: `accepted, paid, ready_for_shipping, shipped`, the implied
///   ones at the time of the event that implied them. The late event then adds nothing.
/// - Each change bumps the order's version by one (the version the published events
///   carry) and appends to the history; a status enters an order's history at most once
///   (a unique index), and the inbox makes a redelivery a no-op besides.
/// - `PaymentFailed` of an authorization concerns a checkout attempt, never an accepted
///   order (whose authorization was granted), and a failed refund or void is payment's
///   to retry: both change nothing.
/// - An event about an order ordering does not know (its store was replaced) is acked
///   and logged: retrying cannot make the order appear.
#[derive(Clone, Copy, Debug, Default)]
pub struct OrderStatusHandler;

#[async_trait]
impl Handler for OrderStatusHandler {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let (order_id, at, step) = if envelope.is::<CustomerBilled>() {
            let event: CustomerBilled = envelope.decode()?;
            (event.order_id, event.billed_at, Step::Paid)
        } else if envelope.is::<PaymentFailed>() {
            let event: PaymentFailed = envelope.decode()?;
            if event.operation != PaymentOperation::Capture {
                tracing::debug!(order_id = %event.order_id, operation = %event.operation,
                    "payment failure that does not cancel an order");
                return Ok(());
            }
            let step = Step::Cancelled {
                reason: CancelReason::PaymentFailed,
                detail: Some(format!("payment {}: {}", event.operation, event.reason)),
            };
            (event.order_id, event.failed_at, step)
        } else if envelope.is::<OrderReadyForShipping>() {
            let event: OrderReadyForShipping = envelope.decode()?;
            (event.order_id, event.ready_at, Step::ReadyForShipping)
        } else if envelope.is::<FulfilmentFailed>() {
            let event: FulfilmentFailed = envelope.decode()?;
            let step = Step::Cancelled {
                reason: event.reason,
                detail: event.detail,
            };
            (event.order_id, event.failed_at, step)
        } else if envelope.is::<ShipmentDispatched>() {
            let event: ShipmentDispatched = envelope.decode()?;
            let step = Step::Shipped {
                shipment_id: event.shipment_id,
                tracking_number: event.tracking_number,
            };
            (event.order_id, event.dispatched_at, step)
        } else {
            return Ok(());
        };
        apply(tx, envelope, order_id, at, step).await
    }
}

async fn apply(
    tx: &mut Transaction<'_, Any>,
    envelope: &Envelope,
    order_id: Uuid,
    at: OffsetDateTime,
    step: Step,
) -> Result<(), HandlerError> {
    let event_type = envelope.event_type.as_str();
    let Some(order) = store::order_status(tx, order_id)
        .await
        .map_err(handler_error)?
    else {
        tracing::warn!(%order_id, event_type, "event about an unknown order: ignored");
        return Ok(());
    };
    let current = order.status;
    let target = step.status();
    if current.is_terminal() {
        if current != target {
            tracing::warn!(%order_id, event_type, status = current.as_str(),
                "event about an order in a terminal status: ignored");
        }
        return Ok(());
    }
    let at_ms = store::ms_of(at);
    let entries: Vec<HistoryEntry> = match (&step, current.rank(), target.rank()) {
        (Step::Cancelled { reason, .. }, _, _) => vec![HistoryEntry {
            status: OrderStatus::Cancelled,
            at_ms,
            reason: Some(reason.as_str().to_owned()),
        }],
        (_, Some(from), Some(to)) if to > from => OrderStatus::PATH[from + 1..=to]
            .iter()
            .map(|&status| HistoryEntry {
                status,
                at_ms,
                reason: None,
            })
            .collect(),
        // At or before the current status: a late or repeated event adds nothing.
        _ => return Ok(()),
    };
    store::advance_status(tx, order_id, order.version, target, &entries)
        .await
        .map_err(handler_error)?;
    let version = order.version + 1;
    let context = envelope.context_for_effects();
    match step {
        Step::Shipped {
            shipment_id,
            tracking_number,
        } => {
            let event = OrderShipped {
                order_id,
                customer_id: order.customer_id,
                shipment_id,
                tracking_number,
                shipped_at: at,
                version,
            };
            Outbox::append(tx, &Envelope::new(&event, &context)?).await?;
        }
        Step::Cancelled { reason, detail } => {
            let event = OrderCancelled {
                order_id,
                customer_id: order.customer_id,
                reason,
                detail,
                cancelled_at: at,
                version,
            };
            Outbox::append(tx, &Envelope::new(&event, &context)?).await?;
        }
        Step::Paid | Step::ReadyForShipping => {}
    }
    tracing::info!(%order_id, from = current.as_str(), to = target.as_str(), event_type,
        "order status changed");
    Ok(())
}
