//! Orphan holds: an authorization whose order was never accepted (the checkout's
//! deadline ran out, ordering crashed between the authorization and its commit, the
//! provider answered after the caller gave up) would hold the customer's money for
//! ever. Payment records every `OrderAccepted` it sees (consumer
//! [`CONSUMER_ACCEPTANCES`], which only writes a row, so a provider outage cannot hold
//! it back), and a sweeper voids every hold still `authorized` after the orphan hold
//! time whose order it has not seen accepted (`AuthorizationVoided`, reason
//! `orphan_hold`).
//!
//! An `OrderAccepted` that reaches payment only after the hold time (the bus paused
//! for longer) finds the hold voided: no capture, and fulfilment's timeout cancels the
//! order. The money is never held without an order, nor taken for one that ends.

use std::time::Duration;

use agora_bus::SharedBus;
use agora_contracts::{OrderAccepted, bus_subject};
use agora_messaging::{Context, Envelope, Handler, HandlerError, SubscriberConfig};
use async_trait::async_trait;
use sqlx::{Any, Transaction};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::settle::{GiveBack, GiveBackError, Settler};
use crate::store;

/// The durable consumer that records accepted orders.
pub const CONSUMER_ACCEPTANCES: &str = "payment-acceptances";

/// The default [`crate::PaymentConfig::orphan_hold`]: 10 minutes.
pub const DEFAULT_ORPHAN_HOLD: Duration = Duration::from_secs(600);

/// The reason a voided orphan hold carries.
pub const ORPHAN_REASON: &str = "orphan_hold";

/// The subscriber of [`CONSUMER_ACCEPTANCES`]: ordering's stream, `OrderAccepted` only.
pub fn acceptances_subscriber_config() -> SubscriberConfig {
    SubscriberConfig::on_source(CONSUMER_ACCEPTANCES, "ordering")
        .filter(bus_subject::<OrderAccepted>())
}

/// Records that an order was accepted.
#[derive(Clone, Copy, Debug)]
pub struct Acceptances;

#[async_trait]
impl Handler for Acceptances {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let accepted: OrderAccepted = envelope.decode()?;
        store::record_acceptance(tx, accepted.order_id).await?;
        Ok(())
    }
}

/// The running sweeper.
#[derive(Debug)]
pub struct Sweeper {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Sweeper {
    /// Voids orphan holds every `interval`, starting at once — each time only once the
    /// consumer of accepted orders has caught up with the bus (after a restart, the
    /// acceptances still waiting there must be seen before any hold is called an
    /// orphan).
    pub fn spawn(settler: Settler, bus: SharedBus, hold: Duration, interval: Duration) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let acceptances = acceptances_subscriber_config().consumer_config();
            let mut consumer = None;
            loop {
                if consumer.is_none() {
                    consumer = bus.consumer(&acceptances).await.ok();
                }
                let caught_up = match &consumer {
                    Some(consumer) => consumer
                        .info()
                        .await
                        .is_ok_and(|info| info.pending == 0 && info.ack_pending == 0),
                    None => false,
                };
                if !caught_up {
                    tracing::debug!("accepted orders not all seen yet: orphan sweep deferred");
                } else if let Err(error) = sweep(&settler, hold).await {
                    tracing::warn!(%error, "orphan hold sweep failed; will try again");
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stopped.wait_for(|stop| *stop) => return,
                }
            }
        });
        Self { stop, task }
    }

    /// Lets the sweep under way finish, then stops.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Voids every hold still `authorized` after `hold` whose order payment has not seen
/// accepted; returns how many were voided. One that cannot be voided now (provider
/// unavailable) is tried again by the next sweep.
pub async fn sweep(settler: &Settler, hold: Duration) -> Result<usize, crate::Error> {
    let orphans = store::orphan_holds(&settler.db, hold).await?;
    let mut voided = 0;
    for (authorization_id, order_id) in orphans {
        let request = GiveBack {
            order_id,
            reason: Some(ORPHAN_REASON.to_owned()),
        };
        let context = Context::new(order_id.to_string());
        match settler
            .give_back(authorization_id, &request, &context)
            .await
        {
            Ok(_) => {
                voided += 1;
                tracing::warn!(%authorization_id, %order_id, "orphan hold voided: its order was never accepted");
            }
            Err(GiveBackError::Internal(error)) => return Err(error),
            Err(error) => {
                tracing::warn!(%authorization_id, %error, "orphan hold not voided yet");
            }
        }
    }
    Ok(voided)
}
