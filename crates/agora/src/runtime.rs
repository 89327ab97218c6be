//! One service runtime for `agora up` and `agora run`: every service is made from a
//! [`ServiceEnv`] by [`start`], whoever hosts it. `agora up` builds the ten
//! environments in one process (the embedded bus behind switches, a SQLite file each);
//! `agora run SERVICE` builds one from the `AGORA_*` variables. Either way a service
//! gets its store, the bus, the deployment's internal key and the URLs of what it calls,
//! and nothing else: no in-process handle crosses a service boundary.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agora_auth::{HttpKeySource, InternalKey, KeySource};
use agora_bus::SharedBus;
use agora_bus::nats::{NatsBus, NatsOptions};
use agora_gateway::{Limits, Upstream};
use agora_resilience::ClientConfig;
use anyhow::{Context, bail};

use crate::feed::HttpFeed;
use crate::provider::SwitchedProvider;

/// The services, in the order a shop starts them (each after those it calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum ServiceName {
    Identity,
    Customer,
    Catalog,
    Inventory,
    Payment,
    Ordering,
    Fulfilment,
    Shipping,
    Notification,
    Gateway,
}

/// What the hosts need to know of one service: one row per service, in [`SERVICES`].
struct Row {
    name: &'static str,
    /// The public path prefix the gateway forwards to it, if it has public routes.
    public_prefix: Option<&'static str>,
    /// The OpenAPI document of its public routes, if it has any.
    openapi: Option<fn() -> utoipa::openapi::OpenApi>,
    /// The services it calls over HTTP.
    calls: &'static [ServiceName],
}

/// Every service's row, in [`ServiceName::ALL`]'s order (a test checks it).
const SERVICES: [Row; 10] = {
    use ServiceName::*;
    [
        Row {
            name: "identity",
            public_prefix: Some("/api/identity"),
            openapi: Some(agora_identity::openapi),
            calls: &[],
        },
        Row {
            name: "customer",
            public_prefix: Some("/api/customers"),
            openapi: Some(agora_customer::openapi),
            calls: &[Identity],
        },
        Row {
            name: "catalog",
            public_prefix: Some("/api/catalog"),
            openapi: Some(agora_catalog::openapi),
            calls: &[Identity],
        },
        Row {
            name: "inventory",
            public_prefix: Some("/api/inventory"),
            openapi: Some(agora_inventory::openapi),
            calls: &[Identity],
        },
        Row {
            name: "payment",
            public_prefix: None,
            openapi: None,
            calls: &[Identity],
        },
        Row {
            name: "ordering",
            public_prefix: Some("/api/ordering"),
            openapi: Some(agora_ordering::openapi),
            // Customer and catalog also for their event feeds (replica rebuilds).
            calls: &[Identity, Payment, Customer, Catalog],
        },
        Row {
            name: "fulfilment",
            public_prefix: None,
            openapi: None,
            calls: &[Identity, Payment, Inventory],
        },
        Row {
            name: "shipping",
            public_prefix: Some("/api/shipping"),
            openapi: Some(agora_shipping::openapi),
            calls: &[Identity],
        },
        Row {
            name: "notification",
            public_prefix: Some("/api/notifications"),
            openapi: Some(agora_notification::openapi),
            calls: &[Identity],
        },
        Row {
            name: "gateway",
            public_prefix: None,
            openapi: None,
            calls: &[
                Identity,
                Customer,
                Catalog,
                Inventory,
                Payment,
                Ordering,
                Fulfilment,
                Shipping,
                Notification,
            ],
        },
    ]
};

impl ServiceName {
    /// Every service, in start order.
    pub const ALL: [ServiceName; 10] = [
        ServiceName::Identity,
        ServiceName::Customer,
        ServiceName::Catalog,
        ServiceName::Inventory,
        ServiceName::Payment,
        ServiceName::Ordering,
        ServiceName::Fulfilment,
        ServiceName::Shipping,
        ServiceName::Notification,
        ServiceName::Gateway,
    ];

    fn row(self) -> &'static Row {
        &SERVICES[self as usize]
    }

    pub fn as_str(self) -> &'static str {
        self.row().name
    }

    /// The public path prefix the gateway forwards to it, if it has public routes.
    pub fn public_prefix(self) -> Option<&'static str> {
        self.row().public_prefix
    }

    /// The OpenAPI document of its public routes, if it has any.
    pub fn openapi(self) -> Option<utoipa::openapi::OpenApi> {
        self.row().openapi.map(|document| document())
    }

    /// The services it calls over HTTP (identity for its keys, and its synchronous
    /// dependencies): `agora run` wants an `AGORA_URL_<NAME>` for each.
    pub fn calls(self) -> &'static [ServiceName] {
        self.row().calls
    }

    /// The name of the variable that holds its URLs: `AGORA_URL_ORDERING`.
    pub fn url_variable(self) -> String {
        format!("AGORA_URL_{}", self.as_str().to_ascii_uppercase())
    }
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the whole deployment shares, whoever hosts the services: the flags of
/// `agora up`, the `AGORA_*` variables of `agora run`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long access tokens live (at most 15 minutes).
    pub token_ttl: Duration,
    /// How long an order may wait for its payment and stock before fulfilment gives up
    /// and compensates.
    pub fulfilment_timeout: Duration,
    /// Deliveries of an `OrderAccepted` payment tries to capture before it goes to the
    /// dead letters (the provider not answering), and the wait between them.
    pub capture_max_deliveries: u32,
    pub capture_retry: agora_messaging::Backoff,
    /// An authorization whose order was never accepted is voided after this long.
    pub orphan_hold: Duration,
    /// The gateway's rate limits.
    pub limits: Limits,
    /// Reverse proxies in front of the gateway.
    pub trusted_proxies: Vec<IpAddr>,
    /// Whether the catalog, inventory and ordering add the demo products, their stock
    /// and their prices to an empty store.
    pub demo: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            token_ttl: agora_auth::MAX_TOKEN_TTL,
            fulfilment_timeout: agora_fulfilment::DEFAULT_TIMEOUT,
            capture_max_deliveries: agora_payment::DEFAULT_CAPTURE_MAX_DELIVERIES,
            capture_retry: agora_payment::DEFAULT_CAPTURE_RETRY,
            orphan_hold: agora_payment::DEFAULT_ORPHAN_HOLD,
            limits: Limits::default(),
            trusted_proxies: Vec::new(),
            demo: false,
        }
    }
}

/// Everything one service is made of.
pub struct ServiceEnv {
    /// Its own store: `sqlite://…` or `postgres://…`.
    pub db_url: String,
    pub bus: SharedBus,
    /// The deployment's internal-plane key.
    pub internal: InternalKey,
    /// The base URL of each service it calls ([`ServiceName::calls`]); several,
    /// comma-separated, for a service with several instances (the clients balance
    /// them).
    pub peers: HashMap<ServiceName, String>,
    /// Identity: the admin's password on first start (generated when `None`)...
    pub admin_password: Option<String>,
    /// ...and where a generated one is written.
    pub secret_dir: PathBuf,
    pub settings: Settings,
    /// Payment: the simulated provider (the one the hosting shop's ops can switch).
    pub provider: SwitchedProvider,
}

impl std::fmt::Debug for ServiceEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the database URL (it may hold a password) nor the admin password.
        f.debug_struct("ServiceEnv")
            .field("peers", &self.peers)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ServiceEnv {
    fn peer(&self, name: ServiceName) -> anyhow::Result<&str> {
        self.peers
            .get(&name)
            .map(String::as_str)
            .with_context(|| format!("no URL for {name} ({})", name.url_variable()))
    }

    /// Identity's signing keys, fetched as `caller` (its metrics and breaker are
    /// `caller`'s).
    fn keys(&self, caller: ServiceName) -> anyhow::Result<Arc<dyn KeySource>> {
        Ok(Arc::new(HttpKeySource::for_caller(
            self.peer(ServiceName::Identity)?,
            caller.as_str(),
        )?))
    }
}

/// A running service, whatever its type, as its host stops it.
pub trait Running: Send + std::fmt::Debug {
    fn stop(self: Box<Self>) -> futures::future::BoxFuture<'static, ()>;
    /// Its store (its outbox is its event feed).
    fn db(&self) -> &agora_messaging::Db;
}

macro_rules! running {
    ($($service:ty),* $(,)?) => {$(
        impl Running for $service {
            fn stop(self: Box<Self>) -> futures::future::BoxFuture<'static, ()> {
                Box::pin(async move { (*self).shutdown().await })
            }

            fn db(&self) -> &agora_messaging::Db {
                <$service>::db(self)
            }
        }
    )*};
}
running!(
    agora_identity::Identity,
    agora_gateway::Gateway,
    agora_customer::Customer,
    agora_catalog::Catalog,
    agora_payment::Payment,
    agora_ordering::Ordering,
    agora_inventory::Inventory,
    agora_fulfilment::Fulfilment,
    agora_shipping::Shipping,
    agora_notification::Notification,
);

/// A started service: its routes (to be served) and the handle that stops it.
#[derive(Debug)]
pub struct Started {
    pub router: axum::Router,
    pub running: Box<dyn Running>,
}

impl Started {
    fn of<S: Running + 'static>(router: axum::Router, service: S) -> Self {
        Self {
            router,
            running: Box::new(service),
        }
    }
}

/// Makes `name` from `env`: opens its store, applies its migrations, starts its
/// consumers and relay, and returns its routes, with its event feed
/// (`/internal/<name>/events`, see [`crate::feed`]; not the gateway's, which publishes
/// nothing and listens in public).
pub async fn start(name: ServiceName, env: ServiceEnv) -> anyhow::Result<Started> {
    // Before any client or consumer takes its metric handles.
    agora_telemetry::install();
    let mut started = match name {
        ServiceName::Identity => {
            let identity = agora_identity::build(agora_identity::IdentityConfig {
                db_url: env.db_url.clone(),
                bus: env.bus.clone(),
                data_dir: env.secret_dir.clone(),
                admin_password: env.admin_password.clone(),
                token_ttl: env.settings.token_ttl,
                sign_in_throttle: agora_identity::SignInThrottle::default(),
                hashing: agora_identity::HashingLimits::default(),
            })
            .await?;
            Started::of(identity.router(), identity)
        }
        ServiceName::Customer => {
            let customer = agora_customer::build(agora_customer::CustomerConfig {
                db_url: env.db_url.clone(),
                bus: env.bus.clone(),
                keys: env.keys(name)?,
                internal: env.internal.clone(),
            })
            .await?;
            Started::of(customer.router(), customer)
        }
        ServiceName::Catalog => {
            let catalog = agora_catalog::build(agora_catalog::CatalogConfig {
                db_url: env.db_url.clone(),
                bus: env.bus.clone(),
                keys: env.keys(name)?,
            })
            .await?;
            if env.settings.demo {
                catalog.seed_demo().await.context("demo products")?;
            }
            Started::of(catalog.router(), catalog)
        }
        ServiceName::Inventory => {
            let mut config = agora_inventory::InventoryConfig::new(
                env.db_url.clone(),
                env.bus.clone(),
                env.keys(name)?,
            );
            config.internal = env.internal.clone();
            let inventory = agora_inventory::build(config).await?;
            if env.settings.demo {
                let stock: Vec<(uuid::Uuid, u32)> = agora_catalog::demo_products()
                    .iter()
                    .map(|p| (p.id, p.stock))
                    .collect();
                inventory.seed(&stock).await.context("demo stock")?;
            }
            Started::of(inventory.router(), inventory)
        }
        ServiceName::Payment => {
            let s = &env.settings;
            let mut config = agora_payment::PaymentConfig::new(
                env.db_url.clone(),
                env.bus.clone(),
                env.keys(name)?,
            );
            config.provider = Arc::new(env.provider.clone());
            config.internal = env.internal.clone();
            config.orphan_hold = s.orphan_hold;
            config.orphan_sweep_interval =
                (s.orphan_hold / 10).clamp(Duration::from_millis(100), Duration::from_secs(60));
            config.capture_max_deliveries = s.capture_max_deliveries;
            config.capture_retry = s.capture_retry;
            let payment = agora_payment::build(config).await?;
            Started::of(payment.router(), payment)
        }
        ServiceName::Ordering => start_ordering(&env).await?,
        ServiceName::Fulfilment => {
            let fulfilment = agora_fulfilment::build(agora_fulfilment::FulfilmentConfig {
                db_url: env.db_url.clone(),
                bus: env.bus.clone(),
                keys: env.keys(name)?,
                payment_url: env.peer(ServiceName::Payment)?.to_owned(),
                inventory_url: env.peer(ServiceName::Inventory)?.to_owned(),
                timeout: env.settings.fulfilment_timeout,
                internal: env.internal.clone(),
            })
            .await?;
            Started::of(fulfilment.router(), fulfilment)
        }
        ServiceName::Shipping => {
            let shipping = agora_shipping::build(agora_shipping::ShippingConfig::new(
                env.db_url.clone(),
                env.bus.clone(),
                env.keys(name)?,
            ))
            .await?;
            Started::of(shipping.router(), shipping)
        }
        ServiceName::Notification => {
            let notification =
                agora_notification::build(agora_notification::NotificationConfig::new(
                    env.db_url.clone(),
                    env.bus.clone(),
                    env.keys(name)?,
                ))
                .await?;
            Started::of(notification.router(), notification)
        }
        ServiceName::Gateway => {
            let mut config = agora_gateway::GatewayConfig::new(
                env.db_url.clone(),
                env.bus.clone(),
                env.keys(name)?,
            );
            for &upstream in name.calls() {
                let url = env.peer(upstream)?;
                config.upstreams.push(match upstream.public_prefix() {
                    Some(prefix) => Upstream::new(upstream.as_str(), prefix, url),
                    None => Upstream::internal(upstream.as_str(), url),
                });
                config.service_docs.extend(upstream.openapi());
            }
            config.limits = env.settings.limits;
            config.trusted_proxies = env.settings.trusted_proxies.clone();
            config.internal = env.internal.clone();
            let gateway = agora_gateway::build(config).await?;
            Started::of(gateway.router(), gateway)
        }
    };
    // The gateway publishes nothing, and its listener is the public one: no
    // `/internal` route of its own there.
    if name != ServiceName::Gateway {
        let feed = crate::feed::routes(
            name.as_str(),
            started.running.db(),
            &env.internal.service(name.as_str()),
        );
        started.router = started.router.merge(feed);
        // Its own `/metrics` (what `agora run` serves; in `agora up` the gateway's
        // renders the same recorder), and its requests' RED metrics by route template
        // (the gateway records its own in its edge guard).
        started.router = started.router.merge(agora_telemetry::routes()).layer(
            axum::middleware::from_fn_with_state(name.as_str(), agora_telemetry::http::server),
        );
    }
    let samplers = samplers(name, &env.bus, started.running.db());
    started.running = Box::new(Sampled {
        inner: started.running,
        _samplers: samplers,
    });
    Ok(started)
}

/// The gauges read from `name`'s store and the bus when `/metrics` is scraped: its
/// consumers' lag, its outbox backlog, its process managers (fulfilment), its orders
/// (ordering).
fn samplers(
    name: ServiceName,
    bus: &SharedBus,
    db: &agora_messaging::Db,
) -> Vec<agora_telemetry::SamplerGuard> {
    let service = name.as_str();
    let mut samplers = Vec::new();
    let bus = bus.clone();
    samplers.push(agora_telemetry::register_sampler(Arc::new(move || {
        let bus = bus.clone();
        Box::pin(async move { agora_messaging::metrics::sample_consumers(&bus, service).await })
    })));
    if name != ServiceName::Gateway {
        let store = db.clone();
        let processes = name == ServiceName::Fulfilment;
        samplers.push(agora_telemetry::register_sampler(Arc::new(move || {
            let db = store.clone();
            Box::pin(async move {
                agora_messaging::metrics::sample_store(&db, service, processes).await
            })
        })));
    }
    if name == ServiceName::Ordering {
        let store = db.clone();
        samplers.push(agora_telemetry::register_sampler(Arc::new(move || {
            let db = store.clone();
            Box::pin(async move { agora_ordering::sample_metrics(&db).await })
        })));
    }
    samplers
}

/// A running service with its samplers, unregistered when it stops.
#[derive(Debug)]
struct Sampled {
    inner: Box<dyn Running>,
    _samplers: Vec<agora_telemetry::SamplerGuard>,
}

impl Running for Sampled {
    fn stop(self: Box<Self>) -> futures::future::BoxFuture<'static, ()> {
        self.inner.stop()
    }

    fn db(&self) -> &agora_messaging::Db {
        self.inner.db()
    }
}

/// Says on the console that `name` is up: where it listens, on what store, and what
/// its start changed in the store's schema.
pub fn announce(name: ServiceName, url: &str, db: &agora_messaging::Db) {
    let store = match db.backend() {
        agora_messaging::Backend::Sqlite => "sqlite",
        agora_messaging::Backend::Postgres => "postgres",
    };
    let schema = match db.migrations_applied() {
        0 => "schema up to date".to_owned(),
        1 => "1 migration applied".to_owned(),
        n => format!("{n} migrations applied"),
    };
    tracing::info!(target: crate::logging::CONSOLE, "{name}: ready on {url} ({store}, {schema})");
}

/// Ordering, with its synchronous calls to payment and customer through the resilient
/// stack: a breaker and a bulkhead per target, retries of idempotent calls only, the
/// deadline carried along. Payment answers in milliseconds; one attempt may take
/// 500 ms, a checkout's whole authorization (retry included) 900 ms, so that a slow
/// payment is a 503 within a second and counts against its breaker. Each call carries
/// a service token of ordering's for its target.
async fn start_ordering(env: &ServiceEnv) -> anyhow::Result<Started> {
    const PAYMENT_DEADLINE: Duration = Duration::from_millis(900);
    let plane = env.internal.service(agora_ordering::SOURCE);
    let payment = agora_ordering::ResilientPaymentClient::over(
        agora_resilience::client(
            "payment",
            env.peer(ServiceName::Payment)?,
            ClientConfig {
                timeout: Duration::from_millis(500),
                caller: agora_ordering::SOURCE,
                ..ClientConfig::default()
            },
        )?
        .with_credentials(plane.credentials_for("payment")),
        PAYMENT_DEADLINE,
    );
    let customer = agora_ordering::ResilientCustomerClient::over(
        agora_resilience::client(
            "customer",
            env.peer(ServiceName::Customer)?,
            ClientConfig {
                caller: agora_ordering::SOURCE,
                ..ClientConfig::default()
            },
        )?
        .with_credentials(plane.credentials_for("customer")),
        Duration::from_millis(250),
    );
    let mut config = agora_ordering::OrderingConfig::new(
        env.db_url.clone(),
        env.bus.clone(),
        env.keys(ServiceName::Ordering)?,
        Arc::new(payment.clone()),
        Arc::new(customer.clone()),
    );
    config.payment_deadline = PAYMENT_DEADLINE;
    config.internal = env.internal.clone();
    let feeds = agora_ordering::ReplicaFeeds {
        customer: Arc::new(HttpFeed::new(
            agora_ordering::SOURCE,
            "customer",
            env.peer(ServiceName::Customer)?,
            &plane,
        )?),
        catalog: Arc::new(HttpFeed::new(
            agora_ordering::SOURCE,
            "catalog",
            env.peer(ServiceName::Catalog)?,
            &plane,
        )?),
    };
    config.feeds = Some(feeds.clone());
    config.breakers = payment
        .breakers()
        .iter()
        .chain(customer.breakers())
        .cloned()
        .collect();
    let ordering = agora_ordering::build(config).await?;
    rebuild_if_empty(&ordering, &env.bus, &feeds).await?;
    if env.settings.demo {
        let prices: Vec<(uuid::Uuid, i64)> = agora_catalog::demo_products()
            .iter()
            .map(|p| (p.id, p.price_cents))
            .collect();
        ordering
            .seed_prices(&prices, agora_catalog::DEMO_CURRENCY)
            .await
            .context("demo prices")?;
    }
    Ok(Started::of(ordering.router(), ordering))
}

/// Ordering's replicas are rebuilt (from the owners' feeds and the bus) when its store
/// has none but the bus or the feeds have events they are made of (a new or replaced
/// ordering store). Only a store never rebuilt (generation 0): in one that was, empty
/// replicas are still catching up with the generation's consumers, which other
/// instances run too. Instances starting together on a new store rebuild once (see
/// [`agora_ordering::Ordering::rebuild_replicas`]).
async fn rebuild_if_empty(
    ordering: &agora_ordering::Ordering,
    bus: &SharedBus,
    feeds: &agora_ordering::ReplicaFeeds,
) -> anyhow::Result<()> {
    if ordering.replica_generation().await != Some(0) {
        return Ok(());
    }
    let snapshot = ordering.replica_snapshot().await?;
    if !snapshot.customers.is_empty() || !snapshot.products.is_empty() {
        return Ok(());
    }
    let mut history = 0;
    for source in ["customer", "catalog"] {
        history += bus
            .last_sequence(&agora_messaging::stream_config(source).name)
            .await?;
    }
    for (owner, feed) in [("customer", &feeds.customer), ("catalog", &feeds.catalog)] {
        if history > 0 {
            break;
        }
        match feed.page(0).await {
            Ok(page) => history += page.events.len() as u64,
            // Not up yet (`agora run` starts services in any order): its events will
            // come over the bus, as those of a new shop do.
            Err(error) => tracing::warn!(%error, owner, "cannot read the feed at start"),
        }
    }
    if history > 0 {
        let generation = ordering.rebuild_replicas().await?;
        tracing::info!(generation, "ordering's replica store was empty: rebuilding");
    }
    Ok(())
}

/// How long a starting service waits for the bus (a cluster electing its leader, a
/// server still starting) before it gives up.
const BUS_START_WAIT: Duration = Duration::from_secs(60);

/// Connects to the JetStream cluster and makes sure every service's stream exists,
/// waiting (up to a minute, trying again every half second) while the servers are not
/// there yet or the cluster is still forming: services may start before their bus.
pub async fn connect_bus(urls: &str, replicas: Option<usize>) -> anyhow::Result<SharedBus> {
    let members = urls.split(',').filter(|u| !u.trim().is_empty()).count();
    if members == 0 {
        bail!("AGORA_BUS names no server");
    }
    let options = NatsOptions {
        replicas: replicas.unwrap_or(if members >= 3 { 3 } else { 1 }),
        ..NatsOptions::default()
    };
    let deadline = tokio::time::Instant::now() + BUS_START_WAIT;
    loop {
        match try_connect_bus(urls, options).await {
            Ok(bus) => return Ok(bus),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %format!("{error:#}"), "the bus is not ready; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error.context(format!("no bus after {BUS_START_WAIT:?}"))),
        }
    }
}

async fn try_connect_bus(urls: &str, options: NatsOptions) -> anyhow::Result<SharedBus> {
    let bus: SharedBus = Arc::new(
        NatsBus::connect_with(urls, options)
            .await
            .context("connect to the bus")?,
    );
    for stream in crate::shop::service_streams() {
        bus.ensure_stream(&stream)
            .await
            .with_context(|| format!("create the stream {}", stream.name))?;
    }
    Ok(bus)
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    #[test]
    fn the_rows_follow_the_services_in_start_order() {
        assert_eq!(ServiceName::value_variants(), ServiceName::ALL.as_slice());
        for (i, name) in ServiceName::ALL.into_iter().enumerate() {
            let spelled = name.to_possible_value().expect("a value");
            assert_eq!(SERVICES[i].name, spelled.get_name(), "row {i}");
            // Each calls only services started before it.
            for &peer in name.calls() {
                assert!(peer < name, "{name} calls {peer}, started after it");
            }
        }
    }
}
