//! The whole shop in one process: the embedded bus, one SQLite file per service under
//! the data directory, each service on its own listener on 127.0.0.1, and the gateway
//! on the public address. Services get their bus, their store and the URLs of what
//! they call, and nothing else: no call between them takes an in-process shortcut.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agora_auth::{HttpKeySource, InternalKey, KeySource};
use agora_bus::embedded::EmbeddedBus;
use agora_bus::{Bus, BusSwitch, SharedBus, StreamConfig, SwitchedBus};
use agora_gateway::{
    Chaos, ChaosMode, ControlError, Gateway, GatewayConfig, Limits, OpsControl, Upstream,
};
use agora_identity::{Identity, IdentityConfig};
use agora_resilience::ClientConfig;
use anyhow::Context;

use crate::host::{ChaosCell, Host, ServeConfig, service_router};
use crate::provider::{PROVIDER, SwitchedProvider};

/// How the shop runs.
#[derive(Debug, Clone)]
pub struct ShopConfig {
    /// Every service's SQLite file and the bus live here.
    pub data_dir: PathBuf,
    /// The gateway's public address (`127.0.0.1:8080`; port 0 picks a free one).
    pub addr: SocketAddr,
    /// The admin's password on first start; generated (and written to
    /// `<data_dir>/admin-password`) when `None`.
    pub admin_password: Option<String>,
    pub limits: Limits,
    /// How the gateway's public listener treats connections (header and idle
    /// timeouts, connections per client address). The services' own listeners get
    /// the same timeouts and no cap per address.
    pub serve: ServeConfig,
    /// Reverse proxies in front of the gateway, whose `Forwarded` / `X-Forwarded-For`
    /// name the client for the per-address limits (and whose connections are not
    /// capped per address).
    pub trusted_proxies: Vec<IpAddr>,
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
}

impl ShopConfig {
    /// Defaults: the gateway on 127.0.0.1:8080, default limits, 15-minute tokens.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_password: None,
            limits: Limits::default(),
            serve: ServeConfig::default(),
            trusted_proxies: Vec::new(),
            token_ttl: agora_auth::MAX_TOKEN_TTL,
            fulfilment_timeout: agora_fulfilment::DEFAULT_TIMEOUT,
            capture_max_deliveries: agora_payment::DEFAULT_CAPTURE_MAX_DELIVERIES,
            capture_retry: agora_payment::DEFAULT_CAPTURE_RETRY,
            orphan_hold: agora_payment::DEFAULT_ORPHAN_HOLD,
        }
    }
}

/// Every owning service's stream: `ORDERING` takes `ordering.>`, and so on.
pub fn service_streams() -> Vec<StreamConfig> {
    let mut sources: Vec<&str> = agora_contracts::ALL_TYPES.iter().map(|(s, _)| *s).collect();
    sources.dedup();
    sources
        .into_iter()
        .map(agora_messaging::stream_config)
        .collect()
}

/// A running service, whatever its type, as the shop stops it.
trait Running: Send + std::fmt::Debug {
    fn stop(self: Box<Self>) -> futures::future::BoxFuture<'static, ()>;
}

macro_rules! running {
    ($($service:ty),* $(,)?) => {$(
        impl Running for $service {
            fn stop(self: Box<Self>) -> futures::future::BoxFuture<'static, ()> {
                Box::pin(async move { (*self).shutdown().await })
            }
        }
    )*};
}
running!(
    Identity,
    Gateway,
    agora_customer::Customer,
    agora_catalog::Catalog,
    agora_payment::Payment,
    agora_ordering::Ordering,
    agora_inventory::Inventory,
    agora_fulfilment::Fulfilment,
    agora_shipping::Shipping,
    agora_notification::Notification,
);

/// The running shop. Stop it with [`Shop::shutdown`].
#[derive(Debug)]
pub struct Shop {
    bus: Arc<EmbeddedBus>,
    /// The services' listeners, chaos and bus switches.
    control: Arc<ShopControl>,
    gateway_host: Host,
    /// Every service, in start order.
    services: Vec<Box<dyn Running>>,
}

/// One service's levers: its listener, its chaos, its bus switch.
#[derive(Debug)]
struct Lever {
    host: Host,
    chaos: ChaosCell,
    switch: BusSwitch,
}

/// The levers of every service and of the bus: what the ops API drives.
#[derive(Debug)]
pub struct ShopControl {
    levers: tokio::sync::Mutex<Vec<Lever>>,
    /// Read without the lock, for status pages.
    chaos: Vec<(String, ChaosCell)>,
    bus: BusSwitch,
    /// The simulated payment provider: `ok` or `down`.
    provider: SwitchedProvider,
}

impl ShopControl {
    async fn with_host<T>(&self, name: &str, f: impl AsyncFnOnce(&mut Lever) -> T) -> Option<T> {
        let mut levers = self.levers.lock().await;
        let lever = levers.iter_mut().find(|l| l.host.name() == name)?;
        Some(f(lever).await)
    }
}

#[async_trait::async_trait]
impl OpsControl for ShopControl {
    async fn set_chaos(&self, service: &str, chaos: Chaos) -> Result<(), ControlError> {
        if service == PROVIDER {
            return match chaos.mode {
                ChaosMode::Ok | ChaosMode::Down => {
                    self.provider.set_down(chaos.mode == ChaosMode::Down);
                    Ok(())
                }
                _ => Err(ControlError::Unsupported(
                    "the payment provider can only be ok or down".into(),
                )),
            };
        }
        let applied = self
            .with_host(service, async |lever: &mut Lever| {
                if chaos.mode == ChaosMode::Down {
                    lever.switch.pause();
                    lever.host.stop().await;
                } else {
                    lever.host.resume().await?;
                    lever.switch.resume();
                }
                lever.chaos.set(chaos);
                Ok::<(), std::io::Error>(())
            })
            .await;
        match applied {
            None => Err(ControlError::UnknownService(service.to_owned())),
            Some(Err(error)) => Err(ControlError::Failed(format!(
                "cannot listen again for {service}: {error}"
            ))),
            Some(Ok(())) => Ok(()),
        }
    }

    fn chaos(&self, service: &str) -> Option<Chaos> {
        if service == PROVIDER {
            let mode = if self.provider.is_down() {
                ChaosMode::Down
            } else {
                ChaosMode::Ok
            };
            return Some(Chaos { mode, ..Chaos::OK });
        }
        self.chaos
            .iter()
            .find(|(name, _)| name == service)
            .map(|(_, cell)| cell.get())
    }

    fn set_bus_paused(&self, paused: bool) {
        if paused {
            self.bus.pause();
        } else {
            self.bus.resume();
        }
    }

    fn bus_paused(&self) -> bool {
        self.bus.is_paused()
    }
}

/// What the composition knows while it starts the services one by one.
struct Composition {
    data_dir: PathBuf,
    bus: SharedBus,
    bus_switch: BusSwitch,
    levers: Vec<Lever>,
    services: Vec<Box<dyn Running>>,
    upstreams: Vec<Upstream>,
    docs: Vec<utoipa::openapi::OpenApi>,
    /// How the services' own listeners serve: the shop's timeouts, no cap per
    /// address (their clients all come from 127.0.0.1).
    serve: ServeConfig,
}

impl Composition {
    /// The service's own SQLite file (created readable by the owner only).
    fn db_url(&self, service: &str) -> anyhow::Result<String> {
        sqlite_url(&self.data_dir, service)
    }

    /// The bus as a service sees it: behind the shop's switch and its own, so that
    /// pausing the bus or taking the service down cuts it off.
    fn bus_for(&self, service: &str) -> (SharedBus, BusSwitch) {
        let own = BusSwitch::new();
        tracing::debug!(service, "bus view");
        let view = SwitchedBus::new(self.bus.clone(), vec![self.bus_switch.clone(), own.clone()]);
        (Arc::new(view), own)
    }

    /// Serves `router` on a free port of 127.0.0.1 and records the service; `prefix`
    /// is its public path prefix, if it has public routes. Returns its base URL.
    async fn host(
        &mut self,
        name: &str,
        prefix: Option<&str>,
        router: axum::Router,
        doc: Option<utoipa::openapi::OpenApi>,
        switch: BusSwitch,
        service: Box<dyn Running>,
    ) -> anyhow::Result<String> {
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        let chaos = ChaosCell::default();
        let host = Host::start_with(
            name,
            local,
            service_router(router, chaos.clone()),
            self.serve.clone(),
        )
        .await
        .with_context(|| format!("listen for {name}"))?;
        let url = host.url();
        self.upstreams.push(match prefix {
            Some(prefix) => Upstream::new(name, prefix, &url),
            None => Upstream::internal(name, &url),
        });
        self.docs.extend(doc);
        self.levers.push(Lever {
            host,
            chaos,
            switch,
        });
        self.services.push(service);
        Ok(url)
    }
}

impl Shop {
    pub async fn start(config: ShopConfig) -> anyhow::Result<Shop> {
        let data = &config.data_dir;
        crate::secrets::prepare_data_dir(data)?;
        let internal = InternalKey::load_or_create(&data.join(crate::secrets::INTERNAL_KEY_FILE))
            .context("the internal-plane key")?;
        let bus_path = data.join("bus.db");
        crate::secrets::create_private(&bus_path)?;
        let bus = Arc::new(
            EmbeddedBus::open(&bus_path)
                .await
                .with_context(|| format!("open the bus at {}", bus_path.display()))?,
        );
        for stream in service_streams() {
            bus.ensure_stream(&stream).await?;
        }
        let mut c = Composition {
            data_dir: data.clone(),
            bus: bus.clone(),
            bus_switch: BusSwitch::new(),
            levers: Vec::new(),
            services: Vec::new(),
            upstreams: Vec::new(),
            docs: Vec::new(),
            serve: ServeConfig {
                max_connections_per_client: None,
                ..config.serve.clone()
            },
        };

        let (bus_view, switch) = c.bus_for("identity");
        let identity = agora_identity::build(IdentityConfig {
            db_url: c.db_url("identity")?,
            bus: bus_view,
            data_dir: data.clone(),
            admin_password: config.admin_password.clone(),
            token_ttl: config.token_ttl,
            sign_in_throttle: agora_identity::SignInThrottle::default(),
            hashing: agora_identity::HashingLimits::default(),
        })
        .await
        .context("start identity")?;
        let router = identity.router();
        let identity_url = c
            .host(
                "identity",
                Some("/api/identity"),
                router,
                Some(agora_identity::openapi()),
                switch,
                Box::new(identity),
            )
            .await?;
        let keys: Arc<dyn KeySource> = Arc::new(HttpKeySource::new(&identity_url)?);

        let (bus_view, switch) = c.bus_for("customer");
        let customer = agora_customer::build(agora_customer::CustomerConfig {
            db_url: c.db_url("customer")?,
            bus: bus_view,
            keys: keys.clone(),
            internal: internal.clone(),
        })
        .await
        .context("start customer")?;
        let router = customer.router();
        let customer_url = c
            .host(
                "customer",
                Some("/api/customers"),
                router,
                Some(agora_customer::openapi()),
                switch,
                Box::new(customer),
            )
            .await?;

        let (bus_view, switch) = c.bus_for("catalog");
        let catalog = agora_catalog::build(agora_catalog::CatalogConfig {
            db_url: c.db_url("catalog")?,
            bus: bus_view,
            keys: keys.clone(),
        })
        .await
        .context("start catalog")?;
        catalog.seed_demo().await.context("demo products")?;
        let router = catalog.router();
        c.host(
            "catalog",
            Some("/api/catalog"),
            router,
            Some(agora_catalog::openapi()),
            switch,
            Box::new(catalog),
        )
        .await?;

        let (bus_view, switch) = c.bus_for("inventory");
        let mut inventory_config =
            agora_inventory::InventoryConfig::new(c.db_url("inventory")?, bus_view, keys.clone());
        inventory_config.internal = internal.clone();
        let inventory = agora_inventory::build(inventory_config)
            .await
            .context("start inventory")?;
        let stock: Vec<(uuid::Uuid, u32)> = agora_catalog::demo_products()
            .iter()
            .map(|p| (p.id, p.stock))
            .collect();
        inventory.seed(&stock).await.context("demo stock")?;
        let router = inventory.router();
        let inventory_url = c
            .host(
                "inventory",
                Some("/api/inventory"),
                router,
                Some(agora_inventory::openapi()),
                switch,
                Box::new(inventory),
            )
            .await?;

        let (bus_view, switch) = c.bus_for("payment");
        let provider = SwitchedProvider::default();
        let mut payment_config =
            agora_payment::PaymentConfig::new(c.db_url("payment")?, bus_view, keys.clone());
        payment_config.provider = Arc::new(provider.clone());
        payment_config.internal = internal.clone();
        payment_config.orphan_hold = config.orphan_hold;
        payment_config.orphan_sweep_interval =
            (config.orphan_hold / 10).clamp(Duration::from_millis(100), Duration::from_secs(60));
        payment_config.capture_max_deliveries = config.capture_max_deliveries;
        payment_config.capture_retry = config.capture_retry;
        let payment = agora_payment::build(payment_config)
            .await
            .context("start payment")?;
        let router = payment.router();
        let payment_url = c
            .host("payment", None, router, None, switch, Box::new(payment))
            .await?;

        // Every sync call through the resilient stack: a breaker and a bulkhead per
        // target, retries of idempotent calls only, the deadline carried along.
        // Payment answers in milliseconds; one attempt may take 500 ms, a checkout's
        // whole authorization (retry included) 900 ms, so that a slow payment is a
        // 503 within a second and counts against its breaker.
        // Each call carries a service token of ordering's for its target.
        let ordering_plane = internal.service(agora_ordering::SOURCE);
        let payment_client = agora_ordering::ResilientPaymentClient::over(
            agora_resilience::client(
                "payment",
                &payment_url,
                ClientConfig {
                    timeout: Duration::from_millis(500),
                    ..ClientConfig::default()
                },
            )?
            .with_credentials(ordering_plane.credentials_for("payment")),
            Duration::from_millis(900),
        );
        let customer_client = agora_ordering::ResilientCustomerClient::over(
            agora_resilience::client("customer", &customer_url, ClientConfig::default())?
                .with_credentials(ordering_plane.credentials_for("customer")),
            Duration::from_millis(250),
        );
        let (bus_view, switch) = c.bus_for("ordering");
        let mut ordering_config = agora_ordering::OrderingConfig::new(
            c.db_url("ordering")?,
            bus_view,
            keys.clone(),
            Arc::new(payment_client.clone()),
            Arc::new(customer_client.clone()),
        );
        ordering_config.payment_deadline = Duration::from_millis(900);
        ordering_config.internal = internal.clone();
        ordering_config.breakers = vec![
            payment_client.breaker().clone(),
            customer_client.breaker().clone(),
        ];
        let ordering = agora_ordering::build(ordering_config)
            .await
            .context("start ordering")?;
        rebuild_if_empty(&ordering, &bus).await?;
        let router = ordering.router();
        let ordering_url = c
            .host(
                "ordering",
                Some("/api/ordering"),
                router,
                Some(agora_ordering::openapi()),
                switch,
                Box::new(ordering),
            )
            .await?;

        let (bus_view, switch) = c.bus_for("fulfilment");
        let fulfilment = agora_fulfilment::build(agora_fulfilment::FulfilmentConfig {
            db_url: c.db_url("fulfilment")?,
            bus: bus_view,
            keys: keys.clone(),
            payment_url: payment_url.clone(),
            inventory_url: inventory_url.clone(),
            timeout: config.fulfilment_timeout,
            internal: internal.clone(),
        })
        .await
        .context("start fulfilment")?;
        let router = fulfilment.router();
        c.host(
            "fulfilment",
            None,
            router,
            None,
            switch,
            Box::new(fulfilment),
        )
        .await?;

        let (bus_view, switch) = c.bus_for("shipping");
        let shipping = agora_shipping::build(agora_shipping::ShippingConfig::new(
            c.db_url("shipping")?,
            bus_view,
            keys.clone(),
        ))
        .await
        .context("start shipping")?;
        let router = shipping.router();
        c.host(
            "shipping",
            Some("/api/shipping"),
            router,
            Some(agora_shipping::openapi()),
            switch,
            Box::new(shipping),
        )
        .await?;

        let (bus_view, switch) = c.bus_for("notification");
        let notification = agora_notification::build(agora_notification::NotificationConfig::new(
            c.db_url("notification")?,
            bus_view,
            keys.clone(),
        ))
        .await
        .context("start notification")?;
        let router = notification.router();
        c.host(
            "notification",
            Some("/api/notifications"),
            router,
            Some(agora_notification::openapi()),
            switch,
            Box::new(notification),
        )
        .await?;

        match admin_password(&config) {
            Some(password) => {
                let targets = crate::demo::DemoTargets {
                    identity: &identity_url,
                    ordering: &ordering_url,
                };
                crate::demo::seed(targets, &password)
                    .await
                    .context("demo prices and stock")?;
            }
            None => tracing::warn!("no admin password known: demo prices not set"),
        }

        let control = Arc::new(ShopControl {
            chaos: c
                .levers
                .iter()
                .map(|l| (l.host.name().to_owned(), l.chaos.clone()))
                .collect(),
            levers: tokio::sync::Mutex::new(std::mem::take(&mut c.levers)),
            bus: c.bus_switch.clone(),
            provider,
        });
        let gateway_bus: SharedBus =
            Arc::new(SwitchedBus::new(c.bus.clone(), vec![c.bus_switch.clone()]));
        let mut gateway_config = GatewayConfig::new(c.db_url("gateway")?, gateway_bus, keys);
        gateway_config.upstreams = c.upstreams.clone();
        gateway_config.service_docs = std::mem::take(&mut c.docs);
        gateway_config.limits = config.limits;
        gateway_config.trusted_proxies = config.trusted_proxies.clone();
        gateway_config.control = Some(control.clone());
        gateway_config.internal = internal;
        let gateway = agora_gateway::build(gateway_config)
            .await
            .context("start the gateway")?;
        let mut serve = config.serve.clone();
        serve
            .uncapped
            .extend(config.trusted_proxies.iter().map(IpAddr::to_canonical));
        let gateway_host = Host::start_with("gateway", config.addr, gateway.router(), serve)
            .await
            .with_context(|| format!("listen on {}", config.addr))?;
        c.services.push(Box::new(gateway));

        Ok(Shop {
            bus,
            control,
            gateway_host,
            services: c.services,
        })
    }

    /// The public base URL (the gateway's).
    pub fn url(&self) -> String {
        self.gateway_host.url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.gateway_host.addr()
    }

    /// The ops levers (what `/api/ops/...` drives), for tools and tests.
    pub fn control(&self) -> &ShopControl {
        &self.control
    }

    /// Where a service listens (`http://127.0.0.1:<port>`), by name.
    pub async fn service_url(&self, name: &str) -> Option<String> {
        self.control
            .with_host(name, async |lever: &mut Lever| lever.host.url())
            .await
    }

    /// Stops taking requests, then stops every service's relays and consumers (the
    /// last started first), then closes the bus.
    pub async fn shutdown(mut self) {
        self.gateway_host.stop().await;
        for lever in self.control.levers.lock().await.iter_mut() {
            lever.host.stop().await;
        }
        while let Some(service) = self.services.pop() {
            service.stop().await;
        }
        self.bus.close().await;
    }
}

/// Ordering's replicas are rebuilt from the bus history when its store has none but
/// the bus has events they are made of (a new or replaced ordering store).
async fn rebuild_if_empty(
    ordering: &agora_ordering::Ordering,
    bus: &EmbeddedBus,
) -> anyhow::Result<()> {
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
    if history > 0 {
        let generation = ordering.rebuild_replicas().await?;
        tracing::info!(
            generation,
            "ordering's replica store was empty: rebuilt from the bus"
        );
    }
    Ok(())
}

/// The admin's password: the configured one, or the one identity generated on first
/// start.
fn admin_password(config: &ShopConfig) -> Option<String> {
    config.admin_password.clone().or_else(|| {
        let path = config.data_dir.join(agora_identity::ADMIN_PASSWORD_FILE);
        std::fs::read_to_string(path)
            .ok()
            .map(|p| p.trim().to_owned())
    })
}

/// `sqlite://<data_dir>/<service>.db`, the file created first readable by its owner
/// only (SQLite gives the WAL and shared-memory files the database file's mode).
fn sqlite_url(data_dir: &Path, service: &str) -> anyhow::Result<String> {
    let path = data_dir.join(format!("{service}.db"));
    crate::secrets::create_private(&path)?;
    Ok(format!("sqlite://{}", path.display()))
}
