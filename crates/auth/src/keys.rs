//! Where the [`Verifier`](crate::Verifier) gets identity's public keys from.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::{Error, Jwks};

/// A source of the current JWKS. The verifier calls it at start and on an unknown
/// `kid` only, never per request.
#[async_trait]
pub trait KeySource: Send + Sync + 'static {
    async fn fetch(&self) -> Result<Jwks, Error>;
}

/// Identity's `GET /api/identity/jwks`, over HTTP, through the resilient client (a
/// breaker on identity, a per-call timeout, retries of this idempotent read under the
/// retry budget).
#[derive(Debug, Clone)]
pub struct HttpKeySource {
    client: agora_resilience::ResilientClient,
    path: String,
}

/// How long one JWKS fetch may take: a hanging identity must not hold up the requests
/// waiting on an unknown `kid` for long.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(2);

impl HttpKeySource {
    /// The JWKS of the identity service at `base_url` (e.g. `http://127.0.0.1:8081`,
    /// to which `/api/identity/jwks` is appended); several instances' base URLs,
    /// separated by commas, are balanced.
    pub fn new(base_url: &str) -> Result<Self, Error> {
        Self::for_caller(base_url, agora_resilience::ClientConfig::default().caller)
    }

    /// [`HttpKeySource::new`] for the service `caller`, whose metrics (client calls,
    /// the breaker towards identity) the fetches count in.
    pub fn for_caller(base_url: &str, caller: &'static str) -> Result<Self, Error> {
        let config = agora_resilience::ClientConfig {
            caller,
            ..Self::client_config()
        };
        let client = agora_resilience::client("identity", base_url, config)
            .map_err(|e| Error::KeySource(e.to_string()))?;
        Ok(Self {
            client,
            path: "/api/identity/jwks".to_owned(),
        })
    }

    fn client_config() -> agora_resilience::ClientConfig {
        agora_resilience::ClientConfig {
            timeout: JWKS_FETCH_TIMEOUT,
            ..agora_resilience::ClientConfig::default()
        }
    }

    /// The JWKS at exactly `url`.
    pub fn with_url(url: impl Into<String>) -> Result<Self, Error> {
        let url = url.into();
        let parsed = reqwest::Url::parse(&url)
            .map_err(|e| Error::KeySource(format!("bad JWKS URL: {e}")))?;
        let base = parsed.origin().ascii_serialization();
        let path = match parsed.query() {
            Some(query) => format!("{}?{query}", parsed.path()),
            None => parsed.path().to_owned(),
        };
        let client = agora_resilience::client("identity", &base, Self::client_config())
            .map_err(|e| Error::KeySource(e.to_string()))?;
        Ok(Self { client, path })
    }
}

#[async_trait]
impl KeySource for HttpKeySource {
    async fn fetch(&self) -> Result<Jwks, Error> {
        agora_resilience::Deadline::after(JWKS_FETCH_TIMEOUT)
            .scope(
                self.client
                    .request(axum::http::Method::GET, &self.path)
                    .route("/api/identity/jwks")
                    .json::<Jwks>(),
            )
            .await
            .map_err(|e| Error::KeySource(e.to_string()))
    }
}

/// An in-memory key source for tests: serves the JWKS it was given, counts the
/// fetches, and can be told to fail as if identity were down.
#[derive(Debug, Default)]
pub struct MemoryKeySource {
    jwks: Mutex<Jwks>,
    failing: Mutex<bool>,
    fetches: AtomicUsize,
}

impl MemoryKeySource {
    pub fn new(jwks: Jwks) -> Self {
        Self {
            jwks: Mutex::new(jwks),
            ..Self::default()
        }
    }

    /// Serves `jwks` from now on (a key rotation).
    pub fn set(&self, jwks: Jwks) {
        *self.jwks.lock().unwrap_or_else(|e| e.into_inner()) = jwks;
    }

    /// Fails every fetch from now on while `failing`.
    pub fn set_failing(&self, failing: bool) {
        *self.failing.lock().unwrap_or_else(|e| e.into_inner()) = failing;
    }

    /// How many times [`KeySource::fetch`] was called, failed calls included.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl KeySource for MemoryKeySource {
    async fn fetch(&self) -> Result<Jwks, Error> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        if *self.failing.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(Error::KeySource("the key source is down".to_owned()));
        }
        Ok(self.jwks.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

#[async_trait]
impl<S: KeySource + ?Sized> KeySource for std::sync::Arc<S> {
    async fn fetch(&self) -> Result<Jwks, Error> {
        (**self).fetch().await
    }
}
