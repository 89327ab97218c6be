//! The circuit breaker: stop calling a target that keeps failing, and try again later.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::Response;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::CallError;

/// When a breaker opens and how it recovers. See the crate docs for the defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    /// The sliding window holds at most this many recent calls…
    pub window_calls: usize,
    /// …none older than this.
    pub window_duration: Duration,
    /// The breaker judges only with at least this many calls in the window.
    pub min_calls: usize,
    /// It opens when failures / calls in the window reach this rate (0.0..=1.0).
    pub failure_rate: f64,
    /// How long it stays open before it lets probes through.
    pub open_duration: Duration,
    /// How many probe calls may be in flight at once when half-open. The first
    /// successful probe closes the breaker; a failed one opens it again.
    pub half_open_probes: usize,
    /// Whether a 5xx answer counts as a failure (the default). A proxy sets it off:
    /// a service that answers 503 because *its* dependency is down is itself up.
    pub count_server_errors: bool,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window_calls: 20,
            window_duration: Duration::from_secs(10),
            min_calls: 10,
            failure_rate: 0.5,
            open_duration: Duration::from_secs(5),
            half_open_probes: 1,
            count_server_errors: true,
        }
    }
}

/// The state of a breaker, as the ops console shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through; outcomes are counted.
    Closed,
    /// Calls fail at once with [`CallError::CircuitOpen`].
    Open,
    /// The open period is over: a few probe calls go through, the others fail at once.
    HalfOpen,
}

/// A breaker's state and counts at one instant.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BreakerSnapshot {
    pub name: String,
    pub state: BreakerState,
    /// Calls in the sliding window (closed state).
    pub window_calls: usize,
    /// Failures among them.
    pub window_failures: usize,
    /// How many times it opened since it was made.
    pub times_opened: u64,
    /// Calls refused because it was open (or half-open with its probes taken).
    pub rejected: u64,
}

/// The handle of one target's breaker: clones share it. Give it to a [`BreakerLayer`]
/// and keep a clone for the ops console ([`CircuitBreaker::state`],
/// [`CircuitBreaker::snapshot`]).
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    name: String,
    config: BreakerConfig,
    inner: Mutex<Inner>,
    /// Set once by [`CircuitBreaker::observe`]; a breaker nobody observes records
    /// nothing.
    metrics: OnceLock<BreakerMetrics>,
}

/// [`agora_telemetry::names::BREAKER_STATE`] and the transition counters of one breaker.
#[derive(Debug)]
struct BreakerMetrics {
    state: metrics::Gauge,
    to_closed: metrics::Counter,
    to_open: metrics::Counter,
    to_half_open: metrics::Counter,
    /// Sets `state` at each scrape too: an open breaker nobody calls after its open
    /// period reads half-open (it lets the next call through), not open.
    _sampler: agora_telemetry::SamplerGuard,
}

impl BreakerMetrics {
    fn entered(&self, state: BreakerState) {
        let counter = match state {
            BreakerState::Closed => &self.to_closed,
            BreakerState::Open => &self.to_open,
            BreakerState::HalfOpen => &self.to_half_open,
        };
        self.state.set(gauge_value(state));
        counter.increment(1);
    }
}

/// [`agora_telemetry::names::BREAKER_STATE`]'s value for `state`.
fn gauge_value(state: BreakerState) -> f64 {
    match state {
        BreakerState::Closed => 0.0,
        BreakerState::Open => 1.0,
        BreakerState::HalfOpen => 2.0,
    }
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// Bumped at each change of phase, so that a late outcome of a call admitted in
    /// an earlier phase is ignored.
    generation: u64,
    /// (when, failed) of recent calls, oldest first; closed phase only.
    window: VecDeque<(Instant, bool)>,
    times_opened: u64,
    rejected: u64,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: usize },
}

/// How one call went, for the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Failure,
    /// Says nothing about the target (e.g. a full bulkhead, a cancelled call).
    Neutral,
}

impl CircuitBreaker {
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Self {
        CircuitBreaker {
            shared: Arc::new(Shared {
                name: name.into(),
                config,
                inner: Mutex::new(Inner {
                    phase: Phase::Closed,
                    generation: 0,
                    window: VecDeque::new(),
                    times_opened: 0,
                    rejected: 0,
                }),
                metrics: OnceLock::new(),
            }),
        }
    }

    /// The target's name, as given.
    /// Records this breaker's state and transitions as `service`'s (the caller's)
    /// breaker: [`agora_telemetry::names::BREAKER_STATE`] and
    /// [`agora_telemetry::names::BREAKER_TRANSITIONS`]. Once; later calls do nothing.
    pub fn observe(&self, service: &'static str) {
        use agora_telemetry::names;
        let name = self.shared.name.clone();
        let transitions = |to: &'static str| {
            metrics::counter!(names::BREAKER_TRANSITIONS,
                "service" => service, "breaker" => name.clone(), "to" => to)
        };
        let state =
            metrics::gauge!(names::BREAKER_STATE, "service" => service, "breaker" => name.clone());
        let breaker = Arc::downgrade(&self.shared);
        let sampled = state.clone();
        let sampler: agora_telemetry::Sampler = Arc::new(move || {
            if let Some(shared) = breaker.upgrade() {
                let breaker = CircuitBreaker { shared };
                sampled.set(gauge_value(breaker.state()));
            }
            Box::pin(std::future::ready(()))
        });
        let observed = BreakerMetrics {
            state,
            to_closed: transitions("closed"),
            to_open: transitions("open"),
            to_half_open: transitions("half_open"),
            _sampler: agora_telemetry::register_sampler(sampler),
        };
        observed.state.set(gauge_value(self.state()));
        let _ = self.shared.metrics.set(observed);
    }

    fn entered(&self, state: BreakerState) {
        if let Some(metrics) = self.shared.metrics.get() {
            metrics.entered(state);
        }
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.shared.config
    }

    /// The state now: an open breaker whose open period is over reads as half-open.
    pub fn state(&self) -> BreakerState {
        let inner = self.lock();
        match inner.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if Instant::now() < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// While open, the time until it lets a probe through: a good `Retry-After` for
    /// the caller's own 503. `None` when closed or half-open.
    pub fn open_remaining(&self) -> Option<Duration> {
        match self.lock().phase {
            Phase::Open { until } => Some(until.saturating_duration_since(Instant::now()))
                .filter(|remaining| !remaining.is_zero()),
            Phase::Closed | Phase::HalfOpen { .. } => None,
        }
    }

    /// The state and counts now.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let state = self.state();
        let mut inner = self.lock();
        self.evict(&mut inner, Instant::now());
        BreakerSnapshot {
            name: self.shared.name.clone(),
            state,
            window_calls: inner.window.len(),
            window_failures: inner.window.iter().filter(|(_, failed)| *failed).count(),
            times_opened: inner.times_opened,
            rejected: inner.rejected,
        }
    }

    /// Asks to make one call: a permit, or [`CallError::CircuitOpen`].
    pub(crate) fn acquire(&self) -> Result<Permit, CallError> {
        let now = Instant::now();
        let mut inner = self.lock();
        if let Phase::Open { until } = inner.phase {
            if now < until {
                inner.rejected += 1;
                return Err(CallError::CircuitOpen);
            }
            inner.phase = Phase::HalfOpen { in_flight: 0 };
            inner.generation += 1;
            self.entered(BreakerState::HalfOpen);
            tracing::info!(target_name = %self.shared.name, "circuit breaker half-open");
        }
        let probe = match &mut inner.phase {
            Phase::Closed => false,
            Phase::HalfOpen { in_flight } if *in_flight < self.shared.config.half_open_probes => {
                *in_flight += 1;
                true
            }
            _ => {
                inner.rejected += 1;
                return Err(CallError::CircuitOpen);
            }
        };
        Ok(Permit {
            breaker: self.clone(),
            generation: inner.generation,
            probe,
            done: false,
        })
    }

    fn record(&self, generation: u64, probe: bool, outcome: Outcome) {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        let config = &self.shared.config;
        if probe {
            if let Phase::HalfOpen { in_flight } = &mut inner.phase {
                *in_flight = in_flight.saturating_sub(1);
            }
            match outcome {
                Outcome::Success => {
                    inner.phase = Phase::Closed;
                    inner.generation += 1;
                    inner.window.clear();
                    self.entered(BreakerState::Closed);
                    tracing::info!(target_name = %self.shared.name, "circuit breaker closed");
                }
                Outcome::Failure => self.open(&mut inner, now),
                Outcome::Neutral => {}
            }
            return;
        }
        if outcome == Outcome::Neutral {
            return;
        }
        inner.window.push_back((now, outcome == Outcome::Failure));
        self.evict(&mut inner, now);
        let calls = inner.window.len();
        let failures = inner.window.iter().filter(|(_, failed)| *failed).count();
        if calls >= config.min_calls && failures as f64 >= config.failure_rate * calls as f64 {
            self.open(&mut inner, now);
        }
    }

    fn open(&self, inner: &mut Inner, now: Instant) {
        inner.phase = Phase::Open {
            until: now + self.shared.config.open_duration,
        };
        inner.generation += 1;
        inner.window.clear();
        inner.times_opened += 1;
        self.entered(BreakerState::Open);
        tracing::warn!(
            target_name = %self.shared.name,
            open_for_ms = self.shared.config.open_duration.as_millis() as u64,
            "circuit breaker opened"
        );
    }

    fn evict(&self, inner: &mut Inner, now: Instant) {
        let config = &self.shared.config;
        while inner.window.len() > config.window_calls {
            inner.window.pop_front();
        }
        while let Some((at, _)) = inner.window.front() {
            if now.saturating_duration_since(*at) > config.window_duration {
                inner.window.pop_front();
            } else {
                break;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The lock is never held across an await nor while calling out, so a poisoned
        // lock only means a panic in this file's arithmetic: the state is still usable.
        self.shared
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Leave to make one call; reports the outcome once. Dropped without a report (the
/// call was cancelled), it reports [`Outcome::Neutral`] so that a probe slot is freed.
#[derive(Debug)]
pub(crate) struct Permit {
    breaker: CircuitBreaker,
    generation: u64,
    probe: bool,
    done: bool,
}

impl Permit {
    pub(crate) fn report(mut self, outcome: Outcome) {
        self.done = true;
        self.breaker.record(self.generation, self.probe, outcome);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.breaker
                .record(self.generation, self.probe, Outcome::Neutral);
        }
    }
}

/// Puts a [`CircuitBreaker`] in front of a service of HTTP responses.
///
/// Failures are errors that say the target is unwell ([`CallError::Timeout`],
/// [`CallError::Connect`], [`CallError::Transport`]) and answers with a status ≥ 500.
/// A 4xx is a success: the target works, the request was wrong.
#[derive(Clone, Debug)]
pub struct BreakerLayer {
    breaker: CircuitBreaker,
}

impl BreakerLayer {
    pub fn new(breaker: CircuitBreaker) -> Self {
        BreakerLayer { breaker }
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Breaker {
            inner,
            breaker: self.breaker.clone(),
        }
    }
}

/// The service of [`BreakerLayer`].
#[derive(Clone, Debug)]
pub struct Breaker<S> {
    inner: S,
    breaker: CircuitBreaker,
}

impl<S, R, RB> Service<R> for Breaker<S>
where
    S: Service<R, Response = Response<RB>>,
    S::Error: Into<CallError>,
    S::Future: Send + 'static,
{
    type Response = Response<RB>;
    type Error = CallError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RB>, CallError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let permit = match self.breaker.acquire() {
            Ok(permit) => permit,
            Err(error) => return Box::pin(async { Err(error) }),
        };
        let future = self.inner.call(request);
        let count_server_errors = self.breaker.config().count_server_errors;
        Box::pin(async move {
            let result = future.await.map_err(Into::into);
            let outcome = match &result {
                Ok(response) if count_server_errors && response.status().is_server_error() => {
                    Outcome::Failure
                }
                Ok(_) => Outcome::Success,
                Err(error) if error.is_target_failure() => Outcome::Failure,
                Err(_) => Outcome::Neutral,
            };
            permit.report(outcome);
            result
        })
    }
}
