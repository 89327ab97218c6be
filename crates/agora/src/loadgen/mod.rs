//! `agora loadgen`: an open-loop load generator of simulated customers.
//!
//! Customers are prepared first (sign up, sign in, an address and a payment method,
//! and the address seen by ordering's replica), then requests start at a constant
//! rate — browse the storefront, preview a checkout, place an order with an
//! idempotency key, in proportions given by `--mix` — each measured from the instant
//! it was due (see [`core`]). Everything goes through the public HTTP API.

pub mod core;
pub mod shopper;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agora::shop::{Shop, ShopConfig};
use anyhow::Context;
use clap::Args;
use serde::Serialize;

use self::core::{Plan, RunStats, Summary};
use self::shopper::{Api, Customer, Product};

#[derive(Debug, Args)]
pub struct LoadgenArgs {
    /// The shop to load (its public URL). Without it, a fresh shop is started in this
    /// process, in a temporary directory under `--dir`, with rate limits off.
    #[arg(long)]
    url: Option<String>,
    /// Requests started per second (all operations together).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Seconds the measured phase lasts.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Simulated customers, prepared before the measured phase.
    #[arg(long, default_value_t = 50)]
    customers: usize,
    /// Weights of browse, preview and checkout requests.
    #[arg(long, default_value = "4,2,1", value_parser = parse_mix)]
    mix: Mix,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Where a shop of its own keeps its files (default: the current directory, so
    /// that its fsyncs hit a real disk).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Weights of the operations.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Mix {
    pub browse: u32,
    pub preview: u32,
    pub checkout: u32,
}

fn parse_mix(s: &str) -> Result<Mix, String> {
    let parts: Vec<u32> = s
        .split(',')
        .map(|p| p.trim().parse::<u32>().map_err(|e| format!("{p:?}: {e}")))
        .collect::<Result<_, _>>()?;
    match parts[..] {
        [browse, preview, checkout] if browse + preview + checkout > 0 => Ok(Mix {
            browse,
            preview,
            checkout,
        }),
        _ => Err("three weights, browse,preview,checkout, not all 0".into()),
    }
}

/// A shop of this process's own, for the time of a measurement.
#[derive(Debug)]
pub struct OwnShop {
    pub shop: Shop,
    pub url: String,
    pub admin_password: String,
    dir: tempfile::TempDir,
}

impl OwnShop {
    /// A fresh shop on 127.0.0.1 (free port) with data in a temporary directory
    /// under `dir`, rate limits off, a known admin password.
    pub async fn start(dir: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let dir = match dir {
            Some(dir) => tempfile::Builder::new()
                .prefix("agora-bench-")
                .tempdir_in(dir),
            None => tempfile::Builder::new()
                .prefix("agora-bench-")
                .tempdir_in("."),
        }
        .context("create a data directory for the shop")?;
        let admin_password = format!("bench-{}", uuid::Uuid::now_v7().simple());
        let mut config = ShopConfig::new(dir.path().join("data"));
        config.addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        config.admin_password = Some(admin_password.clone());
        config.limits = agora_gateway::Limits::unlimited();
        // The load comes from one address.
        config.serve.max_connections_per_client = None;
        let shop = Shop::start(config).await.context("start the shop")?;
        let url = shop.url();
        Ok(Self {
            shop,
            url,
            admin_password,
            dir,
        })
    }

    /// Stops the shop, waiting at most `STOP_WAIT` for it (an idle shop takes ~15 s to
    /// stop today: its consumers finish a long poll), and removes its directory.
    pub async fn stop(self) {
        const STOP_WAIT: Duration = Duration::from_secs(3);
        if tokio::time::timeout(STOP_WAIT, self.shop.shutdown())
            .await
            .is_err()
        {
            tracing::info!("the shop did not stop within {STOP_WAIT:?}: left to the exit");
        }
        drop(self.dir);
    }
}

/// A runtime of its own for the load generator, so that the shop's work in this
/// process does not delay its timers any more than the OS makes it.
#[derive(Debug)]
pub struct ClientRuntime(Option<tokio::runtime::Runtime>);

impl Drop for ClientRuntime {
    fn drop(&mut self) {
        // Dropped from async code: let its threads go without waiting for them.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

pub fn client_runtime() -> anyhow::Result<ClientRuntime> {
    Ok(ClientRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("loadgen")
            .enable_all()
            .build()?,
    )))
}

/// Runs `fut` on `runtime`, from a task of another runtime.
pub async fn on_runtime<T: Send + 'static>(
    runtime: &Arc<ClientRuntime>,
    fut: impl Future<Output = T> + Send + 'static,
) -> T {
    let runtime = runtime.clone();
    tokio::task::spawn_blocking(move || {
        let runtime = runtime.0.as_ref().expect("the runtime lives until dropped");
        // On its workers, not on this blocking thread of the other runtime.
        runtime.block_on(runtime.spawn(fut))
    })
    .await
    .expect("the load generator's thread panicked")
    .expect("the load generator panicked")
}

/// The figures of one operation, for `--json` and reports.
#[derive(Debug, Clone, Serialize)]
pub struct OpFigures {
    #[serde(flatten)]
    pub summary: Summary,
    pub failures: BTreeMap<String, u64>,
}

pub fn figures(stats: &RunStats) -> BTreeMap<String, OpFigures> {
    let mut out: BTreeMap<String, OpFigures> = stats
        .ops
        .iter()
        .map(|(name, r)| {
            (
                (*name).to_owned(),
                OpFigures {
                    summary: r.summary(),
                    failures: r.failures.clone(),
                },
            )
        })
        .collect();
    let total = stats.total();
    out.insert(
        "all".into(),
        OpFigures {
            summary: total.summary(),
            failures: total.failures.clone(),
        },
    );
    out
}

#[derive(Debug, Serialize)]
struct LoadgenReport {
    url: String,
    rate: f64,
    duration_s: f64,
    customers: usize,
    mix: Mix,
    scheduled: u64,
    recorded: u64,
    ok_per_s: f64,
    /// From the first due instant to the last answer.
    elapsed_s: f64,
    max_start_lag_ms: f64,
    ops: BTreeMap<String, OpFigures>,
}

pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    let own = match &args.url {
        Some(_) => None,
        None => {
            if !args.json {
                eprintln!("starting a shop of its own…");
            }
            Some(OwnShop::start(args.dir.as_deref()).await?)
        }
    };
    let url = match (&args.url, &own) {
        (Some(url), _) => url.clone(),
        (None, Some(own)) => own.url.clone(),
        (None, None) => unreachable!("a URL or a shop of its own"),
    };
    let client = Arc::new(client_runtime()?);
    let (customers, rate, duration, mix, json) = (
        args.customers.max(1),
        args.rate,
        args.duration,
        args.mix,
        args.json,
    );
    let driven = {
        let url = url.clone();
        on_runtime(&client, async move {
            drive(&url, customers, rate, duration, mix, json).await
        })
        .await
    };
    if let Some(own) = own {
        own.stop().await;
    }
    let stats = driven?;
    let report = LoadgenReport {
        url,
        rate,
        duration_s: duration,
        customers,
        mix,
        scheduled: stats.scheduled,
        recorded: stats.recorded(),
        ok_per_s: stats.ok_per_s(),
        elapsed_s: stats.elapsed.as_secs_f64(),
        max_start_lag_ms: stats.max_start_lag.as_secs_f64() * 1e3,
        ops: figures(&stats),
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

async fn drive(
    url: &str,
    customers: usize,
    rate: f64,
    duration: f64,
    mix: Mix,
    json: bool,
) -> anyhow::Result<RunStats> {
    let api = Api::new(url)?;
    let run = uuid::Uuid::now_v7().simple().to_string();
    if !json {
        eprintln!("preparing {customers} customers…");
    }
    let customers: Arc<Vec<Customer>> = Arc::new(api.customers(&run, customers, 8).await?);
    let products: Arc<Vec<Product>> = Arc::new(api.products().await?);
    let mut plan = Plan::new(rate, Duration::from_secs_f64(duration));
    if !json {
        plan = plan.progress("loadgen");
    }
    let weights = mix.browse + mix.preview + mix.checkout;
    Ok(core::run(&plan, |i| {
        let (api, customers, products) = (api.clone(), customers.clone(), products.clone());
        async move {
            let customer = &customers[shopper::any(customers.len())];
            let product = shopper::pick(&products);
            let slot = (i % u64::from(weights)) as u32;
            if slot < mix.browse {
                api.browse().await
            } else if slot < mix.browse + mix.preview {
                api.preview(&customer.token, product).await
            } else {
                api.checkout(&customer.token, product).await.0
            }
        }
    })
    .await)
}

fn print_table(r: &LoadgenReport) {
    println!(
        "agora loadgen — {} at {:.0} req/s for {:.0} s, {} customers, mix browse:preview:checkout {}:{}:{}",
        r.url, r.rate, r.duration_s, r.customers, r.mix.browse, r.mix.preview, r.mix.checkout
    );
    println!(
        "{} requests scheduled, {} recorded in {:.1} s; {:.0} successful/s; scheduler lag at worst {:.1} ms",
        r.scheduled, r.recorded, r.elapsed_s, r.ok_per_s, r.max_start_lag_ms
    );
    println!("latency from each request's due instant (open loop), failed requests included");
    println!();
    print_ops(&r.ops);
}

/// The per-operation table.
pub fn print_ops(ops: &BTreeMap<String, OpFigures>) {
    println!(
        "{:<12} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}  failures",
        "operation", "count", "ok %", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    for (name, f) in ops {
        let s = &f.summary;
        let failures: Vec<String> = f.failures.iter().map(|(k, v)| format!("{k}×{v}")).collect();
        println!(
            "{:<12} {:>8} {:>8.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {}",
            name,
            s.count,
            s.success_rate * 100.0,
            s.p50_ms,
            s.p90_ms,
            s.p99_ms,
            s.p999_ms,
            s.max_ms,
            failures.join(" ")
        );
    }
}
