//! Deadlines: the caller's remaining time travels with every call, and no service
//! starts work past it.
//!
//! The budget crosses the wire as the header [`BUDGET_HEADER`] (`Agora-Budget-Ms`):
//! the remaining time in whole milliseconds, as a decimal integer.
//!
//! - Client side, [`PropagateDeadlineLayer`] takes the request's [`Deadline`] (from the
//!   request extensions, else from the task-local scope), fails at once with
//!   [`CallError::DeadlineExceeded`] when less than a millisecond is left (no call is
//!   made), and otherwise sets the header.
//! - Server side, [`ReceiveDeadlineLayer`] reads the header. A budget ≤ 0 is refused
//!   with **504** `application/problem+json` (type `urn:agora:problem:deadline-exceeded`)
//!   without calling the inner service: 504 because the caller's time is up — nobody is
//!   waiting for an answer, and the caller must not read it as "this service is down"
//!   (503). A positive budget becomes a [`Deadline`] in the request extensions and in
//!   the task-local scope around the handler, so the calls the handler makes through
//!   the resilient stack inherit what is left. A missing or malformed header means no
//!   deadline (the hop's own per-call timeouts still apply).
//!
//! The task-local scope covers the handler's own future; a task it spawns does not
//! inherit it: wrap that task's future in [`Deadline::scope`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use agora_httpkit::Problem;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::CallError;

/// The header carrying the remaining budget, in milliseconds (`Agora-Budget-Ms`).
pub const BUDGET_HEADER: HeaderName = HeaderName::from_static("agora-budget-ms");

/// The largest budget a server accepts from the header; more is capped to this (a day),
/// so that a silly value cannot overflow the clock.
const MAX_BUDGET: Duration = Duration::from_secs(24 * 3600);

tokio::task_local! {
    static CURRENT: Deadline;
}

/// The instant by which the whole operation must be done (on tokio's clock, so tests
/// on paused time are exact).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// The deadline `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Deadline(Instant::now() + budget)
    }

    /// The deadline of the current task-local scope, if any.
    pub fn current() -> Option<Deadline> {
        CURRENT.try_with(|deadline| *deadline).ok()
    }

    /// The time left (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn is_expired(&self) -> bool {
        Instant::now() >= self.0
    }

    /// Runs `future` with this deadline as the task-local one, so that calls made
    /// inside it through the resilient stack inherit it. A scope inside another one
    /// keeps the earlier of the two deadlines: a callee never gets more time than its
    /// caller.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        let deadline = match Deadline::current() {
            Some(outer) => outer.min(self),
            None => self,
        };
        CURRENT.scope(deadline, future).await
    }

    /// The deadline of a request: its extension, else the task-local one; the earlier
    /// of the two when both are set.
    pub fn of<B>(request: &Request<B>) -> Option<Deadline> {
        let own = request.extensions().get::<Deadline>().copied();
        match (own, Deadline::current()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Client side: sets [`BUDGET_HEADER`] from the request's [`Deadline`], and fails at
/// once with [`CallError::DeadlineExceeded`] when it has passed.
#[derive(Clone, Copy, Debug, Default)]
pub struct PropagateDeadlineLayer;

impl PropagateDeadlineLayer {
    pub fn new() -> Self {
        PropagateDeadlineLayer
    }
}

impl<S> Layer<S> for PropagateDeadlineLayer {
    type Service = PropagateDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PropagateDeadline { inner }
    }
}

/// The service of [`PropagateDeadlineLayer`].
#[derive(Clone, Debug)]
pub struct PropagateDeadline<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for PropagateDeadline<S>
where
    S: Service<Request<B>>,
    S::Error: Into<CallError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = CallError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, CallError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some(deadline) = Deadline::of(&request) {
            let millis = deadline.remaining().as_millis();
            // Under a millisecond left is nothing left: the header cannot say less.
            if millis == 0 {
                return Box::pin(async { Err(CallError::DeadlineExceeded) });
            }
            request
                .headers_mut()
                .insert(BUDGET_HEADER, HeaderValue::from(millis as u64));
        }
        let future = self.inner.call(request);
        Box::pin(async move { future.await.map_err(Into::into) })
    }
}

/// Server side: reads [`BUDGET_HEADER`]; refuses a spent budget with 504 without
/// calling the inner service, otherwise runs it under the [`Deadline`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ReceiveDeadlineLayer;

impl ReceiveDeadlineLayer {
    pub fn new() -> Self {
        ReceiveDeadlineLayer
    }
}

impl<S> Layer<S> for ReceiveDeadlineLayer {
    type Service = ReceiveDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReceiveDeadline { inner }
    }
}

/// The service of [`ReceiveDeadlineLayer`].
#[derive(Clone, Debug)]
pub struct ReceiveDeadline<S> {
    inner: S,
}

/// The budget a request carries: `None` without a (well-formed) header,
/// `Some(None)` when it is spent, `Some(Some(budget))` otherwise.
fn received_budget<B>(request: &Request<B>) -> Option<Option<Duration>> {
    let value = request.headers().get(BUDGET_HEADER)?;
    let millis: i64 = value.to_str().ok()?.trim().parse().ok()?;
    if millis <= 0 {
        return Some(None);
    }
    Some(Some(Duration::from_millis(millis as u64).min(MAX_BUDGET)))
}

/// The answer to a request whose budget is spent.
pub fn deadline_exceeded_problem() -> Problem {
    Problem::new(
        StatusCode::GATEWAY_TIMEOUT,
        "deadline-exceeded",
        "Deadline exceeded",
        "The request's time budget was spent before it could be served.",
    )
}

impl<S, B> Service<Request<B>> for ReceiveDeadline<S>
where
    S: Service<Request<B>, Response = Response>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match received_budget(&request) {
            None => Box::pin(self.inner.call(request)),
            Some(None) => {
                tracing::debug!("refused a request whose deadline budget is spent");
                Box::pin(async { Ok(deadline_exceeded_problem().into_response()) })
            }
            Some(Some(budget)) => {
                let deadline = Deadline::after(budget);
                request.extensions_mut().insert(deadline);
                let future = self.inner.call(request);
                Box::pin(deadline.scope(future))
            }
        }
    }
}
