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
