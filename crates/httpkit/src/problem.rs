//! RFC 9457 problem details: the body of every error answer.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::code::ErrorCode;

/// The media type of a problem.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answer, as `application/problem+json`.
///
/// `type` is a stable URI per kind of problem (`urn:agora:problem:<code>`): clients
/// branch on it, never on `title` or `detail`, which are for people.
//
// The codes, with their statuses and titles, are the `ErrorCode` table's (not in the
// doc comment above, which is the schema's description in the OpenAPI document).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For validation failures (422): what is wrong with which field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Sent as the `Retry-After` header (seconds), not in the body.
    #[serde(skip)]
    #[schema(ignore)]
    pub retry_after: Option<Duration>,
}

/// One invalid field of a request: `field` is its JSON path (`email`,
/// `lines[2].quantity`), `message` says what is wrong, without echoing the value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Problem {
    /// A problem of kind `code`, with its status and title from the table.
    pub fn of(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            problem_type: code.type_uri(),
            title: code.title().to_owned(),
            status: code.status().as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// A problem of kind `code` (the last segment of its `type`), which must be one of
    /// the [`ErrorCode`] table with that status and title (checked in debug builds:
    /// a new kind of problem is added to the table, and so to `docs/errors.md`).
    /// [`Problem::of`] takes them from the table.
    pub fn new(
        status: StatusCode,
        code: &str,
        title: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        let title = title.into();
        debug_assert!(
            ErrorCode::from_code(code)
                .is_some_and(|known| known.status() == status && known.title() == title),
            "problem `{code}` ({status}, {title:?}) is not in httpkit's ErrorCode table"
        );
        Self {
            problem_type: format!("{}{code}", crate::code::PROBLEM_TYPE_PREFIX),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// 400: the request cannot be understood (e.g. a body that is not JSON).
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::of(ErrorCode::BadRequest, detail)
    }

    /// 401: no valid credentials. The answer carries `WWW-Authenticate: Bearer`.
    pub fn unauthorized() -> Self {
        Self::of(ErrorCode::Unauthorized, "A valid bearer token is required.")
    }

    /// 403: valid credentials, but not allowed to do this.
    pub fn forbidden() -> Self {
        Self::of(ErrorCode::Forbidden, "You are not allowed to do this.")
    }

    /// 404: no such resource, or one whose existence is not revealed to the caller.
    pub fn not_found() -> Self {
        Self::of(ErrorCode::NotFound, "There is nothing at this address.")
    }

    /// 405: the path exists, the method does not.
    pub fn method_not_allowed() -> Self {
        Self::of(
            ErrorCode::MethodNotAllowed,
            "This method is not allowed on this address.",
        )
    }

    /// 409: the request conflicts with the current state (e.g. a taken email).
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::of(ErrorCode::Conflict, detail)
    }

    /// 413: the body is over the limit.
    pub fn payload_too_large() -> Self {
        Self::of(ErrorCode::PayloadTooLarge, "The request body is too large.")
    }

    /// 415: the body is not `application/json`.
    pub fn unsupported_media_type() -> Self {
        Self::of(
            ErrorCode::UnsupportedMediaType,
            "The request body must be application/json.",
        )
    }

    /// 422: the request is well-formed but invalid; `errors` says which fields.
    pub fn unprocessable(errors: Vec<FieldError>) -> Self {
        let mut problem = Self::of(
            ErrorCode::Validation,
            "Some fields are invalid; see errors.",
        );
        problem.errors = errors;
        problem
    }

    /// 429: too many requests; try again after `retry_after`.
    pub fn too_many_requests(retry_after: Duration) -> Self {
        let mut problem = Self::of(ErrorCode::TooManyRequests, "Slow down and try again later.");
        problem.retry_after = Some(retry_after);
        problem
    }

    /// 500: something failed that the client cannot fix. Log the cause; never put it
    /// in the answer.
    pub fn internal() -> Self {
        Self::of(ErrorCode::Internal, "Something went wrong on our side.")
    }

    /// 503: a dependency cannot be reached in time; try again after `retry_after`.
    pub fn service_unavailable(retry_after: Duration) -> Self {
        let mut problem = Self::of(
            ErrorCode::Unavailable,
            "The service cannot answer right now; try again later.",
        );
        problem.retry_after = Some(retry_after);
        problem
    }

    /// The same problem with another `detail`.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(retry_after) = self.retry_after {
            // Whole seconds, rounded up: "0" would invite an immediate retry.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_the_rfc_9457_members_and_field_errors() {
        let problem = Problem::unprocessable(vec![FieldError::new("email", "is not an email")]);
        let json = serde_json::to_value(&problem).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "urn:agora:problem:validation",
                "title": "Invalid request",
                "status": 422,
                "detail": "Some fields are invalid; see errors.",
                "errors": [{"field": "email", "message": "is not an email"}],
            })
        );
    }

    #[test]
    fn every_constructor_answers_a_code_of_the_table_with_its_status_and_title() {
        for problem in [
            Problem::bad_request("x"),
            Problem::unauthorized(),
            Problem::forbidden(),
            Problem::not_found(),
            Problem::method_not_allowed(),
            Problem::conflict("x"),
            Problem::payload_too_large(),
            Problem::unsupported_media_type(),
            Problem::unprocessable(Vec::new()),
            Problem::too_many_requests(Duration::from_secs(1)),
            Problem::internal(),
            Problem::service_unavailable(Duration::from_secs(1)),
        ] {
            let code = problem
                .problem_type
                .strip_prefix(crate::code::PROBLEM_TYPE_PREFIX)
                .and_then(ErrorCode::from_code)
                .unwrap_or_else(|| panic!("{} is not in the table", problem.problem_type));
            assert_eq!(problem.status, code.status().as_u16());
            assert_eq!(problem.title, code.title());
        }
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "not in httpkit's ErrorCode table")]
    fn a_code_outside_the_table_is_refused_in_debug_builds() {
        let _ = Problem::new(
            StatusCode::IM_A_TEAPOT,
            "teapot",
            "Teapot",
            "Short and stout.",
        );
    }

    #[test]
    fn omits_errors_when_there_are_none() {
        let json = serde_json::to_value(Problem::not_found()).unwrap();
        assert!(json.get("errors").is_none());
        assert_eq!(json["status"], 404);
    }

    #[test]
    fn answers_with_the_status_and_the_problem_media_type() {
        let response = Problem::conflict("taken").into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }

    #[test]
    fn unauthorized_asks_for_a_bearer_token() {
        let response = Problem::unauthorized().into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }

    #[test]
    fn retry_after_is_a_header_in_whole_seconds_rounded_up() {
        let response = Problem::too_many_requests(Duration::from_millis(1500)).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let response = Problem::service_unavailable(Duration::ZERO).into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
