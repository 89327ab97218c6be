//! The trade-off lab: where ordering takes the customer's address from (its replica,
//! or the customer service live), under a fault, against checkout success, latency
//! and how stale the address used was.
//!
//! For each mode and each fault: every customer's address is changed (after the
//! fault is applied when the customer service can still be written to, before it
//! otherwise), then checkouts run at a steady rate; each successful order's address is
//! compared with the latest one its customer set. Stale: it is not the latest; its
//! age: the order's time minus the time the latest address was set (0 when fresh).
//! Then the fault is healed and the shop left to settle (bus drained, breakers closed)
//! before the next scenario.
//!
//! On the distributed topology, two more faults kill a process halfway through the
//! checkouts ([`run_kills`]): an ordering instance (one of two) or a NATS node (one
//! of three), SIGKILL; healing starts it again.

use std::time::{Duration, SystemTime};

use futures::StreamExt;
use serde::Serialize;
use serde_json::json;

use super::suite::{Ctx, Lag, Sizes};
use crate::loadgen::core::Summary;
use crate::loadgen::shopper::Customer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    Healthy,
    CustomerDown,
    CustomerSlow,
    BusPaused,
    /// SIGKILL of one of two ordering processes, halfway through the checkouts.
    OrderingKilled,
    /// SIGKILL of one of the three NATS servers, halfway through the checkouts.
    NatsNodeKilled,
}

impl Fault {
    pub const ALL: [Fault; 4] = [
        Fault::Healthy,
        Fault::CustomerDown,
        Fault::CustomerSlow,
        Fault::BusPaused,
    ];
    /// The faults that kill a process of the distributed topology.
    pub const KILLS: [Fault; 2] = [Fault::OrderingKilled, Fault::NatsNodeKilled];

    pub fn label(self) -> &'static str {
        match self {
            Fault::Healthy => "healthy",
            Fault::CustomerDown => "customer down",
            Fault::CustomerSlow => "customer slow (500 ms)",
            Fault::BusPaused => "bus paused",
            Fault::OrderingKilled => "an ordering instance killed (1 of 2, SIGKILL)",
            Fault::NatsNodeKilled => "a NATS node killed (1 of 3, SIGKILL)",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Fault::Healthy => "healthy",
            Fault::CustomerDown => "cust. down",
            Fault::CustomerSlow => "cust. slow",
            Fault::BusPaused => "bus paused",
            Fault::OrderingKilled => "ord. killed",
            Fault::NatsNodeKilled => "NATS killed",
        }
    }

    /// Its place in tables and plots.
    pub fn rank(self) -> usize {
        Fault::ALL
            .iter()
            .chain(&Fault::KILLS)
            .position(|f| *f == self)
            .unwrap_or(usize::MAX)
    }
}

/// Kills a process of a distributed topology and starts it again.
#[async_trait::async_trait]
pub trait Processes: Send + Sync {
    /// SIGKILL of the process `fault` names.
    async fn kill(&self, fault: Fault) -> anyhow::Result<()>;
    /// Starts it again, and waits until it is ready.
    async fn revive(&self, fault: Fault) -> anyhow::Result<()>;
}

/// One mode under one fault.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// `sync` or `replica`.
    pub mode: &'static str,
    pub fault: Fault,
    /// Every checkout, failed ones included.
    #[serde(flatten)]
    pub summary: Summary,
    pub failures: std::collections::BTreeMap<String, u64>,
    /// Successful orders whose address was not the customer's latest.
    pub stale_fraction: f64,
    /// Age of the address used, over successful orders (0 when fresh).
    pub age: Lag,
    /// How long the shop took to settle after the fault was healed.
    pub settle_s: Option<f64>,
}

pub async fn run(ctx: &mut Ctx, sizes: &Sizes) -> anyhow::Result<Vec<Scenario>> {
    let mut scenarios = Vec::new();
    for mode in ["sync", "replica"] {
        ctx.admin.customer_data(mode).await?;
        for fault in Fault::ALL {
            ctx.say(&format!(
                "trade-off lab: customer_data={mode}, {}",
                fault.label()
            ));
            scenarios.push(scenario(ctx, sizes, mode, fault).await?);
        }
    }
    ctx.admin.customer_data("replica").await?;
    Ok(scenarios)
}

/// The faults that kill a process, in replica mode (the shop's default).
pub async fn run_kills(
    ctx: &mut Ctx,
    sizes: &Sizes,
    processes: &dyn Processes,
) -> anyhow::Result<Vec<Scenario>> {
    ctx.admin.customer_data("replica").await?;
    let mut scenarios = Vec::new();
    for fault in Fault::KILLS {
        ctx.say(&format!(
            "trade-off lab: customer_data=replica, {}",
            fault.label()
        ));
        scenarios.push(killing(ctx, sizes, fault, processes).await?);
    }
    Ok(scenarios)
}

async fn killing(
    ctx: &mut Ctx,
    sizes: &Sizes,
    fault: Fault,
    processes: &dyn Processes,
) -> anyhow::Result<Scenario> {
    for customer in &mut ctx.customers {
        ctx.api.refresh(customer).await?;
    }
    change_addresses(ctx, &format!("replica {} Street", fault.short())).await?;
    let label = format!("replica, {}", fault.short());
    let halfway = Duration::from_secs_f64(sizes.lab_s / 2.0);
    let (run, killed) = tokio::join!(ctx.checkouts(&label, sizes.lab_rate, sizes.lab_s), async {
        tokio::time::sleep(halfway).await;
        processes.kill(fault).await
    });
    killed?;
    processes.revive(fault).await?;
    let settle_s = settle(ctx).await?;
    let (stats, _cpu, placed) = run;
    Ok(outcome(ctx, "replica", fault, &stats, &placed, settle_s))
}

async fn scenario(
    ctx: &mut Ctx,
    sizes: &Sizes,
    mode: &'static str,
    fault: Fault,
) -> anyhow::Result<Scenario> {
    for customer in &mut ctx.customers {
        ctx.api.refresh(customer).await?;
    }
    let street = format!("{mode} {} Street", fault.short());
    match fault {
        Fault::Healthy => change_addresses(ctx, &street).await?,
        Fault::BusPaused => {
            ctx.admin.bus_paused(true).await?;
            change_addresses(ctx, &street).await?;
        }
        Fault::CustomerDown => {
            change_addresses(ctx, &street).await?;
            ctx.admin
                .chaos("customer", json!({ "mode": "down" }))
                .await?;
        }
        Fault::CustomerSlow => {
            change_addresses(ctx, &street).await?;
            ctx.admin
                .chaos("customer", json!({ "mode": "slow", "latency_ms": 500 }))
                .await?;
        }
        Fault::OrderingKilled | Fault::NatsNodeKilled => {
            anyhow::bail!("{}: a process is killed by run_kills", fault.label())
        }
    }
    let label = format!("{mode}, {}", fault.short());
    let run = ctx.checkouts(&label, sizes.lab_rate, sizes.lab_s).await;
    // Heal whatever the fault was, before anything can fail.
    let healed = heal(ctx).await;
    let (stats, _cpu, placed) = run;
    healed?;
    let settle_s = settle(ctx).await?;
    Ok(outcome(ctx, mode, fault, &stats, &placed, settle_s))
}

/// The figures of a scenario from its checkouts.
fn outcome(
    ctx: &Ctx,
    mode: &'static str,
    fault: Fault,
    stats: &crate::loadgen::core::RunStats,
    placed: &[crate::loadgen::shopper::Placed],
    settle_s: Option<f64>,
) -> Scenario {
    let mut ages = Vec::with_capacity(placed.len());
    let mut stale = 0usize;
    for order in placed {
        let customer = &ctx.customers[order.customer];
        if order.address_line1 == customer.address_line1 {
            ages.push(0.0);
        } else {
            stale += 1;
            let age = order
                .at
                .duration_since(customer.address_set_at)
                .unwrap_or_default();
            ages.push(age.as_secs_f64() * 1e3);
        }
    }
    let total = stats.total();
    Scenario {
        mode,
        fault,
        summary: total.summary(),
        failures: total.failures.clone(),
        stale_fraction: if placed.is_empty() {
            0.0
        } else {
            stale as f64 / placed.len() as f64
        },
        age: Lag::of(ages, 0),
        settle_s,
    }
}

/// Every customer gets a new address, with `street` in its first line.
async fn change_addresses(ctx: &mut Ctx, street: &str) -> anyhow::Result<()> {
    let changed: Vec<anyhow::Result<(usize, Customer)>> =
        futures::stream::iter(ctx.customers.clone().into_iter().enumerate())
            .map(|(n, mut customer)| {
                let api = ctx.api.clone();
                let line1 = format!("{n} {street}");
                async move {
                    api.set_address(&mut customer, &line1).await?;
                    Ok((n, customer))
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
    for result in changed {
        let (n, customer) = result?;
        ctx.customers[n] = customer;
    }
    Ok(())
}

async fn heal(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.admin.chaos("customer", json!({ "mode": "ok" })).await?;
    ctx.admin.bus_paused(false).await?;
    Ok(())
}

/// Until the bus has nothing pending and a checkout goes through (so that breakers
/// opened by the fault are closed again); the time it took, or `None` after the
/// drain deadline.
async fn settle(ctx: &mut Ctx) -> anyhow::Result<Option<f64>> {
    let started = std::time::Instant::now();
    let Some(_) = ctx.drain().await? else {
        return Ok(None);
    };
    let token = ctx.customers[0].token.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let deadline = SystemTime::now() + ctx.drain_deadline;
    let mut successes = 0;
    while SystemTime::now() < deadline {
        tick.tick().await;
        let (outcome, _) = ctx
            .api
            .checkout(&token, crate::loadgen::shopper::pick(&ctx.products))
            .await;
        successes = if outcome.ok { successes + 1 } else { 0 };
        if successes >= 3 {
            return Ok(Some(started.elapsed().as_secs_f64()));
        }
    }
    Ok(None)
}
