//! The event handlers: the two replicas and the three kinds of message. Each runs in
//! the subscriber's transaction with the inbox record; a message is unique per
//! (order, kind), so a second event about the same order sends nothing.

use std::time::Duration;

use agora_contracts::{
    CancelReason, OrderAccepted, OrderCancelled, OrderShipped, ProductAdded, ProductDeleted,
    ProductUpdated, ShipmentDispatched, UserSignedUp,
};
use agora_messaging::{Envelope, Handler, HandlerError};
use async_trait::async_trait;
use sqlx::{Any, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::store::{self, Kind, Message, ProductName};

fn handler_error(error: crate::Error) -> HandlerError {
    match error {
        crate::Error::Corrupt(_) => HandlerError::permanent(error),
        _ => HandlerError::transient(error),
    }
}

/// Catalog's product events → the names replica.
pub struct Products;

#[async_trait]
impl Handler for Products {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let (product_id, name, version) = if envelope.is::<ProductAdded>() {
            let e: ProductAdded = envelope.decode()?;
            (e.product_id, Some(e.name), e.version)
        } else if envelope.is::<ProductUpdated>() {
            let e: ProductUpdated = envelope.decode()?;
            (e.product_id, Some(e.name), e.version)
        } else if envelope.is::<ProductDeleted>() {
            let e: ProductDeleted = envelope.decode()?;
            (e.product_id, None, e.version)
        } else {
            return Ok(());
        };
        store::apply_product(tx, product_id, name.as_deref(), version)
            .await
            .map_err(handler_error)?;
        Ok(())
    }
}

/// Identity's `UserSignedUp` → the customers replica.
pub struct Users;

#[async_trait]
impl Handler for Users {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let user: UserSignedUp = envelope.decode()?;
        store::apply_customer(tx, user.user_id, &user.name, &user.email, user.version)
            .await
            .map_err(handler_error)?;
        Ok(())
    }
}

/// Ordering's order events → confirmations, cancellations and shipment messages.
pub struct Orders {
    pub name_wait: Duration,
    /// When this process first tried to confirm each order still waiting for a name:
    /// a confirmation falls back only after waiting `name_wait` here too, so that a
    /// notification catching up after downtime (old orders, replica behind) waits for
    /// the catalog's events instead of naming every product by id.
    pub first_tries: std::sync::Mutex<std::collections::HashMap<Uuid, tokio::time::Instant>>,
}

impl Orders {
    pub fn new(name_wait: Duration) -> Self {
        Self {
            name_wait,
            first_tries: Default::default(),
        }
    }

    /// Whether the confirmation of `order` has waited long enough for names.
    fn waited_enough(&self, order: &OrderAccepted) -> bool {
        let now = tokio::time::Instant::now();
        let mut first_tries = self
            .first_tries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = *first_tries.entry(order.order_id).or_insert(now);
        OffsetDateTime::now_utc() >= order.accepted_at + self.name_wait
            && now >= first + self.name_wait
    }

    fn done_waiting(&self, order_id: Uuid) {
        self.first_tries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&order_id);
    }
}

#[async_trait]
impl Handler for Orders {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        if envelope.is::<OrderAccepted>() {
            let order: OrderAccepted = envelope.decode()?;
            self.confirm(tx, &order).await
        } else if envelope.is::<OrderCancelled>() {
            let order: OrderCancelled = envelope.decode()?;
            let (subject, body) = cancelled_text(order.order_id, &order.reason);
            send(
                tx,
                order.customer_id,
                order.order_id,
                Kind::Cancelled,
                subject,
                body,
            )
            .await
        } else if envelope.is::<OrderShipped>() {
            let order: OrderShipped = envelope.decode()?;
            let (subject, body) =
                shipped_text(order.order_id, None, order.tracking_number.as_deref());
            send(
                tx,
                order.customer_id,
                order.order_id,
                Kind::Shipped,
                subject,
                body,
            )
            .await
        } else {
            Ok(())
        }
    }
}

impl Orders {
    async fn confirm(
        &self,
        tx: &mut Transaction<'_, Any>,
        order: &OrderAccepted,
    ) -> Result<(), HandlerError> {
        if store::has_message(tx, order.order_id, Kind::Confirmation)
            .await
            .map_err(handler_error)?
        {
            return Ok(());
        }
        let waited_enough = self.waited_enough(order);
        let mut items = Vec::new();
        for line in &order.lines {
            let name = match store::product_name(tx, line.product_id)
                .await
                .map_err(handler_error)?
            {
                ProductName::Known(name) => name,
                ProductName::Unknown if !waited_enough => {
                    // The catalog's event is on its way: try again a little later.
                    return Err(HandlerError::transient(format!(
                        "the name of product {} is not known yet",
                        line.product_id
                    )));
                }
                ProductName::Unknown | ProductName::Deleted => {
                    format!("product {}", line.product_id)
                }
            };
            items.push(format!("{} × {}", line.quantity, name));
        }
        self.done_waiting(order.order_id);
        let subject = format!("Your order {} is confirmed", short(order.order_id));
        let body = format!(
            "Thank you for your order {}.\n\n{}\n\nTotal: {} {}\n\nWe will let you know when \
             it ships.",
            order.order_id,
            items.join("\n"),
            amount(order.total_cents),
            order.currency
        );
        send(
            tx,
            order.customer_id,
            order.order_id,
            Kind::Confirmation,
            subject,
            body,
        )
        .await
    }
}

/// Shipping's `ShipmentDispatched` → the shipment message.
pub struct Shipments;

#[async_trait]
impl Handler for Shipments {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let shipment: ShipmentDispatched = envelope.decode()?;
        let (subject, body) = shipped_text(
            shipment.order_id,
            shipment.carrier.as_deref(),
            shipment.tracking_number.as_deref(),
        );
        send(
            tx,
            shipment.customer_id,
            shipment.order_id,
            Kind::Shipped,
            subject,
            body,
        )
        .await
    }
}

/// Sends one message of `kind` about `order_id`, unless one was sent; greets the
/// customer by name when the replica knows them.
async fn send(
    tx: &mut Transaction<'_, Any>,
    customer_id: Uuid,
    order_id: Uuid,
    kind: Kind,
    subject: String,
    body: String,
) -> Result<(), HandlerError> {
    let customer = store::customer(tx, customer_id)
        .await
        .map_err(handler_error)?;
    let greeting = match &customer {
        Some((name, _)) if !name.trim().is_empty() => format!("Hello {name},"),
        _ => "Hello,".to_owned(),
    };
    let message = Message {
        id: Uuid::now_v7(),
        customer_id,
        order_id: Some(order_id),
        kind: kind.as_str().to_owned(),
        recipient: customer.map(|(_, email)| email),
        subject,
        body: format!("{greeting}\n\n{body}"),
        sent_at: store::now(),
    };
    if store::send(tx, &message).await.map_err(handler_error)? {
        tracing::info!(%order_id, kind = kind.as_str(), "message sent");
    }
    Ok(())
}

fn short(order_id: Uuid) -> String {
    order_id.simple().to_string()[..8].to_owned()
}

/// Minor units as a decimal amount with two places: 1234 → "12.34".
fn amount(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}{}.{:02}", cents / 100, cents % 100)
}

fn cancelled_text(order_id: Uuid, reason: &CancelReason) -> (String, String) {
    let why = match reason {
        CancelReason::OutOfStock => "some of its items are out of stock".to_owned(),
        CancelReason::PaymentFailed => "the payment could not be taken".to_owned(),
        CancelReason::Timeout => "it could not be completed in time".to_owned(),
        CancelReason::Other(code) => format!("of {code}"),
    };
    (
        format!("Your order {} was cancelled", short(order_id)),
        format!(
            "We are sorry: your order {order_id} was cancelled because {why} (reason: {}). \
             You have not been charged, or your money is on its way back.",
            reason.as_str()
        ),
    )
}

fn shipped_text(
    order_id: Uuid,
    carrier: Option<&str>,
    tracking_number: Option<&str>,
) -> (String, String) {
    let mut body = format!("Your order {order_id} is on its way");
    if let Some(carrier) = carrier {
        body.push_str(&format!(" with {carrier}"));
    }
    body.push('.');
    if let Some(tracking) = tracking_number {
        body.push_str(&format!(" Tracking number: {tracking}."));
    }
    (format!("Your order {} has shipped", short(order_id)), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_have_two_places() {
        assert_eq!(amount(1234), "12.34");
        assert_eq!(amount(5), "0.05");
        assert_eq!(amount(-150), "-1.50");
    }
}
