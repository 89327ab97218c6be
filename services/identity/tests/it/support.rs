//! Identity's own part of the harness (`agora-service-testkit` has the rest): its
//! config and data directory, and its routes.

use std::path::Path;
use std::time::Duration;

use agora_identity::{Identity, IdentityConfig};
use agora_messaging::Envelope;
use agora_service_testkit::TestEnv;
use agora_service_testkit::http;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

pub use agora_service_testkit::Backend;
pub use agora_service_testkit::http::assert_problem;

pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

/// A store, a bus and a data directory that outlive restarts of identity.
pub struct Env(TestEnv);

agora_service_testkit::env_deref!(Env);

impl Env {
    /// `None` (after a loud skip) when the backend is unreachable.
    pub async fn new(backend: Backend) -> Option<Env> {
        let sources = [agora_identity::SOURCE];
        TestEnv::new(backend, "identity", &sources).await.map(Env)
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir().join("data")
    }

    pub fn config(&self, admin_password: Option<&str>) -> IdentityConfig {
        IdentityConfig {
            db_url: self.db_url.clone(),
            bus: self.shared_bus(),
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
        self.published(agora_identity::SOURCE, at_least).await
    }
}

/// A started identity on a fresh store: `None` when the backend is unreachable.
pub async fn start(backend: Backend) -> Option<(Env, Identity)> {
    let env = Env::new(backend).await?;
    let identity = env.start().await;
    Some((env, identity))
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
    let answer = http::call(router, method, path, token, body).await;
    (answer.status, answer.content_type, answer.body)
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
