//! The inbox and the subscriber runtime, on the embedded bus.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use agora_bus::{OutgoingMessage, SharedBus};
use agora_contracts::Event;
use agora_messaging::{
    Backoff, Context, Envelope, FaultPlan, Handler, HandlerError, Inbox, Outbox, Relay,
    RelayConfig, Subscriber, SubscriberConfig,
};
use async_trait::async_trait;
use sqlx::{Any, Transaction};

use crate::support::{
    CountingHandler, Credited, STREAM, TestStore, applied, commit_events, credited, embedded_bus,
    eventually,
};

crate::on_both_backends!(
    the_same_event_delivered_twice_is_applied_once,
    a_failing_handler_is_retried_until_it_succeeds,
    a_permanent_failure_dead_letters_at_once,
    garbage_is_dead_lettered_as_undecodable_and_the_worker_keeps_serving,
    events_flow_from_outbox_to_handler_and_effects_flow_on,
    shutdown_is_prompt_and_clean,
    a_panicking_handler_is_a_failure_not_a_dead_worker,
    in_a_batch_a_failing_delivery_is_rolled_back_alone,
    a_lone_failing_delivery_leaves_nothing_behind,
    failed_commits_spend_no_attempt_and_dead_letter_nothing,
    a_store_failure_in_the_handler_spends_no_attempt,
    a_batch_longer_than_the_ack_wait_is_not_delivered_twice,
    processed_events_are_forgotten_after_the_retention,
);

const WAIT: Duration = Duration::from_secs(15);

fn config(consumer: &str) -> SubscriberConfig {
    SubscriberConfig::new(consumer, STREAM)
        .workers(2)
        .backoff(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(50),
        ))
}

async fn settled(bus: &SharedBus, config: &SubscriberConfig) -> bool {
    let info = bus
        .consumer(&config.consumer_config())
        .await
        .unwrap()
        .info()
        .await
        .unwrap();
    info.pending == 0 && info.ack_pending == 0
}

async fn the_same_event_delivered_twice_is_applied_once(store: TestStore) {
    let bus: SharedBus = embedded_bus(store.dir.path()).await;
    let envelope = credited(1);
    let message = envelope.to_message().unwrap();
    // The bus deduplicates a message id; a second id for the same event is what a
    // redrive or a producer that lost its outbox row's state would send.
    bus.publish(message.clone()).await.unwrap();
    bus.publish(message.clone()).await.unwrap();
    bus.publish(OutgoingMessage {
        id: format!("{}-again", message.id),
        ..message
    })
    .await
    .unwrap();

    let handler = CountingHandler::new("ledger-view");
    let calls = handler.calls.clone();
    let config = config("ledger-view");
    let subscriber = Subscriber::spawn(&store.db, &bus, config.clone(), handler)
        .await
        .unwrap();
    eventually(WAIT, "both deliveries settled", || settled(&bus, &config)).await;
    subscriber.shutdown().await;

    assert_eq!(
        applied(&store.db, "ledger-view").await,
        [(envelope.id.to_string(), 1)]
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the inbox stops the duplicate"
    );
    assert!(
        Inbox::contains(&store.db, "ledger-view", envelope.id)
            .await
            .unwrap()
    );
    assert!(bus.dead_letters().await.unwrap().is_empty());
}

async fn a_failing_handler_is_retried_until_it_succeeds(store: TestStore) {
    let bus: SharedBus = embedded_bus(store.dir.path()).await;
    let envelope = credited(1);
    bus.publish(envelope.to_message().unwrap()).await.unwrap();

    let handler = CountingHandler::new("ledger-view");
    handler.failures_left.store(2, Ordering::SeqCst);
    let calls = handler.calls.clone();
    let config = config("ledger-view").max_deliver(5);
    let subscriber = Subscriber::spawn(&store.db, &bus, config.clone(), handler)
        .await
        .unwrap();
    eventually(WAIT, "applied", || async {
        !applied(&store.db, "ledger-view").await.is_empty()
    })
    .await;
    eventually(WAIT, "settled", || settled(&bus, &config)).await;
    subscriber.shutdown().await;

    assert_eq!(calls.load(Ordering::SeqCst), 3, "two failures, one success");
    assert_eq!(
        applied(&store.db, "ledger-view").await,
        [(envelope.id.to_string(), 1)],
        "failed attempts were rolled back"
    );
    assert!(bus.dead_letters().await.unwrap().is_empty());
}

/// Not a `Credited`: the counting handler's decode fails, which retrying cannot fix.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Debited {
    account_id: String,
    version: u64,
}

impl Event for Debited {
    const TYPE: &'static str = "Debited";
    const SOURCE: &'static str = "ledger";
    fn subject(&self) -> String {
        self.account_id.clone()
    }
    fn version(&self) -> u64 {
        self.version
    }
}

async fn a_permanent_failure_dead_letters_at_once(store: TestStore) {
    let bus: SharedBus = embedded_bus(store.dir.path()).await;
    let debited = Envelope::new(
        &Debited {
            account_id: "a".into(),
            version: 1,
        },
        &Context::new("c"),
    )
    .unwrap();
    bus.publish(debited.to_message().unwrap()).await.unwrap();

    let config = config("ledger-view").max_deliver(5);
    let subscriber =
        Subscriber::spawn(&store.db, &bus, config, CountingHandler::new("ledger-view"))
            .await
            .unwrap();
    eventually(WAIT, "a dead letter", || async {
        !bus.dead_letters().await.unwrap().is_empty()
    })
    .await;
    subscriber.shutdown().await;

    let dead = bus.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].deliveries, 1, "no retries");
    assert!(dead[0].reason.contains("Credited"), "{}", dead[0].reason);
    assert!(
        !Inbox::contains(&store.db, "ledger-view", debited.id)
            .await
            .unwrap(),
        "the inbox record was rolled back with the handler"
    );
}

async fn garbage_is_dead_lettered_as_undecodable_and_the_worker_keeps_serving(store: TestStore) {
    let bus: SharedBus = embedded_bus(store.dir.path()).await;
    bus.publish(OutgoingMessage::new(
        "garbage-1",
        "ledger.Credited",
        &b"\xff\xfe not an envelope"[..],
    ))
    .await
    .unwrap();
    let good: Vec<_> = (1..=5).map(credited).collect();
    for envelope in &good {
        bus.publish(envelope.to_message().unwrap()).await.unwrap();
    }

    // One worker: if bad bytes stopped it, nothing else would be served.
    let config = config("ledger-view").workers(1).max_deliver(3);
    let subscriber = Subscriber::spawn(
        &store.db,
        &bus,
        config.clone(),
        CountingHandler::new("ledger-view"),
    )
    .await
    .unwrap();
    eventually(
        WAIT,
        "good events applied and garbage dead-lettered",
        || async {
            applied(&store.db, "ledger-view").await.len() == 5
                && !bus.dead_letters().await.unwrap().is_empty()
        },
    )
    .await;
    subscriber.shutdown().await;

    let dead = bus.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id, "garbage-1");
    assert_eq!(dead[0].reason, "undecodable");
    assert_eq!(dead[0].deliveries, 3);
    assert!(
        applied(&store.db, "ledger-view")
            .await
            .iter()
            .all(|(_, count)| *count == 1)
    );
}

/// Applies a credit and, in the same transaction, emits a `Debited` effect.
struct EffectHandler;

#[async_trait]
impl Handler for EffectHandler {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        if !envelope.is::<Credited>() {
            return Ok(()); // its own effects come back on the same stream
        }
        let credit: Credited = envelope.decode()?;
        let effect = Debited {
            account_id: credit.account_id,
            version: credit.version,
        };
        let effect = Envelope::new(&effect, &envelope.context_for_effects())?;
        Outbox::append(tx, &effect).await?;
        Ok(())
    }
}

async fn events_flow_from_outbox_to_handler_and_effects_flow_on(store: TestStore) {
    let bus: SharedBus = embedded_bus(store.dir.path()).await;
    let relay = Relay::spawn(&store.db, bus.clone(), RelayConfig::default());
    // `on_source` creates the stream (it exists here already: that is idempotent).
    let effects = SubscriberConfig::on_source("effects", Credited::SOURCE);
    assert_eq!(effects.stream, STREAM);
    let subscriber = Subscriber::spawn(&store.db, &bus, effects, EffectHandler)
        .await
        .unwrap();
    let causes: Vec<_> = (1..=3).map(credited).collect();
    commit_events(&store.db, &causes).await;

    let watcher = config("watcher");
    let watch = bus.consumer(&watcher.consumer_config()).await.unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < 6 {
        assert!(Instant::now() < deadline, "saw only {} events", seen.len());
        for delivery in watch.fetch(10, Duration::from_millis(200)).await.unwrap() {
            seen.push(Envelope::from_json(&delivery.payload).unwrap());
            delivery.ack().await.unwrap();
        }
    }
    subscriber.shutdown().await;
    relay.shutdown().await;

    for cause in &causes {
        let effect = seen
            .iter()
            .find(|e| e.causation_id.as_deref() == Some(&cause.id.to_string()))
            .expect("an effect of every cause");
        assert!(effect.is::<Debited>());
        assert_eq!(effect.correlation_id, cause.correlation_id);
        assert_eq!(effect.subject, cause.subject);
    }
}

async fn shutdown_is_prompt_and_clean(store: TestStore) {
    let bus: SharedBus = embedded_bus(store.dir.path()).await;
    let subscriber = Subscriber::spawn(
        &store.db,
        &bus,
        config("ledger-view").workers(3),
        CountingHandler::new("ledger-view"),
    )
    .await
    .unwrap();
    let relay = Relay::spawn(&store.db, bus.clone(), RelayConfig::default());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    subscriber.shutdown().await;
    relay.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// Panics on its first call, then counts like [`CountingHandler`].
struct PanicsOnce {
    panicked: std::sync::atomic::AtomicBool,
    inner: CountingHandler,
}

#[async_trait]
impl Handler for PanicsOnce {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        if !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("handler bug");
        }
        self.inner.handle(tx, envelope).await
    }
}

async fn a_panicking_handler_is_a_failure_not_a_dead_worker(store: TestStore) {
    let bus: SharedBus = embedded_bus(store.dir.path()).await;
    let envelopes: Vec<_> = (1..=3).map(credited).collect();
    for envelope in &envelopes {
        bus.publish(envelope.to_message().unwrap()).await.unwrap();
    }
    let handler = PanicsOnce {
        panicked: false.into(),
        inner: CountingHandler::new("ledger-view"),
    };
    let config = config("ledger-view").workers(1);
    let subscriber = Subscriber::spawn(&store.db, &bus, config.clone(), handler)
        .await
        .unwrap();
    eventually(WAIT, "all applied", || async {
        applied(&store.db, "ledger-view").await.len() == 3
    })
    .await;
    eventually(WAIT, "settled", || settled(&bus, &config)).await;
    subscriber.shutdown().await;
    assert!(bus.dead_letters().await.unwrap().is_empty());
}

/// Writes its effect like [`CountingHandler`], then fails once for one event: the
/// write must be rolled back with it, and only with it.
struct FailsOnceAfterWriting {
    event_id: uuid::Uuid,
    failed: std::sync::atomic::AtomicBool,
    inner: CountingHandler,
}

#[async_trait]
impl Handler for FailsOnceAfterWriting {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        self.inner.handle(tx, envelope).await?;
        if envelope.id == self.event_id && !self.failed.swap(true, Ordering::SeqCst) {
            return Err(HandlerError::transient("failed after writing"));
        }
        Ok(())
    }
}

async fn in_a_batch_a_failing_delivery_is_rolled_back_alone(store: TestStore) {
    let bus: SharedBus = embedded_bus(store.dir.path()).await;
    let envelopes: Vec<_> = (1..=5).map(credited).collect();
    for envelope in &envelopes {
        bus.publish(envelope.to_message().unwrap()).await.unwrap();
    }
    let handler = FailsOnceAfterWriting {
        event_id: envelopes[2].id,
        failed: false.into(),
        inner: CountingHandler::new("ledger-view"),
    };
    let calls = handler.inner.calls.clone();
    // One worker: the five come in one fetch, so they share one transaction.
    let config = config("ledger-view").workers(1);
    let subscriber = Subscriber::spawn(&store.db, &bus, config.clone(), handler)
        .await
        .unwrap();
    eventually(WAIT, "all applied", || async {
        applied(&store.db, "ledger-view").await.len() == 5
    })
    .await;
    eventually(WAIT, "settled", || settled(&bus, &config)).await;
    subscriber.shutdown().await;

    let mut applied = applied(&store.db, "ledger-view").await;
    applied.sort();
    let mut expected: Vec<_> = envelopes.iter().map(|e| (e.id.to_string(), 1)).collect();
    expected.sort();
    assert_eq!(
        applied, expected,
        "each applied once: the failed write was rolled back, the others kept"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 6, "five, and one retry");
    assert!(bus.dead_letters().await.unwrap().is_empty());
}

/// A batch of one runs without a savepoint: its transaction is rolled back whole when
/// the handler fails after writing, inbox record included, so the retry applies it.
async fn a_lone_failing_delivery_leaves_nothing_behind(store: TestStore) {
    let bus: SharedBus = embedded_bus(store.dir.path()).await;
    let envelope = credited(1);
    bus.publish(envelope.to_message().unwrap()).await.unwrap();
    let handler = FailsOnceAfterWriting {
        event_id: envelope.id,
        failed: false.into(),
        inner: CountingHandler::new("ledger-view"),
    };
    let calls = handler.inner.calls.clone();
    let mut config = config("ledger-view").workers(1);
    config.batch_size = 1;
    let subscriber = Subscriber::spawn(&store.db, &bus, config.clone(), handler)
        .await
        .unwrap();
    eventually(WAIT, "applied", || async {
        !applied(&store.db, "ledger-view").await.is_empty()
    })
    .await;
    eventually(WAIT, "settled", || settled(&bus, &config)).await;
    subscriber.shutdown().await;

    assert_eq!(
        applied(&store.db, "ledger-view").await,
        vec![(envelope.id.to_string(), 1)],
        "applied once: the failed attempt's write was rolled back"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one failure, one retry");
    assert!(bus.dead_letters().await.unwrap().is_empty());
}

async fn failed_commits_spend_no_attempt_and_dead_letter_nothing(store: TestStore) {
    let bus: SharedBus = embedded_bus(store.dir.path()).await;
    let envelope = credited(1);
    bus.publish(envelope.to_message().unwrap()).await.unwrap();

    let handler = CountingHandler::new("ledger-view");
    let calls = handler.calls.clone();
    // Three times as many failed commits as the message has deliveries.
    let config = config("ledger-view")
        .workers(1)
        .max_deliver(2)
        .faults(FaultPlan::fail_commits(6));
    let subscriber = Subscriber::spawn(&store.db, &bus, config.clone(), handler)
        .await
        .unwrap();
    eventually(WAIT, "applied", || async {
        !applied(&store.db, "ledger-view").await.is_empty()
    })
    .await;
    eventually(WAIT, "settled", || settled(&bus, &config)).await;
    subscriber.shutdown().await;

    assert_eq!(
        calls.load(Ordering::SeqCst),
        7,
        "six rolled back, one committed"
    );
    assert_eq!(
        applied(&store.db, "ledger-view").await,
        [(envelope.id.to_string(), 1)]
    );
    assert!(bus.dead_letters().await.unwrap().is_empty());
    let info = bus
        .consumer(&config.consumer_config())
        .await
        .unwrap()
        .info()
        .await
        .unwrap();
    assert_eq!(
        info.redelivered, 0,
        "held by its worker, never delivered again"
    );
}

async fn a_store_failure_in_the_handler_spends_no_attempt(store: TestStore) {
    let bus: SharedBus = embedded_bus(store.dir.path()).await;
    let (first, second) = (credited(1), credited(2));
    for envelope in [&first, &second] {
        bus.publish(envelope.to_message().unwrap()).await.unwrap();
    }
    let handler = CountingHandler::new("ledger-view");
    handler.store_failures_left.store(5, Ordering::SeqCst);
    let config = config("ledger-view").workers(1).max_deliver(2);
    let subscriber = Subscriber::spawn(&store.db, &bus, config.clone(), handler)
        .await
        .unwrap();
    eventually(WAIT, "both applied", || async {
        applied(&store.db, "ledger-view").await.len() == 2
    })
    .await;
    eventually(WAIT, "settled", || settled(&bus, &config)).await;
    subscriber.shutdown().await;
    assert!(bus.dead_letters().await.unwrap().is_empty());
    let mut applied = applied(&store.db, "ledger-view").await;
    applied.sort();
    let mut expected = vec![(first.id.to_string(), 1), (second.id.to_string(), 1)];
    expected.sort();
    assert_eq!(applied, expected, "each once");
}

/// Takes `work` per delivery (a slow downstream call), then applies it.
struct SlowHandler {
    inner: CountingHandler,
    work: Duration,
}

#[async_trait]
impl Handler for SlowHandler {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        tokio::time::sleep(self.work).await;
        self.inner.handle(tx, envelope).await
    }
}

async fn a_batch_longer_than_the_ack_wait_is_not_delivered_twice(store: TestStore) {
    let bus: SharedBus = embedded_bus(store.dir.path()).await;
    let envelopes = [credited(1), credited(2), credited(3)];
    for envelope in &envelopes {
        bus.publish(envelope.to_message().unwrap()).await.unwrap();
    }
    let inner = CountingHandler::new("ledger-view");
    let calls = inner.calls.clone();
    // One batch of three takes 900 ms; the ack wait is 300 ms; a second worker waits.
    let handler = SlowHandler {
        inner,
        work: Duration::from_millis(300),
    };
    let config = config("ledger-view")
        .workers(2)
        .ack_wait(Duration::from_millis(300));
    let subscriber = Subscriber::spawn(&store.db, &bus, config.clone(), handler)
        .await
        .unwrap();
    // While the batch is worked on (the store busy with it), none of it is up for
    // redelivery: the bus is watched apart from the store.
    let consumer = bus.consumer(&config.consumer_config()).await.unwrap();
    let watcher = tokio::spawn(async move {
        let mut most = 0;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(1500) {
            most = most.max(consumer.info().await.unwrap().redelivered);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        most
    });
    eventually(WAIT, "all applied", || async {
        applied(&store.db, "ledger-view").await.len() == 3
    })
    .await;
    let most_redelivered = watcher.await.unwrap();
    eventually(WAIT, "settled", || settled(&bus, &config)).await;
    subscriber.shutdown().await;
    assert_eq!(most_redelivered, 0, "kept alive while worked on");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "each handled once");
}

async fn processed_events_are_forgotten_after_the_retention(store: TestStore) {
    let bus: SharedBus = embedded_bus(store.dir.path()).await;
    let envelope = credited(1);
    bus.publish(envelope.to_message().unwrap()).await.unwrap();
    // Another consumer's record in the same store, which this one must leave alone.
    let mut tx = store.db.begin().await.unwrap();
    assert!(
        Inbox::record(&mut tx, "other-view", envelope.id)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();

    let config =
        config("ledger-view").retention(Duration::from_millis(200), Duration::from_millis(20));
    let subscriber = Subscriber::spawn(
        &store.db,
        &bus,
        config.clone(),
        CountingHandler::new("ledger-view"),
    )
    .await
    .unwrap();
    eventually(WAIT, "applied", || async {
        Inbox::contains(&store.db, "ledger-view", envelope.id)
            .await
            .unwrap()
    })
    .await;
    let remembered = Instant::now();
    eventually(WAIT, "forgotten", || async {
        !Inbox::contains(&store.db, "ledger-view", envelope.id)
            .await
            .unwrap()
    })
    .await;
    assert!(
        remembered.elapsed() >= Duration::from_millis(150),
        "not before the retention"
    );
    subscriber.shutdown().await;
    assert!(
        Inbox::contains(&store.db, "other-view", envelope.id)
            .await
            .unwrap(),
        "another consumer's memory is its own"
    );
}
