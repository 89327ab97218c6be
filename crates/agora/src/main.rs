//! `agora`: the command line of the Agora shop — run it, benchmark it.
//!
//! This crate composes the other crates; it holds no business rules of its own.

#![forbid(unsafe_code)]

mod bench;
mod up;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "agora",
    version,
    about = "An online-shop backend of autonomous services cooperating through durable events"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the whole shop in this process on the embedded bus, until Ctrl-C.
    Up(up::UpArgs),
    /// Measures Agora against its performance targets.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The bus: durable publish→consume throughput and latency at a steady rate, for
    /// both backends, beside raw JetStream and NATS core baselines.
    Bus(bench::bus::BusBenchArgs),
}

/// Where `agora up` keeps its files unless told otherwise.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Bench {
                what: BenchCommand::Bus(args),
            } => bench::bus::run(args).await,
        }
    })
}
