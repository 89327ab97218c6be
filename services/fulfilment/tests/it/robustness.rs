//! Terminal states, restarts, failing compensations and concurrent workers.

use std::sync::atomic::Ordering;
use std::time::Duration;

use agora_contracts::{CancelReason, OrderReadyForShipping, bus_subject};
use agora_messaging::Envelope;
use uuid::Uuid;

use crate::on_both_backends;
use crate::support::{Backend, Call, Env, Order, Outcome, TIMEOUT, get_process};

async fn events_after_a_terminal_state_are_ignored(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let service = env.start().await;
    // Given an order ready for shipping and one that failed and was refunded,
    let ready = Order::new();
    for envelope in [ready.accepted(), ready.billed(), ready.reserved()] {
        env.deliver(&service, &envelope).await;
    }
    let failed = Order::new();
    for envelope in [
        failed.accepted(),
        failed.billed(),
        failed.reservation_failed(),
    ] {
        env.deliver(&service, &envelope).await;
    }
    let (_, before) = get_process(&service, &failed.order_id.to_string()).await;
    // when every kind of event arrives again for both,
    for order in [ready, failed] {
        for envelope in [
            order.reservation_failed(),
            order.payment_failed(),
            order.billed(),
            order.reserved(),
            order.accepted(),
        ] {
            env.deliver(&service, &envelope).await;
        }
    }
    // then nothing is compensated or published again, and the instances are unchanged.
    assert_eq!(
        env.outcomes(&service, ready.order_id).await,
        [Outcome::Ready(ready.customer_id)]
    );
    assert!(env.compensator.calls(ready.order_id).is_empty());
    assert_eq!(
        env.outcomes(&service, failed.order_id).await,
        [Outcome::Failed(CancelReason::OutOfStock)]
    );
    assert_eq!(
        env.compensator.calls(failed.order_id),
        [Call::Refund(failed.order_id)]
    );
    let (_, after) = get_process(&service, &failed.order_id.to_string()).await;
    assert_eq!(before, after);
    service.shutdown().await;
}

async fn timeout_that_fell_while_down_is_handled_after_restart(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    // Given an accepted order,
    let service = env.start().await;
    let order = Order::new();
    env.deliver(&service, &order.accepted()).await;
    // when fulfilment stops and its timeout falls while it is down,
    service.shutdown().await;
    env.clock.advance(TIMEOUT + Duration::from_secs(60));
    // and it starts again,
    let service = env.start().await;
    // then the timeout is handled: the authorization voided, the order failed.
    let failed = [Outcome::Failed(CancelReason::Timeout)];
    env.outcomes_become(&service, order.order_id, &failed).await;
    assert_eq!(
        env.compensator.calls(order.order_id),
        [Call::Void(order.order_id)]
    );
    service.shutdown().await;
}

async fn failing_compensation_is_retried_until_it_succeeds(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let service = env.start().await;
    // Given a billed order, and a payment service that fails the next two calls,
    let order = Order::new();
    env.deliver(&service, &order.accepted()).await;
    env.deliver(&service, &order.billed()).await;
    env.compensator.failures_left.store(2, Ordering::SeqCst);
    // when the reservation fails,
    env.publish(&order.reservation_failed()).await;
    // then the refund is retried with the delivery, succeeds once, and the order fails
    // once, after it.
    let failed = [Outcome::Failed(CancelReason::OutOfStock)];
    env.outcomes_become(&service, order.order_id, &failed).await;
    assert_eq!(env.compensator.failures_left.load(Ordering::SeqCst), 0);
    assert_eq!(
        env.compensator.calls(order.order_id),
        [Call::Refund(order.order_id)]
    );
    service.shutdown().await;
}

async fn a_compensation_that_keeps_failing_is_owed_never_dead_lettered(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let service = env.start().await;
    // Given a billed order whose payment cannot be refunded for longer than the
    // delivery's max deliveries would allow,
    let order = Order::new();
    env.deliver(&service, &order.accepted()).await;
    env.deliver(&service, &order.billed()).await;
    env.compensator.failures_left.store(60, Ordering::SeqCst);
    // when the reservation fails,
    env.publish(&order.reservation_failed()).await;
    // then the refund is tried until it is done, once, and nothing is dead-lettered.
    let failed = [Outcome::Failed(CancelReason::OutOfStock)];
    env.outcomes_become(&service, order.order_id, &failed).await;
    assert_eq!(env.compensator.failures_left.load(Ordering::SeqCst), 0);
    assert_eq!(
        env.compensator.calls(order.order_id),
        [Call::Refund(order.order_id)]
    );
    assert!(
        agora_bus::Bus::dead_letters(&*env.bus)
            .await
            .unwrap()
            .is_empty()
    );
    service.shutdown().await;
}

async fn two_workers_never_both_advance_an_order(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    // Given two fulfilment processes on one store and one bus (their consumers share
    // the messages, two workers each),
    let first = env.start().await;
    let second = env.start().await;
    // when the events of 8 orders, each twice, all arrive at once,
    let orders: Vec<Order> = (0..8).map(|_| Order::new()).collect();
    for order in &orders {
        for envelope in [
            order.reserved(),
            order.billed(),
            order.accepted(),
            order.billed(),
            order.reserved(),
            order.accepted(),
        ] {
            env.publish(&envelope).await;
        }
    }
    // then every order is ready exactly once.
    for order in &orders {
        let ready = [Outcome::Ready(order.customer_id)];
        env.outcomes_become(&first, order.order_id, &ready).await;
    }
    for order in &orders {
        let (_, body) = get_process(&second, &order.order_id.to_string()).await;
        assert_eq!(body["status"], "ready_for_shipping");
        assert!(env.compensator.calls(order.order_id).is_empty());
    }
    first.shutdown().await;
    second.shutdown().await;
}

async fn a_thousand_orders_on_two_workers_each_end_exactly_once(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    // Given two fulfilment processes sharing one consumer group (and one store),
    let first = env.start().await;
    let second = env.start().await;
    // when the events of 1,000 orders arrive, every tenth order's twice,
    let orders: Vec<Order> = (0..1_000).map(|_| Order::new()).collect();
    for (n, order) in orders.iter().enumerate() {
        let copies = if n % 10 == 0 { 2 } else { 1 };
        for _ in 0..copies {
            for envelope in [order.accepted(), order.billed(), order.reserved()] {
                env.publish(&envelope).await;
            }
        }
    }
    // then each order is ready exactly once.
    let count = || async {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT payload FROM messaging_outbox WHERE subject = $1")
                .bind(bus_subject::<OrderReadyForShipping>())
                .fetch_all(first.db().pool())
                .await
                .unwrap();
        rows
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let rows = loop {
        let rows = count().await;
        if rows.len() >= orders.len() {
            break rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} ready",
            rows.len(),
            orders.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut ready: Vec<Uuid> = rows
        .iter()
        .map(|(payload,)| {
            let envelope = Envelope::from_json(payload.as_bytes()).unwrap();
            envelope.decode::<OrderReadyForShipping>().unwrap().order_id
        })
        .collect();
    ready.sort();
    ready.dedup();
    assert_eq!(ready.len(), orders.len(), "every order ready");
    assert_eq!(rows.len(), orders.len(), "and each exactly once");
    first.shutdown().await;
    second.shutdown().await;
}

on_both_backends!(
    a_compensation_that_keeps_failing_is_owed_never_dead_lettered,
    a_thousand_orders_on_two_workers_each_end_exactly_once,
    events_after_a_terminal_state_are_ignored,
    timeout_that_fell_while_down_is_handled_after_restart,
    failing_compensation_is_retried_until_it_succeeds,
    two_workers_never_both_advance_an_order,
);
