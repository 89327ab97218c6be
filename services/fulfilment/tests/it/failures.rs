//! Failures and the timeout: compensations, each exactly once, then one
//! `FulfilmentFailed` with the reason.

use std::time::Duration;

use agora_contracts::CancelReason;

use crate::on_both_backends;
use crate::support::{Backend, Call, Env, Order, Outcome, TIMEOUT, get_process};

async fn out_of_stock_after_billing_refunds_once(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let service = env.start().await;
    // Given an accepted and billed order,
    let order = Order::new();
    env.deliver(&service, &order.accepted()).await;
    env.deliver(&service, &order.billed()).await;
    // when the reservation fails (twice),
    env.deliver(&service, &order.reservation_failed()).await;
    env.deliver(&service, &order.reservation_failed()).await;
    // then the payment is refunded once and the order fails, out of stock, once.
    assert_eq!(
        env.compensator.calls(order.order_id),
        [Call::Refund(order.order_id)]
    );
    let failed = [Outcome::Failed(CancelReason::OutOfStock)];
    env.outcomes_become(&service, order.order_id, &failed).await;
    let (_, body) = get_process(&service, &order.order_id.to_string()).await;
    assert_eq!(body["status"], "failed");
    assert_eq!(body["reason"], "out_of_stock");
    assert_eq!(body["terminal"], true);
    assert_eq!(body["compensations"][0]["kind"], "refund");
    service.shutdown().await;
}

async fn out_of_stock_before_billing_voids_and_refunds_a_late_bill(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let service = env.start().await;
    // Given an accepted order,
    let order = Order::new();
    env.deliver(&service, &order.accepted()).await;
    // when the reservation fails before the payment is captured,
    env.deliver(&service, &order.reservation_failed()).await;
    // then the authorization is voided and the order fails, out of stock;
    assert_eq!(
        env.compensator.calls(order.order_id),
        [Call::Void(order.order_id)]
    );
    let failed = [Outcome::Failed(CancelReason::OutOfStock)];
    env.outcomes_become(&service, order.order_id, &failed).await;
    let (_, body) = get_process(&service, &order.order_id.to_string()).await;
    assert_eq!(body["terminal"], false, "a late capture may still come");
    // when the capture still happened (CustomerBilled after the void), twice,
    env.deliver(&service, &order.billed()).await;
    env.deliver(&service, &order.billed()).await;
    // then it is refunded, once, and nothing more is published.
    assert_eq!(
        env.compensator.calls(order.order_id),
        [Call::Void(order.order_id), Call::Refund(order.order_id)]
    );
    assert_eq!(env.outcomes(&service, order.order_id).await, failed);
    let (_, body) = get_process(&service, &order.order_id.to_string()).await;
    assert_eq!(body["terminal"], true);
    service.shutdown().await;
}

async fn payment_failed_after_reservation_releases(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let service = env.start().await;
    // Given an accepted order whose stock is reserved,
    let order = Order::new();
    env.deliver(&service, &order.reserved()).await;
    env.deliver(&service, &order.accepted()).await;
    // when the capture fails,
    env.deliver(&service, &order.payment_failed()).await;
    // then the stock is released and the order fails, payment failed.
    assert_eq!(
        env.compensator.calls(order.order_id),
        [Call::Release(order.order_id)]
    );
    let failed = [Outcome::Failed(CancelReason::PaymentFailed)];
    env.outcomes_become(&service, order.order_id, &failed).await;
    let (_, body) = get_process(&service, &order.order_id.to_string()).await;
    assert_eq!(body["terminal"], true);
    service.shutdown().await;
}

async fn payment_failed_before_reservation_releases_the_late_reservation(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let service = env.start().await;
    // Given an accepted order whose capture failed: nothing to compensate yet,
    let order = Order::new();
    env.deliver(&service, &order.accepted()).await;
    env.deliver(&service, &order.payment_failed()).await;
    let failed = [Outcome::Failed(CancelReason::PaymentFailed)];
    env.outcomes_become(&service, order.order_id, &failed).await;
    assert!(env.compensator.calls(order.order_id).is_empty());
    // when inventory reserves it afterwards,
    env.deliver(&service, &order.reserved()).await;
    // then the reservation is released, once, and nothing more is published.
    env.deliver(&service, &order.reserved()).await;
    assert_eq!(
        env.compensator.calls(order.order_id),
        [Call::Release(order.order_id)]
    );
    assert_eq!(env.outcomes(&service, order.order_id).await, failed);
    service.shutdown().await;
}

async fn timeout_compensates_both_sides(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let service = env.start().await;
    // Given an order accepted and billed, waiting for stock, and one accepted and
    // reserved, waiting for the capture,
    let billed = Order::new();
    env.deliver(&service, &billed.accepted()).await;
    env.deliver(&service, &billed.billed()).await;
    let reserved = Order::new();
    env.deliver(&service, &reserved.accepted()).await;
    env.deliver(&service, &reserved.reserved()).await;
    let (_, body) = get_process(&service, &billed.order_id.to_string()).await;
    assert!(body["timeout_at"].is_string(), "{body}");
    // when just less than the timeout passes, nothing happens;
    env.clock.advance(TIMEOUT - Duration::from_secs(1));
    let (_, body) = get_process(&service, &billed.order_id.to_string()).await;
    assert_eq!(body["status"], "waiting");
    // when the timeout passes (the clock moves, nobody sleeps),
    env.clock.advance(Duration::from_secs(1));
    // then the first is refunded, the second voided and released, both fail (timeout).
    let failed = [Outcome::Failed(CancelReason::Timeout)];
    env.outcomes_become(&service, billed.order_id, &failed)
        .await;
    env.outcomes_become(&service, reserved.order_id, &failed)
        .await;
    assert_eq!(
        env.compensator.calls(billed.order_id),
        [Call::Refund(billed.order_id)]
    );
    assert_eq!(
        env.compensator.calls(reserved.order_id),
        [
            Call::Void(reserved.order_id),
            Call::Release(reserved.order_id)
        ]
    );
    // when the missing reservation arrives late, it is released too.
    env.deliver(&service, &billed.reserved()).await;
    assert_eq!(
        env.compensator.calls(billed.order_id),
        [
            Call::Refund(billed.order_id),
            Call::Release(billed.order_id)
        ]
    );
    assert_eq!(env.outcomes(&service, billed.order_id).await, failed);
    service.shutdown().await;
}

async fn out_of_stock_before_the_order_is_known_waits_for_it(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let service = env.start().await;
    // Given a reservation failure that overtook the order (ordering's consumer lags),
    let order = Order::new();
    env.deliver(&service, &order.reservation_failed()).await;
    // then nothing can be compensated or published yet: whose order, which payment?
    assert!(env.compensator.calls(order.order_id).is_empty());
    assert!(env.outcomes(&service, order.order_id).await.is_empty());
    let (_, body) = get_process(&service, &order.order_id.to_string()).await;
    assert_eq!(body["status"], "compensating");
    // when the order arrives, the authorization is voided and the order fails.
    env.deliver(&service, &order.accepted()).await;
    assert_eq!(
        env.compensator.calls(order.order_id),
        [Call::Void(order.order_id)]
    );
    let failed = [Outcome::Failed(CancelReason::OutOfStock)];
    env.outcomes_become(&service, order.order_id, &failed).await;
    service.shutdown().await;
}

on_both_backends!(
    out_of_stock_after_billing_refunds_once,
    out_of_stock_before_billing_voids_and_refunds_a_late_bill,
    payment_failed_after_reservation_releases,
    payment_failed_before_reservation_releases_the_late_reservation,
    timeout_compensates_both_sides,
    out_of_stock_before_the_order_is_known_waits_for_it,
);
