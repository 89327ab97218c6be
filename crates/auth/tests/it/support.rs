//! Test keys, tokens and verifiers.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agora_auth::{Claims, Jwk, Jwks, MemoryKeySource, Revocations, Verifier, VerifierConfig};
use agora_contracts::Role;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use uuid::Uuid;

/// An Ed25519 key pair generated for the test, with its JWK.
pub struct TestKey {
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwk: Jwk,
}

impl TestKey {
    pub fn generate(kid: &str) -> Self {
        // The random halves of four UUIDv7s: plenty for a test key, no extra crate.
        let mut seed = [0u8; 32];
        for chunk in seed.chunks_mut(8) {
            chunk.copy_from_slice(&Uuid::now_v7().as_bytes()[8..]);
        }
        // PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410): a fixed 16-byte prefix.
        let mut der = hex("302e020100300506032b657004220420");
        der.extend_from_slice(&seed);
        let jwk = Jwk::from_ed25519_pkcs8_der(kid, &der).expect("an Ed25519 key");
        Self {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ed_der(&der),
            jwk,
        }
    }

    /// The raw 32-byte public key.
    pub fn public_bytes(&self) -> Vec<u8> {
        b64url_decode(&self.jwk.x)
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signed")
    }
}

pub fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs(),
    )
    .expect("fits")
}

pub fn claims(roles: Vec<Role>) -> Claims {
    Claims::new(Uuid::now_v7(), roles, now(), Duration::from_secs(300))
}

pub fn customer() -> Claims {
    claims(vec![Role::Customer])
}

pub fn admin() -> Claims {
    claims(vec![Role::Admin])
}

pub fn jwks(keys: &[&TestKey]) -> Jwks {
    Jwks {
        keys: keys.iter().map(|key| key.jwk.clone()).collect(),
    }
}

/// A verifier over an in-memory key source serving `keys`, already started.
pub async fn verifier(keys: &[&TestKey]) -> (Verifier, Arc<MemoryKeySource>) {
    verifier_with(keys, Revocations::new()).await
}

pub async fn verifier_with(
    keys: &[&TestKey],
    revocations: Revocations,
) -> (Verifier, Arc<MemoryKeySource>) {
    let source = Arc::new(MemoryKeySource::new(jwks(keys)));
    let verifier = Verifier::start(source.clone(), revocations, VerifierConfig::default()).await;
    (verifier, source)
}

/// A JWT from raw parts: `header` and `payload` are JSON, `signature` raw bytes.
pub fn raw_token(
    header: &serde_json::Value,
    payload: &serde_json::Value,
    signature: &[u8],
) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(payload.to_string().as_bytes()),
        b64url(signature)
    )
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub fn b64url(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

pub fn b64url_decode(text: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let value = ALPHABET.iter().position(|a| *a == c).expect("base64url") as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}
