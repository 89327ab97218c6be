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
