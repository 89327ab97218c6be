//! The event handlers. Each records its fact about the order, then dispatches if the
//! order is both accepted (address known) and ready — whichever comes second does.

use agora_contracts::{OrderAccepted, OrderReadyForShipping, ShipmentDispatched};
use agora_messaging::{Envelope, Handler, HandlerError, Outbox};
use async_trait::async_trait;
use sqlx::{Any, Transaction};
use uuid::Uuid;

use crate::store::{self, Order, Shipment};

fn handler_error(error: crate::Error) -> HandlerError {
    match error {
        crate::Error::Corrupt(_) => HandlerError::permanent(error),
        _ => HandlerError::transient(error),
    }
}

/// On `OrderAccepted`: keep the order's customer and address.
pub struct RecordAcceptedOrder;

#[async_trait]
impl Handler for RecordAcceptedOrder {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let accepted: OrderAccepted = envelope.decode()?;
        let order = store::record_accepted(
            tx,
            accepted.order_id,
            accepted.customer_id,
            &accepted.shipping_address,
        )
        .await
        .map_err(handler_error)?;
        dispatch_if_ready(tx, envelope, &order).await
    }
}

/// On `OrderReadyForShipping`: the order may go.
pub struct DispatchWhenReady;

#[async_trait]
impl Handler for DispatchWhenReady {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let ready: OrderReadyForShipping = envelope.decode()?;
        let order = store::record_ready(tx, ready.order_id, ready.customer_id, store::now())
            .await
            .map_err(handler_error)?;
        if order.address.is_none() {
            tracing::info!(
                order_id = %ready.order_id,
                "ready before its acceptance arrived: dispatched when it does"
            );
        }
        dispatch_if_ready(tx, envelope, &order).await
    }
}

/// Creates and dispatches the order's shipment when both facts are known and it has
/// none yet, publishing `ShipmentDispatched` in the same transaction.
async fn dispatch_if_ready(
    tx: &mut Transaction<'_, Any>,
    cause: &Envelope,
    order: &Order,
) -> Result<(), HandlerError> {
    let (Some(address), true) = (&order.address, order.ready) else {
        return Ok(());
    };
    let id = Uuid::now_v7();
    let shipment = Shipment {
        id,
        order_id: order.order_id,
        customer_id: order.customer_id,
        address: address.clone(),
        status: "dispatched".to_owned(),
        carrier: crate::CARRIER.to_owned(),
        tracking_number: tracking_number(id),
        dispatched_at: store::now(),
    };
    if !store::insert_shipment(tx, &shipment)
        .await
        .map_err(handler_error)?
    {
        tracing::info!(order_id = %order.order_id, "dispatched before: nothing to do");
        return Ok(());
    }
    let event = ShipmentDispatched {
        shipment_id: shipment.id,
        order_id: shipment.order_id,
        customer_id: shipment.customer_id,
        address: shipment.address.clone(),
        carrier: Some(shipment.carrier.clone()),
        tracking_number: Some(shipment.tracking_number.clone()),
        dispatched_at: shipment.dispatched_at,
        version: 1,
    };
    Outbox::append(tx, &Envelope::new(&event, &cause.context_for_effects())?).await?;
    tracing::info!(order_id = %order.order_id, shipment_id = %id, "shipment dispatched");
    Ok(())
}

/// The simulated carrier's tracking number: `AP` and the last 12 hex digits of the
/// shipment id (random in a UUIDv7), upper-cased.
fn tracking_number(shipment_id: Uuid) -> String {
    let hex = shipment_id.simple().to_string();
    format!("AP{}", hex[hex.len() - 12..].to_uppercase())
}
