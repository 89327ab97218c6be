//! The per-call timeout, bounded by the caller's deadline.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::Request;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::{CallError, Deadline};

/// Bounds each call by `min(timeout, time left before the request's Deadline)`.
///
/// It fails with [`CallError::Timeout`] when its own timeout fired, and with
/// [`CallError::DeadlineExceeded`] when the caller's deadline was the earlier bound. It
/// puts the call's effective [`Deadline`] into the request's extensions, so that a
/// [`PropagateDeadlineLayer`](crate::PropagateDeadlineLayer) below it tells the target
/// exactly how long the caller will wait.
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    pub fn new(timeout: Duration) -> Self {
        TimeoutLayer { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service of [`TimeoutLayer`].
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S, B> Service<Request<B>> for Timeout<S>
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
        let own = Instant::now() + self.timeout;
        let (until, error) = match Deadline::of(&request) {
            Some(Deadline(deadline)) if deadline < own => (deadline, CallError::DeadlineExceeded),
            _ => (own, CallError::Timeout),
        };
        request.extensions_mut().insert(Deadline(until));
        let future = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout_at(until, future).await {
                Ok(result) => result.map_err(Into::into),
                Err(_elapsed) => Err(error),
            }
        })
    }
}
