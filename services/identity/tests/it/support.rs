//! What the tests share: a running identity on either backend, HTTP helpers, and a
//! reader of the events it published.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_bus::embedded::EmbeddedBus;
use agora_bus::{Bus, ConsumerConfig, SharedBus};
use agora_identity::{Identity, IdentityConfig};
use agora_messaging::{Envelope, stream_config};
use agora_testkit::PgDatabase;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

pub use agora_testkit::Backend;

pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

/// A store, a bus and a data directory that outlive restarts of identity.
pub struct Env {
    pub db_url: String,
    pub bus: Arc<EmbeddedBus>,
    pub dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

impl Env {
    /// `None` (after a loud skip) when the backend is unreachable.
    pub async fn new(backend: Backend) -> Option<Env> {
        let dir = tempfile::tempdir().unwrap();
        let (db_url, pg) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("identity.db").display()),
                None,
            ),
            Backend::Postgres => {
                let pg = PgDatabase::create().await?;
                (pg.url().to_owned(), Some(pg))
            }
        };
        let bus = EmbeddedBus::open(dir.path().join("bus.db")).await.unwrap();
        bus.ensure_stream(&stream_config(agora_identity::SOURCE))
            .await
            .unwrap();
        Some(Env {
            db_url,
            bus: Arc::new(bus),
            dir,
            _pg: pg,
        })
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    pub fn config(&self, admin_password: Option<&str>) -> IdentityConfig {
        IdentityConfig {
            db_url: self.db_url.clone(),
            bus: self.bus.clone() as SharedBus,
            data_dir: self.data_dir(),
            admin_password: admin_password.map(str::to_owned),
            token_ttl: Duration::from_secs(600),
            sign_in_throttle: agora_identity::SignInThrottle::default(),
            hashing: agora_identity::HashingLimits::default(),
        }
    }

    pub async fn start(&self) -> Identity {
        agora_identity::build(self.config(Some(ADMIN_PASSWORD)))
            .await
            .expect("identity starts")
    }

    /// Every event identity published so far (waiting until there are `at_least`).
    pub async fn events(&self, at_least: usize) -> Vec<Envelope> {
        read_events(&self.bus, at_least).await
    }
}

/// A started identity on a fresh store: `None` when the backend is unreachable.
pub async fn start(backend: Backend) -> Option<(Env, Identity)> {
    let env = Env::new(backend).await?;
    let identity = env.start().await;
    Some((env, identity))
}

static CONSUMERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

async fn read_events(bus: &EmbeddedBus, at_least: usize) -> Vec<Envelope> {
    let n = CONSUMERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let consumer = bus
        .consumer(&ConsumerConfig::new("IDENTITY", format!("test-{n}")))
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

/// One request through the router: the status, the content type and the JSON body
/// (`Value::Null` when empty).
pub async fn call(
    router: &axum::Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, String, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match body {
        Some(body) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, content_type, json)
}

pub async fn sign_up(router: &axum::Router, email: &str, password: &str) -> (StatusCode, Value) {
    let (status, _, body) = call(
        router,
        Method::POST,
        "/api/identity/users",
        None,
        Some(json!({"email": email, "password": password, "name": "Ada Lovelace"})),
    )
    .await;
    (status, body)
}

pub async fn token(router: &axum::Router, email: &str, password: &str) -> (StatusCode, Value) {
    let (status, _, body) = call(
        router,
        Method::POST,
        "/api/identity/token",
        None,
        Some(json!({"email": email, "password": password})),
    )
    .await;
    (status, body)
}

/// A token for a valid sign-in; panics otherwise.
pub async fn access_token(router: &axum::Router, email: &str, password: &str) -> String {
    let (status, body) = token(router, email, password).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

pub async fn change_password(
    router: &axum::Router,
    token: Option<&str>,
    current: &str,
    new: &str,
) -> (StatusCode, String, Value) {
    call(
        router,
        Method::PUT,
        "/api/identity/users/me/password",
        token,
        Some(json!({"current_password": current, "new_password": new})),
    )
    .await
}

/// Asserts a problem+json answer with `status`.
pub fn assert_problem(status: StatusCode, content_type: &str, body: &Value, expected: StatusCode) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["status"], expected.as_u16());
    assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string());
}

/// The claims of `token`, verified with the JWKS served by `router`.
pub async fn verify_with_jwks(router: &axum::Router, token: &str) -> Option<agora_auth::Claims> {
    let (status, _, jwks) = call(router, Method::GET, "/api/identity/jwks", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
    let kid = jsonwebtoken::decode_header(token).ok()?.kid?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid)?).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_issuer(&[agora_auth::ISSUER]);
    validation.set_audience(&[agora_auth::AUDIENCE]);
    jsonwebtoken::decode::<agora_auth::Claims>(token, &key, &validation)
        .ok()
        .map(|data| data.claims)
}

pub fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}
