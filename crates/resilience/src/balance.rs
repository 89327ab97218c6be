//! Client-side balancing over the instances of one target.
//!
//! Each instance (an *endpoint*) has its own stack of policies — breaker, bulkhead,
//! timeout, deadline — so that one bad instance trips its own breaker, not its
//! siblings'. [`Balance`] picks an endpoint per attempt:
//!
//! - by the power of two choices: two healthy endpoints drawn at random, the one with
//!   fewer requests outstanding wins;
//! - healthy means its breaker is not open and it is not *ejected*: an endpoint that
//!   refused a connection (its process is gone) is left out for a while, 1 s doubling
//!   with each refusal in a row up to 30 s, and taken back by its first success;
//! - a retry (the [`RetryLayer`](crate::RetryLayer) around it) goes to an instance the
//!   request has not been sent to yet, when there is one;
//! - a refused connection means the request never left: it is sent on to another
//!   instance at once, whatever its method. Killing an instance therefore costs only
//!   the requests it had in flight.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::uri::{Authority, Scheme};
use axum::http::{Request, Response, Uri};
use rand::Rng;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use crate::{BreakerState, CallError, CircuitBreaker};

/// The first ejection of an endpoint that refused a connection; each refusal in a row
/// doubles it, up to [`MAX_EJECTION`].
const FIRST_EJECTION: Duration = Duration::from_secs(1);
const MAX_EJECTION: Duration = Duration::from_secs(30);

/// One instance of a target: where it is, and its own policies.
pub(crate) struct Endpoint<B, RB> {
    pub scheme: Scheme,
    pub authority: Authority,
    pub breaker: CircuitBreaker,
    pub service: BoxCloneSyncService<Request<B>, Response<RB>, CallError>,
    outstanding: AtomicUsize,
    ejection: Mutex<Ejection>,
}

#[derive(Debug, Default)]
struct Ejection {
    until: Option<Instant>,
    /// Refusals in a row.
    refusals: u32,
}

impl<B, RB> Endpoint<B, RB> {
    pub fn new(
        scheme: Scheme,
        authority: Authority,
        breaker: CircuitBreaker,
        service: BoxCloneSyncService<Request<B>, Response<RB>, CallError>,
    ) -> Self {
        Self {
            scheme,
            authority,
            breaker,
            service,
            outstanding: AtomicUsize::new(0),
            ejection: Mutex::new(Ejection::default()),
        }
    }

    fn ejection(&self) -> std::sync::MutexGuard<'_, Ejection> {
        self.ejection.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_healthy(&self, now: Instant) -> bool {
        self.breaker.state() != BreakerState::Open
            && self.ejection().until.is_none_or(|until| until <= now)
    }

    fn refused(&self) {
        let mut ejection = self.ejection();
        ejection.refusals = ejection.refusals.saturating_add(1);
        let factor = 2u32.saturating_pow(ejection.refusals - 1);
        let time = FIRST_EJECTION.saturating_mul(factor).min(MAX_EJECTION);
        ejection.until = Some(Instant::now() + time);
        tracing::warn!(endpoint = %self.authority, ?time, "connection refused; instance ejected");
    }

    fn answered(&self) {
        let mut ejection = self.ejection();
        if ejection.refusals > 0 {
            *ejection = Ejection::default();
        }
    }
}

/// The endpoints a request was sent to, shared by the copies the retries make of it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tried(Arc<Mutex<Vec<usize>>>);

impl Tried {
    fn contains(&self, index: usize) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&index)
    }

    fn push(&self, index: usize) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(index);
    }
}

/// Picks an endpoint per attempt; see the module docs.
pub(crate) struct Balance<B, RB> {
    endpoints: Arc<[Endpoint<B, RB>]>,
}

impl<B, RB> Clone for Balance<B, RB> {
    fn clone(&self) -> Self {
        Self {
            endpoints: self.endpoints.clone(),
        }
    }
}

impl<B, RB> Balance<B, RB> {
    pub fn new(endpoints: Vec<Endpoint<B, RB>>) -> Self {
        assert!(!endpoints.is_empty(), "a target has at least one endpoint");
        Self {
            endpoints: endpoints.into(),
        }
    }

    /// The endpoint for the next attempt: not one this call already tried; among
    /// those, a healthy one the request has not been sent to before if there is any,
    /// else a healthy one, else any; then the less busy of two drawn at random.
    fn pick(&self, this_call: &[usize], earlier: &Tried) -> Option<usize> {
        let now = Instant::now();
        let open: Vec<usize> = (0..self.endpoints.len())
            .filter(|i| !this_call.contains(i))
            .collect();
        let healthy: Vec<usize> = open
            .iter()
            .copied()
            .filter(|&i| self.endpoints[i].is_healthy(now))
            .collect();
        let fresh: Vec<usize> = healthy
            .iter()
            .copied()
            .filter(|&i| !earlier.contains(i))
            .collect();
        let pool = [fresh, healthy, open]
            .into_iter()
            .find(|pool| !pool.is_empty())?;
        Some(self.less_busy_of_two(&pool))
    }

    fn less_busy_of_two(&self, pool: &[usize]) -> usize {
        if pool.len() == 1 {
            return pool[0];
        }
        let mut rng = rand::thread_rng();
        let a = rng.gen_range(0..pool.len());
        let b = (a + rng.gen_range(1..pool.len())) % pool.len();
        let load = |i: usize| self.endpoints[pool[i]].outstanding.load(Ordering::Relaxed);
        if load(b) < load(a) { pool[b] } else { pool[a] }
    }
}

/// Counts a request as outstanding on its endpoint while it lives.
struct Outstanding<'a>(&'a AtomicUsize);

impl<'a> Outstanding<'a> {
    fn start(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `request`'s URI with the endpoint's scheme and authority.
fn aimed_at<B>(mut request: Request<B>, scheme: &Scheme, authority: &Authority) -> Request<B> {
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(scheme.clone());
    parts.authority = Some(authority.clone());
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    request
}

impl<B, RB> Service<Request<B>> for Balance<B, RB>
where
    B: Clone + Send + Sync + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = CallError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RB>, CallError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each endpoint's stack waits for its own readiness.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let balance = self.clone();
        Box::pin(async move {
            if let [only] = &balance.endpoints[..] {
                return only.service.clone().oneshot(request).await;
            }
            let earlier = request
                .extensions()
                .get::<Tried>()
                .cloned()
                .unwrap_or_default();
            let mut this_call = Vec::new();
            let mut refused = None;
            while let Some(index) = balance.pick(&this_call, &earlier) {
                this_call.push(index);
                earlier.push(index);
                let endpoint = &balance.endpoints[index];
                let attempt = aimed_at(
                    crate::retry::clone_request(&request),
                    &endpoint.scheme,
                    &endpoint.authority,
                );
                let result = {
                    let _outstanding = Outstanding::start(&endpoint.outstanding);
                    endpoint.service.clone().oneshot(attempt).await
                };
                match result {
                    // Nothing was sent: another instance may take it, whatever it is.
                    Err(CallError::Connect(_)) => {
                        endpoint.refused();
                        refused = Some(result);
                    }
                    result => {
                        if result.is_ok() {
                            endpoint.answered();
                        }
                        return result;
                    }
                }
            }
            refused.unwrap_or(Err(CallError::CircuitOpen))
        })
    }
}
