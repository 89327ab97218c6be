//! Identity, Agora's master of users, password hashes and signing keys.
//!
//! It signs up users, checks their credentials and issues short-lived access tokens
//! (EdDSA JWTs with a `kid` header, at most 15 minutes), changes passwords, and
//! publishes its public keys as a JWKS so that every other service verifies tokens
//! locally. Its events, `UserSignedUp`, `UserSignedIn` (one per token issued),
//! `UserSignedOut` (`DELETE /api/identity/token`) and `PasswordChanged`, go through the
//! outbox in the transaction of the change they describe; each bumps the user's
//! version. A token carries the user's version at issue (`ver`): a password change
//! revokes every token below its version, however a sign-in races it. On first start it
//! creates the admin user `admin@agora.local`.
//!
//! Password guessing is slowed per address ([`SignInThrottle`], kept in the store so
//! that every instance shares it) and Argon2 runs under a bound ([`HashingLimits`]).
//!
//! [`build`] makes the service from an [`IdentityConfig`]; [`Identity::router`] serves
//! the public paths as they are (`/api/identity/...`), so a gateway forwards without
//! rewriting. It has no fallback route: whoever serves it (the `agora` binary) adds one
//! answering `Problem::not_found()`, so that routers can be merged.
//!
//! What identity must never do: log or answer with a password, a password hash, a
//! token or the private key; tell an unknown email from a wrong password (same answer,
//! similar time); hash on the async runtime; read another service's store.

#![forbid(unsafe_code)]

mod admin;
mod domain;
mod http;
mod password;
mod store;
mod throttle;
mod tokens;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use agora_bus::SharedBus;
use agora_messaging::Db;
use agora_service::Core;

pub use admin::{ADMIN_EMAIL, ADMIN_PASSWORD_FILE, generate_password as generate_admin_password};
pub use domain::{Email, Invalid, Name, Password};
pub use password::HashingLimits;
pub use throttle::SignInThrottle;

/// The OpenAPI document of identity's public paths (`/api/identity/...`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    <http::IdentityDoc as utoipa::OpenApi>::openapi()
}

/// The event source and the stream of identity's events.
pub const SOURCE: &str = "identity";

/// How identity runs. Built explicitly by the composition (the `agora` binary).
#[derive(Clone)]
pub struct IdentityConfig {
    /// Its own store: `sqlite://…` or `postgres://…`.
    pub db_url: String,
    pub bus: SharedBus,
    /// Where the generated admin password is written.
    pub data_dir: PathBuf,
    /// The admin's password on first start (`AGORA_ADMIN_PASSWORD`); generated when
    /// `None`.
    pub admin_password: Option<String>,
    /// How long access tokens live; capped at 15 minutes.
    pub token_ttl: Duration,
    /// How failed sign-ins for one address are slowed down.
    pub sign_in_throttle: SignInThrottle,
    /// How many Argon2 hashes run at once, and how many may wait.
    pub hashing: HashingLimits,
}

impl std::fmt::Debug for IdentityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the admin password nor the database URL (it may hold a password).
        f.debug_struct("IdentityConfig")
            .field("data_dir", &self.data_dir)
            .field("token_ttl", &self.token_ttl)
            .field("sign_in_throttle", &self.sign_in_throttle)
            .field("hashing", &self.hashing)
            .finish_non_exhaustive()
    }
}

/// Why identity could not start (or a store operation failed).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store: {0}")]
    Messaging(#[from] agora_messaging::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored {0} is corrupt")]
    Corrupt(&'static str),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Key(#[from] tokens::KeyError),
    #[error("password hashing: {0}")]
    Hash(#[from] password::HashError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The running service: its routes and its outbox relay.
#[derive(Debug)]
pub struct Identity {
    router: axum::Router,
    core: Core,
}

impl Identity {
    /// The routes, under `/api/identity`.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// Its store, for tools and tests.
    pub fn db(&self) -> &Db {
        self.core.db()
    }

    /// Stops the outbox relay (events committed but not yet published are published by
    /// the next start).
    pub async fn shutdown(self) {
        self.core.shutdown().await;
    }
}

/// Opens the store, applies migrations, loads (or creates) the signing key and the
/// admin user, and starts the outbox relay.
pub async fn build(config: IdentityConfig) -> Result<Identity, Error> {
    let mut core = Core::open(SOURCE, &config.db_url, &config.bus, store::MIGRATIONS).await?;
    let db = core.db().clone();
    let keys = load_or_create_keys(&db).await?;
    let hasher = password::Hasher::new(config.hashing);
    admin::bootstrap(&db, &config, &hasher).await?;
    let state = http::State {
        db: db.clone(),
        outbox: agora_messaging::Outbox::new(&db),
        keys: Arc::new(keys),
        token_ttl: config.token_ttl.min(agora_auth::MAX_TOKEN_TTL),
        dummy_hash: Arc::new(hasher.hash(Password::parse("not a real password")?).await?),
        hasher,
        throttle: config.sign_in_throttle,
        swept_at_ms: Arc::new(AtomicI64::new(0)),
    };
    core.publish();
    tracing::info!(kid = state.keys.signing().kid(), "identity started");
    Ok(Identity {
        router: http::router(state),
        core,
    })
}

/// The keys in the store, creating the first one if there is none. When several
/// processes start at once, each may insert one; all then sign with the oldest.
async fn load_or_create_keys(db: &Db) -> Result<tokens::KeyRing, Error> {
    let mut keys = store::signing_keys(db).await?;
    if keys.is_empty() {
        let key = tokens::SigningKey::generate()?;
        store::insert_signing_key(db, &key, now_ms()).await?;
        tracing::info!(kid = key.kid(), "signing key generated");
        keys = store::signing_keys(db).await?;
    }
    tokens::KeyRing::new(keys).ok_or(Error::Corrupt("signing keys"))
}

impl From<Invalid> for Error {
    fn from(invalid: Invalid) -> Self {
        Error::Config(invalid.0.to_owned())
    }
}

fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}
