//! The open-loop engine: requests start on a fixed schedule, whatever the server does.
//!
//! Request `i` of a run at `rate` per second is due at `start + i / rate`. The
//! scheduler starts it at that instant (or as soon after as it can) in a task of its
//! own and never waits for an answer before starting the next one, so a server that
//! stalls cannot slow the load down. Each latency is measured from the request's
//! *due* instant, not from when it was sent: if the client itself falls behind, that
//! shows too. So a stall cannot hide (coordinated omission): every request scheduled
//! during a 1 s stall records up to 1 s.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

/// What one request came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The operation's name (`browse`, `checkout`, …).
    pub op: &'static str,
    /// Whether it did what it was asked.
    pub ok: bool,
    /// The HTTP status, or a short word for a transport error (`timeout`, `connect`).
    pub detail: String,
}

impl Outcome {
    pub fn ok(op: &'static str, status: u16) -> Self {
        Self {
            op,
            ok: true,
            detail: status.to_string(),
        }
    }

    pub fn failed(op: &'static str, detail: impl Into<String>) -> Self {
        Self {
            op,
            ok: false,
            detail: detail.into(),
        }
    }

    /// From a `reqwest` send: ok when the status is `expected`.
    pub fn of(
        op: &'static str,
        answer: &reqwest::Result<reqwest::Response>,
        expected: u16,
    ) -> Self {
        match answer {
            Ok(response) if response.status().as_u16() == expected => {
                Self::ok(op, response.status().as_u16())
            }
            Ok(response) => Self::failed(op, response.status().as_u16().to_string()),
            Err(error) => Self::failed(op, transport_error(error)),
        }
    }
}

/// A short word for a transport error.
pub fn transport_error(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_decode() || error.is_body() {
        "body"
    } else {
        "transport"
    }
}

/// How a run goes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Requests started per second.
    pub rate: f64,
    pub duration: Duration,
    /// A request not finished after this long is recorded as failed (`timeout`), with
    /// this latency.
    pub timeout: Duration,
    /// A progress line on stderr, once a second, with this label.
    pub progress: Option<String>,
}

impl Plan {
    pub fn new(rate: f64, duration: Duration) -> Self {
        Self {
            rate,
            duration,
            timeout: Duration::from_secs(10),
            progress: None,
        }
    }

    pub fn progress(mut self, label: impl Into<String>) -> Self {
        self.progress = Some(label.into());
        self
    }

    /// How many requests the run starts: `rate × duration`.
    pub fn total(&self) -> u64 {
        (self.rate * self.duration.as_secs_f64()).round() as u64
    }
}

/// Latencies in nanoseconds, 1 µs to 10 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 600_000_000_000, 3).expect("histogram bounds")
}

/// One operation's record.
#[derive(Debug, Clone)]
pub struct OpRecord {
    /// Every request's latency, failed ones included (what a client waited).
    pub all: Histogram<u64>,
    /// Successful requests only.
    pub ok: Histogram<u64>,
    pub failures: BTreeMap<String, u64>,
}

impl Default for OpRecord {
    fn default() -> Self {
        Self {
            all: histogram(),
            ok: histogram(),
            failures: BTreeMap::new(),
        }
    }
}

impl OpRecord {
    pub fn count(&self) -> u64 {
        self.all.len()
    }

    pub fn succeeded(&self) -> u64 {
        self.ok.len()
    }

    fn record(&mut self, outcome: &Outcome, latency: Duration) {
        let ns = (latency.as_nanos() as u64).clamp(1_000, 600_000_000_000);
        self.all.saturating_record(ns);
        if outcome.ok {
            self.ok.saturating_record(ns);
        } else {
            *self.failures.entry(outcome.detail.clone()).or_default() += 1;
        }
    }

    pub fn merge(&mut self, other: &OpRecord) {
        self.all.add(&other.all).expect("same bounds");
        self.ok.add(&other.ok).expect("same bounds");
        for (k, v) in &other.failures {
            *self.failures.entry(k.clone()).or_default() += v;
        }
    }

    /// Summary of every request, failed ones included.
    pub fn summary(&self) -> Summary {
        Summary::of(&self.all, self.succeeded())
    }
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Summary {
    pub count: u64,
    pub succeeded: u64,
    pub success_rate: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>, succeeded: u64) -> Self {
        let ms = |ns: u64| ns as f64 / 1e6;
        let count = h.len();
        if count == 0 {
            return Self::default();
        }
        Self {
            count,
            succeeded,
            success_rate: succeeded as f64 / count as f64,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct RunStats {
    pub plan_rate: f64,
    pub plan_duration: Duration,
    /// Requests started (always `plan.total()`).
    pub scheduled: u64,
    /// From the first due instant to the last answer.
    pub elapsed: Duration,
    /// How late the scheduler started a request, at worst (client saturation).
    pub max_start_lag: Duration,
    pub ops: BTreeMap<&'static str, OpRecord>,
}

impl RunStats {
    /// Every operation together.
    pub fn total(&self) -> OpRecord {
        let mut all = OpRecord::default();
        for record in self.ops.values() {
            all.merge(record);
        }
        all
    }

    pub fn recorded(&self) -> u64 {
        self.ops.values().map(OpRecord::count).sum()
    }

    /// Successful requests per second of the scheduled duration.
    pub fn ok_per_s(&self) -> f64 {
        self.total().succeeded() as f64 / self.plan_duration.as_secs_f64()
    }
}

struct Shared {
    ops: Mutex<BTreeMap<&'static str, OpRecord>>,
    started: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    max_lag_ns: AtomicU64,
}

/// Runs `plan`: request `i` is `op(i)`, started when due. Returns when every request
/// has finished (or timed out).
pub async fn run<F, Fut>(plan: &Plan, op: F) -> RunStats
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let total = plan.total();
    let shared = Arc::new(Shared {
        ops: Mutex::new(BTreeMap::new()),
        started: AtomicU64::new(0),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        max_lag_ns: AtomicU64::new(0),
    });
    let start = Instant::now() + Duration::from_millis(5);
    let progress = plan
        .progress
        .clone()
        .map(|label| tokio::spawn(progress(label, shared.clone(), start, plan.clone(), total)));

    let mut tasks = tokio::task::JoinSet::new();
    let interval = 1.0 / plan.rate;
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 * interval);
        tokio::time::sleep_until(due).await;
        let lag = Instant::now().saturating_duration_since(due);
        shared
            .max_lag_ns
            .fetch_max(lag.as_nanos() as u64, Ordering::Relaxed);
        shared.started.fetch_add(1, Ordering::Relaxed);
        let request = op(i);
        let (shared, timeout) = (shared.clone(), plan.timeout);
        tasks.spawn(async move {
            let outcome = match tokio::time::timeout(timeout, request).await {
                Ok(outcome) => outcome,
                Err(_) => Outcome::failed("(timed out)", "timeout"),
            };
            let latency = due.elapsed();
            if !outcome.ok {
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
            shared
                .ops
                .lock()
                .entry(outcome.op)
                .or_default()
                .record(&outcome, latency);
            shared.done.fetch_add(1, Ordering::Relaxed);
        });
        // Reap finished tasks now and then, so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    if let Some(progress) = progress {
        progress.abort();
        let _ = progress.await;
        eprintln!();
    }
    let ops = std::mem::take(&mut *shared.ops.lock());
    RunStats {
        plan_rate: plan.rate,
        plan_duration: plan.duration,
        scheduled: total,
        elapsed,
        max_start_lag: Duration::from_nanos(shared.max_lag_ns.load(Ordering::Relaxed)),
        ops,
    }
}

async fn progress(label: String, shared: Arc<Shared>, start: Instant, plan: Plan, total: u64) {
    let terminal = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut seconds = 0u64;
    loop {
        tick.tick().await;
        seconds += 1;
        let started = shared.started.load(Ordering::Relaxed);
        let done = shared.done.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        let line = format!(
            "{label}: {seconds:>3}/{:.0} s  {:>6.0}/s  started {started}/{total}  done {done}  in flight {}  failed {failed}",
            plan.duration.as_secs_f64(),
            plan.rate,
            started - done.min(started),
        );
        if terminal {
            eprint!("\r{line}\x1b[K");
        } else if seconds.is_multiple_of(5) {
            eprintln!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::sync::atomic::AtomicU64;

    /// A server that, at its 100th request, stalls every request (that one and all
    /// arriving during the next second) until one second after it arrived.
    async fn stalling_server() -> (String, tokio::task::JoinHandle<()>) {
        let count = Arc::new(AtomicU64::new(0));
        let stall_until: Arc<Mutex<Option<Instant>>> = Arc::default();
        let app = axum::Router::new().route(
            "/",
            get(move || {
                let (count, stall_until) = (count.clone(), stall_until.clone());
                async move {
                    if count.fetch_add(1, Ordering::SeqCst) == 100 {
                        *stall_until.lock() = Some(Instant::now() + Duration::from_secs(1));
                    }
                    let until = *stall_until.lock();
                    if let Some(until) = until {
                        // The server's stall itself: it holds the answer until then.
                        tokio::time::sleep_until(until).await;
                    }
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (url, server)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_stall_shows_in_the_latencies_and_no_request_is_skipped() {
        let (url, server) = stalling_server().await;
        let client = reqwest::Client::new();
        let plan = Plan::new(200.0, Duration::from_millis(2_500));
        let stats = run(&plan, |_| {
            let (client, url) = (client.clone(), url.clone());
            async move { Outcome::of("get", &client.get(&url).send().await, 200) }
        })
        .await;
        server.abort();

        // Every scheduled request was sent and recorded, the stall notwithstanding.
        assert_eq!(plan.total(), 500);
        assert_eq!(stats.scheduled, 500);
        assert_eq!(stats.recorded(), 500);
        let get = &stats.ops["get"];
        assert_eq!(get.succeeded(), 500, "failures: {:?}", get.failures);
        let s = get.summary();
        // The stalled request waited ~1 s; those due during the stall waited up to
        // that: ~200 of 500 requests, so p99 is close to the full second.
        assert!(s.max_ms >= 950.0, "max {} ms", s.max_ms);
        assert!(s.p99_ms >= 800.0, "p99 {} ms", s.p99_ms);
        assert!(s.p90_ms >= 400.0, "p90 {} ms", s.p90_ms);
        // And the requests due before the stall were fast.
        assert!(s.p50_ms < 500.0, "p50 {} ms", s.p50_ms);
    }

    #[tokio::test]
    async fn timed_out_requests_are_recorded_with_the_timeout() {
        let mut plan = Plan::new(100.0, Duration::from_millis(100));
        plan.timeout = Duration::from_millis(50);
        let stats = run(&plan, |i| async move {
            if i % 2 == 0 {
                std::future::pending::<()>().await;
            }
            Outcome::ok("op", 200)
        })
        .await;
        assert_eq!(stats.recorded(), 10);
        assert_eq!(stats.ops["op"].count(), 5);
        let timed_out = &stats.ops["(timed out)"];
        assert_eq!(timed_out.count(), 5);
        assert!(timed_out.summary().p50_ms >= 50.0);
    }
}
