//! `agora up`: the whole shop in one process, on the embedded bus, until Ctrl-C.
//!
//! What runs today is the platform itself: the durable bus with a stream per owning
//! service. Services join here as they are built, each from its own config.

use std::path::PathBuf;
use std::sync::Arc;

use agora_bus::embedded::EmbeddedBus;
use agora_bus::{Bus, StreamConfig};
use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where every service keeps its files (one SQLite file each, and the bus).
    #[arg(long, default_value_os_t = crate::default_data_dir(), env = "AGORA_DATA_DIR")]
    data_dir: PathBuf,
    /// The public port of the gateway.
    #[arg(long, default_value_t = 8080, env = "AGORA_PORT")]
    port: u16,
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

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create the data directory {}", args.data_dir.display()))?;
    let bus_path = args.data_dir.join("bus.db");
    let bus = Arc::new(
        EmbeddedBus::open(&bus_path)
            .await
            .with_context(|| format!("open the bus at {}", bus_path.display()))?,
    );
    for stream in service_streams() {
        bus.ensure_stream(&stream).await?;
    }
    // Listening before saying "ready": a signal that arrives right after must find
    // its handler in place, not the default action that kills the process.
    let shutdown = shutdown_signal()?;
    tracing::info!(
        data_dir = %args.data_dir.display(),
        port = args.port,
        streams = service_streams().len(),
        "agora is up (bus ready); press Ctrl-C to stop"
    );
    println!("agora: ready (data in {})", args.data_dir.display());

    shutdown.await;
    tracing::info!("shutting down");
    bus.close().await;
    println!("agora: stopped cleanly");
    Ok(())
}

/// Installs the handlers now; the future resolves on Ctrl-C (SIGINT) or SIGTERM.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
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
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
