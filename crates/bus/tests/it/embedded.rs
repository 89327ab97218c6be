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
