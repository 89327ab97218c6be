//! `agora bench`: measurements against the design brief's targets.
//!
//! `agora bench` runs, against a fresh shop of its own (in this process, on a free
//! port of 127.0.0.1, data on the disk under the current directory), every figure of
//! the brief's targets through the public HTTP API, with this machine's baselines
//! measured in the same run; `--quick` does the same at small sizes (a smoke test);
//! `--report FILE` writes the figures into FILE's report section and SVG plots beside
//! it. With `--pg URL` (a PostgreSQL server) and `nats-server` installed, the same run
//! measures the distributed topology too — a process per service on a 3-node JetStream
//! cluster and PostgreSQL — with its own lab rows (`distributed.rs`). `agora bench
//! bus` measures the bus alone, against NATS too.

pub mod bus;
mod distributed;
mod machine;
mod plot;
mod report;
mod suite;
mod tradeoff;

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Small sizes: a smoke run of every measurement, under a minute.
    #[arg(long)]
    quick: bool,
    /// Writes the report into this markdown file (between `<!-- bench:begin -->` and
    /// `<!-- bench:end -->`, appended when absent) and its plots into `bench/` beside it.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Where the shop and the baselines write (default: the current directory, so
    /// that fsyncs hit a real disk, not a tmpfs).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A rate is sustained when ≥ 99% of its requests succeed and their p99 is within
    /// this bound.
    #[arg(long, default_value_t = 100.0)]
    p99_bound_ms: f64,
    /// The PostgreSQL server of the distributed topology (`postgres://…/postgres`): a
    /// database per service is created on it for the run, and dropped after. Without
    /// it (or without `nats-server`) that section is skipped, saying why.
    #[arg(long, env = "AGORA_PG_URL", hide_env_values = true)]
    pg: Option<String>,
    /// Fail, instead of skipping the distributed topology, when its servers are
    /// missing.
    #[arg(long)]
    distributed: bool,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let results = suite::run(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string(&results)?);
    } else {
        print!("{}", report::text(&results));
    }
    if let Some(path) = &args.report {
        report::write(path, &results)?;
        if !args.json {
            eprintln!("agora bench: report written to {}", path.display());
        }
    }
    let broken = report::claims(&results)
        .into_iter()
        .filter(|c| !c.holds)
        .map(|c| c.claim)
        .collect::<Vec<_>>();
    if !broken.is_empty() {
        anyhow::bail!(
            "the trade-off lab did not show what the design promises: {}",
            broken.join("; ")
        );
    }
    Ok(())
}
