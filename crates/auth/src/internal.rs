//! The internal plane: how one Agora service proves to another that it is one.
//!
//! Every `/internal/...` route accepts only a short-lived **service token**: a JWT
//! signed with EdDSA by the deployment's [`InternalKey`], `iss` = [`INTERNAL_ISSUER`],
//! `sub` = the calling service, `aud` = the service called. A request without one is
//! answered 401; with a user's token (a customer's or an admin's) 403: a user is never
//! a service, whatever their role.
//!
//! The key is one Ed25519 key pair per deployment, held by every service of it
//! (`agora up` keeps it in `<data-dir>/internal-key`; `agora secrets init` writes one
//! for a deployment of separate processes). Nothing travels in-process: a service
//! signs its calls and checks the calls it gets over HTTP, exactly as it would across
//! machines.
//!
//! ```no_run
//! # fn demo() -> Result<(), agora_auth::Error> {
//! use agora_auth::InternalKey;
//!
//! let key = InternalKey::generate();
//! let ordering = key.service("ordering");
//! let payment = key.service("payment");
//! // ordering's client of payment sends this as `Authorization: Bearer …`:
//! let token = ordering.token_for("payment")?;
//! // payment's `/internal` routes, behind `payment.guard()`, accept it:
//! assert_eq!(payment.verify(&token)?.sub, "ordering");
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{FromFnLayer, Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Error, ISSUER};

/// The `iss` of every service token.
pub const INTERNAL_ISSUER: &str = "agora-internal";

/// How long a service token lives. A caller reuses its token for a target until a
/// minute before it expires.
pub const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(5 * 60);

/// A caller gets a new token once its current one has less than this left.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

/// Clock skew tolerated between services.
const LEEWAY_SECS: u64 = 30;

/// Verified tokens remembered (by their exact text) so that a token reused for
/// minutes is checked once, not per request. More than this and the memory is
/// cleared.
const VERIFIED_CAP: usize = 1_024;

/// The RFC 8410 PKCS#8 (v1) prefix of an Ed25519 private key; the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The claims of a service token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceClaims {
    /// [`INTERNAL_ISSUER`].
    pub iss: String,
    /// The calling service (`"ordering"`).
    pub sub: String,
    /// The service called (`"payment"`).
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Uuid,
}

/// The deployment's internal-plane key (Ed25519). `Debug` never shows it.
#[derive(Clone)]
pub struct InternalKey {
    seed: [u8; 32],
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl fmt::Debug for InternalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InternalKey(..)")
    }
}

impl InternalKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        Self::from_seed(seed)
    }

    fn from_seed(seed: [u8; 32]) -> Self {
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&seed);
        let encoding = EncodingKey::from_ed_der(&der);
        let decoding = ed25519_public(&encoding);
        Self {
            seed,
            encoding,
            decoding,
        }
    }

    /// The key as stored: 64 lower-case hex digits of the seed.
    pub fn to_hex(&self) -> String {
        self.seed.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(hex: &str) -> Result<Self, Error> {
        let hex = hex.trim();
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(Error::InvalidKey);
        }
        let mut seed = [0u8; 32];
        for (i, byte) in seed.iter_mut().enumerate() {
            *byte =
                u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| Error::InvalidKey)?;
        }
        Ok(Self::from_seed(seed))
    }

    /// The key in the file at `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::KeySource(format!("read {}: {e}", path.display())))?;
        Self::from_hex(&text)
    }

    /// The key in the file at `path`, or a new one written there (mode 0600, created
    /// exclusively: two processes starting at once cannot end up with two keys).
    pub fn load_or_create(path: &Path) -> Result<Self, Error> {
        match Self::load(path) {
            Ok(key) => return Ok(key),
            Err(_) if path.exists() => return Self::load(path),
            Err(_) => {}
        }
        let key = Self::generate();
        match write_private(path, &key.to_hex()) {
            Ok(()) => Ok(key),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(error) => Err(Error::KeySource(format!(
                "write {}: {error}",
                path.display()
            ))),
        }
    }

    /// The internal plane as the service `name` sees it.
    pub fn service(&self, name: &str) -> InternalAuth {
        InternalAuth {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                key: self.clone(),
                tokens: Mutex::new(HashMap::new()),
                verified: Mutex::new(HashMap::new()),
            }),
        }
    }
}

/// Writes `contents` to a new file at `path` readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// The verifying half of `seed`'s key pair.
fn ed25519_public(encoding: &EncodingKey) -> DecodingKey {
    use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
    let jwk = Jwk::from_encoding_key(encoding, Algorithm::EdDSA)
        .expect("an Ed25519 seed always has a public key");
    let AlgorithmParameters::OctetKeyPair(params) = jwk.algorithm else {
        unreachable!("an Ed25519 key is an octet key pair")
    };
    DecodingKey::from_ed_components(&params.x).expect("an Ed25519 public key decodes")
}

/// One service's side of the internal plane: it signs the service tokens of its calls
/// (one per target, reused until shortly before it expires) and checks the tokens of
/// the calls it gets. Cheap to clone.
#[derive(Clone)]
pub struct InternalAuth {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    key: InternalKey,
    /// Per target: the token and when it expires (Unix seconds).
    tokens: Mutex<HashMap<String, (String, i64)>>,
    /// Tokens already verified, with the claims' `exp`.
    verified: Mutex<HashMap<String, (ServiceClaims, i64)>>,
}

impl fmt::Debug for InternalAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InternalAuth")
            .field("service", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl InternalAuth {
    /// The service this is.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A service token for calls to `audience` (another service's name).
    pub fn token_for(&self, audience: &str) -> Result<String, Error> {
        let now = unix_now();
        let mut tokens = self.inner.tokens.lock();
        if let Some((token, exp)) = tokens.get(audience)
            && *exp - now > secs(RENEW_BEFORE)
        {
            return Ok(token.clone());
        }
        let claims = ServiceClaims {
            iss: INTERNAL_ISSUER.to_owned(),
            sub: self.inner.name.clone(),
            aud: audience.to_owned(),
            iat: now,
            nbf: now,
            exp: now + secs(SERVICE_TOKEN_TTL),
            jti: Uuid::now_v7(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("JWT".into());
        let token = jsonwebtoken::encode(&header, &claims, &self.inner.key.encoding)
            .map_err(|_| Error::InvalidKey)?;
        tokens.insert(audience.to_owned(), (token.clone(), claims.exp));
        Ok(token)
    }

    /// `Bearer <service token for audience>`, marked sensitive (never logged): what a
    /// client of `audience` puts in `Authorization`. See
    /// [`agora_resilience::ResilientClient::with_credentials`].
    pub fn authorization_for(&self, audience: &str) -> Result<HeaderValue, Error> {
        let mut value = HeaderValue::try_from(format!("Bearer {}", self.token_for(audience)?))
            .map_err(|_| Error::Malformed)?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// The credentials of a resilient client whose target is `audience`.
    pub fn credentials_for(&self, audience: &str) -> agora_resilience::Credentials {
        let auth = self.clone();
        let audience = audience.to_owned();
        agora_resilience::Credentials::new(move || match auth.authorization_for(&audience) {
            Ok(value) => Some(value),
            Err(error) => {
                tracing::error!(%error, "cannot sign a service token");
                None
            }
        })
    }

    /// The claims of `token` if it is a service token for this service: EdDSA by the
    /// deployment key, `iss`, `aud` = this service, `exp`/`nbf` with 30 s of leeway.
    pub fn verify(&self, token: &str) -> Result<ServiceClaims, Error> {
        let now = unix_now();
        if let Some((claims, exp)) = self.inner.verified.lock().get(token)
            && *exp + i64::try_from(LEEWAY_SECS).unwrap_or(0) > now
        {
            return Ok(claims.clone());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Error::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(Error::DisallowedAlgorithm);
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[INTERNAL_ISSUER]);
        validation.set_audience(&[self.inner.name.as_str()]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let claims =
            jsonwebtoken::decode::<ServiceClaims>(token, &self.inner.key.decoding, &validation)
                .map(|data| data.claims)
                .map_err(|error| match error.kind() {
                    ErrorKind::ExpiredSignature => Error::Expired,
                    ErrorKind::ImmatureSignature => Error::NotYetValid,
                    ErrorKind::InvalidIssuer => Error::WrongIssuer,
                    ErrorKind::InvalidAudience => Error::WrongAudience,
                    ErrorKind::InvalidSignature => Error::InvalidSignature,
                    ErrorKind::InvalidAlgorithm => Error::DisallowedAlgorithm,
                    _ => Error::InvalidClaims,
                })?;
        if claims.exp - claims.iat > secs(SERVICE_TOKEN_TTL) {
            return Err(Error::InvalidClaims);
        }
        let mut verified = self.inner.verified.lock();
        if verified.len() >= VERIFIED_CAP {
            verified.clear();
        }
        verified.insert(token.to_owned(), (claims.clone(), claims.exp));
        Ok(claims)
    }

    /// The layer that guards a service's `/internal` routes: put it on them with
    /// `Router::route_layer`. The handlers find the calling service as an
    /// [`InternalCaller`] extension.
    pub fn guard(&self) -> FromFnLayer<GuardFn, InternalAuth, (State<InternalAuth>, Request)> {
        from_fn_with_state(self.clone(), guard as GuardFn)
    }
}

/// The calling service of an `/internal` request, as its token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalCaller {
    pub service: String,
}

type GuardFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>;

/// The signature of the guard function ([`InternalAuth::guard`]).
pub type GuardFn = fn(State<InternalAuth>, Request, Next) -> GuardFuture;

fn guard(State(auth): State<InternalAuth>, mut request: Request, next: Next) -> GuardFuture {
    Box::pin(async move {
        let token = match bearer(&request) {
            Some(token) => token,
            None => return Error::MissingToken.into_response(),
        };
        match auth.verify(&token) {
            Ok(claims) => {
                request.extensions_mut().insert(InternalCaller {
                    service: claims.sub,
                });
                next.run(request).await
            }
            Err(_) if is_user_token(&token) => Error::NotAService.into_response(),
            Err(error) => {
                tracing::debug!(%error, service = %auth.name(), "service token refused");
                error.into_response()
            }
        }
    })
}

/// The token of the one `Authorization: Bearer` header.
fn bearer(request: &Request) -> Option<String> {
    let mut values = request.headers().get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// Whether `token` claims to be a user's access token (identity's issuer). Only the
/// answer's status depends on it (403 instead of 401): the request is refused either way.
fn is_user_token(token: &str) -> bool {
    #[derive(Deserialize)]
    struct Issuer {
        iss: Option<String>,
    }
    jsonwebtoken::dangerous::insecure_decode_claims::<Issuer>(token)
        .ok()
        .and_then(|claims| claims.iss)
        .is_some_and(|iss| iss == ISSUER)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_for_one_service_is_accepted_by_it_only() {
        let key = InternalKey::generate();
        let ordering = key.service("ordering");
        let token = ordering.token_for("payment").expect("token");
        let claims = key
            .service("payment")
            .verify(&token)
            .expect("payment accepts");
        assert_eq!(claims.sub, "ordering");
        assert_eq!(claims.aud, "payment");
        assert_eq!(
            key.service("customer").verify(&token),
            Err(Error::WrongAudience)
        );
        assert_eq!(
            ordering.token_for("payment").expect("token"),
            token,
            "a token is reused while it is fresh"
        );
    }

    #[test]
    fn another_deployments_key_is_refused() {
        let token = InternalKey::generate()
            .service("ordering")
            .token_for("payment")
            .expect("token");
        assert_eq!(
            InternalKey::generate().service("payment").verify(&token),
            Err(Error::InvalidSignature)
        );
    }

    #[test]
    fn expired_long_lived_and_unsigned_tokens_are_refused() {
        let key = InternalKey::generate();
        let payment = key.service("payment");
        let now = unix_now();
        let sign = |iat: i64, exp: i64| {
            let claims = ServiceClaims {
                iss: INTERNAL_ISSUER.to_owned(),
                sub: "ordering".to_owned(),
                aud: "payment".to_owned(),
                iat,
                nbf: iat,
                exp,
                jti: Uuid::now_v7(),
            };
            jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &key.encoding)
                .expect("sign")
        };
        assert_eq!(
            payment.verify(&sign(now - 600, now - 300)),
            Err(Error::Expired)
        );
        assert_eq!(
            payment.verify(&sign(now, now + 3_600)),
            Err(Error::InvalidClaims),
            "longer than the service-token lifetime"
        );
        let good = sign(now, now + 60);
        let (head, rest) = good.split_once('.').expect("a JWT");
        let _ = head;
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            rest.split_once('.').expect("payload").0
        );
        assert!(payment.verify(&none).is_err(), "alg none");
        let hs256 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &ServiceClaims {
                iss: INTERNAL_ISSUER.to_owned(),
                sub: "ordering".to_owned(),
                aud: "payment".to_owned(),
                iat: now,
                nbf: now,
                exp: now + 60,
                jti: Uuid::now_v7(),
            },
            &EncodingKey::from_secret(b"guess"),
        )
        .expect("sign");
        assert_eq!(payment.verify(&hs256), Err(Error::DisallowedAlgorithm));
    }

    #[test]
    fn the_key_survives_a_round_trip_through_its_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("internal-key");
        let key = InternalKey::load_or_create(&path).expect("created");
        let again = InternalKey::load_or_create(&path).expect("loaded");
        assert_eq!(key.to_hex(), again.to_hex());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let token = key.service("a").token_for("b").expect("token");
        again.service("b").verify(&token).expect("the same key");
        assert!(InternalKey::from_hex("zz").is_err());
    }
}
