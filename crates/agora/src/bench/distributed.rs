//! `agora bench` on the distributed topology: an `agora run` process per service on a
//! 3-node JetStream cluster and PostgreSQL (a fresh database per service, dropped
//! after), all on this machine ([`agora::topology`]), driven through the gateway like
//! the embedded shop.
//!
//! Twice: with one ordering instance, then with two; each time checkout stepped up,
//! then a steady rate for accepted → ready_for_shipping and the CPU each order costs,
//! summed over the processes (`/proc/<pid>/stat`). On the second, the trade-off lab,
//! with two more faults: an ordering instance and a NATS node killed.
//!
//! It needs `nats-server` and a PostgreSQL server (`--pg`); without them the section is
//! skipped, saying why, unless `--distributed` asks for it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora::runtime::ServiceName;
use agora::topology::{Topology, TopologyConfig};
use agora_testkit::{NatsCluster, PgDatabases};
use anyhow::{Context, bail};
use parking_lot::Mutex;
use serde::Serialize;

use super::BenchArgs;
use super::suite::{self, Ctx, Lag, Sizes, Step};
use super::tradeoff::{self, Fault, Processes, Scenario};
use crate::loadgen::shopper::Placed;
use crate::loadgen::{ClientRuntime, on_runtime};

/// Each process's database pool: 11 processes × 4 stay well under PostgreSQL's
/// default `max_connections` of 100.
const POOL_MAX_CONNS: u32 = 4;

/// What the distributed section measured.
#[derive(Debug, Clone, Serialize)]
pub struct Distributed {
    pub nats_server: String,
    pub postgres: String,
    pub pool_max_conns: u32,
    /// Ordering ×1, then ×2.
    pub runs: Vec<TopologyRun>,
    /// Highest sustained checkout rate with two ordering instances over that with one.
    pub second_ordering_ratio: Option<f64>,
    /// The trade-off lab on the topology with two ordering instances.
    pub lab: Vec<Scenario>,
}

/// One topology, from launch to the last figure.
#[derive(Debug, Clone, Serialize)]
pub struct TopologyRun {
    pub ordering_instances: usize,
    pub agora_processes: usize,
    /// From the first process started to the last one ready.
    pub launch_s: f64,
    /// With no load, the pipeline drained, for one step's time.
    pub idle: ProcessCpu,
    pub steps: Vec<DistStep>,
    pub max_rate: f64,
    pub at_rate: DistStep,
    pub accepted_to_ready: Lag,
}

/// A checkout step and the CPU it cost, from its start until the pipeline behind it
/// had drained.
#[derive(Debug, Clone, Serialize)]
pub struct DistStep {
    #[serde(flatten)]
    pub step: Step,
    pub processes: ProcessCpu,
}

impl DistStep {
    /// CPU milliseconds per successful checkout, of `seconds` of CPU.
    pub fn per_order_ms(&self, seconds: f64) -> f64 {
        seconds * 1e3 / (self.step.summary.succeeded.max(1) as f64)
    }
}

/// CPU seconds spent over an interval, by whom.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ProcessCpu {
    pub wall_s: f64,
    /// Every `agora run` process of the topology, summed.
    pub services_s: f64,
    /// The three nats-servers.
    pub nats_s: f64,
    /// Every `postgres` process on this machine.
    pub postgres_s: f64,
    /// This process: the load generator.
    pub loadgen_s: f64,
    /// The whole machine (`/proc/stat`): everything above, and whatever else ran.
    pub machine_s: f64,
}

impl ProcessCpu {
    /// Cores kept busy by `seconds` of CPU over the interval.
    pub fn cores(&self, seconds: f64) -> f64 {
        seconds / self.wall_s.max(1e-3)
    }
}

/// Clock ticks per second of `/proc` (`CLK_TCK`, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// CPU ticks by process at one instant.
struct CpuSnapshot {
    at: Instant,
    services: HashMap<u32, u64>,
    nats: HashMap<u32, u64>,
    postgres: HashMap<u32, u64>,
    own: u64,
    machine: u64,
}

impl CpuSnapshot {
    fn take(services: &[u32], nats: &[u32]) -> Self {
        let of = |pids: &[u32]| {
            pids.iter()
                .filter_map(|&pid| Some((pid, ticks(&format!("/proc/{pid}/stat"))?)))
                .collect()
        };
        Self {
            at: Instant::now(),
            services: of(services),
            nats: of(nats),
            postgres: of(&postgres_pids()),
            own: ticks("/proc/self/stat").unwrap_or(0),
            machine: machine_ticks(),
        }
    }

    fn since(&self, earlier: &CpuSnapshot) -> ProcessCpu {
        // A process born in between (a PostgreSQL backend) counts from its start.
        let spent = |now: &HashMap<u32, u64>, before: &HashMap<u32, u64>| {
            now.iter()
                .map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0)))
                .sum::<u64>() as f64
                / TICKS_PER_S
        };
        ProcessCpu {
            wall_s: self.at.duration_since(earlier.at).as_secs_f64(),
            services_s: spent(&self.services, &earlier.services),
            nats_s: spent(&self.nats, &earlier.nats),
            postgres_s: spent(&self.postgres, &earlier.postgres),
            loadgen_s: self.own.saturating_sub(earlier.own) as f64 / TICKS_PER_S,
            machine_s: self.machine.saturating_sub(earlier.machine) as f64 / TICKS_PER_S,
        }
    }
}

/// utime + stime of a `/proc/<pid>/stat`.
fn ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // pid (comm) state …: comm may hold spaces; utime and stime are the 12th and
    // 13th fields after it.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn postgres_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .collect()
}

/// Busy ticks of every core: user, nice, system, irq, softirq, steal.
fn machine_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum()
}

/// The processes of a running topology.
struct Live {
    topology: Mutex<Topology>,
    nats: Mutex<NatsCluster>,
}

impl Live {
    fn sample(&self) -> CpuSnapshot {
        let services = self.topology.lock().pids();
        let nats = self.nats.lock().pids();
        CpuSnapshot::take(&services, &nats)
    }
}

/// The ordering instance killed, of two; the NATS node killed, of three.
const KILLED_ORDERING: usize = 1;
const KILLED_NATS: usize = 0;

#[async_trait::async_trait]
impl Processes for Live {
    async fn kill(&self, fault: Fault) -> anyhow::Result<()> {
        match fault {
            Fault::OrderingKilled => self
                .topology
                .lock()
                .kill(ServiceName::Ordering, KILLED_ORDERING),
            Fault::NatsNodeKilled => {
                self.nats.lock().node(KILLED_NATS).kill();
                Ok(())
            }
            other => bail!("{} kills no process", other.label()),
        }
    }

    async fn revive(&self, fault: Fault) -> anyhow::Result<()> {
        // Blocking until the process is ready: not on a worker the load needs.
        tokio::task::block_in_place(|| match fault {
            Fault::OrderingKilled => self
                .topology
                .lock()
                .restart(ServiceName::Ordering, KILLED_ORDERING),
            Fault::NatsNodeKilled => {
                let mut nats = self.nats.lock();
                nats.node(KILLED_NATS).restart();
                nats.wait_until_ready(Duration::from_secs(60));
                Ok(())
            }
            other => bail!("{} kills no process", other.label()),
        })
    }
}

/// The section, or why it was skipped.
pub async fn run(
    args: &BenchArgs,
    sizes: &Sizes,
    client: &Arc<ClientRuntime>,
) -> anyhow::Result<Result<Distributed, String>> {
    let (pg, nats_server, postgres) = match servers(args).await {
        Ok(found) => found,
        Err(why) if args.distributed => bail!("the distributed topology cannot run: {why}"),
        Err(why) => {
            eprintln!(
                "agora bench: the distributed topology is skipped: {why} (--distributed makes this an error)"
            );
            return Ok(Err(why));
        }
    };
    let mut runs = Vec::new();
    let mut lab = Vec::new();
    for ordering in [1, 2] {
        let (measured, rows) =
            topology_run(args, sizes, client, &pg, ordering, ordering == 2).await?;
        runs.push(measured);
        lab.extend(rows);
    }
    let second_ordering_ratio =
        (runs[0].max_rate > 0.0).then(|| runs[1].max_rate / runs[0].max_rate);
    Ok(Ok(Distributed {
        nats_server,
        postgres,
        pool_max_conns: POOL_MAX_CONNS,
        runs,
        second_ordering_ratio,
        lab,
    }))
}

/// The PostgreSQL URL, nats-server's version and PostgreSQL's; or what is missing.
async fn servers(args: &BenchArgs) -> Result<(String, String, String), String> {
    use sqlx::Connection;
    let Some(pg) = args.pg.clone() else {
        return Err("no PostgreSQL server given (--pg URL or AGORA_PG_URL)".into());
    };
    let Some(nats) = agora_testkit::find_nats_server() else {
        return Err("nats-server not found on PATH (apt-get install nats-server)".into());
    };
    let nats_version = std::process::Command::new(&nats)
        .arg("--version")
        .output()
        .map_err(|e| format!("{} --version: {e}", nats.display()))?;
    let nats_version = String::from_utf8_lossy(&nats_version.stdout)
        .trim()
        .to_owned();
    let connected =
        tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(&pg)).await;
    let mut conn = match connected {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(format!("PostgreSQL (--pg) unreachable: {e}")),
        Err(_) => return Err("PostgreSQL (--pg) did not answer within 10 s".into()),
    };
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| format!("PostgreSQL (--pg): {e}"))?;
    let _ = conn.close().await;
    Ok((pg, nats_version, format!("PostgreSQL {version}")))
}

/// Launches the topology with `ordering` instances of ordering, measures it (and runs
/// the lab on it if `lab`), and takes it down; processes and databases go whatever
/// happens.
async fn topology_run(
    args: &BenchArgs,
    sizes: &Sizes,
    client: &Arc<ClientRuntime>,
    pg: &str,
    ordering: usize,
    lab: bool,
) -> anyhow::Result<(TopologyRun, Vec<Scenario>)> {
    let processes = ServiceName::ALL.len() - 1 + ordering;
    suite::say(
        args,
        &format!(
            "distributed topology, ordering ×{ordering}: 3 NATS nodes, a database per service, {processes} agora run processes"
        ),
    );
    let launched = Instant::now();
    let nats = tokio::task::spawn_blocking(|| NatsCluster::start(3))
        .await
        .context("start a 3-node NATS cluster")?
        .context("nats-server not found")?;
    let names: Vec<&str> = ServiceName::ALL.iter().map(|s| s.as_str()).collect();
    let databases = PgDatabases::create_on(pg, "agora_bench", &names)
        .await
        .context("create a database per service")?;
    let mut config = TopologyConfig::new(
        std::env::current_exe().context("this program's path")?,
        nats.urls(),
        databases.template().to_owned(),
    );
    config.pool_max_conns = Some(POOL_MAX_CONNS);
    config.instances = BTreeMap::from([(ServiceName::Ordering, ordering)]);
    // Their warnings under overload would drown the bench's progress.
    config.log = "error".into();
    let topology = tokio::task::spawn_blocking(move || Topology::start(config))
        .await
        .context("launch the topology")??;
    let launch_s = launched.elapsed().as_secs_f64();
    let gateway = topology.urls(ServiceName::Gateway)[0].clone();
    let password = topology.admin_password().to_owned();
    let live = Arc::new(Live {
        topology: Mutex::new(topology),
        nats: Mutex::new(nats),
    });
    let driven = {
        let (live, sizes, bound, quiet) =
            (live.clone(), sizes.clone(), args.p99_bound_ms, args.json);
        on_runtime(client, async move {
            drive(
                &live, &gateway, &password, &sizes, bound, quiet, ordering, lab,
            )
            .await
        })
        .await
    };
    suite::say(args, "stopping the distributed topology");
    // Killed, not stopped: nothing here is measured any more. The processes first,
    // then the NATS nodes, then the databases.
    drop(live);
    drop(databases);
    let (idle, steps, at_rate, accepted_to_ready, rows) = driven?;
    Ok((
        TopologyRun {
            ordering_instances: ordering,
            agora_processes: processes,
            launch_s,
            idle,
            max_rate: suite::max_sustained(
                &steps.iter().map(|s| s.step.clone()).collect::<Vec<_>>(),
            ),
            steps,
            at_rate,
            accepted_to_ready,
        },
        rows,
    ))
}

type Driven = (ProcessCpu, Vec<DistStep>, DistStep, Lag, Vec<Scenario>);

#[allow(clippy::too_many_arguments)]
async fn drive(
    live: &Live,
    gateway: &str,
    password: &str,
    sizes: &Sizes,
    bound: f64,
    quiet: bool,
    ordering: usize,
    lab: bool,
) -> anyhow::Result<Driven> {
    let mut ctx = suite::prepare(gateway, password, sizes, quiet).await?;
    ctx.say(&format!("ordering ×{ordering}: idle"));
    ctx.drain().await?;
    let before = live.sample();
    tokio::time::sleep(Duration::from_secs_f64(sizes.dist_step_s)).await;
    let idle = live.sample().since(&before);
    ctx.say(&format!(
        "ordering ×{ordering}: checkout, stepping the offered rate up"
    ));
    let mut steps = Vec::new();
    for &rate in &sizes.dist_rates {
        let label = format!("ordering ×{ordering}: checkout @ {rate:.0}/s");
        let (step, _) = measured(&mut ctx, live, &label, rate, sizes.dist_step_s, bound).await?;
        let sustained = step.step.sustained;
        steps.push(step);
        if !sustained {
            break;
        }
    }
    let label = format!("ordering ×{ordering}: checkout @ {:.0}/s", sizes.dist_rate);
    ctx.say(&format!("{label} for {:.0} s", sizes.dist_s));
    let (at_rate, placed) =
        measured(&mut ctx, live, &label, sizes.dist_rate, sizes.dist_s, bound).await?;
    ctx.say("accepted → ready_for_shipping, from the orders' histories");
    let accepted_to_ready = suite::accepted_to_ready(&ctx, &placed).await?;
    let mut rows = Vec::new();
    if lab {
        let sizes = Sizes {
            lab_rate: sizes.dist_lab_rate,
            ..sizes.clone()
        };
        rows = tradeoff::run(&mut ctx, &sizes).await?;
        rows.extend(tradeoff::run_kills(&mut ctx, &sizes, live).await?);
    }
    Ok((idle, steps, at_rate, accepted_to_ready, rows))
}

/// Checkouts at `rate` for `seconds`, then the drain; the CPU of both.
async fn measured(
    ctx: &mut Ctx,
    live: &Live,
    label: &str,
    rate: f64,
    seconds: f64,
    bound: f64,
) -> anyhow::Result<(DistStep, Vec<Placed>)> {
    let before = live.sample();
    let (stats, cpu, placed) = ctx.checkouts(label, rate, seconds).await;
    let mut step = Step::of(&stats, cpu, bound);
    step.drain_s = ctx.drain().await?;
    let processes = live.sample().since(&before);
    Ok((DistStep { step, processes }, placed))
}
