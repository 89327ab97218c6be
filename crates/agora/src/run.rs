//! `agora run SERVICE`: one service in this process, configured by its environment
//! (twelve-factor), until SIGTERM or Ctrl-C.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use agora::control::InstanceControl;
use agora::host::{Host, ServeConfig};
use agora::logging::CONSOLE;
use agora::runtime::{ServiceEnv, ServiceName, Settings};
use anyhow::{Context, bail};
use clap::Args;

/// How long a stopping service waits for in-flight requests.
const DRAIN: Duration = Duration::from_secs(6);

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The service to run.
    #[arg(value_enum)]
    service: ServiceName,
    /// The address to listen on (`host:port`; port 0 picks a free one, printed as
    /// `agora: ready on http://…`).
    #[arg(long, env = "AGORA_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The NATS JetStream servers of the bus: comma-separated `nats://` URLs, the
    /// cluster's members.
    #[arg(long, env = "AGORA_BUS", hide_env_values = true)]
    bus: String,
    /// Copies of each stream: 3 in a cluster of 3 or more (the default when three or
    /// more URLs are given), else 1.
    #[arg(long, env = "AGORA_BUS_REPLICAS")]
    bus_replicas: Option<usize>,
    /// The service's own database (`postgres://…`; `sqlite://…` for a single instance).
    #[arg(long, env = "AGORA_DB", hide_env_values = true)]
    db: String,
    /// The deployment's secrets, written by `agora secrets init DIR`.
    #[arg(long, env = "AGORA_SECRET_DIR")]
    secret_dir: PathBuf,
    /// Adds the demo products, their stock and prices to empty stores (catalog,
    /// inventory, ordering).
    #[arg(long, env = "AGORA_DEMO")]
    demo: bool,
    #[command(flatten)]
    settings: crate::up::SettingsArgs,
}

impl RunArgs {
    /// The service this process runs.
    pub fn service(&self) -> ServiceName {
        self.service
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let name = args.service;
    let shutdown = crate::up::shutdown_signal()?;
    let mut env = environment(&args).await?;
    let bus = env.bus.clone();
    // The instance's levers, driven by the gateway over its internal control API: its
    // own cut from the bus (chaos `down`) and the bus pause, its chaos, payment's
    // provider.
    let control =
        InstanceControl::new((name == ServiceName::Payment).then(|| env.provider.clone()));
    if name != ServiceName::Gateway {
        env.bus = control.bus(bus.clone());
    }
    let plane = env.internal.service(name.as_str());
    let started = agora::runtime::start(name, env)
        .await
        .with_context(|| format!("start {name}"))?;
    let (router, serve) = if name == ServiceName::Gateway {
        let mut serve = ServeConfig::default();
        serve.uncapped.extend(
            args.settings
                .trusted_proxies
                .iter()
                .map(IpAddr::to_canonical),
        );
        if args.settings.no_rate_limits {
            serve.max_connections_per_client = None;
        }
        (started.router, serve)
    } else {
        let router = control.serve(name.as_str(), started.router, &plane);
        (router, ServeConfig::internal())
    };
    let mut host = Host::start_with(name.as_str(), args.listen, router, serve)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    agora::runtime::announce(name, &host.url(), started.running.db());
    println!("agora: ready on {}", host.url());

    shutdown.await;
    tracing::info!(target: CONSOLE, "{name}: stopping");
    crate::up::stop_within(async {
        host.drain(DRAIN).await;
        started.running.stop().await;
    })
    .await;
    drop(bus);
    Ok(())
}

/// The service's environment from the arguments and the `AGORA_URL_<NAME>` variables.
async fn environment(args: &RunArgs) -> anyhow::Result<ServiceEnv> {
    let name = args.service;
    let secrets = agora::secrets::Secrets::load(&args.secret_dir)?;
    let mut peers = HashMap::new();
    for &peer in name.calls() {
        let variable = peer.url_variable();
        let value = std::env::var(&variable)
            .with_context(|| format!("{name} calls {peer}: set {variable}"))?;
        if value.split(',').all(|url| url.trim().is_empty()) {
            bail!("{variable} is empty");
        }
        // One URL per instance, comma-separated: the clients balance them.
        let url = value;
        peers.insert(peer, url);
    }
    let bus = agora::runtime::connect_bus(&args.bus, args.bus_replicas).await?;
    let mut settings = Settings {
        orphan_hold: args.settings.orphan_hold(),
        trusted_proxies: args.settings.trusted_proxies.clone(),
        demo: args.demo,
        ..Settings::default()
    };
    if args.settings.no_rate_limits {
        settings.limits = agora_gateway::Limits::unlimited();
    }
    Ok(ServiceEnv {
        db_url: args.db.clone(),
        bus,
        internal: secrets.internal,
        peers,
        admin_password: std::env::var("AGORA_ADMIN_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty())
            .or(secrets.admin_password),
        secret_dir: args.secret_dir.clone(),
        settings,
        provider: agora::provider::SwitchedProvider::default(),
    })
}
