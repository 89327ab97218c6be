//! `agora up`: the whole shop in one process, on the embedded bus, until Ctrl-C.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use agora::logging::CONSOLE;
use agora::shop::{Shop, ShopConfig};
use anyhow::Context;
use clap::Args;

/// The deployment's settings that `agora up` and `agora run` both take.
#[derive(Debug, Args)]
pub struct SettingsArgs {
    /// Switches the gateway's rate limits and its cap on connections per client
    /// address off (load tests from one address).
    #[arg(long, env = "AGORA_NO_RATE_LIMITS")]
    pub no_rate_limits: bool,
    /// A reverse proxy in front of the gateway (repeatable): from it, `Forwarded` /
    /// `X-Forwarded-For` name the client for the per-address limits, and its
    /// connections are not capped per address. From any other peer those headers are
    /// ignored.
    #[arg(
        long = "trusted-proxy",
        value_name = "IP",
        env = "AGORA_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<IpAddr>,
    /// Seconds after which an authorization whose order was never accepted is voided
    /// (payment).
    #[arg(long, default_value_t = agora_payment::DEFAULT_ORPHAN_HOLD.as_secs(), env = "AGORA_ORPHAN_HOLD_SECS")]
    orphan_hold_secs: u64,
}

impl SettingsArgs {
    /// The orphan hold time (at least a second).
    pub fn orphan_hold(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.orphan_hold_secs.max(1))
    }
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where every service keeps its files (one SQLite file each, and the bus).
    #[arg(long, default_value_os_t = crate::default_data_dir(), env = "AGORA_DATA_DIR")]
    data_dir: PathBuf,
    /// The public port of the gateway (0 picks a free one).
    #[arg(long, default_value_t = 8080, env = "AGORA_PORT")]
    port: u16,
    /// The address the gateway listens on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST), env = "AGORA_HOST")]
    host: IpAddr,
    #[command(flatten)]
    settings: SettingsArgs,
    /// The most connections at once from one client address (0: no cap).
    #[arg(long, default_value_t = agora::host::DEFAULT_MAX_CONNECTIONS_PER_CLIENT, env = "AGORA_MAX_CONNECTIONS_PER_CLIENT")]
    max_connections_per_client: usize,
    /// Seconds a client has to send a request's headers (and an idle keep-alive
    /// connection stays open).
    #[arg(long, default_value_t = agora::host::DEFAULT_HEADER_READ_TIMEOUT.as_secs(), env = "AGORA_HEADER_TIMEOUT_SECS")]
    header_timeout_secs: u64,
    /// Runs on these NATS JetStream servers (comma-separated `nats://` URLs) instead of
    /// the embedded bus.
    #[arg(long, env = "AGORA_BUS", hide_env_values = true)]
    bus: Option<String>,
    /// Gives each service its database from this template instead of a SQLite file:
    /// `{service}` is replaced by its name (`postgres://…/agora_{service}`; the
    /// databases must exist).
    #[arg(long, env = "AGORA_DB_TEMPLATE", hide_env_values = true)]
    db_template: Option<String>,
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let mut config = ShopConfig::new(&args.data_dir);
    config.addr = SocketAddr::new(args.host, args.port);
    config.admin_password = std::env::var("AGORA_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    config.trusted_proxies = args.settings.trusted_proxies.clone();
    config.bus = args.bus;
    config.db_template = args.db_template;
    config.orphan_hold = args.settings.orphan_hold();
    config.serve.max_connections_per_client =
        Some(args.max_connections_per_client).filter(|&cap| cap > 0);
    config.serve.header_read_timeout =
        std::time::Duration::from_secs(args.header_timeout_secs.max(1));
    if args.settings.no_rate_limits {
        config.limits = agora_gateway::Limits::unlimited();
        config.serve.max_connections_per_client = None;
    }
    // Listening before saying "ready": a signal that arrives right after must find
    // its handler in place, not the default action that kills the process.
    let shutdown = shutdown_signal()?;
    let shop = Shop::start(config).await.context("start the shop")?;
    tracing::debug!(data_dir = %args.data_dir.display(), url = %shop.url(), "agora is up; press Ctrl-C to stop");
    println!(
        "agora: ready on {} (data in {})",
        shop.url(),
        args.data_dir.display()
    );

    shutdown.await;
    tracing::info!(target: CONSOLE, "agora: shutting down");
    stop_within(shop.shutdown()).await;
    Ok(())
}

/// How long a stopping process waits for its in-flight work, its consumers' batches
/// and its relays, after a signal: under the 10 s an orchestrator gives before SIGKILL.
pub const STOP_WITHIN: std::time::Duration = std::time::Duration::from_secs(8);

/// Runs `stopping` for at most [`STOP_WITHIN`] and says how it ended. Giving up loses
/// nothing: what the relays did not publish stays in the outboxes, what the consumers
/// did not acknowledge comes again.
pub async fn stop_within(stopping: impl Future<Output = ()>) {
    match tokio::time::timeout(STOP_WITHIN, stopping).await {
        Ok(()) => {
            tracing::debug!("stopped");
            println!("agora: stopped cleanly");
        }
        Err(_) => {
            tracing::warn!(
                within = ?STOP_WITHIN,
                "stopping took too long (a bus or a store not answering?); exiting, \
                 unpublished events stay in the outbox"
            );
            println!("agora: stopped, without waiting any longer for the bus or the stores");
        }
    }
}

/// Installs the handlers now; the future resolves on Ctrl-C (SIGINT) or SIGTERM.
#[cfg(unix)]
pub fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Installs the handler now; the future resolves on Ctrl-C.
#[cfg(not(unix))]
pub fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
