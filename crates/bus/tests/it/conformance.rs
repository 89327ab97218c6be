//! Behaviour every backend must show. Each backend's module implements [`Harness`] and
//! calls [`conformance_tests!`] to get one `#[tokio::test]` per case.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use agora_bus::{
    BusError, ConsumerConfig, DeliverPolicy, Delivery, OutgoingMessage, SharedBus, StreamConfig,
    header,
};
use async_trait::async_trait;

/// How the suite gets a bus of one backend.
#[async_trait]
pub trait Harness: Send {
    /// The bus on this harness's storage (opening it on first use).
    async fn bus(&mut self) -> SharedBus;
    /// Stops the bus (or its server) cleanly and brings it back on the same storage;
    /// the next [`bus`](Self::bus) returns a handle on the restarted bus.
    async fn restart(&mut self);
    /// Stops the bus the hard way (SIGKILL of the server where there is one) and brings
    /// it back on the same storage.
    async fn crash(&mut self);
}

/// One `#[tokio::test]` per conformance case; `$make` is an async expression giving
/// `Option<impl Harness>` (`None`: the backend's server is missing, the test skips).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            publish_then_consume,
            same_id_twice_is_delivered_once,
            consumer_group_of_three_shares_ten_thousand,
            nak_with_delay_redelivers_after_the_delay,
            unacked_delivery_comes_back_after_ack_wait,
            progress_holds_a_delivery_past_its_ack_wait,
            max_deliveries_dead_letter_then_redrive,
            term_dead_letters_at_once,
            replay_from_start_and_from_sequence,
            replay_from_time,
            deliver_new_skips_history,
            durable_across_restart,
            nothing_lost_across_a_crash,
            delivery_counts_survive_a_restart,
            filter_subject_selects_messages,
            consumer_info_counts,
            consumers_are_listed_with_their_counts,
            inactive_consumers_with_a_threshold_are_deleted,
            oversized_payload_is_refused,
            invalid_input_is_refused,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(harness) = $make {
                    $crate::conformance::$case(harness).await;
                }
            }
        )*
    };
}

const STREAM: &str = "ORDERS";
const WAIT: Duration = Duration::from_secs(5);

async fn setup(h: &mut impl Harness) -> SharedBus {
    let bus = h.bus().await;
    bus.ensure_stream(&StreamConfig::new(STREAM, ["orders.>"]))
        .await
        .expect("create stream");
    bus
}

fn msg(id: impl Into<String>, body: impl Into<String>) -> OutgoingMessage {
    OutgoingMessage::new(id, "orders.placed", body.into().into_bytes())
}

async fn publish_n(bus: &SharedBus, n: usize) {
    let messages: Vec<_> = (0..n)
        .map(|i| msg(format!("m{i}"), format!("{i}")))
        .collect();
    for chunk in messages.chunks(1000) {
        bus.publish_batch(chunk.to_vec()).await.expect("publish");
    }
}

/// Fetches until `n` deliveries arrived or `within` passed.
async fn fetch_n(
    consumer: &Arc<dyn agora_bus::Consumer>,
    n: usize,
    within: Duration,
) -> Vec<Delivery> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        let batch = consumer
            .fetch(n - got.len(), Duration::from_millis(200))
            .await
            .expect("fetch");
        got.extend(batch);
    }
    got
}

/// Asserts that nothing is delivered within `quiet`.
async fn assert_nothing_for(consumer: &Arc<dyn agora_bus::Consumer>, quiet: Duration) {
    let batch = consumer.fetch(10, quiet).await.expect("fetch");
    assert!(
        batch.is_empty(),
        "expected no delivery, got {:?}",
        batch.iter().map(|d| &d.message_id).collect::<Vec<_>>()
    );
}

fn body(d: &Delivery) -> String {
    String::from_utf8(d.payload.to_vec()).unwrap()
}

pub async fn publish_then_consume(mut h: impl Harness) {
    let bus = setup(&mut h).await;
    let ack = bus
        .publish(msg("a", "hello").with_header("Trace", "t-1"))
        .await
        .unwrap();
    assert_eq!(ack.stream, STREAM);
    assert_eq!(ack.sequence, 1);
    assert!(!ack.duplicate);
    let consumer = bus
        .consumer(&ConsumerConfig::new(STREAM, "reader"))
        .await
        .unwrap();
    let got = fetch_n(&consumer, 1, WAIT).await;
    assert_eq!(got.len(), 1);
    let d = &got[0];
    assert_eq!(d.message_id, "a");
    assert_eq!(d.subject, "orders.placed");
    assert_eq!(body(d), "hello");
    assert_eq!(d.headers.get("Trace").map(String::as_str), Some("t-1"));
    assert_eq!(d.deliveries, 1);
    assert_eq!(d.stream_sequence, 1);
    let committed = d
        .committed
        .expect("a fresh message carries its commit time");
    assert!(committed >= d.published && committed <= SystemTime::now());
    got.into_iter().next().unwrap().ack().await.unwrap();
    assert_nothing_for(&consumer, Duration::from_millis(300)).await;
}

pub async fn same_id_twice_is_delivered_once(mut h: impl Harness) {
    let bus = setup(&mut h).await;
    let first = bus.publish(msg("dup", "one")).await.unwrap();
    let second = bus.publish(msg("dup", "one")).await.unwrap();
    assert!(!first.duplicate);
    assert!(
        second.duplicate,
        "the second publish must be reported as a duplicate"
    );
    assert_eq!(first.sequence, second.sequence);
    // Also inside one batch.
    let acks = bus
        .publish_batch(vec![msg("b1", "x"), msg("b1", "x"), msg("b2", "y")])
        .await
        .unwrap();
    assert_eq!(acks.iter().filter(|a| a.duplicate).count(), 1);
    let consumer = bus
        .consumer(&ConsumerConfig::new(STREAM, "reader"))
        .await
        .unwrap();
    let got = fetch_n(&consumer, 3, WAIT).await;
    let ids: Vec<_> = got.iter().map(|d| d.message_id.as_str()).collect();
    assert_eq!(ids, ["dup", "b1", "b2"]);
    for d in got {
        d.ack().await.unwrap();
    }
    assert_nothing_for(&consumer, Duration::from_millis(300)).await;
}

pub async fn consumer_group_of_three_shares_ten_thousand(mut h: impl Harness) {
    const N: usize = 10_000;
    let bus = setup(&mut h).await;
    publish_n(&bus, N).await;
    let config = ConsumerConfig::new(STREAM, "group");
    let mut workers = Vec::new();
    for _ in 0..3 {
        // Every worker opens the consumer on its own, as separate processes would.
        let consumer = bus.consumer(&config).await.unwrap();
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut idle = 0;
            while idle < 3 {
                let batch = consumer
                    .fetch(100, Duration::from_millis(300))
                    .await
                    .unwrap();
                if batch.is_empty() {
                    idle += 1;
                    continue;
                }
                idle = 0;
                for d in batch {
                    seen.push(d.message_id.clone());
                    d.ack().await.unwrap();
                }
            }
            seen
        }));
    }
    let mut all = Vec::new();
    let mut per_worker = Vec::new();
    for w in workers {
        let seen = w.await.unwrap();
        per_worker.push(seen.len());
        all.extend(seen);
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), N, "every message delivered");
    assert_eq!(all.len(), N, "no message delivered twice");
    assert!(
        per_worker.iter().filter(|&&n| n > 0).count() >= 2,
        "the work is shared: {per_worker:?}"
    );
}

pub async fn nak_with_delay_redelivers_after_the_delay(mut h: impl Harness) {
    let bus = setup(&mut h).await;
    bus.publish(msg("n", "retry me")).await.unwrap();
    let consumer = bus
        .consumer(&ConsumerConfig::new(STREAM, "reader"))
        .await
        .unwrap();
    let first = fetch_n(&consumer, 1, WAIT)
        .await
        .pop()
        .expect("first delivery");
    assert_eq!(first.deliveries, 1);
    let naked_at = Instant::now();
    first.nak(Duration::from_millis(700), "busy").await.unwrap();
    assert_nothing_for(&consumer, Duration::from_millis(400)).await;
    let second = fetch_n(&consumer, 1, WAIT).await.pop().expect("redelivery");
    let waited = naked_at.elapsed();
    assert!(
        waited >= Duration::from_millis(650),
        "redelivered after {waited:?}"
    );
    assert_eq!(second.message_id, "n");
    assert_eq!(second.deliveries, 2);
    second.ack().await.unwrap();
    assert_nothing_for(&consumer, Duration::from_millis(300)).await;
}

pub async fn unacked_delivery_comes_back_after_ack_wait(mut h: impl Harness) {
    let bus = setup(&mut h).await;
    bus.publish(msg("lost", "worker died")).await.unwrap();
    let config = ConsumerConfig::new(STREAM, "reader").ack_wait(Duration::from_millis(500));
    let consumer = bus.consumer(&config).await.unwrap();
    let first = fetch_n(&consumer, 1, WAIT)
        .await
        .pop()
        .expect("first delivery");
    let delivered_at = Instant::now();
    drop(first); // the worker "dies": no ack, no nak
    let again = fetch_n(&consumer, 1, WAIT)
        .await
        .pop()
        .expect("redelivery after ack wait");
    assert!(delivered_at.elapsed() >= Duration::from_millis(450));
    assert_eq!(again.message_id, "lost");
    assert_eq!(again.deliveries, 2);
    let info = consumer.info().await.unwrap();
    assert_eq!(info.redelivered, 1);
    again.ack().await.unwrap();
}

pub async fn progress_holds_a_delivery_past_its_ack_wait(mut h: impl Harness) {
    let bus = setup(&mut h).await;
    bus.publish(msg("slow", "long work")).await.unwrap();
    let ack_wait = Duration::from_millis(500);
    let config = ConsumerConfig::new(STREAM, "reader").ack_wait(ack_wait);
    let consumer = bus.consumer(&config).await.unwrap();
    let delivery = fetch_n(&consumer, 1, WAIT)
        .await
        .pop()
        .expect("first delivery");
    // Three ack waits of work, telling the bus every 150 ms: never delivered again.
    let started = Instant::now();
    while started.elapsed() < ack_wait * 3 {
        delivery.progress().await.unwrap();
        assert_nothing_for(&consumer, Duration::from_millis(150)).await;
    }
    assert_eq!(delivery.deliveries, 1);
    delivery.ack().await.unwrap();
    assert_nothing_for(&consumer, ack_wait + Duration::from_millis(300)).await;
    let info = consumer.info().await.unwrap();
    assert_eq!((info.redelivered, info.ack_pending), (0, 0));
}

pub async fn max_deliveries_dead_letter_then_redrive(mut h: impl Harness) {
    let bus = setup(&mut h).await;
    bus.publish(msg("poison", "bad").with_header("Kind", "poison"))
        .await
        .unwrap();
    bus.publish(msg("fine", "good")).await.unwrap();
    let config = ConsumerConfig::new(STREAM, "picky").max_deliver(3);
    let consumer = bus.consumer(&config).await.unwrap();
    let mut good_seen = 0;
    let mut poison_deliveries = Vec::new();
    let deadline = Instant::now() + WAIT;
    while (poison_deliveries.len() < 3 || good_seen < 1) && Instant::now() < deadline {
        for d in consumer
            .fetch(10, Duration::from_millis(200))
            .await
            .unwrap()
        {
            if d.message_id == "poison" {
                poison_deliveries.push(d.deliveries);
                assert_eq!(d.is_last_attempt(), d.deliveries == 3);
                d.nak(Duration::from_millis(10), "cannot handle")
                    .await
                    .unwrap();
            } else {
                good_seen += 1;
                d.ack().await.unwrap();
            }
        }
    }
    assert_eq!(poison_deliveries, [1, 2, 3]);
    assert_eq!(good_seen, 1);
    assert_nothing_for(&consumer, Duration::from_millis(300)).await;

    let dead = bus.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let dl = &dead[0];
    assert_eq!(dl.message_id, "poison");
    assert_eq!(dl.consumer, "picky");
    assert_eq!(dl.stream, STREAM);
    assert_eq!(dl.reason, "cannot handle");
    assert_eq!(dl.deliveries, 3);
    assert_eq!(dl.subject, "orders.placed");
    assert_eq!(&dl.payload[..], b"bad");
    assert_eq!(dl.headers.get("Kind").map(String::as_str), Some("poison"));
    assert_eq!(consumer.info().await.unwrap().dead_letters, 1);

    // The cause is fixed: redrive, and the consumer gets the message again.
    bus.redrive(dl.id).await.unwrap();
    assert!(bus.dead_letters().await.unwrap().is_empty());
    assert_eq!(consumer.info().await.unwrap().dead_letters, 0);
    let again = fetch_n(&consumer, 1, WAIT)
        .await
        .pop()
        .expect("redriven delivery");
    assert_eq!(&again.payload[..], b"bad");
    assert_eq!(again.deliveries, 1);
    assert_eq!(
        again.headers.get(header::ORIGINAL_ID).map(String::as_str),
        Some("poison")
    );
    assert_eq!(
        again.headers.get(header::REDRIVEN_FROM).map(String::as_str),
        Some(dl.id.to_string().as_str())
    );
    again.ack().await.unwrap();
    assert!(matches!(
        bus.redrive(dl.id).await,
        Err(BusError::DeadLetterNotFound(_))
    ));
}

pub async fn term_dead_letters_at_once(mut h: impl Harness) {
    let bus = setup(&mut h).await;
    bus.publish(msg("garbage", "\u{0}\u{1}")).await.unwrap();
    let consumer = bus
        .consumer(&ConsumerConfig::new(STREAM, "strict"))
        .await
        .unwrap();
    let d = fetch_n(&consumer, 1, WAIT).await.pop().expect("delivery");
    d.term("undecodable").await.unwrap();
    assert_nothing_for(&consumer, Duration::from_millis(300)).await;
    let dead = bus.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "undecodable");
    assert_eq!(dead[0].deliveries, 1);
}

pub async fn replay_from_start_and_from_sequence(mut h: impl Harness) {
    let bus = setup(&mut h).await;
    publish_n(&bus, 10).await;
    assert_eq!(bus.last_sequence(STREAM).await.unwrap(), 10);
    // A consumer that already read everything...
    let live = bus
        .consumer(&ConsumerConfig::new(STREAM, "live"))
        .await
        .unwrap();
    for d in fetch_n(&live, 10, WAIT).await {
        d.ack().await.unwrap();
    }
    // ...and a new one rebuilding from the start sees the whole history, in order.
    let rebuild = bus
        .consumer(&ConsumerConfig::new(STREAM, "rebuild"))
        .await
        .unwrap();
    let got = fetch_n(&rebuild, 10, WAIT).await;
    let seqs: Vec<u64> = got.iter().map(|d| d.stream_sequence).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    let from7 = bus
        .consumer(&ConsumerConfig::new(STREAM, "from7").deliver(DeliverPolicy::FromSequence(7)))
        .await
        .unwrap();
    let got = fetch_n(&from7, 4, WAIT).await;
    let bodies: Vec<String> = got.iter().map(body).collect();
    assert_eq!(bodies, ["6", "7", "8", "9"]);
    for d in got {
        d.ack().await.unwrap();
    }
    assert_nothing_for(&from7, Duration::from_millis(300)).await;
}

pub async fn replay_from_time(mut h: impl Harness) {
    let bus = setup(&mut h).await;
    bus.publish(msg("old", "old")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await; // two distinct publish times
    let cut = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    bus.publish(msg("new", "new")).await.unwrap();
    let consumer = bus
        .consumer(&ConsumerConfig::new(STREAM, "since").deliver(DeliverPolicy::FromTime(cut)))
        .await
        .unwrap();
    let got = fetch_n(&consumer, 2, Duration::from_secs(1)).await;
    let ids: Vec<_> = got.iter().map(|d| d.message_id.as_str()).collect();
    assert_eq!(ids, ["new"]);
}

pub async fn deliver_new_skips_history(mut h: impl Harness) {
    let bus = setup(&mut h).await;
    bus.publish(msg("before", "x")).await.unwrap();
    let consumer = bus
        .consumer(&ConsumerConfig::new(STREAM, "tail").deliver(DeliverPolicy::New))
        .await
        .unwrap();
    bus.publish(msg("after", "y")).await.unwrap();
    let got = fetch_n(&consumer, 2, Duration::from_secs(1)).await;
    let ids: Vec<_> = got.iter().map(|d| d.message_id.as_str()).collect();
    assert_eq!(ids, ["after"]);
}

/// Publishes 100, acks 1..=40, leaves 41..=50 delivered but unacked and 51..=100 never
/// fetched; returns the consumer's config.
async fn half_consumed(bus: &SharedBus) -> ConsumerConfig {
    publish_n(bus, 100).await;
    // A short ack wait, so that the unacked deliveries come back soon after restart.
    let config = ConsumerConfig::new(STREAM, "durable")
        .max_deliver(3)
        .ack_wait(Duration::from_secs(2));
    let consumer = bus.consumer(&config).await.unwrap();
    let got = fetch_n(&consumer, 50, WAIT).await;
    assert_eq!(got.len(), 50);
    for d in got {
        if d.stream_sequence <= 40 {
            d.ack().await.unwrap();
        }
    }
    config
}

/// Every sequence the consumer gets within 10 s, acking each.
async fn drain(bus: &SharedBus, config: &ConsumerConfig) -> Vec<u64> {
    let consumer = bus.consumer(config).await.unwrap();
    let mut seqs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let batch = consumer
            .fetch(100, Duration::from_millis(200))
            .await
            .unwrap();
        let done = batch.is_empty() && seqs.len() >= 60;
        for d in batch {
            seqs.push(d.stream_sequence);
            d.ack().await.unwrap();
        }
        if done {
            break;
        }
    }
    seqs.sort_unstable();
    seqs
}

pub async fn durable_across_restart(mut h: impl Harness) {
    let bus = setup(&mut h).await;
    let config = half_consumed(&bus).await;
    drop(bus);
    h.restart().await;

    let bus = h.bus().await;
    assert_eq!(bus.last_sequence(STREAM).await.unwrap(), 100);
    // Deduplication survives the restart too.
    assert!(bus.publish(msg("m0", "0")).await.unwrap().duplicate);
    let seqs = drain(&bus, &config).await;
    assert_eq!(
        seqs,
        (41..=100).collect::<Vec<_>>(),
        "nothing lost, nothing acked redelivered"
    );
}

/// After a crash, an ack may be lost (it is written lazily) so an acked message may come
/// again — at least once — but nothing unacked is ever lost.
pub async fn nothing_lost_across_a_crash(mut h: impl Harness) {
    let bus = setup(&mut h).await;
    let config = half_consumed(&bus).await;
    drop(bus);
    h.crash().await;

    let bus = h.bus().await;
    assert_eq!(bus.last_sequence(STREAM).await.unwrap(), 100);
    let seqs = drain(&bus, &config).await;
    let unique: HashSet<u64> = seqs.iter().copied().collect();
    assert_eq!(
        unique.len(),
        seqs.len(),
        "delivered twice after the crash: {seqs:?}"
    );
    assert!(
        (41..=100).all(|s| unique.contains(&s)),
        "lost across the crash: {:?}",
        (41..=100)
            .filter(|s| !unique.contains(s))
            .collect::<Vec<_>>()
    );
    assert!(unique.iter().all(|s| (1..=100).contains(s)));
}

/// A message whose consumer keeps going away without settling it (a handler that
/// brings its process down) still reaches its last delivery and then the dead letters:
/// delivery counts outlive a restart.
pub async fn delivery_counts_survive_a_restart(mut h: impl Harness) {
    let mut bus = setup(&mut h).await;
    bus.publish(msg("killer", "boom")).await.unwrap();
    let config = ConsumerConfig::new(STREAM, "fragile")
        .max_deliver(3)
        .ack_wait(Duration::from_millis(500));
    let mut seen = Vec::new();
    for _ in 0..3 {
        let consumer = bus.consumer(&config).await.unwrap();
        let d = fetch_n(&consumer, 1, WAIT).await.pop().expect("a delivery");
        seen.push((d.deliveries, d.is_last_attempt()));
        drop((d, consumer, bus));
        h.restart().await;
        bus = h.bus().await;
    }
    assert_eq!(seen, [(1, false), (2, false), (3, true)]);

    let consumer = bus.consumer(&config).await.unwrap();
    let deadline = Instant::now() + WAIT;
    let dead = loop {
        let batch = consumer.fetch(1, Duration::from_millis(200)).await.unwrap();
        assert!(batch.is_empty(), "delivered past max_deliver");
        let dead = bus.dead_letters().await.unwrap();
        if !dead.is_empty() || Instant::now() > deadline {
            break dead;
        }
    };
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].message_id, "killer");
}

pub async fn filter_subject_selects_messages(mut h: impl Harness) {
    let bus = setup(&mut h).await;
    bus.publish(OutgoingMessage::new("p", "orders.placed", "p"))
        .await
        .unwrap();
    bus.publish(OutgoingMessage::new("s", "orders.shipped", "s"))
        .await
        .unwrap();
    let consumer = bus
        .consumer(&ConsumerConfig::new(STREAM, "shipped-only").filter("orders.shipped"))
        .await
        .unwrap();
    let got = fetch_n(&consumer, 2, Duration::from_secs(1)).await;
    let ids: Vec<_> = got.iter().map(|d| d.message_id.as_str()).collect();
    assert_eq!(ids, ["s"]);
    assert!(matches!(
        bus.publish(OutgoingMessage::new("x", "payments.made", "x"))
            .await,
        Err(BusError::NoStream(_))
    ));
}

pub async fn consumer_info_counts(mut h: impl Harness) {
    let bus = setup(&mut h).await;
    publish_n(&bus, 5).await;
    let consumer = bus
        .consumer(&ConsumerConfig::new(STREAM, "counted"))
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(
        (info.pending, info.ack_pending, info.redelivered),
        (5, 0, 0)
    );
    let got = fetch_n(&consumer, 2, WAIT).await;
    let info = consumer.info().await.unwrap();
    assert_eq!((info.pending, info.ack_pending), (3, 2));
    for d in got {
        d.ack().await.unwrap();
    }
    // Acks may be applied asynchronously: poll until they show.
    let deadline = Instant::now() + WAIT;
    loop {
        let info = consumer.info().await.unwrap();
        if info.ack_pending == 0 {
            assert_eq!(info.pending, 3);
            assert_eq!(info.name, "counted");
            assert_eq!(info.stream, STREAM);
            break;
        }
        assert!(Instant::now() < deadline, "acks never counted: {info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn consumers_are_listed_with_their_counts(mut h: impl Harness) {
    let bus = setup(&mut h).await;
    publish_n(&bus, 4).await;
    let first = bus
        .consumer(&ConsumerConfig::new(STREAM, "first"))
        .await
        .unwrap();
    let _second = bus
        .consumer(&ConsumerConfig::new(STREAM, "second"))
        .await
        .unwrap();
    for delivery in fetch_n(&first, 4, WAIT).await {
        delivery.ack().await.unwrap();
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let listed = bus.consumers().await.unwrap();
        let of = |name: &str| {
            listed
                .iter()
                .find(|c| c.stream == STREAM && c.name == name)
                .cloned()
        };
        let (first, second) = (of("first"), of("second"));
        let settled = first
            .as_ref()
            .is_some_and(|c| c.pending == 0 && c.ack_pending == 0);
        if settled {
            assert_eq!(second.expect("second is listed").pending, 4);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never listed as settled: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn oversized_payload_is_refused(mut h: impl Harness) {
    let bus = setup(&mut h).await;
    let big = vec![b'x'; agora_bus::MAX_PAYLOAD_BYTES + 1];
    let err = bus
        .publish(msg("big", String::from_utf8(big).unwrap()))
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::PayloadTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("larger than"));
    let exact = vec![b'x'; agora_bus::MAX_PAYLOAD_BYTES - 1024];
    bus.publish(msg("fits", String::from_utf8(exact).unwrap()))
        .await
        .unwrap();
    assert_eq!(bus.last_sequence(STREAM).await.unwrap(), 1);
}

pub async fn invalid_input_is_refused(mut h: impl Harness) {
    let bus = setup(&mut h).await;
    assert!(
        bus.publish(OutgoingMessage::new("", "orders.placed", "x"))
            .await
            .is_err()
    );
    assert!(
        bus.publish(OutgoingMessage::new("a", "orders.*", "x"))
            .await
            .is_err()
    );
    assert!(
        bus.consumer(&ConsumerConfig::new(STREAM, "bad name"))
            .await
            .is_err()
    );
    assert!(
        bus.consumer(&ConsumerConfig::new("NOPE", "reader"))
            .await
            .is_err()
    );
    assert!(
        bus.ensure_stream(&StreamConfig::new("bad.name", ["x.>"]))
            .await
            .is_err()
    );
}

async fn listed(bus: &SharedBus, name: &str) -> bool {
    bus.consumers()
        .await
        .expect("list consumers")
        .iter()
        .any(|c| c.name == name)
}

/// A consumer with an inactive threshold stays while it is fetched from, and the bus
/// deletes it once nobody fetched from it for that long; one without stays.
pub async fn inactive_consumers_with_a_threshold_are_deleted(mut h: impl Harness) {
    let bus = setup(&mut h).await;
    // Long enough that a loaded machine never leaves 200 ms fetches that far apart.
    let threshold = Duration::from_secs(2);
    let instance = ConsumerConfig::new(STREAM, "instance-a").inactive_threshold(threshold);
    let consumer = bus.consumer(&instance).await.unwrap();
    bus.consumer(&ConsumerConfig::new(STREAM, "group"))
        .await
        .unwrap();
    let busy_until = Instant::now() + threshold * 2;
    while Instant::now() < busy_until {
        consumer
            .fetch(1, Duration::from_millis(200))
            .await
            .expect("fetch");
    }
    assert!(listed(&bus, "instance-a").await, "deleted while in use");
    drop(consumer);
    let deadline = Instant::now() + Duration::from_secs(15);
    while listed(&bus, "instance-a").await {
        assert!(Instant::now() < deadline, "an inactive consumer was kept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        listed(&bus, "group").await,
        "a consumer without threshold went"
    );
    let too_short = ConsumerConfig::new(STREAM, "x").inactive_threshold(Duration::from_millis(10));
    assert!(matches!(
        bus.consumer(&too_short).await,
        Err(BusError::InvalidConfig(_))
    ));
}
