//! The replicas ordering keeps of other services' data, fed by their events: customer
//! addresses and payment methods (from customer), product names (from catalog).
//!
//! Every event carries its aggregate's version and a replica applies it only when it is
//! newer than what it holds, per field group: duplicates and reordering never regress
//! a replica, so any delivery order converges to the same state.

use agora_contracts::{
    CustomerAddressChanged, CustomerRegistered, PaymentMethodChanged, ProductAdded, ProductDeleted,
    ProductUpdated,
};
use agora_messaging::{Envelope, Handler, HandlerError};
use async_trait::async_trait;
use sqlx::{Any, Transaction};

use crate::store;

/// Applies customer's `CustomerRegistered`, `CustomerAddressChanged` and
/// `PaymentMethodChanged`; ignores its other events.
#[derive(Clone, Copy, Debug, Default)]
pub struct CustomerReplicaHandler;

#[async_trait]
impl Handler for CustomerReplicaHandler {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        if envelope.is::<CustomerRegistered>() {
            let event: CustomerRegistered = envelope.decode()?;
            store::apply_registered(
                tx,
                event.customer_id,
                &event.name,
                &event.email,
                event.version,
            )
            .await
            .map_err(handler_error)?;
        } else if envelope.is::<CustomerAddressChanged>() {
            let event: CustomerAddressChanged = envelope.decode()?;
            store::apply_address(
                tx,
                event.customer_id,
                &event.address,
                event.changed_at,
                event.version,
            )
            .await
            .map_err(handler_error)?;
        } else if envelope.is::<PaymentMethodChanged>() {
            let event: PaymentMethodChanged = envelope.decode()?;
            store::apply_payment_method(
                tx,
                event.customer_id,
                &event.payment_method,
                event.version,
            )
            .await
            .map_err(handler_error)?;
        }
        Ok(())
    }
}

/// Applies catalog's `ProductAdded`, `ProductUpdated` and `ProductDeleted` (a tombstone
/// at its version); ignores its other events.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProductReplicaHandler;

#[async_trait]
impl Handler for ProductReplicaHandler {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let (product_id, name, deleted, version) = if envelope.is::<ProductAdded>() {
            let event: ProductAdded = envelope.decode()?;
            (event.product_id, Some(event.name), false, event.version)
        } else if envelope.is::<ProductUpdated>() {
            let event: ProductUpdated = envelope.decode()?;
            (event.product_id, Some(event.name), false, event.version)
        } else if envelope.is::<ProductDeleted>() {
            let event: ProductDeleted = envelope.decode()?;
            (event.product_id, None, true, event.version)
        } else {
            return Ok(());
        };
        store::apply_product(tx, product_id, name.as_deref(), deleted, version)
            .await
            .map_err(handler_error)
    }
}

pub(crate) fn handler_error(error: crate::Error) -> HandlerError {
    match error {
        // A version beyond i64 cannot be stored, now or later.
        crate::Error::Corrupt(what) => HandlerError::permanent(what),
        other => HandlerError::transient(other),
    }
}
