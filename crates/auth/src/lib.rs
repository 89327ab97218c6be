//! Agora's access tokens, as every service sees them: the [`Claims`] that identity
//! signs, and (in the modules that follow) their local verification against a cached
//! JWKS, revocation on `PasswordChanged`, and the axum `Caller` extractor.
//!
//! Tokens are JWTs signed with Ed25519 (`alg: EdDSA`) and carry a `kid` header naming
//! the key in identity's JWKS.
//!
//! This crate must never call identity per request (keys are cached and refetched only
//! for an unknown `kid`), accept any algorithm but EdDSA, or log a token.

#![forbid(unsafe_code)]

mod claims;
mod jwks;

pub use claims::{AUDIENCE, Claims, ISSUER, MAX_TOKEN_TTL};
pub use jwks::{Jwk, Jwks};
