//! The measurements of `agora bench`, in one run: baselines, checkout, the pipeline
//! behind it, replica freshness, the bus, and the trade-off lab.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use parking_lot::Mutex;
use serde::Serialize;
use uuid::Uuid;

use super::distributed::{self, Distributed};
use super::machine::{CpuSample, CpuShare, Machine};
use super::tradeoff::{self, Scenario};
use super::{BenchArgs, bus};
use crate::loadgen::core::{self as engine, Outcome, Plan, RunStats, Summary};
use crate::loadgen::shopper::{self, Admin, Api, Customer, Product};
use crate::loadgen::{OwnShop, client_runtime, on_runtime};

/// How much of everything a run does.
#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    pub customers: usize,
    pub hello_rates: Vec<f64>,
    pub hello_step_s: f64,
    pub checkout_rates: Vec<f64>,
    pub checkout_step_s: f64,
    /// The rate of the target's figures (1,000 orders/s in a full run).
    pub target_rate: f64,
    pub target_s: f64,
    pub freshness_samples: usize,
    pub lab_rate: f64,
    pub lab_s: f64,
    pub bus_messages: usize,
    /// Raw SQLite baseline: single-row commits, and batches of 100 rows.
    pub sqlite_commits: usize,
    pub sqlite_batches: usize,
    pub bus_latency_s: u64,
    /// How long the pipeline may take to catch up after a step.
    pub drain_deadline_s: f64,
    /// The distributed topology: checkout rates stepped up, seconds per step.
    pub dist_rates: Vec<f64>,
    pub dist_step_s: f64,
    /// The rate of the figures compared between one and two ordering instances
    /// (accepted → ready_for_shipping, CPU per order).
    pub dist_rate: f64,
    pub dist_s: f64,
    /// The trade-off lab's rate on the distributed topology.
    pub dist_lab_rate: f64,
}

impl Sizes {
    pub fn full() -> Self {
        Self {
            customers: 200,
            hello_rates: vec![
                5_000.0, 10_000.0, 20_000.0, 30_000.0, 40_000.0, 50_000.0, 60_000.0, 80_000.0,
            ],
            hello_step_s: 3.0,
            // Fine steps low down, where a 2-core machine tops out; up to the target.
            checkout_rates: vec![
                50.0, 100.0, 150.0, 200.0, 250.0, 300.0, 400.0, 500.0, 750.0, 1_000.0, 1_500.0,
                2_000.0, 3_000.0, 4_000.0, 5_000.0,
            ],
            checkout_step_s: 5.0,
            target_rate: 1_000.0,
            target_s: 20.0,
            freshness_samples: 300,
            lab_rate: 100.0,
            lab_s: 10.0,
            bus_messages: 100_000,
            sqlite_commits: 2_000,
            sqlite_batches: 2_000,
            bus_latency_s: 3,
            drain_deadline_s: 120.0,
            dist_rates: vec![
                10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 125.0, 150.0, 200.0, 250.0, 300.0,
                400.0, 500.0,
            ],
            dist_step_s: 5.0,
            dist_rate: 40.0,
            dist_s: 20.0,
            dist_lab_rate: 40.0,
        }
    }

    pub fn quick() -> Self {
        Self {
            customers: 12,
            hello_rates: vec![1_000.0, 3_000.0],
            hello_step_s: 1.0,
            checkout_rates: vec![50.0, 100.0, 200.0],
            checkout_step_s: 1.5,
            target_rate: 100.0,
            target_s: 2.0,
            freshness_samples: 30,
            lab_rate: 40.0,
            lab_s: 1.0,
            bus_messages: 10_000,
            sqlite_commits: 300,
            sqlite_batches: 100,
            bus_latency_s: 1,
            drain_deadline_s: 20.0,
            dist_rates: vec![10.0, 20.0],
            dist_step_s: 1.5,
            dist_rate: 10.0,
            dist_s: 2.0,
            dist_lab_rate: 10.0,
        }
    }
}

/// One rate of a step-up run.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub rate: f64,
    #[serde(flatten)]
    pub summary: Summary,
    pub ok_per_s: f64,
    pub failures: BTreeMap<String, u64>,
    /// Success ≥ 99% and p99 within the bound.
    pub sustained: bool,
    pub max_start_lag_ms: f64,
    pub cpu: CpuShare,
    /// How long the pipeline behind (fulfilment, notification, …) took to catch up
    /// after the step; `None`: not within the deadline, or not measured.
    pub drain_s: Option<f64>,
}

impl Step {
    pub(super) fn of(stats: &RunStats, cpu: CpuShare, bound_ms: f64) -> Self {
        let total = stats.total();
        let summary = total.summary();
        Self {
            rate: stats.plan_rate,
            sustained: summary.success_rate >= 0.99 && summary.p99_ms <= bound_ms,
            summary,
            ok_per_s: stats.ok_per_s(),
            failures: total.failures.clone(),
            max_start_lag_ms: stats.max_start_lag.as_secs_f64() * 1e3,
            cpu,
            drain_s: None,
        }
    }
}

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Lag {
    pub count: usize,
    /// Cases that never got there (e.g. orders that did not reach the status).
    pub missing: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Lag {
    pub fn of(mut ms: Vec<f64>, missing: usize) -> Self {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| -> f64 {
            if ms.is_empty() {
                return 0.0;
            }
            let rank = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
            ms[rank - 1]
        };
        Self {
            count: ms.len(),
            missing,
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: ms.last().copied().unwrap_or(0.0),
        }
    }
}

/// Everything one `agora bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub quick: bool,
    pub build: &'static str,
    pub date: String,
    pub command: String,
    pub machine: Machine,
    /// `/proc/loadavg`'s 1, 5 and 15 minute load averages when the run began: what
    /// else kept this machine busy.
    pub load_at_start: String,
    pub sizes: Sizes,
    pub p99_bound_ms: f64,
    pub sqlite: bus::SqliteBaseline,
    pub bus: bus::Figures,
    pub hello: Vec<Step>,
    /// The highest sustained rate of the hello route (0: none).
    pub hello_max_rate: f64,
    pub checkout: Vec<Step>,
    pub checkout_max_rate: f64,
    pub at_target: Step,
    pub accepted_to_ready: Lag,
    pub replica_freshness: Lag,
    pub tradeoff: Vec<Scenario>,
    /// The same shop, a process per service on NATS and PostgreSQL.
    pub distributed: Option<Distributed>,
    /// Why the distributed section was not run.
    pub distributed_skipped: Option<String>,
    pub wall_s: f64,
}

/// When this run began, for the progress messages.
static BEGAN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn progress(what: &str) {
    let at = BEGAN.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("agora bench [{at:5.1} s]: {what}…");
}

pub(super) fn say(args: &BenchArgs, what: &str) {
    if !args.json {
        progress(what);
    }
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<Results> {
    let started = *BEGAN.get_or_init(Instant::now);
    let load_at_start = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    let sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let bound = args.p99_bound_ms;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::current_dir()?,
    };
    let client = Arc::new(client_runtime()?);

    say(args, "raw SQLite commits (baseline)");
    let sqlite = {
        let scratch = tempfile::tempdir_in(&dir).context("create a scratch directory")?;
        let path = scratch.path().join("baseline.db");
        let (single, batches) = (sizes.sqlite_commits, sizes.sqlite_batches);
        let figures =
            tokio::task::spawn_blocking(move || bus::sqlite_baseline_of(path, single, batches))
                .await??;
        drop(scratch);
        figures
    };

    say(args, "the embedded bus");
    let bus_figures =
        bus::embedded_figures(&dir, sizes.bus_messages, 1_000, sizes.bus_latency_s).await?;

    say(args, "a plain axum \"hello\" route (baseline)");
    let hello = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hello", listener.local_addr()?);
        let app = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let (rates, step_s, progress) = (sizes.hello_rates.clone(), sizes.hello_step_s, !args.json);
        let steps = on_runtime(&client, async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(4096)
                .tcp_nodelay(true)
                .build()?;
            let mut steps = Vec::new();
            for rate in rates {
                let mut plan = Plan::new(rate, Duration::from_secs_f64(step_s));
                if progress {
                    plan = plan.progress(format!("hello @ {rate:.0}/s"));
                }
                let before = CpuSample::now();
                let stats = engine::run(&plan, |_| {
                    let (http, url) = (http.clone(), url.clone());
                    async move {
                        match http.get(&url).send().await {
                            Ok(r) if r.status().is_success() => match r.bytes().await {
                                Ok(_) => Outcome::ok("hello", 200),
                                Err(e) => Outcome::failed("hello", engine::transport_error(&e)),
                            },
                            other => Outcome::of("hello", &other, 200),
                        }
                    }
                })
                .await;
                let step = Step::of(&stats, CpuSample::now().since(&before), bound);
                let sustained = step.sustained;
                steps.push(step);
                if !sustained {
                    break;
                }
            }
            anyhow::Ok(steps)
        })
        .await;
        server.abort();
        steps?
    };
    let hello_max_rate = max_sustained(&hello);

    say(args, "starting a fresh shop");
    let own = OwnShop::start(Some(&dir)).await?;
    let driven = {
        let (url, password, sizes, quiet) = (
            own.url.clone(),
            own.admin_password.clone(),
            sizes.clone(),
            args.json,
        );
        on_runtime(&client, async move {
            drive_shop(url, password, sizes, bound, quiet).await
        })
        .await
    };
    say(args, "stopping the shop");
    own.stop().await;
    let shop = driven?;

    let (distributed, distributed_skipped) = match distributed::run(args, &sizes, &client).await? {
        Ok(figures) => (Some(figures), None),
        Err(skipped) => (None, Some(skipped)),
    };
    say(args, "done");

    Ok(Results {
        quick: args.quick,
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        date: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        command: std::env::args()
            .map(|arg| without_password(&arg))
            .collect::<Vec<_>>()
            .join(" "),
        machine: Machine::this(),
        load_at_start,
        sizes,
        p99_bound_ms: bound,
        sqlite,
        bus: bus_figures,
        hello_max_rate,
        hello,
        checkout_max_rate: max_sustained(&shop.checkout),
        checkout: shop.checkout,
        at_target: shop.at_target,
        accepted_to_ready: shop.accepted_to_ready,
        replica_freshness: shop.replica_freshness,
        tradeoff: shop.tradeoff,
        distributed,
        distributed_skipped,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// `arg` with the password of a URL in it (`scheme://user:password@host…`) left out,
/// for the report.
fn without_password(arg: &str) -> String {
    let Some(scheme) = arg.find("://") else {
        return arg.to_owned();
    };
    let rest = &arg[scheme + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:…{}",
            &arg[..scheme + 3],
            &authority[..colon],
            &arg[scheme + 3 + at..]
        ),
        _ => arg.to_owned(),
    }
}

pub(super) fn max_sustained(steps: &[Step]) -> f64 {
    steps
        .iter()
        .filter(|s| s.sustained)
        .map(|s| s.rate)
        .fold(0.0, f64::max)
}

struct ShopFigures {
    checkout: Vec<Step>,
    at_target: Step,
    accepted_to_ready: Lag,
    replica_freshness: Lag,
    tradeoff: Vec<Scenario>,
}

/// What the lab and the checkout runs share.
pub struct Ctx {
    pub api: Api,
    pub admin: Admin,
    pub customers: Vec<Customer>,
    pub products: Arc<Vec<Product>>,
    pub quiet: bool,
    pub drain_deadline: Duration,
}

impl Ctx {
    pub fn say(&self, what: &str) {
        if !self.quiet {
            progress(what);
        }
    }

    /// Checkouts at `rate` for `seconds`, by random customers; the orders placed.
    pub async fn checkouts(
        &self,
        label: &str,
        rate: f64,
        seconds: f64,
    ) -> (RunStats, CpuShare, Vec<shopper::Placed>) {
        let mut plan = Plan::new(rate, Duration::from_secs_f64(seconds));
        if !self.quiet {
            plan = plan.progress(label);
        }
        let placed = Arc::new(Mutex::new(Vec::new()));
        let tokens: Arc<Vec<String>> =
            Arc::new(self.customers.iter().map(|c| c.token.clone()).collect());
        let before = CpuSample::now();
        let stats = engine::run(&plan, |_| {
            let (api, tokens, products, placed) = (
                self.api.clone(),
                tokens.clone(),
                self.products.clone(),
                placed.clone(),
            );
            async move {
                let customer = shopper::any(tokens.len());
                let (outcome, order) = api
                    .checkout(&tokens[customer], shopper::pick(&products))
                    .await;
                if let Some((id, address_line1)) = order {
                    placed.lock().push(shopper::Placed {
                        id,
                        customer,
                        address_line1,
                        at: SystemTime::now(),
                    });
                }
                outcome
            }
        })
        .await;
        let cpu = CpuSample::now().since(&before);
        let placed = std::mem::take(&mut *placed.lock());
        (stats, cpu, placed)
    }

    /// Waits until the bus has nothing pending; the time it took.
    pub async fn drain(&mut self) -> anyhow::Result<Option<f64>> {
        Ok(self
            .admin
            .drain(self.drain_deadline)
            .await?
            .map(|d| d.as_secs_f64()))
    }
}

async fn drive_shop(
    url: String,
    admin_password: String,
    sizes: Sizes,
    bound: f64,
    quiet: bool,
) -> anyhow::Result<ShopFigures> {
    let mut ctx = prepare(&url, &admin_password, &sizes, quiet).await?;

    ctx.say("address change → ordering's replica");
    let replica_freshness = replica_freshness(&mut ctx, sizes.freshness_samples).await?;

    ctx.say("checkout: stepping the offered rate up");
    let mut checkout = Vec::new();
    for &rate in &sizes.checkout_rates {
        let (stats, cpu, _) = ctx
            .checkouts(
                &format!("checkout @ {rate:.0}/s"),
                rate,
                sizes.checkout_step_s,
            )
            .await;
        let mut step = Step::of(&stats, cpu, bound);
        step.drain_s = ctx.drain().await?;
        let sustained = step.sustained;
        checkout.push(step);
        if !sustained {
            break;
        }
    }

    ctx.say(&format!(
        "checkout at {:.0} orders/s for {:.0} s",
        sizes.target_rate, sizes.target_s
    ));
    let (stats, cpu, placed) = ctx
        .checkouts(
            &format!("checkout @ {:.0}/s", sizes.target_rate),
            sizes.target_rate,
            sizes.target_s,
        )
        .await;
    let mut at_target = Step::of(&stats, cpu, bound);
    at_target.drain_s = ctx.drain().await?;
    ctx.say("accepted → ready_for_shipping, from the orders' histories");
    let accepted_to_ready = accepted_to_ready(&ctx, &placed).await?;

    let tradeoff = tradeoff::run(&mut ctx, &sizes).await?;

    Ok(ShopFigures {
        checkout,
        at_target,
        accepted_to_ready,
        replica_freshness,
        tradeoff,
    })
}

/// A signed-in admin, the products with ample stock, and `sizes.customers` customers
/// signed in with an address and a payment method, on the shop at `url`.
pub(super) async fn prepare(
    url: &str,
    admin_password: &str,
    sizes: &Sizes,
    quiet: bool,
) -> anyhow::Result<Ctx> {
    let api = Api::new(url)?;
    let mut admin = Admin::sign_in(&api, admin_password).await?;
    let products = Arc::new(api.products().await?);
    // Enough stock that no order of the run is cancelled for the want of it.
    for product in products.iter() {
        admin.stock(product.id, 1_000_000).await?;
    }
    let run = Uuid::now_v7().simple().to_string();
    if !quiet {
        progress(&format!(
            "preparing {} customers (sign-up, sign-in, address, payment method)",
            sizes.customers
        ));
    }
    let customers = api.customers(&run, sizes.customers, 8).await?;
    Ok(Ctx {
        api,
        admin,
        customers,
        products,
        quiet,
        drain_deadline: Duration::from_secs_f64(sizes.drain_deadline_s),
    })
}

/// Changes a customer's address, then asks ordering's checkout preview until it shows
/// the new one: the time from the change's answer to the first preview showing it
/// (to within one preview's round trip).
async fn replica_freshness(ctx: &mut Ctx, samples: usize) -> anyhow::Result<Lag> {
    let product = ctx.products[0].id;
    let mut lags = Vec::with_capacity(samples);
    for i in 0..samples {
        let n = i % ctx.customers.len();
        let customer = &mut ctx.customers[n];
        ctx.api
            .set_address(customer, &format!("{i} Fresh Lane"))
            .await?;
        let lag = ctx
            .api
            .await_replica(customer, product, Duration::from_secs(10))
            .await?;
        lags.push(lag.as_secs_f64() * 1e3);
    }
    Ok(Lag::of(lags, 0))
}

/// `ready_for_shipping.at − accepted.at` of every order placed, from the orders'
/// histories (millisecond timestamps).
pub(super) async fn accepted_to_ready(
    ctx: &Ctx,
    placed: &[shopper::Placed],
) -> anyhow::Result<Lag> {
    let wanted: HashMap<Uuid, ()> = placed.iter().map(|p| (p.id, ())).collect();
    let mut lags = Vec::new();
    let mut found = 0;
    for customer in &ctx.customers {
        for order in ctx.api.orders(&customer.token).await? {
            let Some(id) = order["id"].as_str().and_then(|s| s.parse::<Uuid>().ok()) else {
                continue;
            };
            if !wanted.contains_key(&id) {
                continue;
            }
            found += 1;
            let at = |status: &str| {
                order["history"].as_array().and_then(|h| {
                    h.iter()
                        .find(|e| e["status"] == status)
                        .and_then(|e| e["at"].as_str())
                        .and_then(|t| {
                            time::OffsetDateTime::parse(
                                t,
                                &time::format_description::well_known::Rfc3339,
                            )
                            .ok()
                        })
                })
            };
            if let (Some(accepted), Some(ready)) = (at("accepted"), at("ready_for_shipping")) {
                lags.push((ready - accepted).as_seconds_f64() * 1e3);
            }
        }
    }
    let missing = wanted.len() - lags.len();
    anyhow::ensure!(
        found == wanted.len(),
        "{} placed orders not in their customers' lists",
        wanted.len() - found
    );
    Ok(Lag::of(lags, missing))
}

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn the_report_never_shows_a_urls_password() {
        assert_eq!(
            without_password("--pg=postgres://postgres:secret@127.0.0.1:5432/postgres"),
            "--pg=postgres://postgres:…@127.0.0.1:5432/postgres"
        );
        assert_eq!(
            without_password("postgres://me@db/postgres"),
            "postgres://me@db/postgres"
        );
        assert_eq!(without_password("--quick"), "--quick");
    }
}
