//! Ordering (sales), Agora's master of prices and orders, and the heart of checkout.
//!
//! It sets prices (`PriceChanged`), previews a checkout, and accepts orders: the
//! payment is authorized synchronously at payment, under a deadline (consistency wins
//! there), and an authorized order is written with its `OrderAccepted` event in one
//! local transaction (outbox). Checkout is idempotent per customer and
//! `Idempotency-Key`: the store arbitrates, so concurrent duplicates make one order and
//! one authorization call. While payment's breaker is open, a key never seen before is
//! answered 503 at once, before anything is written.
//!
//! The customer's address and payment method come from ordering's own replica, fed by
//! customer's events (`customer_data = replica`, the default: checkout goes on when
//! customer is down), or from a live call to customer with a short timeout
//! (`customer_data = sync`, the original design); the setting is kept in the store and
//! changes at runtime ([`Ordering::set_customer_data`], `PUT /internal/ordering/settings`).
//! Each order's status and history are projected from payment's, fulfilment's and
//! shipping's events (consumers [`PAYMENTS_CONSUMER`], [`FULFILMENT_CONSUMER`],
//! [`SHIPMENTS_CONSUMER`]; the rules are [`OrderStatusHandler`]'s): `accepted` → `paid`
//! → `ready_for_shipping` → `shipped` (publishes `OrderShipped`), or `cancelled` with a
//! reason (publishes `OrderCancelled`), each exactly once.
//! Product names come from a replica of catalog's events. Replicas apply an event only
//! when its version is newer than what they hold, per field group.
//!
//! Ordering talks to payment and customer only through [`PaymentClient`] and
//! [`CustomerClient`]: the resilient stack ([`ResilientPaymentClient`],
//! [`ResilientCustomerClient`]: a breaker and a bulkhead per target, the deadline sent
//! as a budget, the authorization retried safely under its `Idempotency-Key`), plain
//! HTTP ([`HttpPaymentClient`], [`HttpCustomerClient`]), fakes in tests. The breakers
//! the composition hands over in [`OrderingConfig::breakers`] are shown at
//! `GET /internal/ordering/breakers` (`[{target, state}]`, state `closed`, `open` or
//! `half_open`) and by [`Ordering::breakers`].
//!
//! What ordering must never do: keep an order whose payment was not authorized,
//! authorize twice for one checkout (the payment request id is derived from customer
//! and idempotency key), answer with internals, or read another service's store.

#![forbid(unsafe_code)]

mod checkout;
mod clients;
mod domain;
mod http;
mod prices;
mod replica;
mod status;
mod store;

use std::sync::Arc;
use std::time::Duration;

use agora_auth::{InternalKey, KeySource};
use agora_bus::{BusError, DeliverPolicy, SharedBus};
use agora_messaging::{
    CatchUp, CatchUpHandle, Db, Feed, Subscriber, SubscriberConfig, SubscriberHandle, stream_config,
};
use agora_resilience::{BreakerState, CircuitBreaker};
use agora_service::Core;
use tokio::sync::Mutex;

pub use clients::{
    Authorization, AuthorizationRequest, CustomerClient, CustomerError, CustomerRecord,
    PaymentClient, PaymentError, ResilientCustomerClient, ResilientPaymentClient,
};
pub use domain::{IdempotencyKey, payment_request_id};
pub use http::openapi;
pub use replica::{CustomerReplicaHandler, ProductReplicaHandler};
pub use status::{OrderStatus, OrderStatusHandler};
pub use store::{CustomerData, CustomerReplica, ProductReplica};

/// The event source and the stream of ordering's events.
pub const SOURCE: &str = "ordering";

/// The durable consumer of customer's events (generation 0; see
/// [`Ordering::rebuild_replicas`]).
pub const CUSTOMERS_CONSUMER: &str = "ordering-customers";
/// The durable consumer of catalog's events (generation 0).
pub const PRODUCTS_CONSUMER: &str = "ordering-products";

/// The durable consumer of payment's events (`CustomerBilled`, `PaymentFailed`) for
/// the order status projection (see [`OrderStatusHandler`]).
pub const PAYMENTS_CONSUMER: &str = "ordering-payments";
/// The durable consumer of fulfilment's events (`OrderReadyForShipping`,
/// `FulfilmentFailed`).
pub const FULFILMENT_CONSUMER: &str = "ordering-fulfilment";
/// The durable consumer of shipping's events (`ShipmentDispatched`).
pub const SHIPMENTS_CONSUMER: &str = "ordering-shipments";

/// How ordering runs. Built explicitly by the composition (the `agora` binary).
#[derive(Clone)]
pub struct OrderingConfig {
    /// Its own store: `sqlite://…` or `postgres://…`.
    pub db_url: String,
    pub bus: SharedBus,
    /// Identity's public keys, to verify tokens locally.
    pub keys: Arc<dyn KeySource>,
    /// Authorizes payments (`POST {payment}/internal/payment/authorizations`).
    pub payment: Arc<dyn PaymentClient>,
    /// Fetches customers live in sync mode (`GET {customer}/internal/customers/{id}`).
    pub customer: Arc<dyn CustomerClient>,
    /// The deadline of the authorization call; past it checkout answers 503.
    pub payment_deadline: Duration,
    /// The deadline of the live customer call in sync mode; past it checkout answers 503.
    pub customer_deadline: Duration,
    /// How long a duplicate checkout waits for the answer of the request that holds
    /// its idempotency key before answering 409 with `Retry-After`.
    pub idempotency_wait: Duration,
    /// After how long a pending idempotency claim is considered abandoned (its holder
    /// crashed) and may be taken over by a retry. Longer than any checkout can take.
    pub idempotency_lease: Duration,
    /// The breakers of the clients above (e.g. [`ResilientPaymentClient::breaker`]),
    /// served at `GET /internal/ordering/breakers` for the ops console. Empty by default.
    pub breakers: Vec<CircuitBreaker>,
    /// The deployment's internal-plane key: `/internal/ordering/...` takes only a
    /// service token signed with it. [`OrderingConfig::new`] makes a fresh one, which no
    /// other service holds. (The clients above carry their own credentials.)
    pub internal: InternalKey,
    /// Where a replica rebuild reads the owners' whole history; `None` (the default):
    /// from the bus streams alone, which may no longer hold all of it.
    pub feeds: Option<ReplicaFeeds>,
}

/// The event feeds of the services ordering keeps replicas of (customer's and
/// catalog's `/internal/<service>/events`): a rebuild catches up from them and from the
/// bus at once, the bus from a switch time a little before the rebuild (see
/// [`agora_messaging::CatchUp`]).
#[derive(Clone, Debug)]
pub struct ReplicaFeeds {
    pub customer: Arc<dyn Feed>,
    pub catalog: Arc<dyn Feed>,
}

/// How far before a rebuild its bus consumers start reading: longer than any clock
/// difference between this host and the bus, and than an owner's relay takes from
/// publishing an event to marking it. What both the feed and the bus deliver is applied
/// once (the inbox).
const SWITCH_MARGIN: Duration = Duration::from_secs(60);

impl OrderingConfig {
    /// A config with the default deadlines: payment 2 s, customer 250 ms, duplicates
    /// wait 3 s, claims abandoned after 30 s.
    pub fn new(
        db_url: impl Into<String>,
        bus: SharedBus,
        keys: Arc<dyn KeySource>,
        payment: Arc<dyn PaymentClient>,
        customer: Arc<dyn CustomerClient>,
    ) -> Self {
        Self {
            db_url: db_url.into(),
            bus,
            keys,
            payment,
            customer,
            payment_deadline: Duration::from_secs(2),
            customer_deadline: Duration::from_millis(250),
            idempotency_wait: Duration::from_secs(3),
            idempotency_lease: Duration::from_secs(30),
            breakers: Vec::new(),
            internal: InternalKey::generate(),
            feeds: None,
        }
    }
}

impl std::fmt::Debug for OrderingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the database URL: it may hold a password.
        f.debug_struct("OrderingConfig")
            .field("payment", &self.payment)
            .field("customer", &self.customer)
            .field("payment_deadline", &self.payment_deadline)
            .field("customer_deadline", &self.customer_deadline)
            .field("idempotency_wait", &self.idempotency_wait)
            .field("idempotency_lease", &self.idempotency_lease)
            .field(
                "breakers",
                &self.breakers.iter().map(|b| b.name()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Why ordering could not start (or a store operation failed).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store: {0}")]
    Messaging(#[from] agora_messaging::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("auth: {0}")]
    Auth(#[from] agora_auth::Error),
    #[error("stored {0} is corrupt")]
    Corrupt(&'static str),
    #[error("a concurrent change won")]
    Conflict,
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// Whether the store failed rather than the request (unreachable, busy): a 503.
    pub fn is_store_unavailable(&self) -> bool {
        match self {
            Error::Messaging(error) => error.is_store_unavailable(),
            Error::Database(error) => agora_messaging::is_the_stores(error),
            _ => false,
        }
    }
}

/// The contents of both replicas, ordered by id: compare two of them to check that a
/// replay converges to what live delivery built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaSnapshot {
    pub customers: Vec<CustomerReplica>,
    pub products: Vec<ProductReplica>,
}

/// The running service: routes, outbox relay, replica consumers, token checking.
pub struct Ordering {
    router: axum::Router,
    /// Its store, token checking and outbox relay.
    core: Core,
    replicas: Arc<Mutex<Option<Replicas>>>,
    feeds: Option<ReplicaFeeds>,
    /// Follows a rebuild done by another instance sharing the store.
    follower: Follower,
    statuses: StatusConsumers,
    breakers: Vec<CircuitBreaker>,
}

impl std::fmt::Debug for Ordering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ordering")
            .field("db", self.core.db())
            .finish_non_exhaustive()
    }
}

/// The two replica consumers of one generation, and their catch-up from the owners'
/// feeds while it runs.
#[derive(Debug)]
struct Replicas {
    generation: u64,
    customers: SubscriberHandle,
    products: SubscriberHandle,
    catch_ups: Vec<CatchUpHandle>,
}

impl Replicas {
    /// Joins `generation`: its consumers read the streams from the start, or, when the
    /// generation was made with feeds, from its switch time while the feeds are read.
    async fn start(
        db: &Db,
        bus: &SharedBus,
        generation: u64,
        feeds: Option<&ReplicaFeeds>,
    ) -> Result<Replicas, Error> {
        let (customers, products) = consumer_names(generation);
        let switch = match feeds {
            Some(_) if generation > 0 => store::replica_switch(db).await?,
            _ => None,
        };
        let deliver = switch.map_or(DeliverPolicy::All, DeliverPolicy::FromTime);
        let mut customers_config = SubscriberConfig::on_source(&customers, "customer");
        customers_config.deliver = deliver;
        let mut products_config = SubscriberConfig::on_source(&products, "catalog");
        products_config.deliver = deliver;
        let mut catch_ups = Vec::new();
        if let (Some(feeds), Some(switch)) = (feeds, switch) {
            catch_ups.push(
                CatchUp::new(
                    db,
                    feeds.customer.clone(),
                    &customers,
                    CustomerReplicaHandler,
                    switch,
                )
                .spawn(),
            );
            catch_ups.push(
                CatchUp::new(
                    db,
                    feeds.catalog.clone(),
                    &products,
                    ProductReplicaHandler,
                    switch,
                )
                .spawn(),
            );
        }
        Ok(Replicas {
            generation,
            customers: Subscriber::spawn(db, bus, customers_config, CustomerReplicaHandler).await?,
            products: Subscriber::spawn(db, bus, products_config, ProductReplicaHandler).await?,
            catch_ups,
        })
    }

    async fn shutdown(self) {
        let catch_ups = async {
            for catch_up in self.catch_ups {
                catch_up.shutdown().await;
            }
        };
        tokio::join!(
            self.customers.shutdown(),
            self.products.shutdown(),
            catch_ups
        );
    }
}

/// How often an instance looks whether another one moved the replicas on.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// Watches the replica generation in the store: when another instance rebuilt the
/// replicas (its consumers of the old generation are deleted), this one stops its old
/// consumers and joins the new generation's, within [`FOLLOW_EVERY`].
#[derive(Debug)]
struct Follower {
    stop: tokio::sync::watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Follower {
    fn spawn(
        db: Db,
        bus: SharedBus,
        feeds: Option<ReplicaFeeds>,
        replicas: Arc<Mutex<Option<Replicas>>>,
    ) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(FOLLOW_EVERY) => {}
                    _ = stopped.wait_for(|stop| *stop) => return,
                }
                if let Err(error) = follow(&db, &bus, feeds.as_ref(), &replicas).await {
                    tracing::warn!(%error, "cannot follow the replica generation; trying again");
                }
            }
        });
        Self {
            stop,
            task: Mutex::new(Some(task)),
        }
    }

    async fn stop(&self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

/// Joins the generation in the store if it is past the one running here.
async fn follow(
    db: &Db,
    bus: &SharedBus,
    feeds: Option<&ReplicaFeeds>,
    replicas: &Mutex<Option<Replicas>>,
) -> Result<(), Error> {
    let stored = store::replica_generation(db).await?;
    let mut running = replicas.lock().await;
    if running.as_ref().is_some_and(|r| r.generation >= stored) {
        return Ok(());
    }
    if let Some(old) = running.take() {
        old.shutdown().await;
    }
    *running = Some(Replicas::start(db, bus, stored, feeds).await?);
    tracing::info!(
        generation = stored,
        "replicas rebuilt by another instance: joined"
    );
    Ok(())
}

/// The consumers of the order status projection, one per source.
#[derive(Debug)]
struct StatusConsumers(Vec<SubscriberHandle>);

impl StatusConsumers {
    async fn start(db: &Db, bus: &SharedBus) -> Result<StatusConsumers, Error> {
        let mut handles = Vec::new();
        for (consumer, source) in [
            (PAYMENTS_CONSUMER, "payment"),
            (FULFILMENT_CONSUMER, "fulfilment"),
            (SHIPMENTS_CONSUMER, "shipping"),
        ] {
            let config = SubscriberConfig::on_source(consumer, source);
            handles.push(Subscriber::spawn(db, bus, config, OrderStatusHandler).await?);
        }
        Ok(StatusConsumers(handles))
    }

    async fn shutdown(self) {
        SubscriberHandle::shutdown_all(self.0).await;
    }
}

/// The replica consumers of `generation`: the plain names at 0, then `-g<n>`.
/// Sets [`agora_telemetry::names::ORDERS`] (orders by status, every status listed)
/// and [`agora_telemetry::names::ORDERS_OLDEST_OPEN_AGE`] from `db`, ordering's store:
/// the sampler of `/metrics`. A failed query leaves the gauges as they were.
pub async fn sample_metrics(db: &Db) {
    use agora_telemetry::names;
    use sqlx::Row;
    let counts = sqlx::query("SELECT status, COUNT(*) AS n FROM ordering_orders GROUP BY status")
        .fetch_all(db.pool())
        .await;
    match counts {
        Ok(rows) => {
            let counted: Vec<(String, i64)> = rows
                .iter()
                .filter_map(|row| Some((row.try_get("status").ok()?, row.try_get("n").ok()?)))
                .collect();
            for status in [OrderStatus::PATH.as_slice(), &[OrderStatus::Cancelled]].concat() {
                let n = counted
                    .iter()
                    .find(|(s, _)| s == status.as_str())
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!(names::ORDERS, "status" => status.as_str()).set(n as f64);
            }
        }
        Err(error) => tracing::debug!(%error, "orders by status unknown"),
    }
    let oldest: Result<Option<i64>, _> = sqlx::query_scalar(
        "SELECT MIN(created_at_ms) FROM ordering_orders WHERE status NOT IN ('shipped', 'cancelled')",
    )
    .fetch_one(db.pool())
    .await;
    match oldest {
        Ok(oldest) => {
            let age_ms = oldest.map_or(0, |at| (unix_ms_now() - at).max(0));
            metrics::gauge!(names::ORDERS_OLDEST_OPEN_AGE).set(age_ms as f64 / 1000.0);
        }
        Err(error) => tracing::debug!(%error, "oldest open order unknown"),
    }
}

fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub fn consumer_names(generation: u64) -> (String, String) {
    if generation == 0 {
        (CUSTOMERS_CONSUMER.to_owned(), PRODUCTS_CONSUMER.to_owned())
    } else {
        (
            format!("{CUSTOMERS_CONSUMER}-g{generation}"),
            format!("{PRODUCTS_CONSUMER}-g{generation}"),
        )
    }
}

impl Ordering {
    /// The routes: `/api/ordering/...` and `/internal/ordering/...`.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// The state of each breaker given in [`OrderingConfig::breakers`]: (target, state).
    pub fn breakers(&self) -> Vec<(String, BreakerState)> {
        self.breakers
            .iter()
            .map(|b| (b.name().to_owned(), b.state()))
            .collect()
    }

    /// Its store, for tools and tests.
    pub fn db(&self) -> &Db {
        self.core.db()
    }

    /// Where checkout takes customer data from, as stored.
    pub async fn customer_data(&self) -> Result<CustomerData, Error> {
        store::customer_data(self.core.db()).await
    }

    /// Switches where checkout takes customer data from; every process sharing the
    /// store follows from its next checkout.
    pub async fn set_customer_data(&self, mode: CustomerData) -> Result<(), Error> {
        store::set_customer_data(self.core.db(), mode).await?;
        tracing::info!(
            customer_data = mode.as_str(),
            "customer data setting changed"
        );
        Ok(())
    }

    /// How many orders are stored (for tools and tests).
    pub async fn order_count(&self) -> Result<u64, Error> {
        store::count_orders(self.core.db()).await
    }

    /// The replicas' contents, in a comparable form.
    pub async fn replica_snapshot(&self) -> Result<ReplicaSnapshot, Error> {
        let (customers, products) = store::replica_contents(self.core.db()).await?;
        Ok(ReplicaSnapshot {
            customers,
            products,
        })
    }

    /// The generation of the replica consumers this instance runs (0: the replicas were
    /// never rebuilt in this store); `None` while a failed rebuild left none running.
    pub async fn replica_generation(&self) -> Option<u64> {
        self.replicas.lock().await.as_ref().map(|r| r.generation)
    }

    /// Rebuilds both replicas, once for all the instances sharing the store: moves the
    /// generation on from the one this instance runs and empties the replica tables (one
    /// compare-and-set transaction), then runs consumers of the new generation
    /// (`ordering-customers-g<n>`, `ordering-products-g<n>`), and deletes the old
    /// generation's consumers. With [`OrderingConfig::feeds`], the new generation reads
    /// customer's and catalog's whole history from their feeds while its consumers read
    /// the bus from a minute before the rebuild ([`agora_messaging::CatchUp`]: no gap,
    /// no double, even when the streams no longer hold the oldest events); without,
    /// its consumers deliver everything from the first message the streams hold. An instance that finds the generation
    /// moved by another one meanwhile (both found the store empty at start) rebuilds
    /// nothing: it adopts that generation, whose consumers it joins. Returns the
    /// generation now running. Until they catch up, the replicas are behind (checkouts
    /// may miss an address meanwhile). Instances not rebuilding join the new generation
    /// within a second (they watch the generation in the store).
    pub async fn rebuild_replicas(&self) -> Result<u64, Error> {
        let mut replicas = self.replicas.lock().await;
        let previous = match replicas.take() {
            Some(running) => {
                let generation = running.generation;
                running.shutdown().await;
                generation
            }
            None => store::replica_generation(self.core.db()).await?,
        };
        let switch = self
            .feeds
            .as_ref()
            .map(|_| std::time::SystemTime::now() - SWITCH_MARGIN);
        let won = store::advance_replica_generation(self.core.db(), previous, switch).await?;
        let generation = if won {
            previous + 1
        } else {
            store::replica_generation(self.core.db()).await?
        };
        self.delete_replica_consumers(previous).await;
        *replicas = Some(
            Replicas::start(
                self.core.db(),
                self.core.bus(),
                generation,
                self.feeds.as_ref(),
            )
            .await?,
        );
        if won {
            tracing::info!(
                generation,
                from_feeds = self.feeds.is_some(),
                "replicas rebuilding"
            );
        } else {
            tracing::info!(generation, "replicas rebuilt by another instance: joined");
        }
        Ok(generation)
    }

    /// Deletes the replica consumers of a generation left behind: they would otherwise
    /// keep collecting pending messages nobody reads. Already gone is fine (the instance
    /// that moved the generation on deleted them).
    async fn delete_replica_consumers(&self, generation: u64) {
        let (customers, products) = consumer_names(generation);
        for (source, name) in [("customer", customers), ("catalog", products)] {
            match self
                .core
                .bus()
                .delete_consumer(&stream_config(source).name, &name)
                .await
            {
                Ok(()) | Err(BusError::ConsumerNotFound { .. }) => {}
                Err(error) => {
                    tracing::warn!(%error, consumer = %name, "cannot delete an old replica consumer")
                }
            }
        }
    }

    /// Stops the relay (committed events not yet published go out on the next start),
    /// the replica and status consumers and the revocation consumer.
    pub async fn shutdown(self) {
        self.follower.stop().await;
        let replicas = async {
            if let Some(replicas) = self.replicas.lock().await.take() {
                replicas.shutdown().await;
            }
        };
        self.core
            .shutdown_with(async {
                tokio::join!(self.statuses.shutdown(), replicas);
            })
            .await;
    }
}

impl Ordering {
    /// Sets each product's price in `currency` (publishing `PriceChanged`), unless the
    /// store has prices already: demo data for a new shop. Returns how many were set.
    pub async fn seed_prices(
        &self,
        prices: &[(uuid::Uuid, i64)],
        currency: &str,
    ) -> Result<usize, Error> {
        if !store::prices(self.core.db()).await?.is_empty() {
            return Ok(0);
        }
        let outbox = agora_messaging::Outbox::new(self.core.db());
        let mut set = 0;
        for &(product_id, amount_cents) in prices {
            let price = domain::Price::parse(amount_cents, currency).map_err(|_| {
                Error::Config(format!("invalid demo price {amount_cents} {currency}"))
            })?;
            if let prices::Set::Changed(_) =
                prices::set(self.core.db(), &outbox, product_id, &price).await?
            {
                set += 1;
            }
        }
        tracing::info!(set, "demo prices set");
        Ok(set)
    }
}

/// Opens the store, applies migrations, starts token checking, the replica and status
/// consumers and the outbox relay.
pub async fn build(config: OrderingConfig) -> Result<Ordering, Error> {
    let mut core = Core::open(SOURCE, &config.db_url, &config.bus, store::MIGRATIONS).await?;
    let verifier = core.check_tokens(config.keys.clone()).await?;
    let db = core.db().clone();
    let generation = store::replica_generation(&db).await?;
    let replicas = Arc::new(Mutex::new(Some(
        Replicas::start(&db, &config.bus, generation, config.feeds.as_ref()).await?,
    )));
    let follower = Follower::spawn(
        db.clone(),
        config.bus.clone(),
        config.feeds.clone(),
        replicas.clone(),
    );
    let statuses = StatusConsumers::start(&db, &config.bus).await?;
    core.publish();
    let state = http::State {
        db: db.clone(),
        outbox: agora_messaging::Outbox::new(&db),
        verifier,
        payment: config.payment.clone(),
        customer: config.customer.clone(),
        limits: Arc::new(checkout::Limits {
            payment_deadline: config.payment_deadline,
            customer_deadline: config.customer_deadline,
            idempotency_wait: config.idempotency_wait,
            idempotency_lease: config.idempotency_lease,
        }),
        breakers: config.breakers.clone(),
    };
    tracing::info!("ordering started");
    Ok(Ordering {
        router: http::router(state, &config.internal.service(SOURCE)),
        core,
        follower,
        replicas,
        feeds: config.feeds,
        statuses,
        breakers: config.breakers,
    })
}
