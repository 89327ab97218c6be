//! Tokens for tests of services that check them (feature `test-util`): a
//! [`TestIssuer`] signs like identity does and serves its key like identity's JWKS.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agora_contracts::Role;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use uuid::Uuid;

use crate::{Claims, Jwk, Jwks, MemoryKeySource};

/// An Ed25519 key generated for the test, published through a [`MemoryKeySource`].
#[derive(Clone)]
pub struct TestIssuer {
    kid: String,
    encoding: EncodingKey,
    keys: Arc<MemoryKeySource>,
}

impl std::fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIssuer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Default for TestIssuer {
    fn default() -> Self {
        Self::new()
    }
}

impl TestIssuer {
    pub fn new() -> Self {
        // The random halves of four UUIDv7s: plenty for a test key, no extra crate.
        let mut seed = [0u8; 32];
        for chunk in seed.chunks_mut(8) {
            chunk.copy_from_slice(&Uuid::now_v7().as_bytes()[8..]);
        }
        // PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410): a fixed 16-byte prefix.
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&seed);
        let kid = format!("test-{}", Uuid::now_v7().simple());
        let jwk = Jwk::from_ed25519_pkcs8_der(&kid, &der).expect("an Ed25519 key");
        Self {
            kid,
            encoding: EncodingKey::from_ed_der(&der),
            keys: Arc::new(MemoryKeySource::new(Jwks { keys: vec![jwk] })),
        }
    }

    /// The key source to give the service under test (its `keys` config).
    pub fn keys(&self) -> Arc<MemoryKeySource> {
        self.keys.clone()
    }

    /// Signs `claims` with this issuer's key.
    pub fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signed")
    }

    /// A valid five-minute token of `user_id` with `roles`.
    pub fn token(&self, user_id: Uuid, roles: &[Role]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let now = i64::try_from(now).expect("fits");
        self.sign(&Claims::new(
            user_id,
            roles.to_vec(),
            now,
            Duration::from_secs(300),
        ))
    }

    /// A new customer and its token.
    pub fn customer(&self) -> (Uuid, String) {
        let id = Uuid::now_v7();
        (id, self.token(id, &[Role::Customer]))
    }

    /// A new admin and its token.
    pub fn admin(&self) -> (Uuid, String) {
        let id = Uuid::now_v7();
        (id, self.token(id, &[Role::Admin]))
    }
}
