//! The JWKS wire format that identity serves at `GET /api/identity/jwks` (RFC 7517,
//! with the OKP key type of RFC 8037).

use serde::{Deserialize, Serialize};

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
