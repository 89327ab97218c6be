//! Given the replicas' events, when order events arrive (duplicated, reordered), then
//! the customer's mailbox holds exactly one message per order and kind, with the
//! product names from the replica.

use std::time::Duration;

use agora_contracts::CancelReason;
use agora_messaging::{Context, Envelope};
use uuid::Uuid;

use crate::support::{Backend, Env, mailbox, mailbox_of, order_accepted, start};

crate::on_both_backends!(
    the_confirmation_names_products_from_the_replica_once,
    a_name_arriving_late_is_waited_for,
    an_old_order_still_waits_for_names_after_downtime,
    an_unknown_name_falls_back_after_the_wait,
    a_deleted_product_keeps_its_last_name_and_late_adds_are_ignored,
    cancellation_and_shipment_are_sent_once_each,
    a_shipment_before_the_acceptance_waits_for_the_lines,
    a_shipment_whose_lines_never_come_is_sent_after_the_wait,
);

async fn the_confirmation_names_products_from_the_replica_once(backend: Backend) {
    let Some((env, notification)) = start(backend).await else {
        return;
    };
    let router = notification.router();
    let (customer, token) = env.issuer.customer();
    let (teapot, cup) = (Uuid::now_v7(), Uuid::now_v7());
    env.product(teapot, "Teapot", 1).await;
    env.product(teapot, "Blue teapot", 3).await;
    env.product(teapot, "Stale teapot", 2).await; // older: ignored
    env.product(cup, "Cup", 1).await;
    env.sign_up(customer, "Ada").await;
    env.settled().await;

    let order = Uuid::now_v7();
    let envelope = env.accept(order, customer, &[(teapot, 1), (cup, 2)]).await;
    env.publish(&envelope).await;
    let again = Envelope::new(
        &order_accepted(order, customer, &[(teapot, 1), (cup, 2)]),
        &Context::new(order.to_string()),
    )
    .unwrap();
    env.publish(&again).await;
    env.settled().await;

    let messages = mailbox_of(&router, &token, 1).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let message = &messages[0];
    assert_eq!(message["kind"], "order_confirmation");
    assert_eq!(message["order_id"], order.to_string());
    let reference = agora_contracts::OrderReference::of(order).to_string();
    assert_eq!(message["order_reference"], reference.as_str());
    assert!(message["subject"].as_str().unwrap().contains(&reference));
    let body = message["body"].as_str().unwrap();
    assert!(
        body.contains(&reference),
        "the body quotes the reference: {body}"
    );
    assert!(body.starts_with("Hello Ada,"), "{body}");
    assert!(body.contains("1 × Blue teapot"), "{body}");
    assert!(body.contains("2 × Cup"), "{body}");
    assert!(body.contains("7.50 EUR"), "{body}");
    assert!(message["subject"].as_str().unwrap().contains("confirmed"));
    assert!(message["sent_at"].is_string() && message["id"].is_string());
    notification.shutdown().await;
}

async fn a_name_arriving_late_is_waited_for(backend: Backend) {
    let Some((env, notification)) = start(backend).await else {
        return;
    };
    let router = notification.router();
    let (customer, token) = env.issuer.customer();
    let product = Uuid::now_v7();
    let order = Uuid::now_v7();
    env.accept(order, customer, &[(product, 1)]).await;
    env.orders_retried().await;
    assert!(mailbox(&router, &token).await.is_empty());
    env.product(product, "Kettle", 1).await;
    let messages = mailbox_of(&router, &token, 1).await;
    let body = messages[0]["body"].as_str().unwrap();
    assert!(body.contains("1 × Kettle"), "{body}");
    assert!(body.starts_with("Hello,"), "no name known: {body}");
    notification.shutdown().await;
}

async fn an_unknown_name_falls_back_after_the_wait(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let mut config = env.config();
    config.name_wait = Duration::from_millis(300);
    let notification = env.start_with(config).await;
    let router = notification.router();
    let (customer, token) = env.issuer.customer();
    let (known, unknown) = (Uuid::now_v7(), Uuid::now_v7());
    env.product(known, "Mug", 1).await;
    env.settled().await;
    env.accept(Uuid::now_v7(), customer, &[(known, 1), (unknown, 3)])
        .await;
    let messages = mailbox_of(&router, &token, 1).await;
    let body = messages[0]["body"].as_str().unwrap();
    assert!(body.contains("1 × Mug"), "{body}");
    assert!(body.contains(&format!("3 × product {unknown}")), "{body}");
    notification.shutdown().await;
}

async fn a_deleted_product_keeps_its_last_name_and_late_adds_are_ignored(backend: Backend) {
    let Some((env, notification)) = start(backend).await else {
        return;
    };
    let router = notification.router();
    let (customer, token) = env.issuer.customer();
    let (mug, ghost) = (Uuid::now_v7(), Uuid::now_v7());
    env.product(mug, "Mug", 1).await;
    // Settled in between: two workers could otherwise apply the deletion first, which
    // is the late-add case below.
    env.settled().await;
    env.delete_product(mug, 2).await;
    // Deleted, then its (older) add delivered late: stays deleted, name never known.
    env.delete_product(ghost, 2).await;
    env.settled().await;
    env.product(ghost, "Ghost", 1).await;
    env.settled().await;
    env.accept(Uuid::now_v7(), customer, &[(mug, 1), (ghost, 1)])
        .await;
    let messages = mailbox_of(&router, &token, 1).await;
    let body = messages[0]["body"].as_str().unwrap();
    assert!(body.contains("1 × Mug"), "{body}");
    assert!(body.contains(&format!("1 × product {ghost}")), "{body}");
    notification.shutdown().await;
}

async fn cancellation_and_shipment_are_sent_once_each(backend: Backend) {
    let Some((env, notification)) = start(backend).await else {
        return;
    };
    let router = notification.router();
    let (customer, token) = env.issuer.customer();
    let (_, other) = env.issuer.customer();
    let (cancelled, shipped) = (Uuid::now_v7(), Uuid::now_v7());
    let (teapot, cup) = (Uuid::now_v7(), Uuid::now_v7());

    let cancel = env
        .cancel(cancelled, customer, CancelReason::OutOfStock)
        .await;
    env.publish(&cancel).await;
    env.cancel(cancelled, customer, CancelReason::OutOfStock)
        .await;
    env.settled().await;
    env.product(teapot, "Teapot", 1).await;
    env.product(cup, "Cup", 1).await;
    env.settled().await;
    env.accept(shipped, customer, &[(teapot, 2), (cup, 1)])
        .await;
    env.settled().await;
    let dispatched = env.dispatched(shipped, customer).await;
    env.publish(&dispatched).await;
    env.shipped(shipped, customer).await;
    env.settled().await;

    let messages = mailbox_of(&router, &token, 3).await;
    assert_eq!(messages.len(), 3, "{messages:?}");
    // Newest first.
    assert_eq!(messages[0]["kind"], "order_shipped");
    assert_eq!(messages[0]["order_id"], shipped.to_string());
    let shipped_body = messages[0]["body"].as_str().unwrap();
    // Whichever of ShipmentDispatched and OrderShipped came first; both name the
    // tracking number and, as the confirmation does, the products.
    assert!(shipped_body.contains("AP123"), "{shipped_body}");
    assert!(shipped_body.contains("2 × Teapot"), "{shipped_body}");
    assert!(shipped_body.contains("1 × Cup"), "{shipped_body}");
    assert_eq!(messages[1]["kind"], "order_confirmation");
    assert_eq!(messages[1]["order_id"], shipped.to_string());
    assert_eq!(messages[2]["kind"], "order_cancelled");
    assert_eq!(messages[2]["order_id"], cancelled.to_string());
    let cancelled_body = messages[2]["body"].as_str().unwrap();
    assert!(cancelled_body.contains("out of stock"), "{cancelled_body}");
    assert!(cancelled_body.contains("out_of_stock"), "{cancelled_body}");
    assert!(mailbox(&router, &other).await.is_empty());
    notification.shutdown().await;
}

async fn an_old_order_still_waits_for_names_after_downtime(backend: Backend) {
    let Some((env, notification)) = start(backend).await else {
        return;
    };
    let router = notification.router();
    let (customer, token) = env.issuer.customer();
    let product = Uuid::now_v7();
    let order = Uuid::now_v7();
    // Accepted an hour ago, long past `name_wait`: as if notification was down.
    let mut accepted = order_accepted(order, customer, &[(product, 1)]);
    accepted.accepted_at -= time::Duration::hours(1);
    env.emit(&accepted, order).await;
    env.orders_retried().await;
    env.product(product, "Kettle", 1).await;
    let messages = mailbox_of(&router, &token, 1).await;
    let body = messages[0]["body"].as_str().unwrap();
    assert!(body.contains("1 × Kettle"), "{body}");
    notification.shutdown().await;
}

async fn a_shipment_before_the_acceptance_waits_for_the_lines(backend: Backend) {
    let Some((env, notification)) = start(backend).await else {
        return;
    };
    let router = notification.router();
    let (customer, token) = env.issuer.customer();
    let (order, kettle) = (Uuid::now_v7(), Uuid::now_v7());
    env.product(kettle, "Kettle", 1).await;
    env.settled().await;
    env.dispatched(order, customer).await;
    env.shipments_retried().await;
    assert!(mailbox(&router, &token).await.is_empty());
    env.accept(order, customer, &[(kettle, 3)]).await;
    let messages = mailbox_of(&router, &token, 2).await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    let shipped = messages
        .iter()
        .find(|m| m["kind"] == "order_shipped")
        .expect("a shipped message");
    let body = shipped["body"].as_str().unwrap();
    assert!(body.contains("3 × Kettle"), "{body}");
    assert!(body.contains("AP123"), "{body}");
    notification.shutdown().await;
}

async fn a_shipment_whose_lines_never_come_is_sent_after_the_wait(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let mut config = env.config();
    config.name_wait = Duration::from_millis(300);
    let notification = env.start_with(config).await;
    let router = notification.router();
    let (customer, token) = env.issuer.customer();
    let order = Uuid::now_v7();
    env.dispatched(order, customer).await;
    let messages = mailbox_of(&router, &token, 1).await;
    assert_eq!(messages[0]["kind"], "order_shipped");
    let body = messages[0]["body"].as_str().unwrap();
    assert!(body.contains("AP123"), "{body}");
    assert!(!body.contains(" × "), "no lines known: {body}");
    notification.shutdown().await;
}
