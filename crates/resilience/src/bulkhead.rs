//! The bulkhead: a per-target concurrency limit that sheds load instead of queueing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tower::{Layer, Service};

use crate::CallError;

/// At most `limit` calls in flight through every clone of the layer's services; one
/// more fails at once with [`CallError::BulkheadFull`], without waiting and without a
/// call. Queueing would only turn a slow target into a slow caller.
#[derive(Clone, Debug)]
pub struct BulkheadLayer {
    permits: Arc<Semaphore>,
    limit: usize,
    rejections: metrics::Counter,
}

impl BulkheadLayer {
    pub fn new(limit: usize) -> Self {
        BulkheadLayer {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            rejections: metrics::Counter::noop(),
        }
    }

    /// This layer, counting the calls it refuses in `rejections`.
    pub fn counting(mut self, rejections: metrics::Counter) -> Self {
        self.rejections = rejections;
        self
    }

    /// The configured limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How many calls are in flight now.
    pub fn in_flight(&self) -> usize {
        self.limit - self.permits.available_permits()
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead {
            inner,
            permits: self.permits.clone(),
            rejections: self.rejections.clone(),
        }
    }
}

/// The service of [`BulkheadLayer`].
#[derive(Clone, Debug)]
pub struct Bulkhead<S> {
    inner: S,
    permits: Arc<Semaphore>,
    rejections: metrics::Counter,
}

impl<S, R> Service<R> for Bulkhead<S>
where
    S: Service<R>,
    S::Error: Into<CallError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = CallError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, CallError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.rejections.increment(1);
            return Box::pin(async { Err(CallError::BulkheadFull) });
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await.map_err(Into::into);
            drop(permit);
            result
        })
    }
}
