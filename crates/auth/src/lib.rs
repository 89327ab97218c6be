//! Agora's access tokens, as every service sees them: the [`Claims`] that identity
//! signs, their local verification by a [`Verifier`] against a cached JWKS, revocation
//! on `PasswordChanged` and `UserSignedOut` ([`Revocations`], fed in every instance of a
//! service by [`ServiceAuth`]), and the axum extractor [`Caller`] that gives handlers the
//! verified user and roles.
//!
//! Tokens are JWTs signed with Ed25519 (`alg: EdDSA`) and carry a `kid` header naming
//! the key in identity's JWKS (`GET /api/identity/jwks`, see [`HttpKeySource`]).
//!
//! A service wires it up once:
//!
//! ```no_run
//! # async fn demo(
//! #     db: agora_messaging::Db,
//! #     bus: agora_bus::SharedBus,
//! # ) -> Result<(), agora_auth::Error> {
//! use agora_auth::{HttpKeySource, ServiceAuth};
//!
//! let source = HttpKeySource::new("http://127.0.0.1:8081")?;
//! let auth = ServiceAuth::start("catalog", &db, &bus, source).await?;
//! let verifier = auth.verifier().clone();
//! // ... put `verifier` in the router state (FromRef) and extract `Caller` ...
//! # let _ = verifier;
//! auth.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! This crate must never call identity per request (keys are cached and refetched only
//! for an unknown `kid`, at most about once a second), accept any algorithm but EdDSA,
//! or log or echo a token.

#![forbid(unsafe_code)]

mod caller;
mod claims;
mod error;
mod internal;
mod jwks;
mod keys;
mod revocation;
mod service;
#[cfg(feature = "test-util")]
mod test_util;
mod verifier;

pub use caller::Caller;
pub use claims::{AUDIENCE, Claims, ISSUER, MAX_TOKEN_TTL};
pub use error::Error;
pub use internal::{
    INTERNAL_ISSUER, InternalAuth, InternalCaller, InternalKey, SERVICE_TOKEN_TTL, ServiceClaims,
    write_private,
};
pub use jwks::{Jwk, Jwks};
pub use keys::{HttpKeySource, JWKS_FETCH_TIMEOUT, KeySource, MemoryKeySource};
pub use revocation::{MIGRATION_COMPONENT, MIGRATIONS, REPLAY, Revocations};
pub use service::{INACTIVE_THRESHOLD, ServiceAuth};
#[cfg(feature = "test-util")]
pub use test_util::TestIssuer;
pub use verifier::{Verifier, VerifierConfig};
