//! The whole shop in one process: the embedded bus, one SQLite file per service under
//! the data directory, each service on its own listener on 127.0.0.1, and the gateway
//! on the public address. Services get their bus, their store and the URLs of what
//! they call, and nothing else: no call between them takes an in-process shortcut.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agora_auth::InternalKey;
use agora_bus::embedded::EmbeddedBus;
use agora_bus::{Bus, SharedBus, StreamConfig};
use agora_gateway::Limits;
use anyhow::Context;

use crate::control::InstanceControl;
use crate::host::{Host, ServeConfig};
use crate::provider::SwitchedProvider;
use crate::runtime::{Running, ServiceEnv, ServiceName, Settings, Started};

/// How long a stopping shop waits for the requests in flight.
const DRAIN: Duration = Duration::from_secs(6);

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
    /// The NATS JetStream servers to run on (comma-separated `nats://` URLs) instead
    /// of the embedded bus.
    pub bus: Option<String>,
    /// Each service's database from this template (`{service}` replaced by its
    /// name: `postgres://…/agora_{service}`) instead of a SQLite file in `data_dir`.
    pub db_template: Option<String>,
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
            bus: None,
            db_template: None,
        }
    }

    /// What every service of this shop shares; the demo data is on.
    fn settings(&self) -> Settings {
        Settings {
            token_ttl: self.token_ttl,
            fulfilment_timeout: self.fulfilment_timeout,
            capture_max_deliveries: self.capture_max_deliveries,
            capture_retry: self.capture_retry,
            orphan_hold: self.orphan_hold,
            limits: self.limits,
            trusted_proxies: self.trusted_proxies.clone(),
            demo: true,
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

/// The running shop. Stop it with [`Shop::shutdown`].
#[derive(Debug)]
pub struct Shop {
    /// The embedded bus, when the shop runs on it (closed last).
    embedded: Option<Arc<EmbeddedBus>>,
    gateway_host: Host,
    /// Every service's own listener (the gateway's excepted).
    hosts: Vec<Host>,
    /// Every service, in start order.
    services: Vec<Box<dyn Running>>,
}

/// What the composition knows while it starts the services one by one.
struct Composition {
    data_dir: PathBuf,
    /// `postgres://…/agora_{service}`, or `None` for a SQLite file per service.
    db_template: Option<String>,
    bus: SharedBus,
    internal: InternalKey,
    hosts: Vec<Host>,
    services: Vec<Box<dyn Running>>,
    /// How the services' own listeners serve: the shop's timeouts, no cap per
    /// address (their clients all come from 127.0.0.1).
    serve: ServeConfig,
}

impl Composition {
    /// The service's own database: from the template, or its SQLite file (created
    /// readable by the owner only).
    fn db_url(&self, service: ServiceName) -> anyhow::Result<String> {
        match &self.db_template {
            Some(template) => Ok(template.replace("{service}", service.as_str())),
            None => sqlite_url(&self.data_dir, service.as_str()),
        }
    }

    /// Serves a started service with its levers on a free port of 127.0.0.1 and
    /// records it. Returns its base URL.
    async fn host(
        &mut self,
        name: ServiceName,
        started: Started,
        control: InstanceControl,
    ) -> anyhow::Result<String> {
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        let plane = self.internal.service(name.as_str());
        let router = control.serve(name.as_str(), started.router, &plane);
        let host = Host::start_with(name.as_str(), local, router, self.serve.clone())
            .await
            .with_context(|| format!("listen for {name}"))?;
        let url = host.url();
        crate::runtime::announce(name, &url, started.running.db());
        self.hosts.push(host);
        self.services.push(started.running);
        Ok(url)
    }
}

impl Shop {
    pub async fn start(config: ShopConfig) -> anyhow::Result<Shop> {
        let data = &config.data_dir;
        crate::secrets::prepare_data_dir(data)?;
        let internal = InternalKey::load_or_create(&data.join(crate::secrets::INTERNAL_KEY_FILE))
            .context("the internal-plane key")?;
        let (bus, embedded): (SharedBus, _) = match &config.bus {
            Some(urls) => (crate::runtime::connect_bus(urls, None).await?, None),
            None => {
                let path = data.join("bus.db");
                crate::secrets::create_private(&path)?;
                let bus = Arc::new(
                    EmbeddedBus::open(&path)
                        .await
                        .with_context(|| format!("open the bus at {}", path.display()))?,
                );
                for stream in service_streams() {
                    bus.ensure_stream(&stream).await?;
                }
                (bus.clone(), Some(bus))
            }
        };
        let mut c = Composition {
            data_dir: data.clone(),
            db_template: config.db_template.clone(),
            bus,
            internal: internal.clone(),
            hosts: Vec::new(),
            services: Vec::new(),
            serve: ServeConfig {
                max_connections_per_client: None,
                ..config.serve.clone()
            },
        };
        let provider = SwitchedProvider::default();
        let env = |c: &Composition, name, bus, peers: &HashMap<ServiceName, String>| {
            Ok::<_, anyhow::Error>(ServiceEnv {
                db_url: c.db_url(name)?,
                bus,
                internal: internal.clone(),
                peers: peers.clone(),
                admin_password: config.admin_password.clone(),
                secret_dir: data.clone(),
                settings: config.settings(),
                provider: provider.clone(),
            })
        };

        let mut peers = HashMap::new();
        for name in ServiceName::ALL {
            if name == ServiceName::Gateway {
                continue;
            }
            // Each service's levers, driven by the gateway over its internal API.
            let control =
                InstanceControl::new((name == ServiceName::Payment).then(|| provider.clone()));
            let bus = control.bus(c.bus.clone());
            let started = crate::runtime::start(name, env(&c, name, bus, &peers)?)
                .await
                .with_context(|| format!("start {name}"))?;
            let url = c.host(name, started, control).await?;
            peers.insert(name, url);
        }

        let gateway_env = env(&c, ServiceName::Gateway, c.bus.clone(), &peers)?;
        let gateway = crate::runtime::start(ServiceName::Gateway, gateway_env)
            .await
            .context("start the gateway")?;
        let mut serve = config.serve.clone();
        serve
            .uncapped
            .extend(config.trusted_proxies.iter().map(IpAddr::to_canonical));
        let gateway_host = Host::start_with("gateway", config.addr, gateway.router, serve)
            .await
            .with_context(|| format!("listen on {}", config.addr))?;
        crate::runtime::announce(
            ServiceName::Gateway,
            &gateway_host.url(),
            gateway.running.db(),
        );
        c.services.push(gateway.running);

        Ok(Shop {
            embedded,
            gateway_host,
            hosts: c.hosts,
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

    /// Where a service listens (`http://127.0.0.1:<port>`), by name.
    pub fn service_url(&self, name: &str) -> Option<String> {
        let host = self.hosts.iter().find(|host| host.name() == name)?;
        Some(host.url())
    }

    /// Stops taking requests, then stops every service's relays and consumers (the
    /// last started first), then closes the bus.
    pub async fn shutdown(mut self) {
        self.gateway_host.drain(DRAIN).await;
        futures::future::join_all(self.hosts.iter_mut().map(|host| host.drain(DRAIN))).await;
        // Their HTTP is down: the services stop side by side (each lets its handlers
        // finish their batches, then flushes its relay).
        futures::future::join_all(self.services.drain(..).map(Running::stop)).await;
        if let Some(bus) = self.embedded {
            bus.close().await;
        }
    }
}

/// `sqlite://<data_dir>/<service>.db`, the file created first readable by its owner
/// only (SQLite gives the WAL and shared-memory files the database file's mode).
fn sqlite_url(data_dir: &Path, service: &str) -> anyhow::Result<String> {
    let path = data_dir.join(format!("{service}.db"));
    crate::secrets::create_private(&path)?;
    Ok(format!("sqlite://{}", path.display()))
}
