//! Given an order's acceptance and its readiness, in either order and duplicated, then
//! it is dispatched exactly once with the accepted address.

use agora_contracts::ShipmentDispatched;
use agora_messaging::{Context, Envelope};
use uuid::Uuid;

use crate::support::{Backend, Env, address, order_accepted, start};

crate::on_both_backends!(
    accepted_then_ready_dispatches_once,
    ready_before_accepted_dispatches_when_it_comes,
    accepted_alone_does_not_dispatch,
    both_at_once_on_two_instances_dispatch_once,
);

fn assert_dispatched(events: &[Envelope], order_id: Uuid, customer_id: Uuid) -> ShipmentDispatched {
    assert_eq!(events.len(), 1, "{events:?}");
    let dispatched: ShipmentDispatched = events[0].decode().unwrap();
    assert_eq!(dispatched.order_id, order_id);
    assert_eq!(dispatched.customer_id, customer_id);
    assert_eq!(dispatched.address, address());
    assert_eq!(dispatched.carrier.as_deref(), Some(agora_shipping::CARRIER));
    assert!(
        dispatched
            .tracking_number
            .as_deref()
            .unwrap()
            .starts_with("AP")
    );
    assert_eq!(dispatched.version, 1);
    assert_eq!(events[0].subject, dispatched.shipment_id.to_string());
    assert_eq!(events[0].correlation_id, order_id.to_string());
    dispatched
}

async fn accepted_then_ready_dispatches_once(backend: Backend) {
    let Some((env, shipping)) = start(backend).await else {
        return;
    };
    let (order, customer) = (Uuid::now_v7(), Uuid::now_v7());
    let accepted = env.accept(order, customer).await;
    env.settled(&shipping).await;
    let ready = env.ready(order, customer).await;
    // Duplicates: the same events again, and the same facts under new event ids.
    env.publish(&ready).await;
    env.publish(&accepted).await;
    env.ready(order, customer).await;
    let again = Envelope::new(
        &order_accepted(order, customer),
        &Context::new(order.to_string()),
    )
    .unwrap();
    env.publish(&again).await;
    let events = env.events(&shipping).await;
    assert_dispatched(&events, order, customer);
    shipping.shutdown().await;
}

async fn ready_before_accepted_dispatches_when_it_comes(backend: Backend) {
    let Some((env, shipping)) = start(backend).await else {
        return;
    };
    let (order, customer) = (Uuid::now_v7(), Uuid::now_v7());
    env.ready(order, customer).await;
    assert!(
        env.events(&shipping).await.is_empty(),
        "no address yet: no dispatch"
    );
    env.accept(order, customer).await;
    let events = env.events(&shipping).await;
    assert_dispatched(&events, order, customer);
    shipping.shutdown().await;
}

async fn accepted_alone_does_not_dispatch(backend: Backend) {
    let Some((env, shipping)) = start(backend).await else {
        return;
    };
    let accepted = env.accept(Uuid::now_v7(), Uuid::now_v7()).await;
    env.publish(&accepted).await;
    assert!(env.events(&shipping).await.is_empty());
    shipping.shutdown().await;
}

async fn both_at_once_on_two_instances_dispatch_once(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let first = env.start().await;
    let second = env.start().await;
    let orders: Vec<(Uuid, Uuid)> = (0..10).map(|_| (Uuid::now_v7(), Uuid::now_v7())).collect();
    for (order, customer) in &orders {
        env.ready(*order, *customer).await;
        env.accept(*order, *customer).await;
        env.ready(*order, *customer).await;
    }
    env.settled(&second).await;
    let events = env.events(&first).await;
    assert_eq!(events.len(), orders.len(), "{events:?}");
    for (order, _) in &orders {
        let count = events
            .iter()
            .filter(|e| e.decode::<ShipmentDispatched>().unwrap().order_id == *order)
            .count();
        assert_eq!(count, 1);
    }
    first.shutdown().await;
    second.shutdown().await;
}
