//! The event handlers: reserving accepted orders and shipping dispatched ones. Each
//! runs in the subscriber's transaction, with the inbox record, so its effects happen
//! once per event; a second event about the same order finds the reservation decided.

use agora_contracts::{
    OrderAccepted, ShipmentDispatched, StockLine, StockReservationFailed, StockReserved,
};
use agora_messaging::{Envelope, Handler, HandlerError, Outbox};
use async_trait::async_trait;
use sqlx::{Any, Transaction};

use crate::store::{self, Reserve, Ship};

fn handler_error(error: crate::Error) -> HandlerError {
    match error {
        crate::Error::Corrupt(_) => HandlerError::permanent(error),
        _ => HandlerError::transient(error),
    }
}

/// On `OrderAccepted`: reserve every line or none, and say which.
pub struct ReserveOnAcceptance;

#[async_trait]
impl Handler for ReserveOnAcceptance {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let order: OrderAccepted = envelope.decode()?;
        let lines: Vec<StockLine> = order
            .lines
            .iter()
            .map(|line| StockLine {
                product_id: line.product_id,
                quantity: line.quantity,
            })
            .collect();
        let at = store::now();
        let outcome = store::reserve(tx, order.order_id, &lines, at)
            .await
            .map_err(handler_error)?;
        let context = envelope.context_for_effects();
        let event = match outcome {
            Reserve::Reserved(lines) => {
                tracing::info!(order_id = %order.order_id, "stock reserved");
                Envelope::new(
                    &StockReserved {
                        order_id: order.order_id,
                        lines,
                        reserved_at: at,
                        version: 1,
                    },
                    &context,
                )?
            }
            Reserve::Failed(shortages) => {
                tracing::info!(
                    order_id = %order.order_id,
                    shortages = shortages.len(),
                    "stock reservation failed"
                );
                Envelope::new(
                    &StockReservationFailed {
                        order_id: order.order_id,
                        shortages,
                        failed_at: at,
                        version: 1,
                    },
                    &context,
                )?
            }
            Reserve::AlreadyDecided(status) => {
                tracing::info!(
                    order_id = %order.order_id,
                    status = status.as_str(),
                    "order decided before: nothing reserved"
                );
                return Ok(());
            }
        };
        Outbox::append(tx, &event).await?;
        Ok(())
    }
}

/// On `ShipmentDispatched`: the reserved goods left the warehouse.
pub struct ShipOnDispatch;

#[async_trait]
impl Handler for ShipOnDispatch {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let shipment: ShipmentDispatched = envelope.decode()?;
        match store::ship(tx, shipment.order_id, store::now())
            .await
            .map_err(handler_error)?
        {
            Ship::Shipped => {
                tracing::info!(order_id = %shipment.order_id, "reservation shipped");
                Ok(())
            }
            Ship::Nothing(status) => {
                tracing::warn!(
                    order_id = %shipment.order_id,
                    status = status.as_str(),
                    "a shipment of an order whose stock is not held"
                );
                Ok(())
            }
            // Shipping dispatches only reserved orders; the reservation is on its way.
            Ship::Unknown => Err(HandlerError::transient(format!(
                "order {} is not reserved yet",
                shipment.order_id
            ))),
        }
    }
}
