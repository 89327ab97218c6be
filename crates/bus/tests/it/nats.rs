//! The conformance suite on the NATS JetStream backend, each test with its own
//! `nats-server -js` (file store in a temporary directory).

use std::sync::Arc;

use agora_bus::SharedBus;
use agora_bus::nats::NatsBus;
use agora_testkit::NatsServer;
use async_trait::async_trait;

use crate::conformance::Harness;

struct NatsHarness {
    server: NatsServer,
    bus: Option<SharedBus>,
}

impl NatsHarness {
    fn new() -> Option<Self> {
        Some(Self {
            server: NatsServer::start()?,
            bus: None,
        })
    }
}

#[async_trait]
impl Harness for NatsHarness {
    async fn bus(&mut self) -> SharedBus {
        if self.bus.is_none() {
            let bus = NatsBus::connect(&self.server.url())
                .await
                .expect("connect to nats-server");
            self.bus = Some(Arc::new(bus));
        }
        self.bus.clone().unwrap()
    }

    /// SIGTERM, and a restart on the same file store.
    async fn restart(&mut self) {
        self.bus = None;
        self.server.restart_gracefully();
    }

    /// SIGKILL, and a restart on the same file store.
    async fn crash(&mut self) {
        self.bus = None;
        self.server.restart();
    }
}

crate::conformance_tests!(NatsHarness::new());

/// Durability is stated, not left to the server's defaults: the configured replicas
/// and duplicate window are on every stream the bus creates, the dead letters' too.
#[tokio::test]
async fn streams_get_the_configured_replicas_and_duplicate_window() {
    use std::time::Duration;

    use agora_bus::nats::NatsOptions;
    use agora_bus::{Bus, BusError, StreamConfig};

    let Some(server) = NatsServer::start() else {
        return;
    };
    let options = NatsOptions {
        replicas: 1,
        duplicate_window: Duration::from_secs(300),
    };
    let bus = NatsBus::connect_with(&server.url(), options)
        .await
        .expect("connect");
    bus.ensure_stream(&StreamConfig::new("ORDERS", ["orders.>"]))
        .await
        .expect("stream");
    let client = async_nats::connect(server.url()).await.expect("client");
    let js = async_nats::jetstream::new(client);
    let mut orders = js.get_stream("ORDERS").await.expect("ORDERS");
    let config = &orders.info().await.expect("info").config;
    assert_eq!(config.num_replicas, 1);
    assert_eq!(config.duplicate_window, Duration::from_secs(300));
    let mut dlq = js.get_stream("AGORA_DLQ").await.expect("AGORA_DLQ");
    assert_eq!(dlq.info().await.expect("info").config.num_replicas, 1);

    for replicas in [0, 6] {
        let refused = NatsBus::connect_with(
            &server.url(),
            NatsOptions {
                replicas,
                ..options
            },
        )
        .await;
        assert!(
            matches!(refused, Err(BusError::InvalidConfig(_))),
            "{replicas}"
        );
    }
    // Three replicas need a cluster: a single server refuses them, loudly.
    let three = NatsBus::connect_with(
        &server.url(),
        NatsOptions {
            replicas: 3,
            ..options
        },
    )
    .await;
    match three {
        Err(_) => {}
        Ok(bus) => {
            assert!(
                bus.ensure_stream(&StreamConfig::new("MORE", ["more.>"]))
                    .await
                    .is_err(),
                "a 3-replica stream on one server"
            );
        }
    }
}

/// A 3-node cluster loses the leader of a 3-replica stream: every publish that was
/// acknowledged is still there to consume, and publishing stalls only while the
/// remaining nodes elect a new leader (the figure is printed; bounded by NATS's
/// election timeout, 4–9 s, plus a heartbeat and the client's reconnect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_streams_leader_loses_no_acknowledged_message() {
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};

    use agora_bus::nats::NatsOptions;
    use agora_bus::{Bus, ConsumerConfig, OutgoingMessage, StreamConfig};
    use agora_testkit::NatsCluster;

    let Some(mut cluster) = NatsCluster::start(3) else {
        return;
    };
    let options = NatsOptions {
        replicas: 3,
        duplicate_window: Duration::from_secs(120),
    };
    let bus = NatsBus::connect_with(&cluster.urls(), options)
        .await
        .expect("connect to the cluster");
    bus.ensure_stream(&StreamConfig::new("ORDERS", ["orders.>"]))
        .await
        .expect("stream");
    let servers: Vec<async_nats::ServerAddr> = cluster
        .urls()
        .split(',')
        .map(|url| url.parse().expect("a URL"))
        .collect();
    let client = async_nats::connect(servers).await.expect("client");
    let js = async_nats::jetstream::new(client);
    let info = js
        .get_stream("ORDERS")
        .await
        .expect("ORDERS")
        .info()
        .await
        .expect("info")
        .clone();
    assert_eq!(info.config.num_replicas, 3);
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("the stream has a leader");
    let leader: usize = leader
        .trim_start_matches('n')
        .parse()
        .expect("nodes are named n0, n1, n2");

    // Each message is published until acknowledged (the same id: the duplicate window
    // makes a retry of a publish that did land harmless), and timed from its first try.
    let mut acknowledged = BTreeSet::new();
    let mut slowest_before = Duration::ZERO;
    let mut slowest_after = Duration::ZERO;
    let mut failed_tries = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..600 {
        if i == 300 {
            cluster.node(leader).kill();
        }
        let id = format!("m-{i}");
        let started = Instant::now();
        loop {
            let message = OutgoingMessage::new(id.clone(), "orders.placed", format!("{i}"));
            match bus.publish(message).await {
                Ok(_) => break,
                Err(error) => {
                    assert!(error.is_transient(), "{error}");
                    assert!(Instant::now() < deadline, "still failing: {error}");
                    failed_tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        let took = started.elapsed();
        if i < 300 {
            slowest_before = slowest_before.max(took);
        } else {
            slowest_after = slowest_after.max(took);
        }
        acknowledged.insert(i);
    }
    println!(
        "stream leader n{leader} killed: slowest publish before {slowest_before:?}, \
         after {slowest_after:?} (the stall), {failed_tries} failed tries meanwhile"
    );
    assert!(
        slowest_after < Duration::from_secs(15),
        "publishing stalled {slowest_after:?}, longer than a leader election"
    );

    // The cluster's API may itself be between leaders (the killed node may have led
    // it too): creating the consumer is retried as the relay retries a publish.
    let consumer = loop {
        match bus.consumer(&ConsumerConfig::new("ORDERS", "check")).await {
            Ok(consumer) => break consumer,
            Err(error) => {
                assert!(error.is_transient(), "{error}");
                assert!(
                    Instant::now() < deadline + Duration::from_secs(30),
                    "no consumer on the two nodes left: {error}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let mut seen = BTreeSet::new();
    let mut deliveries = 0;
    while seen.len() < acknowledged.len() {
        assert!(
            Instant::now() < deadline + Duration::from_secs(30),
            "only {} of {} acknowledged messages came back",
            seen.len(),
            acknowledged.len()
        );
        let batch = match consumer.fetch(200, Duration::from_secs(1)).await {
            Ok(batch) => batch,
            Err(error) if error.is_transient() => continue,
            Err(error) => panic!("fetch: {error}"),
        };
        for delivery in batch {
            deliveries += 1;
            let i: usize = std::str::from_utf8(&delivery.payload)
                .expect("utf-8")
                .parse()
                .expect("a number");
            seen.insert(i);
            delivery.ack().await.expect("ack");
        }
    }
    assert_eq!(
        seen, acknowledged,
        "every acknowledged message, and only those"
    );
    assert_eq!(deliveries, acknowledged.len(), "none stored twice");
}
