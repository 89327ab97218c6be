//! What the tests share: a running catalog on either backend, tokens, HTTP helpers,
//! and a reader of the events it published.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_auth::TestIssuer;
use agora_bus::embedded::EmbeddedBus;
use agora_bus::{Bus, ConsumerConfig, SharedBus};
use agora_catalog::{Catalog, CatalogConfig};
use agora_messaging::{Envelope, stream_config};
use agora_testkit::PgDatabase;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

pub use agora_testkit::Backend;

/// A store, a bus and a token issuer that outlive restarts of catalog.
pub struct Env {
    pub db_url: String,
    pub bus: Arc<EmbeddedBus>,
    pub issuer: TestIssuer,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

impl Env {
    /// `None` (after a loud skip) when the backend is unreachable.
    pub async fn new(backend: Backend) -> Option<Env> {
        let dir = tempfile::tempdir().unwrap();
        let (db_url, pg) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("catalog.db").display()),
                None,
            ),
            Backend::Postgres => {
                let pg = PgDatabase::create().await?;
                (pg.url().to_owned(), Some(pg))
            }
        };
        let bus = EmbeddedBus::open(dir.path().join("bus.db")).await.unwrap();
        bus.ensure_stream(&stream_config(agora_catalog::SOURCE))
            .await
            .unwrap();
        Some(Env {
            db_url,
            bus: Arc::new(bus),
            issuer: TestIssuer::new(),
            _dir: dir,
            _pg: pg,
        })
    }

    pub fn config(&self) -> CatalogConfig {
        CatalogConfig {
            db_url: self.db_url.clone(),
            bus: self.bus.clone() as SharedBus,
            keys: self.issuer.keys(),
        }
    }

    pub async fn start(&self) -> Catalog {
        agora_catalog::build(self.config())
            .await
            .expect("catalog starts")
    }

    pub fn admin(&self) -> String {
        self.issuer.admin().1
    }

    pub fn customer(&self) -> String {
        self.issuer.customer().1
    }

    /// Every event catalog published so far (waiting until there are `at_least`).
    pub async fn events(&self, at_least: usize) -> Vec<Envelope> {
        read_events(&self.bus, at_least).await
    }
}

/// A started catalog on a fresh store: `None` when the backend is unreachable.
pub async fn start(backend: Backend) -> Option<(Env, Catalog)> {
    let env = Env::new(backend).await?;
    let catalog = env.start().await;
    Some((env, catalog))
}

static CONSUMERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

async fn read_events(bus: &EmbeddedBus, at_least: usize) -> Vec<Envelope> {
    let n = CONSUMERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let consumer = bus
        .consumer(&ConsumerConfig::new("CATALOG", format!("test-{n}")))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    loop {
        for delivery in consumer
            .fetch(100, Duration::from_millis(100))
            .await
            .unwrap()
        {
            events.push(Envelope::from_json(&delivery.payload).unwrap());
            delivery.ack().await.unwrap();
        }
        if events.len() >= at_least {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{} events published, expected at least {at_least}",
            events.len()
        );
    }
}

/// One answer: status, headers and the JSON body (`Value::Null` when empty).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// Asserts a problem+json answer with `expected`.
    pub fn assert_problem(&self, expected: StatusCode) {
        assert_eq!(self.status, expected, "{}", self.body);
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(self.body["status"], expected.as_u16());
        assert!(self.body["type"].is_string() && self.body["detail"].is_string());
    }
}

/// One request through the router, with extra headers and a raw body and content
/// type.
pub async fn call_raw(
    router: &axum::Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match body {
        Some((content_type, bytes)) => {
            request = request.header(header::CONTENT_TYPE, content_type);
            Body::from(bytes)
        }
        None => Body::empty(),
    };
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// One JSON request through the router.
pub async fn call(
    router: &axum::Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
    call_raw(router, method, path, token, &[], body).await
}
