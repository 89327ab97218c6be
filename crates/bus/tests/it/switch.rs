//! A bus behind switches: paused, it refuses publishes and delivers nothing; resumed,
//! it carries on where it was, and waiting consumers wake at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_bus::embedded::EmbeddedBus;
use agora_bus::{
    Bus, BusError, BusSwitch, ConsumerConfig, OutgoingMessage, SharedBus, StreamConfig, SwitchedBus,
};

#[tokio::test]
async fn a_paused_view_refuses_publishes_and_delivers_nothing_until_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let inner: SharedBus = Arc::new(EmbeddedBus::open(dir.path().join("bus.db")).await.unwrap());
    let (shop, service) = (BusSwitch::new(), BusSwitch::new());
    let view = SwitchedBus::new(inner.clone(), vec![shop.clone(), service.clone()]);
    view.ensure_stream(&StreamConfig::new("ORDERS", ["orders.>"]))
        .await
        .unwrap();
    let consumer = view
        .consumer(&ConsumerConfig::new("ORDERS", "reader"))
        .await
        .unwrap();

    view.publish(OutgoingMessage::new("m1", "orders.a", "1"))
        .await
        .unwrap();
    for switch in [&shop, &service] {
        switch.pause();
        let refused = view
            .publish(OutgoingMessage::new("m2", "orders.a", "2"))
            .await;
        assert!(
            matches!(refused, Err(BusError::Unavailable(_))),
            "{refused:?}"
        );
        assert!(
            consumer
                .fetch(10, Duration::from_millis(50))
                .await
                .unwrap()
                .is_empty(),
            "nothing is delivered while paused"
        );
        switch.resume();
    }

    // A consumer waiting on a paused bus wakes as soon as it is resumed.
    shop.pause();
    let resumer = {
        let shop = shop.clone();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            shop.resume();
        })
    };
    let started = Instant::now();
    let delivered = consumer.fetch(10, Duration::from_secs(10)).await.unwrap();
    resumer.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].message_id, "m1");
    for delivery in delivered {
        delivery.ack().await.unwrap();
    }
    view.publish(OutgoingMessage::new("m2", "orders.a", "2"))
        .await
        .unwrap();
    let delivered = consumer.fetch(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(delivered[0].message_id, "m2");
    assert!(!view.is_paused());
}
