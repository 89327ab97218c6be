//! A switch in front of a bus, for fault injection: while any of a view's switches is
//! off, the bus looks unreachable to whoever holds that view. Publishes fail with
//! [`BusError::Unavailable`] (so outboxes keep what is written and relays retry) and
//! consumers receive nothing; acknowledgements of deliveries already handed out still
//! go through, as they would on a broker that comes back.
//!
//! The shop gives every service its own [`SwitchedBus`] with two switches: the shop's
//! (pausing the whole bus) and the service's own (part of taking the service down).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::{
    Bus, BusError, Consumer, ConsumerConfig, ConsumerInfo, DeadLetter, Delivery, OutgoingMessage,
    PublishAck, SharedBus, StreamConfig,
};

/// On or off. Cheap to clone; clones share the position.
#[derive(Clone, Debug)]
pub struct BusSwitch {
    paused: Arc<watch::Sender<bool>>,
}

impl Default for BusSwitch {
    fn default() -> Self {
        Self::new()
    }
}

impl BusSwitch {
    /// A switch that lets everything through.
    pub fn new() -> Self {
        Self {
            paused: Arc::new(watch::Sender::new(false)),
        }
    }

    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }
}

/// A view of a bus behind switches.
pub struct SwitchedBus {
    inner: SharedBus,
    switches: Vec<BusSwitch>,
}

impl std::fmt::Debug for SwitchedBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwitchedBus")
            .field("paused", &self.is_paused())
            .finish_non_exhaustive()
    }
}

impl SwitchedBus {
    pub fn new(inner: SharedBus, switches: Vec<BusSwitch>) -> Self {
        Self { inner, switches }
    }

    pub fn is_paused(&self) -> bool {
        self.switches.iter().any(BusSwitch::is_paused)
    }

    fn check(&self) -> Result<(), BusError> {
        if self.is_paused() {
            Err(BusError::Unavailable("the bus is paused".into()))
        } else {
            Ok(())
        }
    }
}

/// Waits until every switch is on, or `wait` has passed; whether they all are.
async fn until_resumed(switches: &[BusSwitch], wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let mut receivers: Vec<_> = switches.iter().map(|s| s.paused.subscribe()).collect();
    loop {
        if receivers.iter_mut().all(|r| !*r.borrow_and_update()) {
            return true;
        }
        let changed =
            futures::future::select_all(receivers.iter_mut().map(|r| Box::pin(r.changed())));
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return false;
        }
    }
}

#[async_trait]
impl Bus for SwitchedBus {
    async fn ensure_stream(&self, config: &StreamConfig) -> Result<(), BusError> {
        self.inner.ensure_stream(config).await
    }

    async fn publish(&self, message: OutgoingMessage) -> Result<PublishAck, BusError> {
        self.check()?;
        self.inner.publish(message).await
    }

    async fn publish_batch(
        &self,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<PublishAck>, BusError> {
        self.check()?;
        self.inner.publish_batch(messages).await
    }

    async fn consumer(&self, config: &ConsumerConfig) -> Result<Arc<dyn Consumer>, BusError> {
        let inner = self.inner.consumer(config).await?;
        Ok(Arc::new(SwitchedConsumer {
            inner,
            switches: self.switches.clone(),
        }))
    }

    async fn delete_consumer(&self, stream: &str, name: &str) -> Result<(), BusError> {
        self.inner.delete_consumer(stream, name).await
    }

    async fn last_sequence(&self, stream: &str) -> Result<u64, BusError> {
        self.inner.last_sequence(stream).await
    }

    async fn consumers(&self) -> Result<Vec<ConsumerInfo>, BusError> {
        self.inner.consumers().await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError> {
        self.inner.dead_letters().await
    }

    async fn redrive(&self, dead_letter_id: u64) -> Result<PublishAck, BusError> {
        self.check()?;
        self.inner.redrive(dead_letter_id).await
    }
}

struct SwitchedConsumer {
    inner: Arc<dyn Consumer>,
    switches: Vec<BusSwitch>,
}

#[async_trait]
impl Consumer for SwitchedConsumer {
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        if !until_resumed(&self.switches, wait).await {
            return Ok(Vec::new());
        }
        self.inner.fetch(max, wait).await
    }

    async fn info(&self) -> Result<ConsumerInfo, BusError> {
        self.inner.info().await
    }
}
