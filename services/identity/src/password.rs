//! Password hashing with Argon2id, off the async runtime.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::domain::Password;

/// Argon2id with OWASP's first recommended configuration (19 MiB, 2 passes, 1 lane):
/// tens of milliseconds per hash here, costly in bulk for an attacker.
fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::DEFAULT)
}

/// Why hashing failed: never the password, never the hash.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("argon2: {0}")]
    Argon2(String),
    #[error("the hashing task failed")]
    Join,
}

/// The PHC string of `password` with a fresh random salt.
pub async fn hash(password: Password) -> Result<String, HashError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        argon2()
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| HashError::Argon2(e.to_string()))
    })
    .await
    .map_err(|_| HashError::Join)?
}

/// Whether `candidate` matches the PHC string `stored`; a malformed `stored` matches
/// nothing. The parameters are those recorded in `stored`.
pub async fn verify(candidate: String, stored: String) -> Result<bool, HashError> {
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        argon2()
            .verify_password(candidate.as_bytes(), &parsed)
            .is_ok()
    })
    .await
    .map_err(|_| HashError::Join)
}
