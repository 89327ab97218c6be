//! The HTTP API of identity (`/api/identity/...`) and the one table that maps its
//! errors to problems.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use agora_auth::Claims;
use agora_contracts::{PasswordChanged, Role, UserSignedIn, UserSignedOut};
use agora_httpkit::{FieldError, Json, Problem, responses};
use agora_messaging::{Context, Db, Envelope, Outbox};
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State as AxumState};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{Email, Name, Password};
use crate::password::{HashError, Hasher};
use crate::store::{self, Attempt, User};
use crate::throttle::SignInThrottle;
use crate::tokens::{Issued, KeyRing};

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct State {
    pub db: Db,
    pub outbox: Outbox,
    pub keys: Arc<KeyRing>,
    pub token_ttl: Duration,
    /// Verified against when the email is unknown, so that an unknown email costs as
    /// much time as a wrong password.
    pub dummy_hash: Arc<String>,
    /// Every hash and verification runs through it (bounded).
    pub hasher: Hasher,
    pub throttle: SignInThrottle,
    /// When this instance last deleted forgotten attempts and expired sign-outs.
    pub swept_at_ms: Arc<AtomicI64>,
}

/// How often an instance deletes the attempts and sign-outs that no longer count.
const SWEEP_EVERY_MS: i64 = 60_000;

/// What a token's id is kept for after it was signed out with: its expiry and the
/// clock leeway its verifiers grant (a minute covers them).
const SIGNED_OUT_MARGIN_MS: i64 = 60_000;

pub fn router(state: State) -> Router {
    Router::new()
        .route("/api/identity/users", post(sign_up))
        .route("/api/identity/token", post(issue_token).delete(sign_out))
        .route("/api/identity/users/me/password", put(change_password))
        .route("/api/identity/jwks", get(jwks))
        // The API's limit; the Json extractor answers 413 over it.
        .layer(DefaultBodyLimit::max(agora_httpkit::BODY_LIMIT))
        .with_state(state)
}

/// Why a request failed. [`ApiError::problem`] is the one place these become answers.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("email taken")]
    EmailTaken,
    #[error("bad credentials")]
    BadCredentials,
    #[error("no valid bearer token")]
    Unauthenticated,
    #[error("too many failed sign-ins for this address")]
    Throttled(Duration),
    #[error("too many passwords are being checked at once")]
    Busy,
    #[error(transparent)]
    Internal(#[from] crate::Error),
}

impl ApiError {
    fn problem(&self) -> Problem {
        match self {
            ApiError::Invalid(errors) => Problem::unprocessable(errors.clone()),
            ApiError::EmailTaken => {
                Problem::conflict("An account with this email address already exists.")
            }
            ApiError::BadCredentials => {
                Problem::unauthorized().with_detail("The email or password is incorrect.")
            }
            ApiError::Unauthenticated => Problem::unauthorized(),
            ApiError::Throttled(wait) => Problem::too_many_requests(*wait)
                .with_detail("Too many failed sign-ins for this account; try again later."),
            ApiError::Busy => Problem::service_unavailable(Duration::from_secs(1))
                .with_detail("Too many sign-ins at once; try again in a moment."),
            ApiError::Internal(error) => agora_service::internal_problem("identity", error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

agora_httpkit::internal_from!(ApiError: agora_messaging::Error, sqlx::Error, crate::tokens::KeyError);

impl From<HashError> for ApiError {
    fn from(error: HashError) -> Self {
        match error {
            HashError::Busy => ApiError::Busy,
            other => ApiError::Internal(other.into()),
        }
    }
}

// Wire types: what clients send and receive, apart from the domain types.

#[derive(Deserialize, ToSchema)]
struct SignUpRequest {
    /// An email address; compared case-insensitively.
    #[schema(
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]{1,64}@[^@\s.\x00-\x1f\x7f-\x9f]+(\.[^@\s.\x00-\x1f\x7f-\x9f]+)+$"
    )]
    email: String,
    /// At least 10 characters.
    #[schema(min_length = 10, max_length = 1024)]
    password: String,
    /// 1 to 100 characters, not all spaces, no control characters.
    #[schema(
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
}

#[derive(Serialize, ToSchema)]
struct UserResponse {
    id: Uuid,
    email: String,
    name: String,
}

#[derive(Deserialize, ToSchema)]
struct TokenRequest {
    email: String,
    password: String,
}

#[derive(Serialize, ToSchema)]
struct TokenResponse {
    access_token: String,
    /// Always `Bearer`.
    #[schema(value_type = String)]
    token_type: &'static str,
    expires_in: i64,
}

#[derive(Deserialize, ToSchema)]
struct ChangePasswordRequest {
    current_password: String,
    /// At least 10 characters.
    #[schema(min_length = 10, max_length = 1024)]
    new_password: String,
}

/// `POST /api/identity/users`: 201 `{id, email, name}`; 409 email taken; 422 invalid.
#[utoipa::path(post, path = "/api/identity/users", tag = "identity",
    request_body = SignUpRequest,
    responses(
        (status = 201, description = "Signed up", body = UserResponse),
        (status = 409, description = "The email is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (password under 10 characters, bad email, …)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many passwords are being hashed at once; try again after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        responses::NotJson, responses::NotJsonMediaType,
    ))]
async fn sign_up(
    AxumState(state): AxumState<State>,
    Json(body): Json<SignUpRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let mut errors = Vec::new();
    let email = Email::parse(&body.email)
        .map_err(|e| errors.push(e.on("email")))
        .ok();
    let password = Password::parse(&body.password)
        .map_err(|e| errors.push(e.on("password")))
        .ok();
    let name = Name::parse(&body.name)
        .map_err(|e| errors.push(e.on("name")))
        .ok();
    let (Some(email), Some(password), Some(name)) = (email, password, name) else {
        return Err(ApiError::Invalid(errors));
    };
    // Saves a hash; the insert below still decides when two sign-ups race.
    if store::user_by_email(&state.db, email.as_str())
        .await?
        .is_some()
    {
        return Err(ApiError::EmailTaken);
    }
    let hash = state.hasher.hash(password).await?;
    let id = Uuid::now_v7();
    let now = OffsetDateTime::now_utc();
    let mut tx = state.db.begin().await?;
    let inserted = store::create_user(
        &mut tx,
        &store::NewUser {
            id,
            email: email.as_str(),
            name: name.as_str(),
            password_hash: &hash,
            role: Role::Customer,
            now,
        },
    )
    .await?;
    if !inserted {
        tx.rollback().await?;
        return Err(ApiError::EmailTaken);
    }
    state.outbox.commit(tx).await?;
    tracing::info!(user_id = %id, "user signed up");
    let user = UserResponse {
        id,
        email: email.as_str().to_owned(),
        name: name.as_str().to_owned(),
    };
    Ok((StatusCode::CREATED, Json(user)))
}

/// `POST /api/identity/token`: 200 `{access_token, token_type, expires_in}`; 401 for an
/// unknown email or a wrong password alike; 429 while the address is throttled.
#[utoipa::path(post, path = "/api/identity/token", tag = "identity",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "A token", body = TokenResponse),
        (status = 401, description = "Wrong email or password", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing or of the wrong type", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "After 5 sign-ins without a success for this email address (whether an account has it or not), attempts are refused unchecked for 1 s, then 2 s, 4 s, … up to 15 minutes; a success starts afresh", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until an attempt is checked again"))),
        (status = 503, description = "Too many passwords are being checked at once; try again after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        responses::NotJson, responses::NotJsonMediaType,
    ))]
async fn issue_token(
    AxumState(state): AxumState<State>,
    Json(body): Json<TokenRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let email = Email::parse(&body.email).ok();
    if let Some(email) = &email {
        count_attempt(&state, email).await?;
    }
    let verified = check_credentials(&state, email.as_ref(), body.password).await?;
    let issued = issue_for(&state, &verified).await?;
    let claims = &issued.claims;
    let answer = TokenResponse {
        expires_in: claims.exp - claims.iat,
        access_token: issued.token,
        token_type: "Bearer",
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(answer)))
}

/// Counts an attempt to sign in as `email`, or refuses it (429) while the address is
/// blocked: before any password is checked, and the same for an address without an
/// account.
async fn count_attempt(state: &State, email: &Email) -> Result<(), ApiError> {
    let now = crate::now_ms();
    let forget_before = now.saturating_sub(state.throttle.forget_after_ms());
    sweep_when_due(state, now, forget_before).await;
    let throttle = state.throttle;
    let attempt =
        store::count_sign_in_attempt(&state.db, email.as_str(), now, forget_before, |n| {
            throttle.block_after_ms(n)
        })
        .await?;
    match attempt {
        Attempt::Counted(_) => Ok(()),
        Attempt::Blocked { until_ms } => {
            let wait = u64::try_from(until_ms.saturating_sub(now)).unwrap_or(0);
            Err(ApiError::Throttled(Duration::from_millis(wait)))
        }
    }
}

/// Now and then (once a minute per instance), deletes the attempts and sign-outs that
/// no longer count. A failure is logged: it costs space, never correctness.
async fn sweep_when_due(state: &State, now: i64, forget_before: i64) {
    let last = state.swept_at_ms.load(Ordering::Acquire);
    if now - last < SWEEP_EVERY_MS
        || state
            .swept_at_ms
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return;
    }
    if let Err(error) = store::forget_old_entries(&state.db, forget_before, now).await {
        tracing::warn!(%error, "cannot delete old sign-in attempts and sign-outs");
    }
}

/// Whose password was verified, and against which hash.
#[derive(Debug)]
struct Verified {
    user: User,
    email: Email,
}

/// Checks `password` against the account of `email`. An unknown (or malformed) email
/// costs a verification too, against a dummy hash, so that the time does not tell.
async fn check_credentials(
    state: &State,
    email: Option<&Email>,
    password: String,
) -> Result<Verified, ApiError> {
    let user = match email {
        Some(email) => store::user_by_email(&state.db, email.as_str()).await?,
        None => None,
    };
    let stored = user
        .as_ref()
        .map_or_else(|| state.dummy_hash.as_str(), |u| u.password_hash.as_str())
        .to_owned();
    let matches = state.hasher.verify(password, stored).await?;
    match (user, email) {
        (Some(user), Some(email)) if matches => Ok(Verified {
            user,
            email: email.clone(),
        }),
        _ => Err(ApiError::BadCredentials),
    }
}

/// Issues a token for a verified sign-in, if the password is still the one verified.
///
/// The token carries the user's version after this sign-in (`ver`). The update that
/// bumps it also checks the hash, under the row's lock: a password change that commits
/// before makes it fail (401), one that commits after gets a higher version, which
/// revokes this token everywhere.
async fn issue_for(state: &State, verified: &Verified) -> Result<Issued, ApiError> {
    let user = &verified.user;
    let mut tx = state.db.begin().await?;
    let Some((version, roles)) =
        store::record_sign_in(&mut tx, user.id, &user.password_hash).await?
    else {
        // The password changed since it was checked.
        tx.rollback().await?;
        return Err(ApiError::BadCredentials);
    };
    store::clear_sign_in_attempts(&mut tx, verified.email.as_str()).await?;
    let issued = state
        .keys
        .signing()
        .issue(user.id, roles, state.token_ttl, version)?;
    let claims = &issued.claims;
    let event = UserSignedIn {
        user_id: user.id,
        token_id: claims.jti,
        signed_in_at: time_of(claims.iat),
        expires_at: time_of(claims.exp),
        version,
    };
    Outbox::append(
        &mut tx,
        &Envelope::new(&event, &Context::new(user.id.to_string()))?,
    )
    .await?;
    state.outbox.commit(tx).await?;
    tracing::info!(user_id = %user.id, token_id = %claims.jti, "token issued");
    Ok(issued)
}

/// `DELETE /api/identity/token`: 204; the token is refused everywhere from then on.
#[utoipa::path(delete, path = "/api/identity/token", tag = "identity",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out: this token is refused by every service within about 2 s (by identity at once)"),
        responses::NoValidToken,
    ))]
async fn sign_out(
    AxumState(state): AxumState<State>,
    Authenticated { claims, .. }: Authenticated,
) -> Result<StatusCode, ApiError> {
    let now = OffsetDateTime::now_utc();
    let forget_after = claims
        .exp
        .saturating_mul(1000)
        .saturating_add(SIGNED_OUT_MARGIN_MS);
    let mut tx = state.db.begin().await?;
    let Some(version) = store::sign_out(&mut tx, claims.sub, claims.jti, forget_after).await?
    else {
        // Signed out with meanwhile, by a concurrent request.
        tx.rollback().await?;
        return Err(ApiError::Unauthenticated);
    };
    let event = UserSignedOut {
        user_id: claims.sub,
        token_id: claims.jti,
        signed_out_at: now,
        version,
    };
    Outbox::append(
        &mut tx,
        &Envelope::new(&event, &Context::new(claims.sub.to_string()))?,
    )
    .await?;
    state.outbox.commit(tx).await?;
    tracing::info!(user_id = %claims.sub, token_id = %claims.jti, "signed out");
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/identity/users/me/password`: 204; 401 without a valid token (or with one
/// issued before the last password change); 422 invalid new password or wrong current
/// one.
#[utoipa::path(put, path = "/api/identity/users/me/password", tag = "identity",
    request_body = ChangePasswordRequest,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Changed; tokens issued before are refused everywhere within 2 s"),
        (status = 422, description = "Invalid new password, or wrong current password", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many passwords are being hashed at once; try again after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        responses::NotJson, responses::NotJsonMediaType, responses::NoValidToken,
    ))]
async fn change_password(
    AxumState(state): AxumState<State>,
    Authenticated { user, .. }: Authenticated,
    Json(body): Json<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    let change = prepare_password_change(&state, user, body).await?;
    commit_password_change(&state, change, OffsetDateTime::now_utc()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A password change checked and hashed, not yet written.
#[derive(Debug)]
struct PasswordChange {
    user: User,
    new_hash: String,
}

async fn prepare_password_change(
    state: &State,
    user: User,
    body: ChangePasswordRequest,
) -> Result<PasswordChange, ApiError> {
    let new_password = Password::parse(&body.new_password)
        .map_err(|e| ApiError::Invalid(vec![e.on("new_password")]))?;
    if !state
        .hasher
        .verify(body.current_password, user.password_hash.clone())
        .await?
    {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "current_password",
            "is incorrect",
        )]));
    }
    let new_hash = state.hasher.hash(new_password).await?;
    Ok(PasswordChange { user, new_hash })
}

/// Writes the change and its `PasswordChanged` (with the user's new version) in one
/// transaction. `now` is the change's time, for the tokens without a version.
async fn commit_password_change(
    state: &State,
    change: PasswordChange,
    now: OffsetDateTime,
) -> Result<PasswordChanged, ApiError> {
    let user = &change.user;
    let mut tx = state.db.begin().await?;
    let Some(version) = store::change_password(
        &mut tx,
        user.id,
        &user.password_hash,
        &change.new_hash,
        ms_of(now),
    )
    .await?
    else {
        // Changed meanwhile by another request: this token is now revoked.
        tx.rollback().await?;
        return Err(ApiError::Unauthenticated);
    };
    let event = PasswordChanged {
        user_id: user.id,
        changed_at: now,
        version,
    };
    Outbox::append(
        &mut tx,
        &Envelope::new(&event, &Context::new(user.id.to_string()))?,
    )
    .await?;
    state.outbox.commit(tx).await?;
    tracing::info!(user_id = %user.id, "password changed");
    Ok(event)
}

/// `GET /api/identity/jwks`: the public keys.
#[utoipa::path(get, path = "/api/identity/jwks", tag = "identity",
    responses((status = 200, description = "The JWKS of the current public keys", body = Object)))]
async fn jwks(AxumState(state): AxumState<State>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        Json(state.keys.jwks()),
    )
}

/// A valid bearer token signed by one of identity's keys, not signed out with and not
/// older than its user's last password change, and that user as stored now. Identity
/// reads its own store for this (other services learn it from the events).
#[derive(Debug)]
struct Authenticated {
    claims: Claims,
    user: User,
}

impl FromRequestParts<State> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
            })
            .ok_or(ApiError::Unauthenticated)?;
        let claims = state.keys.verify(token).ok_or(ApiError::Unauthenticated)?;
        let user = current_user(state, &claims).await?;
        Ok(Authenticated { claims, user })
    }
}

/// The user of `claims`, unless the token is revoked: by a password change (by version
/// when the token has one, else by time) or by a sign-out.
async fn current_user(state: &State, claims: &Claims) -> Result<User, ApiError> {
    let user = store::user_by_id(&state.db, claims.sub)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    let older_than_the_password = match claims.ver {
        Some(version) => version < user.password_changed_version,
        None => claims.issued_at_ms() < user.password_changed_at_ms,
    };
    if older_than_the_password || store::is_signed_out(&state.db, claims.jti).await? {
        return Err(ApiError::Unauthenticated);
    }
    Ok(user)
}

fn ms_of(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn time_of(unix_seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix_seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The OpenAPI document of identity's public paths.
#[derive(utoipa::OpenApi)]
#[openapi(paths(sign_up, issue_token, sign_out, change_password, jwks))]
pub struct IdentityDoc;

#[cfg(test)]
mod tests {
    //! The race between a sign-in and a password change, played step by step through the
    //! same functions the handlers run.

    use agora_auth::Revocations;

    use super::*;
    use crate::password::HashingLimits;
    use crate::tokens::SigningKey;

    const OLD: &str = "correct horse battery";
    const NEW: &str = "a brand new password";

    async fn state(dir: &tempfile::TempDir) -> State {
        let url = format!("sqlite://{}", dir.path().join("identity.db").display());
        let db = Db::connect(&url).await.unwrap();
        db.migrate_messaging().await.unwrap();
        db.migrate(crate::SOURCE, store::MIGRATIONS).await.unwrap();
        let hasher = Hasher::new(HashingLimits::default());
        let dummy = hasher
            .hash(Password::parse("not a real password").unwrap())
            .await
            .unwrap();
        State {
            outbox: Outbox::new(&db),
            db,
            keys: Arc::new(KeyRing::new(vec![SigningKey::generate().unwrap()]).unwrap()),
            token_ttl: Duration::from_secs(600),
            dummy_hash: Arc::new(dummy),
            hasher,
            throttle: SignInThrottle::default(),
            swept_at_ms: Arc::new(AtomicI64::new(0)),
        }
    }

    async fn sign_up(state: &State, email: &Email) -> User {
        let hash = state
            .hasher
            .hash(Password::parse(OLD).unwrap())
            .await
            .unwrap();
        let mut tx = state.db.begin().await.unwrap();
        let new = store::NewUser {
            id: Uuid::now_v7(),
            email: email.as_str(),
            name: "Ada",
            password_hash: &hash,
            role: Role::Customer,
            now: OffsetDateTime::now_utc(),
        };
        assert!(store::create_user(&mut tx, &new).await.unwrap());
        tx.commit().await.unwrap();
        store::user_by_email(&state.db, email.as_str())
            .await
            .unwrap()
            .unwrap()
    }

    fn to_new_password() -> ChangePasswordRequest {
        ChangePasswordRequest {
            current_password: OLD.into(),
            new_password: NEW.into(),
        }
    }

    /// The interleaving the time rule cannot settle: the change reads its clock, a
    /// sign-in with the old password issues its token (later by the clock), then the
    /// change commits. The token's version is below the change's: refused everywhere.
    #[tokio::test]
    async fn a_sign_in_racing_a_password_change_gets_a_token_the_change_revokes() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir).await;
        let email = Email::parse("ada@example.org").unwrap();
        let user = sign_up(&state, &email).await;

        // The change has checked the current password, hashed the new one and read its
        // clock (a moment ago, or on a clock behind the sign-in's)...
        let change = prepare_password_change(&state, user, to_new_password())
            .await
            .unwrap();
        let changed_at = OffsetDateTime::now_utc() - time::Duration::seconds(1);
        // ...meanwhile a sign-in checks the old password and issues its token...
        let verified = check_credentials(&state, Some(&email), OLD.into())
            .await
            .unwrap();
        let raced = issue_for(&state, &verified).await.unwrap().claims;
        // ...then the change commits.
        let event = commit_password_change(&state, change, changed_at)
            .await
            .unwrap();

        assert!(
            raced.issued_at_ms() > ms_of(event.changed_at),
            "by time alone the token would pass"
        );
        assert!(raced.ver.unwrap() < event.version);
        // Every service, from the event...
        let revocations = Revocations::new();
        revocations.record_password_change(&event);
        assert!(revocations.is_revoked(&raced));
        // ...and identity, from its store.
        assert!(matches!(
            current_user(&state, &raced).await,
            Err(ApiError::Unauthenticated)
        ));

        // A sign-in with the new password afterwards is accepted by both.
        let verified = check_credentials(&state, Some(&email), NEW.into())
            .await
            .unwrap();
        let fresh = issue_for(&state, &verified).await.unwrap().claims;
        assert!(fresh.ver.unwrap() > event.version);
        assert!(!revocations.is_revoked(&fresh));
        current_user(&state, &fresh).await.expect("a current token");
        // The old password is no longer accepted.
        assert!(matches!(
            check_credentials(&state, Some(&email), OLD.into()).await,
            Err(ApiError::BadCredentials)
        ));
    }

    /// The other interleaving: the old password was checked, then the change commits
    /// before the sign-in issues anything: no token at all.
    #[tokio::test]
    async fn a_sign_in_whose_password_changed_after_the_check_gets_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir).await;
        let email = Email::parse("ada@example.org").unwrap();
        let user = sign_up(&state, &email).await;

        let verified = check_credentials(&state, Some(&email), OLD.into())
            .await
            .unwrap();
        let change = prepare_password_change(&state, user, to_new_password())
            .await
            .unwrap();
        commit_password_change(&state, change, OffsetDateTime::now_utc())
            .await
            .unwrap();

        assert!(matches!(
            issue_for(&state, &verified).await,
            Err(ApiError::BadCredentials)
        ));
    }
}
