//! The resilient client: the layers composed over reqwest, with JSON helpers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use axum::http::uri::{Authority, Scheme};
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, Uri};
use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};
use tracing::Instrument as _;

use agora_telemetry::http::ClientMetrics;

use crate::balance::{Balance, Endpoint, Tried};
use crate::{
    BreakerConfig, BreakerLayer, BulkheadLayer, CallError, CircuitBreaker, Deadline,
    IDEMPOTENCY_KEY_HEADER, PropagateDeadlineLayer, RetryConfig, RetryCounters, RetryLayer,
    TimeoutLayer,
};

/// A call's route template, as its metrics label it (see [`Call::route`]).
#[derive(Clone, Copy, Debug)]
pub struct Route(pub &'static str);

/// How a [`ResilientClient`] calls its target. See the crate docs for the defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientConfig {
    /// The most one attempt may take, body included (less if the deadline is nearer).
    pub timeout: Duration,
    /// The most opening a connection may take.
    pub connect_timeout: Duration,
    /// The bulkhead: calls in flight to the target at once; more fail at once.
    pub max_concurrency: usize,
    /// The largest answer body read; a larger one is a [`CallError::Decode`].
    pub max_response_bytes: usize,
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
    /// The calling service, as the `service` label of the client's metrics (several
    /// services share one process's recorder in `agora up`).
    pub caller: &'static str,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(250),
            max_concurrency: 256,
            max_response_bytes: 4 * 1024 * 1024,
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            caller: "unknown",
        }
    }
}

/// The composed resilient service: what [`resilient_stack`] builds.
pub type ResilientService<B = Bytes, RB = Bytes> =
    BoxCloneSyncService<Request<B>, Response<RB>, CallError>;

/// Builds the stack of policies over `transport`, outermost first:
///
/// 1. [`RetryLayer`]: retries idempotent requests, each attempt going through…
/// 2. [`BreakerLayer`] with `breaker`: fails at once while open, counts outcomes;
/// 3. [`BulkheadLayer`]: fails at once beyond `max_concurrency` calls in flight;
/// 4. [`TimeoutLayer`]: `min(timeout, time left)` per attempt;
/// 5. [`PropagateDeadlineLayer`]: fails at once past the deadline, sends the budget;
/// 6. `transport` (e.g. [`ReqwestTransport`], or a fake in tests).
///
/// The breaker, the bulkhead and the retry budget are shared by every clone of the
/// returned service: build one stack per target, and clone it.
pub fn resilient_stack<S, B, RB>(
    transport: S,
    breaker: CircuitBreaker,
    config: &ClientConfig,
) -> ResilientService<B, RB>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + Sync + 'static,
    S::Error: Into<CallError>,
    S::Future: Send + 'static,
    B: Clone + Send + 'static,
    RB: Send + 'static,
{
    let target = breaker.name().to_owned();
    let stack = ServiceBuilder::new()
        .layer(RetryLayer::new(config.retry.clone()).counting(retry_counters(config, &target)))
        .layer(BreakerLayer::new(breaker))
        .layer(
            BulkheadLayer::new(config.max_concurrency)
                .counting(bulkhead_rejections(config, &target)),
        )
        .layer(TimeoutLayer::new(config.timeout))
        .layer(PropagateDeadlineLayer::new())
        .service(transport);
    BoxCloneSyncService::new(stack)
}

/// The HTTP transport: reqwest, answering with the whole body read (so that the
/// per-call timeout covers the body too). Plain `http://` only: the workspace builds
/// reqwest without TLS, and Agora's calls stay inside its network.
#[derive(Clone, Debug)]
pub struct ReqwestTransport {
    client: reqwest::Client,
    max_response_bytes: usize,
}

impl ReqwestTransport {
    pub fn new(config: &ClientConfig) -> Result<Self, CallError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            // Below the 5 s for which Agora's listeners keep an idle connection: the
            // client lets a connection go before the server closes it, so a request
            // never races the close on a connection picked from the pool.
            .pool_idle_timeout(Duration::from_secs(4))
            .tcp_nodelay(true)
            // Service-to-service calls never go through an environment's proxy.
            .no_proxy()
            .build()
            .map_err(|error| CallError::InvalidRequest(error.to_string()))?;
        Ok(ReqwestTransport {
            client,
            max_response_bytes: config.max_response_bytes,
        })
    }
}

impl Service<Request<Bytes>> for ReqwestTransport {
    type Response = Response<Bytes>;
    type Error = CallError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Bytes>, CallError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let client = self.client.clone();
        let max = self.max_response_bytes;
        Box::pin(async move {
            let request = reqwest::Request::try_from(request)?;
            let mut response = client.execute(request).await?;
            let status = response.status();
            let version = response.version();
            let headers = response.headers().clone();
            let too_large = || CallError::Decode(format!("the answer is over {max} bytes"));
            if response
                .content_length()
                .is_some_and(|length| length > max as u64)
            {
                return Err(too_large());
            }
            let mut body = BytesMut::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > max {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            let mut answer = Response::new(body.freeze());
            *answer.status_mut() = status;
            *answer.version_mut() = version;
            *answer.headers_mut() = headers;
            Ok(answer)
        })
    }
}

/// What a client proves itself with: the `Authorization` value it puts on every
/// request that has none of its own (a service token, made fresh when the old one
/// nears its end). `None` sends the request without.
#[derive(Clone)]
pub struct Credentials(Arc<dyn Fn() -> Option<HeaderValue> + Send + Sync>);

impl Credentials {
    pub fn new(authorization: impl Fn() -> Option<HeaderValue> + Send + Sync + 'static) -> Self {
        Self(Arc::new(authorization))
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

/// The stack of a target with several instances, outermost first: [`RetryLayer`],
/// then the balancer (see `balance.rs`) over one stack per endpoint of
/// [`BreakerLayer`], [`BulkheadLayer`], [`TimeoutLayer`] and
/// [`PropagateDeadlineLayer`] over a clone of `transport`.
fn balanced_stack<S>(
    target: &str,
    endpoints: Vec<(Scheme, Authority, CircuitBreaker)>,
    transport: S,
    config: &ClientConfig,
) -> ResilientService
where
    S: Service<Request<Bytes>, Response = Response<Bytes>> + Clone + Send + Sync + 'static,
    S::Error: Into<CallError>,
    S::Future: Send + 'static,
{
    let endpoints = endpoints
        .into_iter()
        .map(|(scheme, authority, breaker)| {
            let stack = ServiceBuilder::new()
                .layer(BreakerLayer::new(breaker.clone()))
                .layer(
                    BulkheadLayer::new(config.max_concurrency)
                        .counting(bulkhead_rejections(config, target)),
                )
                .layer(TimeoutLayer::new(config.timeout))
                .layer(PropagateDeadlineLayer::new())
                .service(transport.clone());
            Endpoint::new(scheme, authority, breaker, BoxCloneSyncService::new(stack))
        })
        .collect();
    let stack = ServiceBuilder::new()
        .layer(RetryLayer::new(config.retry.clone()).counting(retry_counters(config, target)))
        .service(Balance::new(endpoints));
    BoxCloneSyncService::new(stack)
}

fn retry_counters(config: &ClientConfig, target: &str) -> RetryCounters {
    use agora_telemetry::names;
    let counter = |family: &'static str| metrics::counter!(family, "service" => config.caller, "target" => target.to_owned());
    RetryCounters {
        retries: counter(names::CLIENT_RETRIES),
        budget_exhausted: counter(names::CLIENT_RETRY_BUDGET_EXHAUSTED),
    }
}

fn bulkhead_rejections(config: &ClientConfig, target: &str) -> metrics::Counter {
    metrics::counter!(agora_telemetry::names::CLIENT_BULKHEAD_REJECTIONS,
        "service" => config.caller, "target" => target.to_owned())
}

/// The client of one target (a service's base URL, or the base URLs of its
/// instances), with every policy of [`resilient_stack`]; several instances are
/// balanced (see [`client`]). Cheap to clone; clones share the breakers, the bulkheads
/// and the retry budget.
///
/// Call helpers answer 2xx bodies; any other status is [`CallError::Status`].
#[derive(Clone, Debug)]
pub struct ResilientClient {
    name: Arc<str>,
    base_url: Arc<str>,
    /// One per instance, in the order of the base URLs.
    breakers: Arc<[CircuitBreaker]>,
    service: ResilientService,
    credentials: Option<Credentials>,
    metrics: Arc<ClientMetrics>,
    /// The calling service (its trace spans').
    caller: &'static str,
}

/// The resilient client of the target `name` (the breaker's name, e.g. `"payment"`) at
/// `base_url` (e.g. `http://127.0.0.1:8083`; paths are appended to it), over reqwest.
///
/// `base_url` may name several instances of the target, separated by commas
/// (`http://10.0.0.1:8083,http://10.0.0.2:8083`, as in `AGORA_URL_PAYMENT`; they
/// differ in host and port only). Then each instance gets its own breaker (named
/// `payment@10.0.0.1:8083`) and bulkhead, and every attempt goes to one of them: the
/// less busy of two healthy instances drawn at random; a retry to another instance;
/// a request whose connection was refused on to another one at once, whatever its
/// method; an instance that refused a connection is left out for a while.
pub fn client(
    name: &str,
    base_url: &str,
    config: ClientConfig,
) -> Result<ResilientClient, CallError> {
    let transport = ReqwestTransport::new(&config)?;
    ResilientClient::over(name, base_url, config, transport)
}

impl ResilientClient {
    /// Like [`client`], over any transport (in tests: a fake, or a router called in
    /// process).
    pub fn over<S>(
        name: &str,
        base_url: &str,
        config: ClientConfig,
        transport: S,
    ) -> Result<ResilientClient, CallError>
    where
        S: Service<Request<Bytes>, Response = Response<Bytes>> + Clone + Send + Sync + 'static,
        S::Error: Into<CallError>,
        S::Future: Send + 'static,
    {
        let bases: Vec<&str> = base_url
            .split(',')
            .map(|url| url.trim().trim_end_matches('/'))
            .filter(|url| !url.is_empty())
            .collect();
        let Some(&first) = bases.first() else {
            return Err(CallError::InvalidRequest(format!("no base URL for {name}")));
        };
        let mut endpoints = Vec::with_capacity(bases.len());
        for base in &bases {
            let uri: Uri = base
                .parse()
                .map_err(|_| CallError::InvalidRequest(format!("invalid base URL {base:?}")))?;
            let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
                return Err(CallError::InvalidRequest(format!(
                    "the base URL {base:?} needs a scheme and a host"
                )));
            };
            let path = |url: &str| url.parse::<Uri>().map(|u| u.path().to_owned()).ok();
            if path(base) != path(first) {
                return Err(CallError::InvalidRequest(format!(
                    "the instances of {name} differ in more than host and port: {first:?}, {base:?}"
                )));
            }
            endpoints.push((scheme.clone(), authority.clone()));
        }
        let breaker_name = |authority: &Authority| match endpoints.len() {
            1 => name.to_owned(),
            _ => format!("{name}@{authority}"),
        };
        let endpoints: Vec<(Scheme, Authority, CircuitBreaker)> = endpoints
            .iter()
            .map(|(scheme, authority)| {
                let breaker = CircuitBreaker::new(breaker_name(authority), config.breaker.clone());
                breaker.observe(config.caller);
                (scheme.clone(), authority.clone(), breaker)
            })
            .collect();
        let breakers = endpoints.iter().map(|(_, _, b)| b.clone()).collect();
        let service = match &endpoints[..] {
            [(_, _, breaker)] => resilient_stack(transport, breaker.clone(), &config),
            _ => balanced_stack(name, endpoints, transport, &config),
        };
        Ok(ResilientClient {
            name: name.into(),
            base_url: first.into(),
            breakers,
            service,
            credentials: None,
            metrics: Arc::new(ClientMetrics::new(config.caller, name)),
            caller: config.caller,
        })
    }

    /// This client with `credentials`: every request without an `Authorization`
    /// header of its own gets theirs.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The target's name (also its breaker's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The base URL of the (first) instance; requests are aimed at the others by
    /// host and port.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The breaker of the target's (first) instance, for the ops console.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breakers[0]
    }

    /// The breaker of each instance, in the order of the base URLs.
    pub fn breakers(&self) -> &[CircuitBreaker] {
        &self.breakers
    }

    /// While the breaker of every instance is open: how long until the first of them
    /// lets a probe through. `None` when some instance may be called.
    pub fn open_remaining(&self) -> Option<Duration> {
        self.breakers
            .iter()
            .map(CircuitBreaker::open_remaining)
            .collect::<Option<Vec<Duration>>>()?
            .into_iter()
            .min()
    }

    /// Sends a prepared request through the stack. Any status is an `Ok` answer here;
    /// the URI must be absolute (see [`ResilientClient::url`]).
    pub async fn send(&self, mut request: Request<Bytes>) -> Result<Response<Bytes>, CallError> {
        if let Some(credentials) = &self.credentials
            && !request.headers().contains_key(AUTHORIZATION)
            && let Some(value) = (credentials.0)()
        {
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        // Shared by the copies the retries make: each goes to an instance not tried yet
        // (a single instance has nothing to choose: no allocation on its path).
        if self.breakers.len() > 1 {
            request.extensions_mut().insert(Tried::default());
        }
        let started = tokio::time::Instant::now();
        let method = agora_telemetry::method_label(request.method());
        let route = request
            .extensions()
            .get::<Route>()
            .map_or(agora_telemetry::http::OTHER_ROUTE, |route| route.0);
        // The call's span, a child of the caller's current one; the target's server
        // span is its child (its `traceparent` replaces any the request had).
        let span = agora_telemetry::trace::client_span(self.caller, &self.name, method);
        if let Some(traceparent) = agora_telemetry::trace::traceparent_of(&span)
            && let Ok(value) = HeaderValue::from_str(&traceparent)
        {
            request
                .headers_mut()
                .insert(agora_telemetry::trace::TRACEPARENT, value);
        }
        let result = self
            .service
            .clone()
            .oneshot(request)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(response) => {
                agora_telemetry::trace::record_status(&span, response.status().as_u16())
            }
            Err(_) => agora_telemetry::trace::record_error(&span),
        }
        let outcome = match &result {
            Ok(response) => agora_telemetry::status_class(response.status().as_u16()),
            Err(CallError::Timeout) => "timeout",
            Err(CallError::Connect(_)) => "connect",
            Err(CallError::CircuitOpen) => "circuit_open",
            Err(CallError::BulkheadFull) => "bulkhead_full",
            Err(CallError::DeadlineExceeded) => "deadline",
            Err(_) => "error",
        };
        self.metrics
            .record(route, method, outcome, started.elapsed());
        result
    }

    /// The absolute URL of `path` (which starts with `/`) at the target.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// A request to build: headers, a body, a deadline, then send.
    pub fn request(&self, method: Method, path: &str) -> Call<'_> {
        let request = Request::builder()
            .method(method)
            .uri(self.url(path))
            .body(Bytes::new())
            .map_err(|error| CallError::InvalidRequest(error.to_string()));
        Call {
            client: self,
            request,
        }
    }

    /// `GET path`, a 2xx JSON answer decoded. Retried (GET is idempotent).
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.request(Method::GET, path).json().await
    }

    /// `POST path` with a JSON body, a 2xx JSON answer decoded. Not retried: use
    /// [`Call::idempotency_key`] for a POST that may be.
    pub async fn post_json<Req, T>(&self, path: &str, body: &Req) -> Result<T, CallError>
    where
        Req: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        self.request(Method::POST, path)
            .json_body(body)
            .json()
            .await
    }

    /// `PUT path` with a JSON body, a 2xx JSON answer decoded. Retried (PUT is
    /// idempotent).
    pub async fn put_json<Req, T>(&self, path: &str, body: &Req) -> Result<T, CallError>
    where
        Req: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        self.request(Method::PUT, path).json_body(body).json().await
    }
}

/// A request being built by [`ResilientClient::request`]. A building error (a bad
/// header value, a body that does not serialize) is kept and answered by `send` as
/// [`CallError::InvalidRequest`].
#[derive(Debug)]
pub struct Call<'a> {
    client: &'a ResilientClient,
    request: Result<Request<Bytes>, CallError>,
}

impl Call<'_> {
    fn map(mut self, change: impl FnOnce(&mut Request<Bytes>) -> Result<(), CallError>) -> Self {
        if let Ok(request) = &mut self.request
            && let Err(error) = change(request)
        {
            self.request = Err(error);
        }
        self
    }

    /// Adds a header.
    pub fn header<K, V>(self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        K::Error: std::fmt::Display,
        V: TryInto<HeaderValue>,
        V::Error: std::fmt::Display,
    {
        self.map(|request| {
            let name = name
                .try_into()
                .map_err(|error| CallError::InvalidRequest(error.to_string()))?;
            let value = value
                .try_into()
                .map_err(|error| CallError::InvalidRequest(error.to_string()))?;
            request.headers_mut().append(name, value);
            Ok(())
        })
    }

    /// `Authorization: Bearer <token>` (marked sensitive, so it is never logged).
    pub fn bearer(self, token: &str) -> Self {
        self.map(|request| {
            let mut value = HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| CallError::InvalidRequest("invalid bearer token".into()))?;
            value.set_sensitive(true);
            request.headers_mut().insert(AUTHORIZATION, value);
            Ok(())
        })
    }

    /// The route template of this call (`/internal/customers/{id}`), for its metrics;
    /// without one the call counts under `route="other"`, never its raw path.
    pub fn route(self, template: &'static str) -> Self {
        self.map(|request| {
            request.extensions_mut().insert(Route(template));
            Ok(())
        })
    }

    /// `Idempotency-Key: <key>`: the target deduplicates on it, so the request may be
    /// retried whatever its method.
    pub fn idempotency_key(self, key: &str) -> Self {
        self.header(IDEMPOTENCY_KEY_HEADER, key)
    }

    /// A JSON body (and `Content-Type: application/json`).
    pub fn json_body<Req: Serialize + ?Sized>(self, body: &Req) -> Self {
        self.map(|request| {
            let bytes = serde_json::to_vec(body)
                .map_err(|error| CallError::InvalidRequest(error.to_string()))?;
            *request.body_mut() = Bytes::from(bytes);
            request
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(())
        })
    }

    /// A deadline for this call, besides the task-local one (the earlier wins).
    pub fn deadline(self, deadline: Deadline) -> Self {
        self.map(|request| {
            request.extensions_mut().insert(deadline);
            Ok(())
        })
    }

    /// Sends; a 2xx answer is `Ok`, any other status [`CallError::Status`].
    pub async fn send(self) -> Result<Response<Bytes>, CallError> {
        let response = self.client.send(self.request?).await?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(CallError::Status(
                response.status().as_u16(),
                response.into_body(),
            ))
        }
    }

    /// Sends with `Accept: application/json` and decodes a 2xx answer; an empty body
    /// decodes as JSON `null` (for `()` and `Option`).
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, CallError> {
        let call = self.map(|request| {
            request
                .headers_mut()
                .insert(ACCEPT, HeaderValue::from_static("application/json"));
            Ok(())
        });
        let body = call.send().await?.into_body();
        let body: &[u8] = if body.is_empty() { b"null" } else { &body };
        serde_json::from_slice(body).map_err(|error| CallError::Decode(error.to_string()))
    }
}
