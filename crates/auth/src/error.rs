//! The one error type of this crate, and the one mapping of it to a problem+json answer.

use agora_contracts::Role;
use agora_httpkit::Problem;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why a request was not authenticated or not authorized.
///
/// No variant carries the token or any part of it, so an error may be logged as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("no bearer token in the Authorization header")]
    MissingToken,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token is not signed with EdDSA")]
    DisallowedAlgorithm,
    #[error("the token has no kid header")]
    MissingKeyId,
    #[error("the token is signed with an unknown key")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    InvalidSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by someone else")]
    WrongIssuer,
    #[error("the token is meant for another audience")]
    WrongAudience,
    #[error("the token's claims are invalid")]
    InvalidClaims,
    #[error("the token was revoked (signed out with, or older than a password change)")]
    Revoked,
    #[error("the caller lacks the {0} role")]
    Forbidden(Role),
    #[error("a user's token is not accepted on the internal plane, only a service's")]
    NotAService,
    #[error("not an Ed25519 key")]
    InvalidKey,
    #[error("cannot fetch the signing keys: {0}")]
    KeySource(String),
    #[error("revocation store: {0}")]
    Store(String),
}

impl Error {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Forbidden(_) | Error::NotAService => StatusCode::FORBIDDEN,
            // Neither happens while a request is verified (a key source failure there
            // is an unknown key), but if one is ever rendered it says nothing inside.
            Error::InvalidKey | Error::KeySource(_) | Error::Store(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

impl From<&Error> for Problem {
    /// The one mapping of an auth error to an answer: 401 (with `WWW-Authenticate:
    /// Bearer`) or 403 saying why in words that name no part of the token; anything
    /// else is logged and answered as an internal error.
    fn from(error: &Error) -> Problem {
        match error.status() {
            StatusCode::UNAUTHORIZED => Problem::unauthorized().with_detail(sentence(error)),
            StatusCode::FORBIDDEN => Problem::forbidden().with_detail(sentence(error)),
            _ => {
                tracing::error!(%error, "token verification failed");
                Problem::internal()
            }
        }
    }
}

impl From<Error> for Problem {
    fn from(error: Error) -> Problem {
        Problem::from(&error)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        Problem::from(&self).into_response()
    }
}

/// "the token has expired" → "The token has expired."
fn sentence(error: &Error) -> String {
    let text = error.to_string();
    let mut chars = text.chars();
    let mut sentence: String = chars
        .next()
        .map(|c| c.to_uppercase().collect())
        .unwrap_or_default();
    sentence.push_str(chars.as_str());
    sentence.push('.');
    sentence
}
