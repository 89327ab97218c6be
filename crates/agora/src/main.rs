//! `agora`: the command line of the Agora shop — run it, benchmark it.
//!
//! This crate composes the other crates; it holds no business rules of its own.

#![forbid(unsafe_code)]

mod bench;
mod loadgen;
mod nemesis;
mod ops_cli;
mod run;
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
    /// Runs one service in this process, configured by its environment (`AGORA_*`),
    /// until SIGTERM: one process per service, as many instances as you like.
    Run(run::RunArgs),
    /// A deployment's secrets.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Cross-checks every service's store of a stopped (or quiet) shop, read-only, and
    /// lists every inconsistency; exits 0 only when there is none.
    Audit {
        /// The shop's data directory (a SQLite file per service).
        #[arg(long, default_value_os_t = default_data_dir(), env = "AGORA_DATA_DIR")]
        data_dir: PathBuf,
        /// Audits the PostgreSQL databases of a shop run with this template instead
        /// (`postgres://…/agora_{service}`, `{service}` replaced by each service's name).
        #[arg(
            long,
            env = "AGORA_DB_TEMPLATE",
            hide_env_values = true,
            conflicts_with = "data_dir"
        )]
        db_template: Option<String>,
    },
    /// Injects a fault into a service of a running shop (or clears it with `ok`).
    Chaos {
        /// The service: identity, customer, catalog, inventory, payment, ordering, …
        service: String,
        #[command(subcommand)]
        mode: ops_cli::ChaosMode,
        #[command(flatten)]
        target: ops_cli::Target,
    },
    /// Pauses or resumes the bus of a running shop.
    Bus {
        #[arg(value_enum)]
        switch: ops_cli::BusSwitch,
        #[command(flatten)]
        target: ops_cli::Target,
    },
    /// Changes a running shop's settings.
    Settings {
        #[command(subcommand)]
        setting: Setting,
    },
    /// Measures Agora against its performance targets: without a subcommand, every
    /// figure of the design brief against a fresh shop of its own, with this machine's
    /// baselines and the trade-off lab.
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        #[command(subcommand)]
        what: Option<BenchCommand>,
        #[command(flatten)]
        args: bench::BenchArgs,
    },
    /// An open-loop load generator of simulated customers (browse, preview, checkout),
    /// through the public API of a running shop or of a fresh one of its own.
    Loadgen(loadgen::LoadgenArgs),
    /// A seeded schedule of faults (services down, slow, flaky; the payment provider
    /// down; the bus paused; kill -9 and restart) under steady checkouts, then the
    /// checks: every accepted order ends, and the audit finds nothing. Exits non-zero
    /// on any violation.
    Nemesis(nemesis::NemesisArgs),
}

#[derive(Debug, Subcommand)]
enum Setting {
    /// Where ordering takes the customer's address and payment method from: its
    /// replica (the default) or the customer service, live.
    CustomerData {
        #[arg(value_enum)]
        mode: ops_cli::CustomerData,
        #[command(flatten)]
        target: ops_cli::Target,
    },
}

#[derive(Debug, Subcommand)]
enum SecretsCommand {
    /// Writes a deployment's secrets into DIR, once: the internal-plane key every
    /// service of the deployment shares, and the admin's password
    /// (`AGORA_ADMIN_PASSWORD`, or a generated one). What exists is never overwritten.
    Init { dir: PathBuf },
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
    let format = agora::logging::LogFormat::from_env()?;
    // The measuring commands run a shop in this process: its logs (warnings included:
    // a shop under load has many) would drown their progress and tables.
    let default_filter = match cli.command {
        Command::Bench { .. } | Command::Loadgen(_) | Command::Nemesis(_) => "error",
        _ => agora::logging::QUIET,
    };
    let filter = agora::logging::filter_from_env(default_filter)?;
    let runtime = tokio::runtime::Runtime::new()?;
    // The tracer before the logger (its layer is part of the subscriber), inside the
    // runtime (the OTLP exporter runs on it). The shop's commands only: the measuring
    // ones measure the shop, not themselves.
    let traces = match &cli.command {
        Command::Up(_) => Some(agora::traces::install(None)?),
        Command::Run(args) => Some(agora::traces::install(Some(args.service()))?),
        _ => None,
    }
    .map(|install| {
        let _entered = runtime.enter();
        install()
    })
    .transpose()?;
    agora::logging::init(format, filter);
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Run(args) => run::run(args).await,
            Command::Secrets {
                command: SecretsCommand::Init { dir },
            } => {
                let password = std::env::var("AGORA_ADMIN_PASSWORD")
                    .ok()
                    .filter(|p| !p.is_empty());
                let written = agora::secrets::Secrets::init(&dir, password.as_deref())?;
                for file in &written {
                    println!("agora secrets: wrote {}", file.display());
                }
                if written.is_empty() {
                    println!(
                        "agora secrets: {} already holds the deployment's secrets; nothing written",
                        dir.display()
                    );
                }
                Ok(())
            }
            Command::Chaos {
                service,
                mode,
                target,
            } => ops_cli::chaos(target, service, mode).await,
            Command::Bus { switch, target } => ops_cli::bus(target, switch).await,
            Command::Settings {
                setting: Setting::CustomerData { mode, target },
            } => ops_cli::customer_data(target, mode).await,
            Command::Audit {
                data_dir,
                db_template,
            } => {
                let stores = match db_template {
                    Some(template) => agora::audit::Stores::Postgres(template),
                    None => agora::audit::Stores::DataDir(data_dir),
                };
                let findings =
                    agora::audit::audit_stores(&stores, agora_payment::DEFAULT_ORPHAN_HOLD).await?;
                for finding in &findings {
                    println!("{finding}");
                }
                if findings.is_empty() {
                    println!("agora audit: no inconsistency in {stores}");
                    Ok(())
                } else {
                    println!("agora audit: {} inconsistencies", findings.len());
                    std::process::exit(1);
                }
            }
            Command::Bench {
                what: Some(BenchCommand::Bus(args)),
                ..
            } => bench::bus::run(args).await,
            Command::Bench { what: None, args } => bench::run(args).await,
            Command::Loadgen(args) => loadgen::run(args).await,
            Command::Nemesis(args) => nemesis::run(args).await,
        }
    });
    if let Some(traces) = traces {
        // What the batch processor still holds goes out before the runtime it
        // exports on stops.
        runtime.block_on(async {
            let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
        });
    }
    outcome
}
