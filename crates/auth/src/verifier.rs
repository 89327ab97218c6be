//! Local token verification against a cached JWKS.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::time::Instant;

use crate::revocation::now_ms;
use crate::{AUDIENCE, Claims, Error, ISSUER, Jwks, KeySource, MAX_TOKEN_TTL, Revocations};

/// How a [`Verifier`] treats clocks and refetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifierConfig {
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// The least time between two JWKS fetches after the cache was filled: a flood of
    /// tokens with made-up `kid`s costs identity at most one request per interval.
    pub min_refetch_interval: Duration,
    /// After failed fetches the interval doubles, up to this.
    pub max_refetch_interval: Duration,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            leeway: Duration::from_secs(30),
            min_refetch_interval: Duration::from_secs(1),
            max_refetch_interval: Duration::from_secs(30),
        }
    }
}

/// Verifies access tokens locally: EdDSA signature by a key of identity's JWKS (cached),
/// `iss`, `aud`, `exp`, `nbf`, lifetime, and revocation. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    source: Box<dyn KeySource>,
    revocations: Revocations,
    config: VerifierConfig,
    validation: Validation,
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// Serializes fetches, and remembers when the last one was tried.
    fetch: tokio::sync::Mutex<FetchState>,
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    failures: u32,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<String> = self.read_keys().keys().cloned().collect();
        kids.sort();
        f.debug_struct("Verifier")
            .field("kids", &kids)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier with an empty key cache: the first token fills it.
    pub fn new(source: impl KeySource, revocations: Revocations, config: VerifierConfig) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        Self {
            inner: Arc::new(Inner {
                source: Box::new(source),
                revocations,
                config,
                validation,
                keys: RwLock::new(HashMap::new()),
                fetch: tokio::sync::Mutex::new(FetchState::default()),
            }),
        }
    }

    /// A verifier whose cache is filled now. If identity cannot be reached, the
    /// service starts anyway (with a warning): the first token fetches again.
    pub async fn start(
        source: impl KeySource,
        revocations: Revocations,
        config: VerifierConfig,
    ) -> Self {
        let verifier = Self::new(source, revocations, config);
        if let Err(error) = verifier.refresh().await {
            tracing::warn!(%error, "no signing keys at start; will fetch on first use");
        }
        verifier
    }

    /// The revocations this verifier consults.
    pub fn revocations(&self) -> &Revocations {
        &self.inner.revocations
    }

    /// Fetches the JWKS now, whatever the rate limit, and returns the number of usable
    /// keys. On failure the cached keys stay.
    pub async fn refresh(&self) -> Result<usize, Error> {
        let mut state = self.inner.fetch.lock().await;
        self.fetch_locked(&mut state).await
    }

    /// Verifies `token` (the part after `Bearer `) and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, Error> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Error::Malformed)?;
        // Pinned before any key is looked at, so `none`, HS256-with-the-public-key and
        // the like never reach a key, nor trigger a fetch.
        if header.alg != Algorithm::EdDSA {
            return Err(Error::DisallowedAlgorithm);
        }
        let kid = header.kid.ok_or(Error::MissingKeyId)?;
        let key = match self.key(&kid) {
            Some(key) => key,
            None => self.refetch_for(&kid).await?,
        };
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &self.inner.validation)
            .map_err(|e| map_jwt_error(e.kind()))?
            .claims;
        self.check_times(&claims)?;
        if self.inner.revocations.is_revoked(&claims) {
            return Err(Error::Revoked);
        }
        Ok(claims)
    }

    /// What jsonwebtoken does not check: `iat` not in the future and a lifetime within
    /// [`MAX_TOKEN_TTL`], so that a leaked key cannot mint long-lived tokens unnoticed.
    fn check_times(&self, claims: &Claims) -> Result<(), Error> {
        let leeway = i64::try_from(self.inner.config.leeway.as_secs()).unwrap_or(0);
        let now = now_ms() / 1000;
        if claims.iat > now + leeway {
            return Err(Error::NotYetValid);
        }
        let max_ttl = i64::try_from(MAX_TOKEN_TTL.as_secs()).unwrap_or(0);
        if claims.exp - claims.iat > max_ttl || claims.nbf < claims.iat {
            return Err(Error::InvalidClaims);
        }
        Ok(())
    }

    fn read_keys(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, DecodingKey>> {
        self.inner.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.read_keys().get(kid).cloned()
    }

    /// An unknown `kid`: identity may have rotated its key, so fetch again, unless the
    /// last fetch was too recent (then the `kid` is unknown for now).
    async fn refetch_for(&self, kid: &str) -> Result<DecodingKey, Error> {
        let mut state = self.inner.fetch.lock().await;
        // Another request may have fetched while this one waited for the lock.
        if let Some(key) = self.key(kid) {
            return Ok(key);
        }
        if let Some(last) = state.last_attempt
            && last.elapsed() < self.refetch_interval(state.failures)
        {
            return Err(Error::UnknownKey);
        }
        match self.fetch_locked(&mut state).await {
            Ok(_) => self.key(kid).ok_or(Error::UnknownKey),
            Err(error) => {
                tracing::warn!(%error, "cannot refetch the signing keys");
                Err(Error::UnknownKey)
            }
        }
    }

    fn refetch_interval(&self, failures: u32) -> Duration {
        let config = &self.inner.config;
        config
            .min_refetch_interval
            .saturating_mul(1u32 << failures.min(16))
            .min(config.max_refetch_interval.max(config.min_refetch_interval))
    }

    async fn fetch_locked(&self, state: &mut FetchState) -> Result<usize, Error> {
        state.last_attempt = Some(Instant::now());
        match self.inner.source.fetch().await {
            Ok(jwks) => {
                state.failures = 0;
                let keys = usable_keys(&jwks);
                let count = keys.len();
                *self.inner.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
                tracing::debug!(keys = count, "signing keys fetched");
                Ok(count)
            }
            Err(error) => {
                state.failures = state.failures.saturating_add(1);
                Err(error)
            }
        }
    }
}

fn usable_keys(jwks: &Jwks) -> HashMap<String, DecodingKey> {
    let mut keys = HashMap::new();
    for jwk in &jwks.keys {
        match jwk.decoding_key() {
            Some(key) => {
                keys.insert(jwk.kid.clone(), key);
            }
            None => {
                tracing::warn!(kid = %jwk.kid, "ignoring a JWK that is not an Ed25519 signing key")
            }
        }
    }
    keys
}

fn map_jwt_error(kind: &ErrorKind) -> Error {
    match kind {
        ErrorKind::InvalidSignature => Error::InvalidSignature,
        ErrorKind::ExpiredSignature => Error::Expired,
        ErrorKind::ImmatureSignature => Error::NotYetValid,
        ErrorKind::InvalidIssuer => Error::WrongIssuer,
        ErrorKind::InvalidAudience => Error::WrongAudience,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => Error::DisallowedAlgorithm,
        ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::InvalidSubject
        | ErrorKind::Json(_) => Error::InvalidClaims,
        _ => Error::Malformed,
    }
}
