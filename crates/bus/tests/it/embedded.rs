//! The conformance suite on the embedded (SQLite) backend.

use std::sync::Arc;

use agora_bus::SharedBus;
use agora_bus::embedded::EmbeddedBus;
use async_trait::async_trait;

use crate::conformance::Harness;

struct EmbeddedHarness {
    dir: tempfile::TempDir,
    bus: Option<Arc<EmbeddedBus>>,
}

impl EmbeddedHarness {
    fn new() -> Option<Self> {
        Some(Self {
            dir: tempfile::tempdir().unwrap(),
            bus: None,
        })
    }
}

#[async_trait]
impl Harness for EmbeddedHarness {
    async fn bus(&mut self) -> SharedBus {
        if self.bus.is_none() {
            let bus = EmbeddedBus::open(self.dir.path().join("bus.db"))
                .await
                .expect("open embedded bus");
            self.bus = Some(Arc::new(bus));
        }
        self.bus.clone().unwrap()
    }

    async fn restart(&mut self) {
        if let Some(bus) = self.bus.take() {
            bus.close().await;
        }
    }

    /// In-process there is no SIGKILL: the bus is abandoned with whatever acks it has
    /// not yet written, and a new one opens the same file.
    async fn crash(&mut self) {
        if let Some(bus) = self.bus.take() {
            bus.abandon().await;
        }
    }
}

crate::conformance_tests!(EmbeddedHarness::new());

fn fragile() -> agora_bus::ConsumerConfig {
    agora_bus::ConsumerConfig::new("ORDERS", "fragile")
        .max_deliver(3)
        .ack_wait(std::time::Duration::from_millis(300))
}

async fn open(dir: &std::path::Path) -> EmbeddedBus {
    let bus = EmbeddedBus::open(dir.join("bus.db")).await.unwrap();
    agora_bus::Bus::ensure_stream(&bus, &agora_bus::StreamConfig::new("ORDERS", ["orders.>"]))
        .await
        .unwrap();
    bus
}

/// Fetches one delivery, polling up to 5 s.
async fn one(consumer: &Arc<dyn agora_bus::Consumer>) -> Option<agora_bus::Delivery> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let mut batch = consumer
            .fetch(1, std::time::Duration::from_millis(100))
            .await
            .unwrap();
        if let Some(d) = batch.pop() {
            return Some(d);
        }
    }
    None
}

/// A message that kills the process on every delivery: the process dies (the bus is
/// abandoned, queued writes lost) right after the delivery. A redelivery's count is
/// durable before it is handed out, so the fourth start dead-letters the message
/// instead of looping forever.
#[tokio::test]
async fn a_message_that_kills_its_process_reaches_the_dead_letters() {
    use agora_bus::{Bus, OutgoingMessage};

    let dir = tempfile::tempdir().unwrap();
    let bus = open(dir.path()).await;
    bus.publish(OutgoingMessage::new("killer", "orders.placed", "boom"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    for life in 0..3 {
        let bus = if life == 0 {
            &bus
        } else {
            &open(dir.path()).await
        };
        let consumer = bus.consumer(&fragile()).await.unwrap();
        let d = one(&consumer).await.expect("a delivery");
        seen.push(d.deliveries);
        if life == 0 {
            // A first delivery is recorded with the next commit, a moment later: the
            // time any handler takes before it could bring the process down.
            bus.flush().await.unwrap();
        }
        bus.abandon().await;
    }
    assert_eq!(seen, [1, 2, 3]);

    let bus = open(dir.path()).await;
    let consumer = bus.consumer(&fragile()).await.unwrap();
    let batch = consumer
        .fetch(1, std::time::Duration::from_millis(500))
        .await
        .unwrap();
    assert!(batch.is_empty(), "delivered a fourth time");
    let dead = bus.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (dead[0].message_id.as_str(), dead[0].deliveries),
        ("killer", 3)
    );
    bus.close().await;
}

/// The dead-letter write fails (a trigger on the table refuses it): the message must
/// stay with its consumer, not vanish, and be dead-lettered once the write works.
#[tokio::test]
async fn a_failed_dead_letter_write_keeps_the_message() {
    use agora_bus::{Bus, OutgoingMessage};

    let dir = tempfile::tempdir().unwrap();
    let bus = open(dir.path()).await;
    for id in ["poison", "next"] {
        bus.publish(OutgoingMessage::new(id, "orders.placed", id))
            .await
            .unwrap();
    }
    let consumer = bus.consumer(&fragile()).await.unwrap();
    let poison = one(&consumer).await.expect("a delivery");
    assert_eq!(poison.message_id, "poison");

    let side = rusqlite::Connection::open(dir.path().join("bus.db")).unwrap();
    side.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    side.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON dead_letters
         BEGIN SELECT RAISE(ABORT, 'disk says no'); END;",
    )
    .unwrap();
    assert!(
        poison.term("undecodable").await.is_err(),
        "the write was refused"
    );
    // Acking the next message must not carry the floor past the poison one.
    let next = one(&consumer).await.expect("the next message");
    assert_eq!(next.message_id, "next");
    next.ack().await.unwrap();
    side.execute_batch("DROP TRIGGER refuse;").unwrap();

    let again = one(&consumer)
        .await
        .expect("the poison message, offered again");
    assert_eq!(again.message_id, "poison");
    again.term("undecodable").await.unwrap();
    let dead = bus.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].message_id, "poison");

    // Nothing is pending, and after a restart nothing comes back.
    bus.close().await;
    let bus = open(dir.path()).await;
    let consumer = bus.consumer(&fragile()).await.unwrap();
    let batch = consumer
        .fetch(5, std::time::Duration::from_millis(500))
        .await
        .unwrap();
    assert!(batch.is_empty());
    bus.close().await;
}

/// The embedded bus lives in its process: a consumer with an inactive threshold (one
/// process's own) does not survive a reopen, even one that was never left idle.
#[tokio::test]
async fn a_reopened_bus_forgets_the_consumers_with_an_inactive_threshold() {
    use agora_bus::{Bus, ConsumerConfig};
    let dir = tempfile::tempdir().unwrap();
    let bus = open(dir.path()).await;
    let threshold = std::time::Duration::from_secs(60);
    bus.consumer(&ConsumerConfig::new("ORDERS", "instance-a").inactive_threshold(threshold))
        .await
        .unwrap();
    bus.consumer(&ConsumerConfig::new("ORDERS", "group"))
        .await
        .unwrap();
    bus.close().await;
    let bus = open(dir.path()).await;
    bus.consumer(&ConsumerConfig::new("ORDERS", "other"))
        .await
        .unwrap();
    let count = |name: &'static str| {
        let path = dir.path().join("bus.db");
        move || {
            rusqlite::Connection::open(&path)
                .unwrap()
                .query_row(
                    "SELECT count(*) FROM consumers WHERE name = ?1",
                    [name],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap()
        }
    };
    bus.close().await;
    assert_eq!(count("instance-a")(), 0);
    assert_eq!(count("group")(), 1);
}
