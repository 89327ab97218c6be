//! Agora's fulfilment service: the order-fulfilment process manager.
//!
//! One process instance per order (correlation: the order id) waits for
//! `OrderAccepted` (ordering), `CustomerBilled` (payment) and `StockReserved`
//! (inventory), in any order and however often delivered, then publishes
//! `OrderReadyForShipping` once. On `StockReservationFailed`, `PaymentFailed` or a
//! timeout it compensates — refunds or voids the payment, releases the stock, through
//! payment's and inventory's internal endpoints — and publishes `FulfilmentFailed` once
//! with the reason. A `CustomerBilled` or `StockReserved` arriving after the failure is
//! compensated too.
//!
//! It has no public API; `/internal/fulfilment/processes/{order_id}` shows an
//! instance to the ops console. It must never publish an order's outcome twice, nor
//! publish a failure before its compensations succeeded.

#![forbid(unsafe_code)]

mod compensation;
mod http;
mod process;

use std::sync::Arc;
use std::time::Duration;

use agora_bus::SharedBus;
use agora_contracts::{OrderAccepted, bus_subject};
use agora_messaging::{
    Clock, Db, ProcessManager, SubscriberConfig, SystemClock, TimerConfig, TimerHandle,
    migrate_processes,
};
use agora_service::Core;

pub use compensation::{CompensationError, Compensator, HttpCompensator};
pub use process::{
    Compensation, CompensationKind, CompensationRecord, FulfilmentProcess, FulfilmentState,
    Outcome, Received,
};

/// The event source name of fulfilment, and its stream's.
pub const SOURCE: &str = "fulfilment";

/// The durable consumers, one per source stream, all feeding the one process manager.
pub const CONSUMER_ORDERING: &str = "fulfilment-ordering";
pub const CONSUMER_PAYMENT: &str = "fulfilment-payment";
pub const CONSUMER_INVENTORY: &str = "fulfilment-inventory";

/// Deliveries of one event before it is dead-lettered.
const MAX_DELIVER: u32 = 20;

/// How long an order may wait for its three events, from the first one, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What fulfilment needs to run.
#[derive(Clone)]
pub struct FulfilmentConfig {
    pub db_url: String,
    pub bus: SharedBus,
    /// Token verification keys; fulfilment has no route for users.
    pub keys: Arc<dyn agora_auth::KeySource>,
    /// The deployment's internal-plane key: fulfilment signs its calls to payment and
    /// inventory with it, and its `/internal` route takes only a service token.
    pub internal: agora_auth::InternalKey,
    /// Base URL of payment (refund, void), e.g. `http://127.0.0.1:8083`.
    pub payment_url: String,
    /// Base URL of inventory (release).
    pub inventory_url: String,
    /// From an order's first event to its timeout ([`DEFAULT_TIMEOUT`] is usual).
    pub timeout: Duration,
}

impl std::fmt::Debug for FulfilmentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No URLs: a database URL may hold a password.
        f.debug_struct("FulfilmentConfig")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What tests (and tools) may replace in a [`build_with`].
#[derive(Clone)]
pub struct Runtime {
    /// Where timeouts read the time.
    pub clock: Arc<dyn Clock>,
    /// `None`: the HTTP compensator on the config's URLs.
    pub compensator: Option<Arc<dyn Compensator>>,
    /// How often due timeouts are looked for.
    pub timer_interval: Duration,
    /// The waits between tries of a delivery that failed (a compensation owed is tried
    /// again at these intervals until it is done).
    pub retry: agora_messaging::Backoff,
}

impl Default for Runtime {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            compensator: None,
            timer_interval: Duration::from_secs(1),
            retry: agora_messaging::Backoff::new(
                Duration::from_millis(100),
                Duration::from_secs(30),
            ),
        }
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("clock", &self.clock)
            .field("timer_interval", &self.timer_interval)
            .finish_non_exhaustive()
    }
}

/// Why fulfilment could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store: {0}")]
    Messaging(#[from] agora_messaging::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// The running service.
#[derive(Debug)]
pub struct Fulfilment {
    router: axum::Router,
    core: Core,
    timer: TimerHandle,
}

impl Fulfilment {
    /// The routes: `/internal/fulfilment/processes/{order_id}`.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    pub fn db(&self) -> &Db {
        self.core.db()
    }

    /// Stops the consumers and the timer, then the relay (committed events not yet
    /// published are published by the next start).
    pub async fn shutdown(self) {
        self.core.shutdown_with(self.timer.shutdown()).await;
    }
}

/// Starts fulfilment with the system clock and the HTTP compensator.
pub async fn build(config: FulfilmentConfig) -> Result<Fulfilment, Error> {
    build_with(config, Runtime::default()).await
}

/// Starts fulfilment: migrations, the relay, the three consumers and the timeout timer.
pub async fn build_with(config: FulfilmentConfig, runtime: Runtime) -> Result<Fulfilment, Error> {
    if config.timeout.is_zero() {
        return Err(Error::Config(
            "the fulfilment timeout must be positive".into(),
        ));
    }
    let internal = config.internal.service(SOURCE);
    let compensator = match runtime.compensator {
        Some(compensator) => compensator,
        None => Arc::new(HttpCompensator::new(
            &config.payment_url,
            &config.inventory_url,
            &internal,
        )?),
    };
    // Its tables are the process manager's.
    let mut core = Core::open(SOURCE, &config.db_url, &config.bus, &[]).await?;
    migrate_processes(core.db()).await?;
    let manager = ProcessManager::new(
        core.db(),
        FulfilmentProcess {
            compensator,
            timeout: config.timeout,
        },
        runtime.clock,
    );
    core.publish();
    // Payment's and inventory's streams carry more than the two events each wanted
    // here, and a consumer has one filter: the process ignores the other types.
    let sources = [
        SubscriberConfig::on_source(CONSUMER_ORDERING, "ordering")
            .filter(bus_subject::<OrderAccepted>()),
        SubscriberConfig::on_source(CONSUMER_PAYMENT, "payment"),
        SubscriberConfig::on_source(CONSUMER_INVENTORY, "inventory"),
    ];
    for subscriber in sources {
        // A compensation target that is down holds the delivery until it is back (the
        // compensation is owed: tried again with backoff, without spending attempts);
        // max deliveries only bound other transient failures.
        let subscriber = subscriber.max_deliver(MAX_DELIVER).backoff(runtime.retry);
        if let Err(error) = core.consume(subscriber, manager.clone()).await {
            core.shutdown().await;
            return Err(error.into());
        }
    }
    let timer = manager.spawn_timer(TimerConfig {
        interval: runtime.timer_interval,
        ..TimerConfig::default()
    });
    tracing::info!(timeout = ?config.timeout, "fulfilment started");
    Ok(Fulfilment {
        router: http::router(http::State { manager }, &internal),
        core,
        timer,
    })
}

/// The OpenAPI 3.1 document of fulfilment's public paths: there are none.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    http::ApiDoc::openapi()
}
