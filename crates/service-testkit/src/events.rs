//! Waiting with a deadline, and reading what a service published.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_bus::Consumer;
use agora_messaging::Envelope;

use crate::env::FETCH_WAIT;

/// How long [`eventually`] and [`EventReader::read`] wait before they fail.
pub const EVENTUALLY: Duration = Duration::from_secs(15);

/// Polls `condition` every 10 ms until it holds; fails after [`EVENTUALLY`], naming
/// `what` it waited for.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + EVENTUALLY;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads a stream through a durable consumer of its own (see
/// [`TestEnv::reader_of`](crate::TestEnv::reader_of)), acking what it read.
pub struct EventReader {
    consumer: Arc<dyn Consumer>,
    seen: Vec<Envelope>,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader")
            .field("seen", &self.seen.len())
            .finish_non_exhaustive()
    }
}

impl EventReader {
    pub(crate) fn new(consumer: Arc<dyn Consumer>) -> Self {
        Self {
            consumer,
            seen: Vec::new(),
        }
    }

    /// Everything read so far, after waiting until that is at least `at_least`; fails
    /// after [`EVENTUALLY`].
    pub async fn read(&mut self, at_least: usize) -> Vec<Envelope> {
        let deadline = Instant::now() + EVENTUALLY;
        loop {
            self.fetch().await;
            if self.seen.len() >= at_least {
                return self.seen.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{} events published, expected at least {at_least}",
                self.seen.len()
            );
        }
    }

    /// Everything read so far, after reading until a fetch finds nothing new: all
    /// there is when the producer is known to be settled.
    pub async fn read_all(&mut self) -> Vec<Envelope> {
        while self.fetch().await > 0 {}
        self.seen.clone()
    }

    /// Fetches one batch; how many events it had.
    async fn fetch(&mut self) -> usize {
        let batch = self.consumer.fetch(100, FETCH_WAIT).await.unwrap();
        let n = batch.len();
        for delivery in batch {
            self.seen
                .push(Envelope::from_json(&delivery.payload).unwrap());
            delivery.ack().await.unwrap();
        }
        n
    }
}
