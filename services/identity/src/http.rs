//! The HTTP API of identity (`/api/identity/...`) and the one table that maps its
//! errors to problems.

use std::sync::Arc;
use std::time::Duration;

use agora_auth::Claims;
use agora_contracts::{PasswordChanged, Role, UserSignedIn};
use agora_httpkit::{FieldError, Json, Problem};
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
use crate::tokens::KeyRing;
use crate::{password, store};

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
}

/// Request bodies over 64 KiB are refused (413).
const BODY_LIMIT: usize = 64 * 1024;

pub fn router(state: State) -> Router {
    Router::new()
        .route("/api/identity/users", post(sign_up))
        .route("/api/identity/token", post(issue_token))
        .route("/api/identity/users/me/password", put(change_password))
        .route("/api/identity/jwks", get(jwks))
        // The API's limit; the Json extractor answers 413 over it.
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
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
            ApiError::Internal(error) => {
                // The cause goes to the log (it names no secret), never to the client.
                tracing::error!(%error, "identity request failed");
                Problem::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

macro_rules! internal_from {
    ($($source:ty),*) => {$(
        impl From<$source> for ApiError {
            fn from(error: $source) -> Self {
                ApiError::Internal(error.into())
            }
        }
    )*};
}
internal_from!(
    agora_messaging::Error,
    sqlx::Error,
    password::HashError,
    crate::tokens::KeyError
);

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
        (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The email is taken", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (password under 10 characters, bad email, …)", body = Problem, content_type = "application/problem+json"),
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
    let hash = password::hash(password).await?;
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
/// unknown email or a wrong password alike.
#[utoipa::path(post, path = "/api/identity/token", tag = "identity",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "A token", body = TokenResponse),
        (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong email or password", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is missing or of the wrong type", body = Problem, content_type = "application/problem+json"),
    ))]
async fn issue_token(
    AxumState(state): AxumState<State>,
    Json(body): Json<TokenRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let user = match Email::parse(&body.email) {
        Ok(email) => store::user_by_email(&state.db, email.as_str()).await?,
        Err(_) => None,
    };
    let stored = user
        .as_ref()
        .map_or_else(|| state.dummy_hash.as_str(), |u| u.password_hash.as_str())
        .to_owned();
    let matches = password::verify(body.password, stored).await?;
    let Some(user) = user.filter(|_| matches) else {
        return Err(ApiError::BadCredentials);
    };
    let mut tx = state.db.begin().await?;
    let Some((version, roles)) =
        store::record_sign_in(&mut tx, user.id, &user.password_hash).await?
    else {
        // The password changed since it was checked.
        tx.rollback().await?;
        return Err(ApiError::BadCredentials);
    };
    let issued = state
        .keys
        .signing()
        .issue(user.id, roles, state.token_ttl)?;
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
    let answer = TokenResponse {
        expires_in: claims.exp - claims.iat,
        access_token: issued.token,
        token_type: "Bearer",
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(answer)))
}

/// `PUT /api/identity/users/me/password`: 204; 401 without a valid token (or with one
/// issued before the last password change); 422 invalid new password or wrong current
/// one.
#[utoipa::path(put, path = "/api/identity/users/me/password", tag = "identity",
    request_body = ChangePasswordRequest,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Changed; tokens issued before are refused everywhere within 2 s"),
        (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid new password, or wrong current password", body = Problem, content_type = "application/problem+json"),
    ))]
async fn change_password(
    AxumState(state): AxumState<State>,
    Authenticated(claims): Authenticated,
    Json(body): Json<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    let new_password = Password::parse(&body.new_password)
        .map_err(|e| ApiError::Invalid(vec![e.on("new_password")]))?;
    let user = store::user_by_id(&state.db, claims.sub)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    if claims.issued_at_ms() < user.password_changed_at_ms {
        return Err(ApiError::Unauthenticated);
    }
    if !password::verify(body.current_password, user.password_hash.clone()).await? {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "current_password",
            "is incorrect",
        )]));
    }
    let hash = password::hash(new_password).await?;
    let now = OffsetDateTime::now_utc();
    let mut tx = state.db.begin().await?;
    let Some(version) =
        store::change_password(&mut tx, user.id, &user.password_hash, &hash, ms_of(now)).await?
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
    Ok(StatusCode::NO_CONTENT)
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

/// The claims of a valid bearer token signed by one of identity's keys.
struct Authenticated(Claims);

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
        state
            .keys
            .verify(token)
            .map(Authenticated)
            .ok_or(ApiError::Unauthenticated)
    }
}

fn ms_of(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn time_of(unix_seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix_seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The OpenAPI document of identity's public paths.
#[derive(utoipa::OpenApi)]
#[openapi(paths(sign_up, issue_token, change_password, jwks))]
pub struct IdentityDoc;
