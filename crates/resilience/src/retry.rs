//! Retries: only for idempotent requests, with backoff and jitter, under a budget.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderName, Method, Request, Response, StatusCode};
use rand::Rng;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use crate::{CallError, Deadline};

/// The header that makes any request safe to retry: the target deduplicates on it.
pub const IDEMPOTENCY_KEY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");

/// How a request is retried. See the crate docs for the defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryConfig {
    /// Attempts in all, the first one included (1 = no retry).
    pub max_attempts: u32,
    /// The backoff before retry `n` (1-based) is drawn uniformly from
    /// `0..=min(max_backoff, base_backoff × 2^(n-1))` ("full jitter").
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    pub budget: RetryBudgetConfig,
    /// Whether a 502, 503 or 504 answer is retried (the default). A proxy sets it off:
    /// the target answered, and its caller decides about retrying.
    pub retry_server_errors: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            base_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(250),
            budget: RetryBudgetConfig::default(),
            retry_server_errors: true,
        }
    }
}

/// The retry budget: retries may add at most `ratio` of extra load, plus a small floor
/// so that a quiet caller can still retry.
///
/// A token bucket: every request deposits `ratio` tokens, every retry takes one; the
/// bucket also refills by `min_per_second` tokens a second, holds at most
/// `max_balance`, and starts full. Hence, over any run, retries ≤ `max_balance` +
/// `ratio` × requests + `min_per_second` × seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryBudgetConfig {
    pub ratio: f64,
    pub min_per_second: f64,
    pub max_balance: f64,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            ratio: 0.1,
            min_per_second: 1.0,
            max_balance: 10.0,
        }
    }
}

/// A retry budget shared by every clone of a [`RetryLayer`]'s services.
#[derive(Clone, Debug)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    bucket: Arc<Mutex<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    balance: f64,
    refilled_at: Instant,
}

impl RetryBudget {
    pub fn new(config: RetryBudgetConfig) -> Self {
        RetryBudget {
            bucket: Arc::new(Mutex::new(Bucket {
                balance: config.max_balance,
                refilled_at: Instant::now(),
            })),
            config,
        }
    }

    /// Records one request (not a retry).
    pub fn deposit(&self) {
        self.update(|bucket, config| {
            bucket.balance = (bucket.balance + config.ratio).min(config.max_balance);
            true
        });
    }

    /// Takes the leave for one retry, if there is any left.
    pub fn withdraw(&self) -> bool {
        self.update(|bucket, _| {
            // Ten deposits of 0.1 sum to 0.999…: allow for the rounding.
            if bucket.balance >= 1.0 - 1e-9 {
                bucket.balance = (bucket.balance - 1.0).max(0.0);
                true
            } else {
                false
            }
        })
    }

    /// The tokens left now (a retry costs one).
    pub fn balance(&self) -> f64 {
        self.update(|_, _| true);
        self.bucket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .balance
    }

    fn update(&self, change: impl FnOnce(&mut Bucket, &RetryBudgetConfig) -> bool) -> bool {
        let now = Instant::now();
        let mut bucket = self
            .bucket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let elapsed = now.saturating_duration_since(bucket.refilled_at);
        bucket.balance = (bucket.balance + elapsed.as_secs_f64() * self.config.min_per_second)
            .min(self.config.max_balance);
        bucket.refilled_at = now;
        change(&mut bucket, &self.config)
    }
}

/// Whether a request may be sent twice: GET, HEAD, PUT, DELETE, OPTIONS, or any request
/// with an `Idempotency-Key` header.
pub fn is_idempotent<B>(request: &Request<B>) -> bool {
    matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    ) || request.headers().contains_key(IDEMPOTENCY_KEY_HEADER)
}

/// Retries idempotent requests that failed in a way a retry may fix: a timeout, a
/// connection or transport failure, or a 502, 503 or 504 answer. Never a 4xx, never an
/// open breaker, a full bulkhead or an exceeded deadline. At most
/// [`RetryConfig::max_attempts`] attempts, each retry after a jittered backoff, only
/// while the [`RetryBudget`] allows and only if the backoff ends before the request's
/// [`Deadline`]. When it gives up, the last attempt's outcome is the answer.
#[derive(Clone, Debug)]
pub struct RetryLayer {
    config: RetryConfig,
    budget: RetryBudget,
    counters: RetryCounters,
}

/// What a retry layer counts: the retries it made, and those the budget refused.
#[derive(Clone, Debug)]
pub struct RetryCounters {
    pub retries: metrics::Counter,
    pub budget_exhausted: metrics::Counter,
}

impl RetryCounters {
    /// Counters that count nowhere.
    pub fn none() -> Self {
        Self {
            retries: metrics::Counter::noop(),
            budget_exhausted: metrics::Counter::noop(),
        }
    }
}

impl RetryLayer {
    pub fn new(config: RetryConfig) -> Self {
        let budget = RetryBudget::new(config.budget.clone());
        RetryLayer {
            config,
            budget,
            counters: RetryCounters::none(),
        }
    }

    /// This layer, counting its retries and the budget's refusals in `counters`.
    pub fn counting(mut self, counters: RetryCounters) -> Self {
        self.counters = counters;
        self
    }

    /// The budget its services share (e.g. to show its balance).
    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            config: Arc::new(self.config.clone()),
            budget: self.budget.clone(),
            counters: self.counters.clone(),
        }
    }
}

/// The service of [`RetryLayer`].
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    config: Arc<RetryConfig>,
    budget: RetryBudget,
    counters: RetryCounters,
}

/// A copy of a request for another attempt (bodies are `Clone`: `Bytes` in Agora).
pub(crate) fn clone_request<B: Clone>(request: &Request<B>) -> Request<B> {
    let mut copy = Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    copy
}

fn should_retry<RB>(config: &RetryConfig, result: &Result<Response<RB>, CallError>) -> bool {
    match result {
        Ok(response) => {
            config.retry_server_errors
                && matches!(
                    response.status(),
                    StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                )
        }
        Err(error) => error.is_retryable(),
    }
}

fn backoff(config: &RetryConfig, retry: u32) -> Duration {
    let exponential = config
        .base_backoff
        .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)));
    let cap = exponential.min(config.max_backoff);
    let millis = cap.as_millis() as u64;
    Duration::from_millis(rand::thread_rng().gen_range(0..=millis))
}

impl<S, B, RB> Service<Request<B>> for Retry<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Error: Into<CallError>,
    S::Future: Send + 'static,
    B: Clone + Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = CallError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RB>, CallError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each attempt waits for the inner service's readiness itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let config = self.config.clone();
        let budget = self.budget.clone();
        let counters = self.counters.clone();
        budget.deposit();
        Box::pin(async move {
            if !is_idempotent(&request) || config.max_attempts <= 1 {
                return inner.oneshot(request).await.map_err(Into::into);
            }
            let deadline = Deadline::of(&request);
            let mut attempt = 1;
            loop {
                let result = inner
                    .clone()
                    .oneshot(clone_request(&request))
                    .await
                    .map_err(Into::into);
                if attempt >= config.max_attempts || !should_retry(&config, &result) {
                    return result;
                }
                let pause = backoff(&config, attempt);
                if deadline.is_some_and(|deadline| deadline.remaining() <= pause) {
                    return result;
                }
                if !budget.withdraw() {
                    counters.budget_exhausted.increment(1);
                    tracing::debug!("retry budget exhausted; not retrying");
                    return result;
                }
                counters.retries.increment(1);
                drop(result);
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
        })
    }
}
