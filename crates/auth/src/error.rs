//! The one error type of this crate, and its problem+json rendering.

use agora_contracts::Role;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

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

/// RFC 9457 problem details, the minimal shape of api.md's conventions.
#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    type_: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
}

const PROBLEM_JSON: &str = "application/problem+json";

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let mut detail = self.to_string();
                detail[..1].make_ascii_uppercase();
                detail.push('.');
                detail
            }
            _ => "The request could not be authenticated.".to_owned(),
        };
        let problem = Problem {
            type_: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
