//! The JWKS wire format that identity serves at `GET /api/identity/jwks` (RFC 7517,
//! with the OKP key type of RFC 8037).

use jsonwebtoken::jwk::AlgorithmParameters;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};

use crate::Error;

/// A JSON Web Key Set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// One public key. For Ed25519: `kty: "OKP"`, `crv: "Ed25519"`, `x` = the 32-byte
/// public key in unpadded base64url, `alg: "EdDSA"`, `use: "sig"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

impl Jwk {
    /// An Ed25519 signing key's public half, `x` already base64url-encoded (no padding).
    pub fn ed25519(kid: impl Into<String>, x: impl Into<String>) -> Self {
        Self {
            kty: "OKP".to_owned(),
            crv: "Ed25519".to_owned(),
            x: x.into(),
            kid: kid.into(),
            alg: Some("EdDSA".to_owned()),
            use_: Some("sig".to_owned()),
        }
    }
}

impl Jwk {
    /// The public half of an Ed25519 key given as PKCS#8 DER (what
    /// `jsonwebtoken::EncodingKey::from_ed_der` takes), as a JWK named `kid`.
    pub fn from_ed25519_pkcs8_der(kid: impl Into<String>, der: &[u8]) -> Result<Self, Error> {
        let key = jsonwebtoken::EncodingKey::from_ed_der(der);
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::EdDSA)
            .map_err(|_| Error::InvalidKey)?;
        match jwk.algorithm {
            AlgorithmParameters::OctetKeyPair(params) => Ok(Jwk::ed25519(kid, params.x)),
            _ => Err(Error::InvalidKey),
        }
    }

    /// The key to verify EdDSA signatures with, if this is a well-formed Ed25519
    /// signing key; anything else (RSA, HMAC secrets, other curves, encryption keys) is
    /// refused, so a JWKS can never widen the accepted algorithms.
    pub(crate) fn decoding_key(&self) -> Option<DecodingKey> {
        let is_ed25519 = self.kty == "OKP" && self.crv == "Ed25519";
        let alg_ok = self.alg.as_deref().is_none_or(|alg| alg == "EdDSA");
        let use_ok = self.use_.as_deref().is_none_or(|use_| use_ == "sig");
        if !(is_ed25519 && alg_ok && use_ok) {
            return None;
        }
        let key = DecodingKey::from_ed_components(&self.x).ok()?;
        // jsonwebtoken slices the first 32 bytes without checking the length.
        (key.try_get_as_bytes().ok()?.len() == 32).then_some(key)
    }
}
