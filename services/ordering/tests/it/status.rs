//! The order status projection: transitions, duplicates, reordering, terminal states,
//! `OrderShipped` / `OrderCancelled` exactly once, and the consumers fed by the bus.

use agora_bus::Bus;
use agora_contracts::{
    CancelReason, CustomerBilled, Event, FulfilmentFailed, Money, OrderCancelled,
    OrderReadyForShipping, OrderShipped, PaymentFailed, PaymentOperation, ShipmentDispatched,
    bus_subject,
};
use agora_messaging::{Envelope, Handler};
use agora_ordering::{OrderStatusHandler, Ordering};
use axum::http::{Method, StatusCode};
use serde_json::Value;
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::support::{
    Backend, Env, address, call, customer_with_data, envelope, eventually, lines, place_order,
    product, start,
};

crate::on_both_backends!(
    each_event_moves_the_order_forward_and_shipping_publishes_order_shipped,
    redeliveries_and_repeated_events_change_nothing,
    events_out_of_order_imply_the_skipped_steps,
    terminal_states_stick,
    only_a_failed_capture_cancels,
    events_about_unknown_orders_are_acked,
    the_consumers_project_events_from_the_bus,
);

/// An accepted order: (order id, customer id, the customer's token).
async fn accepted_order(env: &Env, ordering: &Ordering) -> (Uuid, Uuid, String) {
    let lamp = product(env, ordering, "Lamp", 1000).await;
    let (customer_id, token) = customer_with_data(env, ordering).await;
    let answer = place_order(ordering, &token, Some("k"), lines(&[(lamp, 1)])).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let id = answer.body["id"].as_str().unwrap().parse().unwrap();
    (id, customer_id, token)
}

fn at(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000 + seconds).unwrap()
}

fn billed(order_id: Uuid, customer_id: Uuid) -> Envelope {
    envelope(&CustomerBilled {
        authorization_id: Uuid::now_v7(),
        capture_id: Uuid::now_v7(),
        order_id,
        customer_id,
        amount: Money {
            amount_cents: 1000,
            currency: "EUR".into(),
        },
        billed_at: at(1),
        version: 2,
    })
}

fn payment_failed(order_id: Uuid, customer_id: Uuid, operation: PaymentOperation) -> Envelope {
    envelope(&PaymentFailed {
        authorization_id: Uuid::now_v7(),
        order_id,
        customer_id,
        operation,
        reason: "card expired".into(),
        failed_at: at(1),
        version: 2,
    })
}

fn ready(order_id: Uuid, customer_id: Uuid) -> Envelope {
    envelope(&OrderReadyForShipping {
        order_id,
        customer_id,
        ready_at: at(2),
        version: 3,
    })
}

fn fulfilment_failed(order_id: Uuid, customer_id: Uuid, reason: CancelReason) -> Envelope {
    envelope(&FulfilmentFailed {
        order_id,
        customer_id,
        reason,
        detail: Some("1 line short".into()),
        failed_at: at(2),
        version: 3,
    })
}

fn dispatched(order_id: Uuid, customer_id: Uuid, shipment_id: Uuid) -> Envelope {
    envelope(&ShipmentDispatched {
        shipment_id,
        order_id,
        customer_id,
        address: address("Main St 1"),
        carrier: Some("DHL".into()),
        tracking_number: Some("TRACK-1".into()),
        dispatched_at: at(3),
        version: 1,
    })
}

/// Handles `events` as the consumers would, one transaction each.
async fn handle(ordering: &Ordering, events: &[&Envelope]) {
    for envelope in events {
        let mut tx = ordering.db().begin().await.unwrap();
        OrderStatusHandler.handle(&mut tx, envelope).await.unwrap();
        tx.commit().await.unwrap();
    }
}

async fn get_order(ordering: &Ordering, token: &str, id: Uuid) -> Value {
    let (status, _, body) = call(
        &ordering.router(),
        Method::GET,
        &format!("/api/ordering/orders/{id}"),
        Some(token),
        &[],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The history as (status, at, reason).
fn history(order: &Value) -> Vec<(String, String, Option<String>)> {
    order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["status"].as_str().unwrap().to_owned(),
                h["at"].as_str().unwrap().to_owned(),
                h["reason"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn statuses(order: &Value) -> Vec<String> {
    history(order).into_iter().map(|(s, _, _)| s).collect()
}

/// Every event of type `E` ordering committed to its outbox.
async fn outbox<E: Event>(ordering: &Ordering) -> Vec<E> {
    let rows = sqlx::query("SELECT payload FROM messaging_outbox WHERE subject = $1")
        .bind(bus_subject::<E>())
        .fetch_all(ordering.db().pool())
        .await
        .unwrap();
    rows.iter()
        .map(|row| {
            let payload: String = row.try_get("payload").unwrap();
            Envelope::from_json(payload.as_bytes())
                .unwrap()
                .decode()
                .unwrap()
        })
        .collect()
}

const RFC3339_1: &str = "2027-01-15T08:00:01Z";
const RFC3339_2: &str = "2027-01-15T08:00:02Z";
const RFC3339_3: &str = "2027-01-15T08:00:03Z";

async fn each_event_moves_the_order_forward_and_shipping_publishes_order_shipped(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let (id, customer, token) = accepted_order(&env, &ordering).await;

    handle(&ordering, &[&billed(id, customer)]).await;
    let order = get_order(&ordering, &token, id).await;
    assert_eq!(order["status"], "paid");
    assert_eq!(statuses(&order), ["accepted", "paid"]);
    assert_eq!(history(&order)[1].1, RFC3339_1);

    handle(&ordering, &[&ready(id, customer)]).await;
    let order = get_order(&ordering, &token, id).await;
    assert_eq!(order["status"], "ready_for_shipping");
    assert_eq!(statuses(&order), ["accepted", "paid", "ready_for_shipping"]);
    assert_eq!(history(&order)[2].1, RFC3339_2);
    assert!(outbox::<OrderShipped>(&ordering).await.is_empty());

    let shipment = Uuid::now_v7();
    handle(&ordering, &[&dispatched(id, customer, shipment)]).await;
    let order = get_order(&ordering, &token, id).await;
    assert_eq!(order["status"], "shipped");
    assert_eq!(order["settled"], true, "shipped is final");
    assert_eq!(
        history(&order)[1..],
        [
            ("paid".to_owned(), RFC3339_1.to_owned(), None),
            ("ready_for_shipping".to_owned(), RFC3339_2.to_owned(), None),
            ("shipped".to_owned(), RFC3339_3.to_owned(), None),
        ]
    );
    let shipped = outbox::<OrderShipped>(&ordering).await;
    assert_eq!(
        shipped,
        [OrderShipped {
            order_id: id,
            customer_id: customer,
            shipment_id: shipment,
            tracking_number: Some("TRACK-1".into()),
            shipped_at: at(3),
            // accepted 1, paid 2, ready 3, shipped 4.
            version: 4,
        }]
    );
    assert!(outbox::<OrderCancelled>(&ordering).await.is_empty());
    ordering.shutdown().await;
}

async fn redeliveries_and_repeated_events_change_nothing(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let (id, customer, token) = accepted_order(&env, &ordering).await;
    let shipment = Uuid::now_v7();
    let (b, r, d) = (
        billed(id, customer),
        ready(id, customer),
        dispatched(id, customer, shipment),
    );
    // The same envelopes twice (a redelivery past the inbox), and the same facts under
    // new event ids (a producer that published twice).
    handle(&ordering, &[&b, &b, &r, &r]).await;
    handle(&ordering, &[&billed(id, customer), &ready(id, customer)]).await;
    handle(&ordering, &[&d, &d, &dispatched(id, customer, shipment)]).await;

    let order = get_order(&ordering, &token, id).await;
    assert_eq!(order["status"], "shipped");
    assert_eq!(
        statuses(&order),
        ["accepted", "paid", "ready_for_shipping", "shipped"]
    );
    assert_eq!(outbox::<OrderShipped>(&ordering).await.len(), 1);
    ordering.shutdown().await;
}

async fn events_out_of_order_imply_the_skipped_steps(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    // Ready before billed: paid is implied, at the time of the ready event.
    let (id, customer, token) = accepted_order(&env, &ordering).await;
    handle(&ordering, &[&ready(id, customer)]).await;
    let order = get_order(&ordering, &token, id).await;
    assert_eq!(order["status"], "ready_for_shipping");
    assert_eq!(
        history(&order)[1..],
        [
            ("paid".to_owned(), RFC3339_2.to_owned(), None),
            ("ready_for_shipping".to_owned(), RFC3339_2.to_owned(), None),
        ]
    );
    // The late billing adds nothing.
    handle(&ordering, &[&billed(id, customer)]).await;
    let late = get_order(&ordering, &token, id).await;
    assert_eq!(late, order);

    // Dispatched first: everything before it is implied; the late ones add nothing.
    let (other, customer, token) = accepted_order(&env, &ordering).await;
    handle(&ordering, &[&dispatched(other, customer, Uuid::now_v7())]).await;
    handle(
        &ordering,
        &[&billed(other, customer), &ready(other, customer)],
    )
    .await;
    let order = get_order(&ordering, &token, other).await;
    assert_eq!(order["status"], "shipped");
    assert_eq!(
        history(&order)[1..],
        [
            ("paid".to_owned(), RFC3339_3.to_owned(), None),
            ("ready_for_shipping".to_owned(), RFC3339_3.to_owned(), None),
            ("shipped".to_owned(), RFC3339_3.to_owned(), None),
        ]
    );
    let shipped = outbox::<OrderShipped>(&ordering).await;
    assert_eq!(shipped.len(), 1);
    assert_eq!((shipped[0].order_id, shipped[0].version), (other, 2));
    ordering.shutdown().await;
}

async fn terminal_states_stick(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    // Cancelled: nothing moves it, not even another failure.
    let (id, customer, token) = accepted_order(&env, &ordering).await;
    handle(&ordering, &[&billed(id, customer)]).await;
    handle(
        &ordering,
        &[&fulfilment_failed(id, customer, CancelReason::OutOfStock)],
    )
    .await;
    let cancelled = get_order(&ordering, &token, id).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(
        history(&cancelled)[1..],
        [
            ("paid".to_owned(), RFC3339_1.to_owned(), None),
            (
                "cancelled".to_owned(),
                RFC3339_2.to_owned(),
                Some("out_of_stock".to_owned())
            ),
        ]
    );
    handle(
        &ordering,
        &[
            &ready(id, customer),
            &dispatched(id, customer, Uuid::now_v7()),
            &fulfilment_failed(id, customer, CancelReason::Timeout),
            &payment_failed(id, customer, PaymentOperation::Capture),
        ],
    )
    .await;
    assert_eq!(get_order(&ordering, &token, id).await, cancelled);
    assert_eq!(
        outbox::<OrderCancelled>(&ordering).await,
        [OrderCancelled {
            order_id: id,
            customer_id: customer,
            reason: CancelReason::OutOfStock,
            detail: Some("1 line short".into()),
            cancelled_at: at(2),
            version: 3,
        }]
    );
    assert!(outbox::<OrderShipped>(&ordering).await.is_empty());

    // Shipped: a late failure changes nothing.
    let (other, customer, token) = accepted_order(&env, &ordering).await;
    handle(&ordering, &[&dispatched(other, customer, Uuid::now_v7())]).await;
    let shipped = get_order(&ordering, &token, other).await;
    handle(
        &ordering,
        &[&fulfilment_failed(other, customer, CancelReason::Timeout)],
    )
    .await;
    assert_eq!(get_order(&ordering, &token, other).await, shipped);
    assert_eq!(outbox::<OrderCancelled>(&ordering).await.len(), 1);
    assert_eq!(outbox::<OrderShipped>(&ordering).await.len(), 1);
    ordering.shutdown().await;
}

async fn only_a_failed_capture_cancels(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let (id, customer, token) = accepted_order(&env, &ordering).await;
    handle(
        &ordering,
        &[
            &payment_failed(id, customer, PaymentOperation::Authorize),
            &payment_failed(id, customer, PaymentOperation::Refund),
            &payment_failed(id, customer, PaymentOperation::Void),
        ],
    )
    .await;
    assert_eq!(get_order(&ordering, &token, id).await["status"], "accepted");

    handle(
        &ordering,
        &[&payment_failed(id, customer, PaymentOperation::Capture)],
    )
    .await;
    // Fulfilment's own verdict on the same failure comes later and adds nothing.
    handle(
        &ordering,
        &[&fulfilment_failed(
            id,
            customer,
            CancelReason::PaymentFailed,
        )],
    )
    .await;
    let order = get_order(&ordering, &token, id).await;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(
        history(&order)[1..],
        [(
            "cancelled".to_owned(),
            RFC3339_1.to_owned(),
            Some("payment_failed".to_owned())
        )]
    );
    let cancelled = outbox::<OrderCancelled>(&ordering).await;
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].reason, CancelReason::PaymentFailed);
    assert_eq!(
        cancelled[0].detail.as_deref(),
        Some("payment capture: card expired")
    );
    assert_eq!(cancelled[0].version, 2);
    ordering.shutdown().await;
}

async fn events_about_unknown_orders_are_acked(backend: Backend) {
    let Some((_env, ordering)) = start(backend).await else {
        return;
    };
    let (id, customer) = (Uuid::now_v7(), Uuid::now_v7());
    // `handle` unwraps: every one of these is Ok (acked), and nothing is written.
    handle(
        &ordering,
        &[
            &billed(id, customer),
            &ready(id, customer),
            &dispatched(id, customer, Uuid::now_v7()),
            &fulfilment_failed(id, customer, CancelReason::Timeout),
            &payment_failed(id, customer, PaymentOperation::Capture),
        ],
    )
    .await;
    assert_eq!(ordering.order_count().await.unwrap(), 0);
    assert!(outbox::<OrderShipped>(&ordering).await.is_empty());
    assert!(outbox::<OrderCancelled>(&ordering).await.is_empty());
    ordering.shutdown().await;
}

async fn the_consumers_project_events_from_the_bus(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let (shipped_id, customer, token) = accepted_order(&env, &ordering).await;
    let (cancelled_id, other_customer, other_token) = accepted_order(&env, &ordering).await;
    let shipment = Uuid::now_v7();
    // All at once on three streams (three consumers racing on one order), each twice
    // under the same id (the bus deduplicates) or redelivered.
    let events = [
        dispatched(shipped_id, customer, shipment),
        ready(shipped_id, customer),
        billed(shipped_id, customer),
        fulfilment_failed(cancelled_id, other_customer, CancelReason::OutOfStock),
        billed(cancelled_id, other_customer),
    ];
    for event in events.iter().chain(events.iter()) {
        env.bus.publish(event.to_message().unwrap()).await.unwrap();
    }
    eventually("both orders to reach their terminal status", || async {
        get_order(&ordering, &token, shipped_id).await["status"] == "shipped"
            && get_order(&ordering, &other_token, cancelled_id).await["status"] == "cancelled"
    })
    .await;
    // Let the slower consumers finish too: the late events must add nothing.
    eventually("the late billing to be handled", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM messaging_inbox WHERE consumer = 'ordering-payments'",
        )
        .fetch_one(ordering.db().pool())
        .await
        .unwrap()
            == 2
    })
    .await;
    let shipped = get_order(&ordering, &token, shipped_id).await;
    assert_eq!(
        statuses(&shipped),
        ["accepted", "paid", "ready_for_shipping", "shipped"]
    );
    // The billing and the failure race on two consumers: billed first shows `paid`
    // before `cancelled` (fulfilment then refunds); billed after the terminal status
    // adds nothing. Either way the order ends cancelled, once.
    let cancelled = get_order(&ordering, &other_token, cancelled_id).await;
    let history = statuses(&cancelled);
    assert!(
        history == ["accepted", "cancelled"] || history == ["accepted", "paid", "cancelled"],
        "{history:?}"
    );

    // Published on ordering's stream, once each: 2 PriceChanged, 2 OrderAccepted, then
    // OrderShipped and OrderCancelled.
    let published = env.ordering_events(6).await;
    let of = |t: &str| published.iter().filter(|e| e.event_type == t).count();
    assert_eq!(of("OrderShipped"), 1);
    assert_eq!(of("OrderCancelled"), 1);
    assert_eq!(published.len(), 6);
    ordering.shutdown().await;
}
