//! The gateway: Agora's single public port.
//!
//! It owns nothing of the business. It forwards `/api/<service>/…` over HTTP to the
//! service that owns the path ([`Upstream`]), checks tokens at the edge for every
//! non-public route (the services check them again), limits request rates per client
//! and per user (429 + `Retry-After`), refuses bodies over 64 KiB (413), bounds every
//! request in time, and answers every error it makes as problem+json. It serves
//! `/api/openapi.json` (the services' documents merged with its own), `/healthz`,
//! `/readyz` and `/metrics`, and the admin's `/api/ops/status`, which shows the
//! "online users" projection it keeps from identity's sign-in events.
//!
//! Every response carries a W3C `traceparent`: the caller's trace id when it sent one,
//! a new one otherwise; the same trace id is passed to the service called.
//!
//! What the gateway must never do: read a service's store, log a token or a body, or
//! pass a request on to a service past its own deadline.

#![forbid(unsafe_code)]

mod compose;
mod control;
mod edge;
mod forwarded;
mod limits;
mod online;
mod openapi;
mod ops;
mod path;
mod proxy;
mod remote;
mod timeline;
mod trace;
mod traces;
mod ui;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use agora_auth::{InternalAuth, InternalKey, KeySource, ServiceAuth, Verifier};
use agora_bus::SharedBus;
use agora_messaging::{Db, SubscriberHandle};
use axum::Router;
use axum::extract::FromRef;

pub use control::{Chaos, ChaosMode, ControlError, Levers, PAYMENT_PROVIDER};
pub use limits::{Limits, Rate};
pub use openapi::document as openapi;

/// The event source name of the gateway (it publishes nothing; its consumers use it).
pub const SOURCE: &str = "gateway";

/// How long the ops timeline keeps an event by default: 7 days.
pub const DEFAULT_TIMELINE_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// A service the gateway forwards to: every path under `prefix` goes to `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The service's name, as the ops console shows it (`"identity"`).
    pub name: String,
    /// The public path prefix it owns (`"/api/identity"`); `None` for a service with
    /// internal routes only (payment, fulfilment), which the gateway only watches.
    pub prefix: Option<String>,
    /// Where its instances listen (`"http://127.0.0.1:40123"`), without a trailing
    /// slash: one, or several that the gateway balances.
    pub urls: Vec<String>,
}

impl Upstream {
    /// A service without public routes: probed for health, never forwarded to.
    /// `urls`: one URL, or several separated by commas (one per instance).
    pub fn internal(name: &str, urls: &str) -> Self {
        Self {
            name: name.to_owned(),
            prefix: None,
            urls: split_urls(urls),
        }
    }

    /// A service owning the public paths under `prefix`; `urls` as for
    /// [`Upstream::internal`].
    pub fn new(name: &str, prefix: &str, urls: &str) -> Self {
        Self {
            name: name.to_owned(),
            prefix: Some(prefix.to_owned()),
            urls: split_urls(urls),
        }
    }
}

impl Upstream {
    /// The first instance whose answer to `request(url)` is a 2xx with a `T` body:
    /// for what every instance can tell (state kept in the service's store).
    pub(crate) async fn first_json<T: serde::de::DeserializeOwned>(
        &self,
        request: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Option<T> {
        for url in &self.urls {
            if let Ok(answer) = request(url).send().await
                && answer.status().is_success()
                && let Ok(value) = answer.json::<T>().await
            {
                return Some(value);
            }
        }
        None
    }
}

fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(|url| url.trim().trim_end_matches('/').to_owned())
        .filter(|url| !url.is_empty())
        .collect()
}

/// How the gateway runs. Built by the composition (the `agora` binary).
#[derive(Clone)]
pub struct GatewayConfig {
    /// Its own store (the online-users projection and the timeline).
    pub db_url: String,
    pub bus: SharedBus,
    /// Identity's public keys.
    pub keys: Arc<dyn KeySource>,
    pub upstreams: Vec<Upstream>,
    /// The services' OpenAPI documents, merged into `/api/openapi.json`.
    pub service_docs: Vec<utoipa::openapi::OpenApi>,
    pub limits: Limits,
    /// The longest a request may take end to end; past it the answer is 504.
    pub request_timeout: Duration,
    /// The deployment's internal-plane key: the gateway signs its own calls to
    /// `/internal/...` (ops levers, stock for the storefront) with it. It never
    /// forwards a public request there. [`GatewayConfig::new`] makes a fresh one.
    pub internal: InternalKey,
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` headers name the client
    /// for the per-address limits; from any other peer those headers are ignored.
    pub trusted_proxies: Vec<IpAddr>,
    /// Timeline events older than this are pruned (every minute, and at start).
    pub timeline_max_age: Duration,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("upstreams", &self.upstreams)
            .field("limits", &self.limits)
            .field("request_timeout", &self.request_timeout)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("timeline_max_age", &self.timeline_max_age)
            .finish_non_exhaustive()
    }
}

impl GatewayConfig {
    /// Defaults: [`Limits::default`], a 10-second request timeout, no upstreams, no
    /// trusted proxy, timeline events kept for [`DEFAULT_TIMELINE_MAX_AGE`].
    pub fn new(db_url: impl Into<String>, bus: SharedBus, keys: Arc<dyn KeySource>) -> Self {
        Self {
            db_url: db_url.into(),
            bus,
            keys,
            upstreams: Vec::new(),
            service_docs: Vec::new(),
            limits: Limits::default(),
            request_timeout: Duration::from_secs(10),
            internal: InternalKey::generate(),
            trusted_proxies: Vec::new(),
            timeline_max_age: DEFAULT_TIMELINE_MAX_AGE,
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store: {0}")]
    Messaging(#[from] agora_messaging::Error),
    #[error("auth: {0}")]
    Auth(#[from] agora_auth::Error),
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("client of {0}: {1}")]
    Upstream(String, String),
}

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct State {
    pub verifier: Verifier,
    pub proxy: Arc<proxy::Proxy>,
    pub limits: Arc<limits::Limiters>,
    pub online: online::OnlineUsers,
    pub openapi: Arc<String>,
    pub request_timeout: Duration,
    /// The levers: each instance's internal control API.
    pub control: Arc<remote::RemoteControl>,
    pub bus: SharedBus,
    pub timeline: timeline::Timeline,
    pub internal: InternalAuth,
    pub trusted_proxies: Arc<[IpAddr]>,
    pub ready: Arc<ops::ReadyCache>,
}

impl State {
    /// `Bearer <service token for service>`, for the gateway's own internal calls.
    pub(crate) fn service_token(&self, service: &str) -> Option<axum::http::HeaderValue> {
        self.internal
            .authorization_for(service)
            .inspect_err(|error| tracing::error!(%error, "cannot sign a service token"))
            .ok()
    }
}

impl FromRef<State> for Verifier {
    fn from_ref(state: &State) -> Self {
        state.verifier.clone()
    }
}

/// The running gateway: its router and its consumers.
#[derive(Debug)]
pub struct Gateway {
    router: Router,
    auth: ServiceAuth,
    online: SubscriberHandle,
    timeline: Vec<SubscriberHandle>,
    pruner: tokio::task::JoinHandle<()>,
    db: Db,
}

impl Gateway {
    /// The whole public surface; serve it with connect info
    /// (`into_make_service_with_connect_info::<SocketAddr>()`), which the per-client
    /// rate limit keys on.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub async fn shutdown(self) {
        self.pruner.abort();
        tokio::join!(
            SubscriberHandle::shutdown_all(self.timeline),
            self.online.shutdown(),
            self.auth.shutdown()
        );
    }
}

/// Opens the store, starts token checking and the online-users projection.
pub async fn build(config: GatewayConfig) -> Result<Gateway, Error> {
    let db = Db::connect(&config.db_url).await?;
    db.migrate_messaging().await?;
    let auth = ServiceAuth::start(SOURCE, &db, &config.bus, config.keys.clone()).await?;
    let (online, online_consumer) = online::start(&db, &config.bus).await?;
    let (timeline, timeline_consumers) = timeline::start(&db, &config.bus).await?;
    let pruner = timeline.spawn_pruner(config.timeline_max_age);
    let proxy = proxy::Proxy::new(config.upstreams.clone(), config.request_timeout)?;
    // The levers are each instance's internal control API.
    let control = Arc::new(remote::RemoteControl::new(
        proxy.client().clone(),
        config.internal.service(SOURCE),
        config.upstreams.clone(),
    ));
    let state = State {
        verifier: auth.verifier().clone(),
        proxy: Arc::new(proxy),
        limits: Arc::new(limits::Limiters::on(config.limits, &db).await?),
        online,
        openapi: Arc::new(openapi::render(config.service_docs)),
        request_timeout: config.request_timeout,
        control,
        bus: config.bus.clone(),
        timeline,
        internal: config.internal.service(SOURCE),
        trusted_proxies: config
            .trusted_proxies
            .iter()
            .copied()
            .map(forwarded::normal)
            .collect(),
        ready: Arc::default(),
    };
    Ok(Gateway {
        router: edge::router(state),
        auth,
        online: online_consumer,
        timeline: timeline_consumers,
        pruner,
        db,
    })
}
