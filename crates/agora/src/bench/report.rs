//! The report: markdown tables, the figures against the targets, and the plots.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::plot;
use super::suite::{Results, Step};
use super::tradeoff::{Fault, Scenario};

pub const BEGIN: &str = "<!-- bench:begin -->";
pub const END: &str = "<!-- bench:end -->";

/// One of the trade-off's claims and whether this run shows it.
#[derive(Debug, Clone)]
pub struct Claim {
    pub claim: String,
    pub holds: bool,
}

fn scenario<'a>(r: &'a Results, mode: &str, fault: Fault) -> Option<&'a Scenario> {
    find(&r.tradeoff, mode, fault)
}

fn find<'a>(scenarios: &'a [Scenario], mode: &str, fault: Fault) -> Option<&'a Scenario> {
    scenarios
        .iter()
        .find(|s| s.mode == mode && s.fault == fault)
}

/// What the lab must show (the run fails when it does not).
pub fn claims(r: &Results) -> Vec<Claim> {
    claims_of(&r.tradeoff)
}

/// What a lab's rows show of the design's promises.
fn claims_of(lab: &[Scenario]) -> Vec<Claim> {
    let mut claims = Vec::new();
    let mut claim = |claim: String, holds: bool| claims.push(Claim { claim, holds });
    for mode in ["sync", "replica"] {
        if let Some(s) = find(lab, mode, Fault::Healthy) {
            claim(
                format!(
                    "healthy, {mode} mode: ≥ 95% of checkouts succeed ({:.1}%)",
                    s.summary.success_rate * 100.0
                ),
                s.summary.success_rate >= 0.95,
            );
        }
    }
    if let Some(s) = find(lab, "replica", Fault::CustomerDown) {
        claim(
            format!(
                "Customer down, replica mode: checkout goes on, ≥ 95% succeed ({:.1}%)",
                s.summary.success_rate * 100.0
            ),
            s.summary.success_rate >= 0.95,
        );
    }
    if let Some(s) = find(lab, "sync", Fault::CustomerDown) {
        claim(
            format!(
                "Customer down, sync mode: checkout fails, < 5% succeed ({:.1}%)",
                s.summary.success_rate * 100.0
            ),
            s.summary.success_rate < 0.05,
        );
    }
    let sync_stale = lab
        .iter()
        .filter(|s| s.mode == "sync")
        .map(|s| s.stale_fraction)
        .fold(0.0, f64::max);
    claim(
        format!(
            "sync mode: no order with a stale address ({:.1}% at worst)",
            sync_stale * 100.0
        ),
        sync_stale == 0.0,
    );
    if let Some(s) = find(lab, "replica", Fault::BusPaused) {
        claim(
            format!(
                "bus paused, replica mode: orders use the last address ordering saw, stale ({:.1}%)",
                s.stale_fraction * 100.0
            ),
            s.stale_fraction > 0.0,
        );
    }
    claims
}

fn yes(met: bool) -> &'static str {
    if met { "yes" } else { "**no**" }
}

fn num(x: f64) -> String {
    let rounded = x.round() as i64;
    let s = rounded.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if rounded < 0 { format!("-{out}") } else { out }
}

fn failures(f: &std::collections::BTreeMap<String, u64>) -> String {
    if f.is_empty() {
        return String::new();
    }
    f.iter()
        .map(|(k, v)| format!("{k}×{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The report section, markdown (also what `agora bench` prints).
pub fn text(r: &Results) -> String {
    let mut s = String::new();
    let w = &mut s;
    let m = &r.machine;
    let _ = writeln!(w, "## The whole shop — `agora bench`\n");
    let _ = writeln!(
        w,
        "Run {} — `{}` — {} build{}, {:.0} s wall time.  ",
        r.date,
        r.command,
        r.build,
        if r.quick {
            ", `--quick` (small sizes: a smoke run, not the figures)"
        } else {
            ""
        },
        r.wall_s
    );
    let _ = writeln!(
        w,
        "Machine: {} cores ({}), {:.1} GiB memory, Linux {}; load average {} (1, 5, 15 min) when \
         the run began. The load generator, the shop and the baselines share these cores, in \
         one process.\n",
        m.cores, m.cpu_model, m.memory_gib, m.kernel, r.load_at_start
    );
    let _ = writeln!(
        w,
        "Everything goes through the public HTTP API of a fresh shop (`Shop::start`, on \
         127.0.0.1, data on the disk under the current directory, rate limits off). The load \
         generator is open-loop: request *i* is due at *start + i/rate* and its latency counts \
         from then, failed requests included, so a stall cannot hide. A step is *sustained* \
         when ≥ 99% of its requests succeed and their p99 is ≤ {} ms. Each checkout is a \
         random one of {} signed-in customers ordering one of the demo products with a fresh \
         `Idempotency-Key`.\n",
        r.p99_bound_ms, r.sizes.customers
    );

    // Targets.
    let at = &r.at_target;
    let full_rate = !r.quick && (at.rate - 1_000.0).abs() < 1.0;
    let rate_note = |met: bool| {
        if full_rate {
            yes(met).to_owned()
        } else {
            format!("— (measured at {:.0}/s)", at.rate)
        }
    };
    let _ = writeln!(w, "### Against the targets of the design brief\n");
    let _ = writeln!(w, "| target | measured | met? |\n|---|---|---|");
    let _ = writeln!(
        w,
        "| checkout ≥ 5,000 orders/s | highest sustained step: {} orders/s (steps tried: {}) | {} |",
        num(r.checkout_max_rate),
        r.checkout
            .iter()
            .map(|s| num(s.rate))
            .collect::<Vec<_>>()
            .join(", "),
        yes(r.checkout_max_rate >= 5_000.0)
    );
    let _ = writeln!(
        w,
        "| checkout p99 ≤ 10 ms at 1,000 orders/s | p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms at {} orders/s ({:.2}% ok) | {} |",
        at.summary.p50_ms,
        at.summary.p99_ms,
        at.summary.max_ms,
        num(at.rate),
        at.summary.success_rate * 100.0,
        rate_note(at.summary.p99_ms <= 10.0 && at.summary.success_rate >= 0.99)
    );
    let a2r = &r.accepted_to_ready;
    let _ = writeln!(
        w,
        "| accepted → ready_for_shipping p99 ≤ 25 ms at 1,000 orders/s | p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {} orders ({} never got there; ms timestamps) | {} |",
        a2r.p50_ms,
        a2r.p99_ms,
        a2r.max_ms,
        a2r.count,
        a2r.missing,
        rate_note(a2r.p99_ms <= 25.0 && a2r.missing == 0 && a2r.count > 0)
    );
    let fr = &r.replica_freshness;
    let _ = writeln!(
        w,
        "| address change → visible in ordering p99 ≤ 5 ms | p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} changes (idle shop; to within one preview round trip) | {} |",
        fr.p50_ms,
        fr.p99_ms,
        fr.max_ms,
        fr.count,
        yes(fr.p99_ms <= 5.0)
    );
    let _ = writeln!(
        w,
        "| bus, embedded: ≥ 100,000 durable msg/s | {} msg/s ({} messages) | {} |",
        num(r.bus.throughput_msgs),
        num(r.sizes.bus_messages as f64),
        yes(r.bus.throughput_msgs >= 100_000.0)
    );
    let from_commit_p99 = r.bus.commit_to_consumer_p99_ms.unwrap_or(f64::INFINITY);
    let _ = writeln!(
        w,
        "| bus, embedded: commit-to-consumer p99 ≤ 1 ms at 1,000 msg/s | commit → consumed p50 {:.3} ms, p99 {:.3} ms; with the fsync (publish began → consumed) p50 {:.3} ms, p99 {:.3} ms | {} |",
        r.bus.commit_to_consumer_p50_ms.unwrap_or(f64::NAN),
        from_commit_p99,
        r.bus.p50_ms,
        r.bus.p99_ms,
        match (from_commit_p99 <= 1.0, r.bus.p99_ms <= 1.0) {
            (true, true) => "yes",
            (true, false) => "yes (commit → consumer); **no** with the fsync",
            _ => "**no**",
        }
    );
    if let Some(s) = scenario(r, "replica", Fault::CustomerDown) {
        let _ = writeln!(
            w,
            "| Customer down → 100% of replica-mode checkouts succeed | {:.2}% ({} of {}) | {} |",
            s.summary.success_rate * 100.0,
            s.summary.succeeded,
            s.summary.count,
            yes(s.summary.succeeded == s.summary.count && s.summary.count > 0)
        );
    }
    if let Some(s) = scenario(r, "sync", Fault::CustomerDown) {
        let _ = writeln!(
            w,
            "| Customer down → sync-mode checkouts fail fast: p99 ≤ 300 ms, ≤ 10 ms once the breaker is open | {:.2}% succeed; p50 {:.2} ms (most requests meet the open breaker), p99 {:.1} ms | {} |",
            s.summary.success_rate * 100.0,
            s.summary.p50_ms,
            s.summary.p99_ms,
            yes(s.summary.p99_ms <= 300.0 && s.summary.p50_ms <= 10.0)
        );
    }
    if let Some(s) = scenario(r, "replica", Fault::BusPaused) {
        let _ = writeln!(
            w,
            "| bus paused → replicas converge within 1 s of resume | bus drained and checkout healthy again {} after resume ({:.0} s pause, {} orders queued behind it) | {} |",
            s.settle_s
                .map_or("not within the deadline".into(), |t| format!("{t:.2} s")),
            r.sizes.lab_s,
            s.summary.succeeded,
            s.settle_s.map_or("**no**", |t| yes(t <= 1.0))
        );
    }
    let _ = writeln!(
        w,
        "| bus paused 60 s: no accepted order lost; kill -9 under load: all orders terminal | not measured by `agora bench` (the crash and chaos suites check them) | — |\n"
    );

    // Baselines.
    let _ = writeln!(w, "### This machine's baselines, same run\n");
    let _ = writeln!(w, "| baseline | figure |\n|---|---|");
    let hello_best = r
        .hello
        .iter()
        .filter(|s| s.sustained)
        .max_by(|a, b| a.rate.total_cmp(&b.rate));
    let _ = writeln!(
        w,
        "| axum \"hello\" through the same load generator | highest sustained step {} req/s{}; steps: {} |",
        num(r.hello_max_rate),
        hello_best.map_or(String::new(), |s| format!(
            " (p50 {:.2} ms, p99 {:.2} ms)",
            s.summary.p50_ms, s.summary.p99_ms
        )),
        r.hello
            .iter()
            .map(|s| format!(
                "{}/s → {} ok/s, p99 {:.1} ms{}",
                num(s.rate),
                num(s.ok_per_s),
                s.summary.p99_ms,
                if s.sustained { "" } else { " (not sustained)" }
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let _ = writeln!(
        w,
        "| raw SQLite, WAL, synchronous=FULL | {} single-row commits/s (p50 {:.3} ms, p99 {:.3} ms); {} rows/s in batches of 100 |",
        num(r.sqlite.single_row_commits_per_s),
        r.sqlite.commit_p50_ms,
        r.sqlite.commit_p99_ms,
        num(r.sqlite.rows_per_s_batches_of_100)
    );
    let _ = writeln!(
        w,
        "| embedded bus (Agora's) | {} msg/s publish→consume; at 1,000 msg/s p50 {:.3} ms, p99 {:.3} ms, publish p99 {:.3} ms, commit → consumer p99 {:.3} ms |\n",
        num(r.bus.throughput_msgs),
        r.bus.p50_ms,
        r.bus.p99_ms,
        r.bus.publish_p99_ms.unwrap_or(0.0),
        from_commit_p99
    );
    if r.hello_max_rate > 0.0 {
        let _ = writeln!(
            w,
            "Ratios: checkout's highest sustained rate is {:.3} of the hello route's; {:.2} of raw \
             SQLite's single-row commit rate.\n",
            r.checkout_max_rate / r.hello_max_rate,
            r.checkout_max_rate / r.sqlite.single_row_commits_per_s.max(1.0)
        );
    }

    // Checkout steps.
    let _ = writeln!(w, "### Checkout, offered rate stepped up\n");
    let _ = writeln!(
        w,
        "{:.0} s per step; the bus is drained between steps (*drain*: how long the pipeline \
         behind checkout — payment capture, stock, fulfilment, shipping, notification — took \
         to catch up). CPU: cores this process kept busy during the step, by thread.\n",
        r.sizes.checkout_step_s
    );
    steps_table(w, &r.checkout);
    let _ = writeln!(
        w,
        "\n![Latency percentiles vs. offered load](bench/latency-vs-load.svg)\n"
    );
    let _ = writeln!(
        w,
        "### Checkout at {} orders/s for {:.0} s\n",
        num(at.rate),
        r.sizes.target_s
    );
    steps_table(w, std::slice::from_ref(at));
    let _ = writeln!(w);

    // Trade-off.
    let _ = writeln!(w, "### The trade-off lab\n");
    let _ = writeln!(
        w,
        "Checkouts at {:.0}/s for {:.0} s per scenario. Before each, every customer's address is \
         changed (after the fault is applied for *healthy* and *bus paused*, just before it \
         for the Customer faults, which cannot take writes). *Stale*: the order's address is \
         not the latest its customer set; *age*: the order's time minus the time that latest \
         address was set (0 when fresh), over successful orders. *Settle*: after the fault is \
         healed, until the bus is drained and checkouts succeed again.\n",
        r.sizes.lab_rate, r.sizes.lab_s
    );
    lab_table(w, &r.tradeoff);
    let _ = writeln!(w, "\n![The trade-off lab](bench/tradeoff.svg)\n");
    let _ = writeln!(
        w,
        "What the lab shows, checked by the run (it fails otherwise):\n"
    );
    for c in claims(r) {
        let _ = writeln!(w, "- {} {}", if c.holds { "✔" } else { "✘" }, c.claim);
    }
    let _ = writeln!(w);

    // Limits.
    let _ = writeln!(w, "### Where the time went, this run\n");
    if let Some(top) = r.checkout.iter().max_by(|a, b| a.rate.total_cmp(&b.rate)) {
        let _ = writeln!(
            w,
            "- Highest checkout step ({} orders/s offered, {} ok/s, {}sustained): {}; the \
             load generator's scheduler started a request up to {:.1} ms late.",
            num(top.rate),
            num(top.ok_per_s),
            if top.sustained { "" } else { "not " },
            top.cpu.describe(),
            top.max_start_lag_ms
        );
    }
    let _ = writeln!(
        w,
        "- Checkout at {} orders/s: {}; drain after it: {}.",
        num(at.rate),
        at.cpu.describe(),
        at.drain_s
            .map_or("not within the deadline".into(), |t| format!("{t:.1} s"))
    );
    if let Some(h) = r.hello.last() {
        let _ = writeln!(
            w,
            "- Hello baseline, last step ({} req/s): {}.",
            num(h.rate),
            h.cpu.describe()
        );
    }
    let _ = writeln!(w);
    distributed(w, r);
    s
}

/// The distributed topology's part of the report.
fn distributed(w: &mut String, r: &Results) {
    let _ = writeln!(
        w,
        "## The distributed topology — same run
"
    );
    let Some(d) = &r.distributed else {
        let _ = writeln!(
            w,
            "Not measured in this run: {}.\n",
            r.distributed_skipped.as_deref().unwrap_or("skipped")
        );
        return;
    };
    let _ = writeln!(
        w,
        "The same shop as `agora run` processes, one per service (ordering once, then \
         twice), on a 3-node JetStream cluster ({}, streams replicated 3 times) and {} (a \
         fresh database per service, `pool_max_conns={}` per process), all on this \
         machine's {} cores with the load generator, which drives the gateway as above. \
         CPU is read from `/proc/<pid>/stat` of each process, from the start of a step \
         until the pipeline behind it has drained, and divided by the checkouts that \
         succeeded: *services* sums every `agora run` process; NATS, PostgreSQL (every \
         `postgres` process on the machine) and the load generator (this process) are \
         counted apart; *machine* is every core's busy time (`/proc/stat`).\n",
        d.nats_server, d.postgres, d.pool_max_conns, r.machine.cores
    );
    let embedded_cpu_ms = r.at_target.cpu.busy_cores * r.sizes.target_s * 1e3
        / (r.at_target.summary.succeeded.max(1) as f64);
    let column = |f: &dyn Fn(&super::distributed::TopologyRun) -> String| {
        d.runs.iter().map(f).collect::<Vec<_>>().join(" | ")
    };
    let _ = writeln!(
        w,
        "| | embedded (`agora up`, one process) | {} |",
        column(&|t| format!(
            "distributed, ordering ×{} ({} processes)",
            t.ordering_instances, t.agora_processes
        ))
    );
    let _ = writeln!(w, "|---|---:|{}", "---:|".repeat(d.runs.len()));
    let best = |steps: &[Step]| {
        steps
            .iter()
            .filter(|s| s.sustained)
            .max_by(|a, b| a.rate.total_cmp(&b.rate))
            .map_or("—".into(), |s| {
                format!("{} orders/s (p99 {:.1} ms)", num(s.rate), s.summary.p99_ms)
            })
    };
    let _ = writeln!(
        w,
        "| highest sustained checkout step (p99 at it) | {} | {} |",
        best(&r.checkout),
        column(&|t| best(&t.steps.iter().map(|s| s.step.clone()).collect::<Vec<_>>()))
    );
    let _ = writeln!(
        w,
        "| checkout at a steady rate: success, p50 / p99 | {} orders/s: {:.2}%, {:.2} / {:.2} ms | {} |",
        num(r.at_target.rate),
        r.at_target.summary.success_rate * 100.0,
        r.at_target.summary.p50_ms,
        r.at_target.summary.p99_ms,
        column(&|t| format!(
            "{} orders/s: {:.2}%, {:.2} / {:.2} ms",
            num(t.at_rate.step.rate),
            t.at_rate.step.summary.success_rate * 100.0,
            t.at_rate.step.summary.p50_ms,
            t.at_rate.step.summary.p99_ms
        ))
    );
    let _ = writeln!(
        w,
        "| accepted → ready_for_shipping p50 / p99 / max (at that rate) | {:.0} / {:.0} / {:.0} ms | {} |",
        r.accepted_to_ready.p50_ms,
        r.accepted_to_ready.p99_ms,
        r.accepted_to_ready.max_ms,
        column(&|t| format!(
            "{:.0} / {:.0} / {:.0} ms ({} orders, {} never got there)",
            t.accepted_to_ready.p50_ms,
            t.accepted_to_ready.p99_ms,
            t.accepted_to_ready.max_ms,
            t.accepted_to_ready.count,
            t.accepted_to_ready.missing
        ))
    );
    let _ = writeln!(
        w,
        "| CPU per order: the services | {:.2} ms (the whole process, load generator included, drain excluded) | {} |",
        embedded_cpu_ms,
        column(&|t| format!(
            "{:.2} ms",
            t.at_rate.per_order_ms(t.at_rate.processes.services_s)
        ))
    );
    let _ = writeln!(
        w,
        "| CPU per order: NATS / PostgreSQL / load generator | — | {} |",
        column(&|t| {
            let p = &t.at_rate.processes;
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                t.at_rate.per_order_ms(p.nats_s),
                t.at_rate.per_order_ms(p.postgres_s),
                t.at_rate.per_order_ms(p.loadgen_s)
            )
        })
    );
    let _ = writeln!(
        w,
        "| cores busy with no load (pipeline drained): services / NATS / PostgreSQL | — | {} |",
        column(&|t| format!(
            "{:.2} / {:.2} / {:.2}",
            t.idle.cores(t.idle.services_s),
            t.idle.cores(t.idle.nats_s),
            t.idle.cores(t.idle.postgres_s)
        ))
    );
    let _ = writeln!(
        w,
        "| launch (NATS, databases, every process ready) | — | {} |\n",
        column(&|t| format!("{:.1} s", t.launch_s))
    );
    if let [one, two] = &d.runs[..] {
        let _ = writeln!(
            w,
            "A second ordering instance, on {} cores: highest sustained checkout step {} → {} \
             orders/s, a ratio of **{}**; at {} orders/s, p99 {:.1} → {:.1} ms and the services' \
             CPU per order {:.2} → {:.2} ms. (The steps are coarse: the ratio is that of the \
             highest steps sustained.)\n",
            r.machine.cores,
            num(one.max_rate),
            num(two.max_rate),
            d.second_ordering_ratio
                .map_or("— (nothing sustained with one)".into(), |x| format!(
                    "{x:.2}"
                )),
            num(two.at_rate.step.rate),
            one.at_rate.step.summary.p99_ms,
            two.at_rate.step.summary.p99_ms,
            one.at_rate.per_order_ms(one.at_rate.processes.services_s),
            two.at_rate.per_order_ms(two.at_rate.processes.services_s)
        );
    }

    let _ = writeln!(w, "### Distributed checkout, offered rate stepped up\n");
    let _ = writeln!(
        w,
        "{:.0} s per step, then the drain; cores: busy on average over the step and its drain.\n",
        r.sizes.dist_step_s
    );
    let _ = writeln!(
        w,
        "| ordering | offered/s | ok/s | success | p50 ms | p99 ms | max ms | sustained | failures | cores: services / NATS / PostgreSQL / load gen. / machine | services CPU per order | drain |"
    );
    let _ = writeln!(
        w,
        "|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|"
    );
    for t in &d.runs {
        for s in t.steps.iter().chain(std::iter::once(&t.at_rate)) {
            let p = &s.processes;
            let _ = writeln!(
                w,
                "| ×{} | {} | {} | {:.2}% | {:.2} | {:.2} | {:.1} | {} | {} | {:.2} / {:.2} / {:.2} / {:.2} / {:.2} | {:.2} ms | {} |",
                t.ordering_instances,
                num(s.step.rate),
                num(s.step.ok_per_s),
                s.step.summary.success_rate * 100.0,
                s.step.summary.p50_ms,
                s.step.summary.p99_ms,
                s.step.summary.max_ms,
                if s.step.sustained { "yes" } else { "no" },
                failures(&s.step.failures),
                p.cores(p.services_s),
                p.cores(p.nats_s),
                p.cores(p.postgres_s),
                p.cores(p.loadgen_s),
                p.cores(p.machine_s),
                s.per_order_ms(p.services_s),
                s.step.drain_s.map_or("—".into(), |t| format!("{t:.1} s"))
            );
        }
    }
    let _ = writeln!(
        w,
        "\n(The last row of each topology is the steady run of {:.0} s the figures above come from.)\n",
        r.sizes.dist_s
    );

    let _ = writeln!(w, "### The trade-off lab on the distributed topology\n");
    let _ = writeln!(
        w,
        "On the topology with two ordering instances, as the lab above, at {:.0} checkouts/s for \
         {:.0} s per scenario; two more rows, in replica mode: halfway through the checkouts, \
         SIGKILL of one of the two ordering processes, or of one of the three nats-servers; \
         healing starts it again (on the same port, the same store) and *settle* counts from \
         when it is ready.\n",
        r.sizes.dist_lab_rate, r.sizes.lab_s
    );
    lab_table(w, &d.lab);
    let _ = writeln!(
        w,
        "\n![The trade-off lab, distributed](bench/tradeoff-distributed.svg)\n"
    );
    let _ = writeln!(
        w,
        "The lab's claims on this topology (reported; only the embedded lab's fail the run):\n"
    );
    for c in claims_of(&d.lab) {
        let _ = writeln!(w, "- {} {}", if c.holds { "✔" } else { "✘" }, c.claim);
    }
    let _ = writeln!(w);
}

fn lab_table(w: &mut String, lab: &[Scenario]) {
    let _ = writeln!(
        w,
        "| customer_data | fault | success | p50 ms | p99 ms | failures | stale | age p50 / p99 / max | settle |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---:|---|---:|---|---:|");
    for s in lab {
        let _ = writeln!(
            w,
            "| {} | {} | {:.1}% ({}/{}) | {:.2} | {:.1} | {} | {:.1}% | {:.0} / {:.0} / {:.0} ms | {} |",
            s.mode,
            s.fault.label(),
            s.summary.success_rate * 100.0,
            s.summary.succeeded,
            s.summary.count,
            s.summary.p50_ms,
            s.summary.p99_ms,
            failures(&s.failures),
            s.stale_fraction * 100.0,
            s.age.p50_ms,
            s.age.p99_ms,
            s.age.max_ms,
            s.settle_s.map_or("—".into(), |t| format!("{t:.1} s"))
        );
    }
}

fn steps_table(w: &mut String, steps: &[Step]) {
    let _ = writeln!(
        w,
        "| offered/s | ok/s | success | p50 ms | p90 ms | p99 ms | max ms | sustained | failures | CPU (cores busy) | drain |"
    );
    let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|");
    for s in steps {
        let _ = writeln!(
            w,
            "| {} | {} | {:.2}% | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} | {:.2} | {} |",
            num(s.rate),
            num(s.ok_per_s),
            s.summary.success_rate * 100.0,
            s.summary.p50_ms,
            s.summary.p90_ms,
            s.summary.p99_ms,
            s.summary.max_ms,
            if s.sustained { "yes" } else { "no" },
            failures(&s.failures),
            s.cpu.busy_cores,
            s.drain_s.map_or("—".into(), |t| format!("{t:.1} s"))
        );
    }
}

/// Writes the report section into `path` (between the markers, appended when they
/// are absent; the rest of the file is kept) and the plots into `bench/` beside it.
pub fn write(path: &Path, r: &Results) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let plots = dir.join("bench");
    std::fs::create_dir_all(&plots).with_context(|| format!("create {}", plots.display()))?;
    plot::latency_vs_load(&plots.join("latency-vs-load.svg"), r)?;
    plot::tradeoff(
        &plots.join("tradeoff.svg"),
        "Trade-off lab — customer_data: sync (S) vs replica (R), per fault",
        &r.tradeoff,
    )?;
    if let Some(d) = &r.distributed {
        plot::tradeoff(
            &plots.join("tradeoff-distributed.svg"),
            "Trade-off lab, distributed topology — sync (S) vs replica (R), per fault",
            &d.lab,
        )?;
    }

    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let section = format!("{BEGIN}\n{}{END}", text(r));
    let updated = match (existing.find(BEGIN), existing.find(END)) {
        (Some(begin), Some(end)) if begin < end => format!(
            "{}{section}{}",
            &existing[..begin],
            &existing[end + END.len()..]
        ),
        _ => {
            let mut s = existing;
            if !s.is_empty() && !s.ends_with("\n\n") {
                s.push_str(if s.ends_with('\n') { "\n" } else { "\n\n" });
            }
            s.push_str(&section);
            s.push('\n');
            s
        }
    };
    std::fs::write(path, updated).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}
