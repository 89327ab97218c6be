//! The event handlers: the two replicas and the three kinds of message. Each runs in
//! the subscriber's transaction with the inbox record; a message is unique per
//! (order, kind), so a second event about the same order sends nothing.

use std::time::Duration;

use agora_contracts::{
    CancelReason, OrderAccepted, OrderCancelled, OrderReference, OrderShipped, ProductAdded,
    ProductDeleted, ProductUpdated, ShipmentDispatched, UserSignedUp,
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

/// When this process first tried each order still waiting for something, so that a
/// wait counts from there too: a notification catching up after downtime (old orders,
/// replicas behind) then waits for the events on their way instead of falling back at
/// once.
#[derive(Default)]
struct FirstTries(std::sync::Mutex<std::collections::HashMap<Uuid, tokio::time::Instant>>);

impl FirstTries {
    /// Whether `order_id` has waited `wait` since `since` and since this process first
    /// tried it.
    fn waited(&self, order_id: Uuid, since: OffsetDateTime, wait: Duration) -> bool {
        let now = tokio::time::Instant::now();
        let mut first_tries = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = *first_tries.entry(order_id).or_insert(now);
        OffsetDateTime::now_utc() >= since + wait && now >= first + wait
    }

    fn forget(&self, order_id: Uuid) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&order_id);
    }
}

/// Ordering's order events → confirmations, cancellations and shipment messages.
pub struct Orders {
    name_wait: Duration,
    /// Confirmations waiting for product names: one falls back only after waiting
    /// `name_wait` from the order's acceptance and from its first attempt here.
    confirmations: FirstTries,
    shipped: Shipped,
}

impl Orders {
    pub fn new(name_wait: Duration) -> Self {
        Self {
            name_wait,
            confirmations: FirstTries::default(),
            shipped: Shipped::new(name_wait),
        }
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
            let shipment = Shipment {
                order_id: order.order_id,
                customer_id: order.customer_id,
                carrier: None,
                tracking_number: order.tracking_number.as_deref(),
                at: order.shipped_at,
            };
            self.shipped.send(tx, &shipment).await
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
        // Kept for the shipped message. While the confirmation waits for a name this
        // transaction is rolled back, so the lines are kept with the attempt that
        // sends it (or, for an order confirmed before they were kept, a redelivery).
        let lines: Vec<_> = order
            .lines
            .iter()
            .map(|line| (line.product_id, line.quantity))
            .collect();
        store::save_order_lines(tx, order.order_id, &lines)
            .await
            .map_err(handler_error)?;
        if store::has_message(tx, order.order_id, Kind::Confirmation)
            .await
            .map_err(handler_error)?
        {
            return Ok(());
        }
        let waited_enough =
            self.confirmations
                .waited(order.order_id, order.accepted_at, self.name_wait);
        let items = items(tx, &lines, waited_enough).await?;
        self.confirmations.forget(order.order_id);
        let subject = format!("Your order {} is confirmed", short(order.order_id));
        let body = format!(
            "Thank you for your order {}.\n\n{}\n\nTotal: {} {}\n\nWe will let you know when \
             it ships.",
            short(order.order_id),
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

/// One line per `(product, quantity)`, "2 × Teapot", with the names from the replica.
/// A name not known yet is a transient error unless `waited_enough`, when it falls
/// back to "product <id>".
async fn items(
    tx: &mut Transaction<'_, Any>,
    lines: &[(Uuid, u32)],
    waited_enough: bool,
) -> Result<Vec<String>, HandlerError> {
    let mut items = Vec::new();
    for &(product_id, quantity) in lines {
        let name = match store::product_name(tx, product_id)
            .await
            .map_err(handler_error)?
        {
            ProductName::Known(name) => name,
            ProductName::Unknown if !waited_enough => {
                // The catalog's event is on its way: try again a little later.
                return Err(HandlerError::transient(format!(
                    "the name of product {product_id} is not known yet"
                )));
            }
            ProductName::Unknown | ProductName::Deleted => format!("product {product_id}"),
        };
        items.push(format!("{quantity} × {name}"));
    }
    Ok(items)
}

/// Shipping's `ShipmentDispatched` → the shipment message.
pub struct Shipments {
    shipped: Shipped,
}

impl Shipments {
    pub fn new(name_wait: Duration) -> Self {
        Self {
            shipped: Shipped::new(name_wait),
        }
    }
}

#[async_trait]
impl Handler for Shipments {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let dispatched: ShipmentDispatched = envelope.decode()?;
        let shipment = Shipment {
            order_id: dispatched.order_id,
            customer_id: dispatched.customer_id,
            carrier: dispatched.carrier.as_deref(),
            tracking_number: dispatched.tracking_number.as_deref(),
            at: dispatched.dispatched_at,
        };
        self.shipped.send(tx, &shipment).await
    }
}

/// What the shipped message says, from `ShipmentDispatched` or `OrderShipped`.
struct Shipment<'a> {
    order_id: Uuid,
    customer_id: Uuid,
    carrier: Option<&'a str>,
    tracking_number: Option<&'a str>,
    at: OffsetDateTime,
}

/// The shipped message, naming the order's products as its confirmation does.
struct Shipped {
    /// How long it waits for the order's lines (kept with its confirmation): twice the
    /// confirmation's `name_wait`, so that a confirmation still waiting for names has
    /// the time to fall back first. After that it is sent without the products.
    lines_wait: Duration,
    waiting: FirstTries,
}

impl Shipped {
    fn new(name_wait: Duration) -> Self {
        Self {
            lines_wait: name_wait.saturating_mul(2),
            waiting: FirstTries::default(),
        }
    }

    async fn send(
        &self,
        tx: &mut Transaction<'_, Any>,
        shipment: &Shipment<'_>,
    ) -> Result<(), HandlerError> {
        let order_id = shipment.order_id;
        if store::has_message(tx, order_id, Kind::Shipped)
            .await
            .map_err(handler_error)?
        {
            return Ok(());
        }
        let lines = store::order_lines(tx, order_id)
            .await
            .map_err(handler_error)?;
        if lines.is_empty() && !self.waiting.waited(order_id, shipment.at, self.lines_wait) {
            // The order's acceptance is on its way (or its confirmation waits for a
            // name): try again a little later.
            return Err(HandlerError::transient(format!(
                "the lines of order {order_id} are not known yet"
            )));
        }
        self.waiting.forget(order_id);
        // The confirmation waited for the names already.
        let items = items(tx, &lines, true).await?;
        let (subject, body) =
            shipped_text(order_id, &items, shipment.carrier, shipment.tracking_number);
        send(
            tx,
            shipment.customer_id,
            order_id,
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

/// How a customer quotes an order: its reference (`AG-7K3Q-9D2M`), derived where
/// ordering and the UI derive it.
fn short(order_id: Uuid) -> String {
    OrderReference::of(order_id).to_string()
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
            "We are sorry: your order {} was cancelled because {why} (reason: {}).\n\nYou \
             have not been charged, or your money is on its way back.",
            short(order_id),
            reason.as_str()
        ),
    )
}

fn shipped_text(
    order_id: Uuid,
    items: &[String],
    carrier: Option<&str>,
    tracking_number: Option<&str>,
) -> (String, String) {
    let mut body = format!("Your order {} is on its way", short(order_id));
    if let Some(carrier) = carrier {
        body.push_str(&format!(" with {carrier}"));
    }
    body.push('.');
    if !items.is_empty() {
        body.push_str(&format!("\n\n{}", items.join("\n")));
    }
    if let Some(tracking) = tracking_number {
        body.push_str(&format!("\n\nTracking number: {tracking}."));
    }
    (format!("Your order {} has shipped", short(order_id)), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_placed_together_have_references_apart() {
        let ids: Vec<Uuid> = (0..100).map(|_| Uuid::now_v7()).collect();
        let references: std::collections::HashSet<String> =
            ids.iter().map(|id| short(*id)).collect();
        assert_eq!(
            references.len(),
            ids.len(),
            "made in the same milliseconds, yet apart"
        );
        let id = Uuid::parse_str("01a24d0d-0000-7000-8000-00000000beef").unwrap();
        assert_eq!(
            short(id),
            "AG-0000-1FQF",
            "the reference, as ordering gives it"
        );
    }

    #[test]
    fn amounts_have_two_places() {
        assert_eq!(amount(1234), "12.34");
        assert_eq!(amount(5), "0.05");
        assert_eq!(amount(-150), "-1.50");
    }
}
