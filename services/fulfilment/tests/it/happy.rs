//! Given the three events an order waits for, in any order and duplicated, then exactly
//! one `OrderReadyForShipping`.

use agora_messaging::Envelope;

use crate::on_both_backends;
use crate::support::{Backend, Env, Order, Outcome, get_process};

type Make = fn(&Order) -> Envelope;

const ACCEPTED: Make = Order::accepted;
const BILLED: Make = Order::billed;
const RESERVED: Make = Order::reserved;

const ORDERS: [[Make; 3]; 6] = [
    [ACCEPTED, BILLED, RESERVED],
    [ACCEPTED, RESERVED, BILLED],
    [BILLED, ACCEPTED, RESERVED],
    [BILLED, RESERVED, ACCEPTED],
    [RESERVED, ACCEPTED, BILLED],
    [RESERVED, BILLED, ACCEPTED],
];

async fn ready_once_in_every_arrival_order(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let service = env.start().await;
    for (index, arrival) in ORDERS.iter().enumerate() {
        // Given the three events in this order, each delivered once,
        let order = Order::new();
        for make in arrival {
            env.deliver(&service, &make(&order)).await;
        }
        // then the order is ready for shipping, once, with nothing compensated.
        let expected = [Outcome::Ready(order.customer_id)];
        env.outcomes_become(&service, order.order_id, &expected)
            .await;
        assert!(env.compensator.calls(order.order_id).is_empty(), "{index}");
        let (_, body) = get_process(&service, &order.order_id.to_string()).await;
        assert_eq!(body["status"], "ready_for_shipping", "{index}");
        assert_eq!(body["terminal"], true);
    }
    service.shutdown().await;
}

async fn ready_once_in_every_arrival_order_with_duplicates(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let service = env.start().await;
    for (index, arrival) in ORDERS.iter().enumerate() {
        // Given each event twice (two messages with the same data, as a producer retry
        // makes) and the first one published again (the same message id),
        let order = Order::new();
        for make in arrival {
            let first = make(&order);
            env.deliver(&service, &first).await;
            env.publish(&first).await;
            env.deliver(&service, &make(&order)).await;
        }
        // and, for good measure, every duplicate once more after completion,
        for make in arrival {
            env.deliver(&service, &make(&order)).await;
        }
        // then exactly one OrderReadyForShipping.
        let expected = [Outcome::Ready(order.customer_id)];
        env.outcomes_become(&service, order.order_id, &expected)
            .await;
        assert_eq!(
            env.outcomes(&service, order.order_id).await,
            expected,
            "{index}"
        );
        assert!(env.compensator.calls(order.order_id).is_empty());
    }
    service.shutdown().await;
}

async fn ready_event_reaches_the_bus(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let service = env.start().await;
    let order = Order::new();
    for envelope in [order.billed(), order.reserved(), order.accepted()] {
        env.publish(&envelope).await;
    }
    // The relay publishes the outcome on fulfilment's stream.
    use agora_bus::Bus;
    let stream = agora_messaging::stream_config(agora_fulfilment::SOURCE).name;
    crate::support::eventually("the ready event is on the bus", || async {
        env.bus.last_sequence(&stream).await.unwrap_or(0) == 1
    })
    .await;
    env.outcomes_become(
        &service,
        order.order_id,
        &[Outcome::Ready(order.customer_id)],
    )
    .await;
    service.shutdown().await;
}

on_both_backends!(
    ready_once_in_every_arrival_order,
    ready_once_in_every_arrival_order_with_duplicates,
    ready_event_reaches_the_bus,
);
