//! Resilient sync calls: every synchronous call between Agora's services (gateway →
//! services, ordering → payment, ordering → customer in sync mode, JWKS fetches) goes
//! through this crate, so that a slow or dead target costs its callers a bounded,
//! short time and never more load than it can take.
//!
//! Each policy is one small tower [`Layer`](tower::Layer), usable on its own; every
//! layer answers with the one error type [`CallError`]:
//!
//! - [`TimeoutLayer`]: a per-call timeout, bounded by the caller's deadline;
//! - [`PropagateDeadlineLayer`] (client) and [`ReceiveDeadlineLayer`] (server): the
//!   caller's [`Deadline`] travels as the header `Agora-Budget-Ms` ([`BUDGET_HEADER`]),
//!   the remaining milliseconds; no call leaves, and no handler starts, past it (a spent
//!   budget is answered **504** problem+json `urn:agora:problem:deadline-exceeded`);
//! - [`RetryLayer`]: retries only idempotent requests (GET, HEAD, PUT, DELETE, OPTIONS,
//!   or with an `Idempotency-Key`), on timeouts, connection failures and 502/503/504,
//!   never on a 4xx; exponential backoff with full jitter, under a [`RetryBudget`];
//! - [`BreakerLayer`] with a [`CircuitBreaker`] per target: closed, open, half-open;
//!   its [`state`](CircuitBreaker::state) and [`snapshot`](CircuitBreaker::snapshot)
//!   are for the ops console;
//! - [`BulkheadLayer`]: a concurrency limit per target that rejects, never queues;
//! - [`call_with_fallback`] / [`FallbackExt`]: the caller's plan B on failure.
//!
//! [`resilient_stack`] composes them (retry → breaker → bulkhead → timeout →
//! deadline → transport), and [`client`] builds a [`ResilientClient`] over reqwest with
//! `get_json`, `post_json`, `put_json` and a small request builder ([`Call`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), agora_resilience::CallError> {
//! use agora_resilience::{client, ClientConfig, Deadline};
//! use axum::http::Method;
//! use std::time::Duration;
//!
//! let payment = client("payment", "http://127.0.0.1:8083", ClientConfig::default())?;
//! let answer: serde_json::Value = Deadline::after(Duration::from_millis(800))
//!     .scope(payment.request(Method::POST, "/internal/payment/authorizations")
//!         .idempotency_key("order-42")
//!         .json_body(&serde_json::json!({ "amount": 1200 }))
//!         .json())
//!     .await?;
//! # let _ = answer; Ok(()) }
//! ```
//!
//! # Defaults
//!
//! | setting | default | field |
//! |---|---|---|
//! | per-call timeout | 1 s (less when the deadline is nearer) | [`ClientConfig::timeout`] |
//! | connect timeout | 250 ms | [`ClientConfig::connect_timeout`] |
//! | bulkhead | 256 calls in flight per target | [`ClientConfig::max_concurrency`] |
//! | answer size | 4 MiB at most | [`ClientConfig::max_response_bytes`] |
//! | attempts | 3 in all (first + 2 retries) | [`RetryConfig::max_attempts`] |
//! | backoff before retry *n* | uniform in `0..=min(250 ms, 25 ms × 2^(n-1))` | [`RetryConfig::base_backoff`], [`RetryConfig::max_backoff`] |
//! | retry budget | 10% of requests, + 1 retry/s, at most 10 saved (starts full) | [`RetryBudgetConfig`] |
//! | breaker window | last 20 calls, none older than 10 s | [`BreakerConfig::window_calls`], [`BreakerConfig::window_duration`] |
//! | breaker minimum | 10 calls in the window | [`BreakerConfig::min_calls`] |
//! | breaker opens at | ≥ 50% failures | [`BreakerConfig::failure_rate`] |
//! | open for | 5 s, then half-open | [`BreakerConfig::open_duration`] |
//! | half-open probes | 1 at a time; a success closes, a failure reopens | [`BreakerConfig::half_open_probes`] |
//!
//! What counts as a failure for the breaker: a timeout, a connection or transport
//! failure, a 5xx answer. A 4xx is a success (the target works), an exceeded deadline,
//! a full bulkhead or a cancelled call count for nothing.
//!
//! Deadlines live on tokio's clock (`tokio::time::Instant`), so every policy here runs
//! exactly on paused time in tests.
//!
//! What this crate must never do: retry a request that is not idempotent; queue calls
//! behind a full bulkhead; let a call outlive its caller's deadline; hold a lock across
//! an await.

#![forbid(unsafe_code)]

mod balance;
mod breaker;
mod bulkhead;
mod client;
mod deadline;
mod error;
mod fallback;
mod retry;
mod timeout;

pub use breaker::{
    Breaker, BreakerConfig, BreakerLayer, BreakerSnapshot, BreakerState, CircuitBreaker,
};
pub use bulkhead::{Bulkhead, BulkheadLayer};
pub use client::{
    Call, ClientConfig, Credentials, ReqwestTransport, ResilientClient, ResilientService, client,
    resilient_stack,
};
pub use deadline::{
    BUDGET_HEADER, Deadline, PropagateDeadline, PropagateDeadlineLayer, ReceiveDeadline,
    ReceiveDeadlineLayer, deadline_exceeded_problem,
};
pub use error::CallError;
pub use fallback::{FallbackExt, call_with_fallback};
pub use retry::{
    IDEMPOTENCY_KEY_HEADER, Retry, RetryBudget, RetryBudgetConfig, RetryConfig, RetryCounters,
    RetryLayer, is_idempotent,
};
pub use timeout::{Timeout, TimeoutLayer};
