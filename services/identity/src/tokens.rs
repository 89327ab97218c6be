//! The signing key, the access tokens it signs, and the JWKS that publishes it.

use std::fmt;
use std::time::Duration;

use agora_contracts::Role;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use uuid::Uuid;

use agora_auth::{AUDIENCE, Claims, ISSUER, Jwk as PublicJwk, Jwks};

/// The RFC 8410 PKCS#8 (v1) prefix of an Ed25519 private key; the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Why a key could not be made or used.
#[derive(Debug, thiserror::Error)]
#[error("signing key: {0}")]
pub struct KeyError(String);

/// An Ed25519 key pair identified by `kid` (its RFC 7638 thumbprint). `Debug` shows
/// the `kid` only.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    seed: [u8; 32],
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The public half, base64url (the JWK's `x`).
    x: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<SigningKey, KeyError> {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        SigningKey::from_seed(seed)
    }

    pub fn from_seed(seed: [u8; 32]) -> Result<SigningKey, KeyError> {
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&seed);
        let encoding = EncodingKey::from_ed_der(&der);
        let jwk = Jwk::from_encoding_key(&encoding, Algorithm::EdDSA)
            .map_err(|e| KeyError(e.to_string()))?;
        let AlgorithmParameters::OctetKeyPair(params) = &jwk.algorithm else {
            return Err(KeyError("not an octet key pair".into()));
        };
        let x = params.x.clone();
        let decoding = DecodingKey::from_ed_components(&x).map_err(|e| KeyError(e.to_string()))?;
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| KeyError(e.to_string()))?;
        Ok(SigningKey {
            kid,
            seed,
            encoding,
            decoding,
            x,
        })
    }

    /// The seed as stored: lower-case hex.
    pub fn seed_hex(&self) -> String {
        self.seed.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_seed_hex(hex: &str) -> Result<SigningKey, KeyError> {
        let bad = || KeyError("malformed stored key".into());
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut seed = [0u8; 32];
        for (i, byte) in seed.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        SigningKey::from_seed(seed)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as published in the JWKS.
    pub fn public_jwk(&self) -> PublicJwk {
        PublicJwk::ed25519(self.kid.clone(), self.x.clone())
    }

    /// Signs an access token for `user` with `roles`, valid for `ttl` from now, stamped
    /// with the user's `version` at issue.
    pub fn issue(
        &self,
        user: Uuid,
        roles: Vec<Role>,
        ttl: Duration,
        version: u64,
    ) -> Result<Issued, KeyError> {
        let now = unix_now();
        let claims = Claims::new(user, roles, now, ttl).with_version(version);
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| KeyError(e.to_string()))?;
        Ok(Issued { token, claims })
    }

    /// The claims of `token` if this key signed it (EdDSA only, `kid` = ours) and it is
    /// valid now for Agora.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != Algorithm::EdDSA || header.kid.as_deref() != Some(self.kid.as_str()) {
            return None;
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .ok()
            .map(|data| data.claims)
    }
}

/// The keys identity holds: the first signs, all are published and verify.
#[derive(Clone, Debug)]
pub struct KeyRing {
    keys: Vec<SigningKey>,
}

impl KeyRing {
    pub fn new(keys: Vec<SigningKey>) -> Option<KeyRing> {
        (!keys.is_empty()).then_some(KeyRing { keys })
    }

    pub fn signing(&self) -> &SigningKey {
        &self.keys[0]
    }

    /// The claims of `token` if one of these keys signed it and it is valid now.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let kid = header.kid?;
        self.keys.iter().find(|k| k.kid == kid)?.verify(token)
    }

    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self.keys.iter().map(SigningKey::public_jwk).collect(),
        }
    }
}

/// A signed token and what it says.
pub struct Issued {
    pub token: String,
    pub claims: Claims,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_verifies_what_it_signs_and_survives_a_round_trip_through_hex() {
        let key = SigningKey::generate().unwrap();
        let issued = key
            .issue(
                Uuid::now_v7(),
                vec![Role::Customer],
                Duration::from_secs(60),
                1,
            )
            .unwrap();
        let again = SigningKey::from_seed_hex(&key.seed_hex()).unwrap();
        assert_eq!(again.kid(), key.kid());
        assert_eq!(again.verify(&issued.token), Some(issued.claims.clone()));
        let other = SigningKey::generate().unwrap();
        assert_eq!(other.verify(&issued.token), None);
        assert!(!format!("{key:?}").contains(&key.seed_hex()));
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let key = SigningKey::generate().unwrap();
        let issued = key
            .issue(
                Uuid::now_v7(),
                vec![Role::Customer],
                Duration::from_secs(60),
                1,
            )
            .unwrap();
        let mut parts: Vec<String> = issued.token.split('.').map(str::to_owned).collect();
        parts[1] = parts[1].chars().rev().collect();
        assert_eq!(key.verify(&parts.join(".")), None);
    }
}
