//! A JSON body extractor whose rejections are problems, not axum's plain text.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{FieldError, Problem};

/// A JSON request body (or response).
///
/// As an extractor it rejects, as problem+json: a `Content-Type` other than
/// `application/json` (or `application/*+json`) with 415; a body over the router's
/// body limit with 413; a body that is not JSON with 400; JSON of the wrong shape with
/// 422, naming the field and what was expected, without echoing the value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        if !has_json_content_type(request.headers()) {
            return Err(Problem::unsupported_media_type());
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::payload_too_large()
                } else {
                    Problem::bad_request("The request body could not be read.")
                }
            })?;
        Json::from_bytes(&bytes)
    }
}

impl<T: DeserializeOwned> Json<T> {
    /// Parses a JSON body, with the rejections of the extractor.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Problem> {
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let value = match serde_path_to_error::deserialize(&mut deserializer) {
            Ok(value) => value,
            Err(error) => return Err(problem_of(&error)),
        };
        deserializer
            .end()
            .map_err(|_| Problem::bad_request("The request body is not valid JSON."))?;
        Ok(Json(value))
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn has_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn problem_of(error: &serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let inner = error.inner();
    if !inner.is_data() {
        return Problem::bad_request("The request body is not valid JSON.");
    }
    let path = error.path().to_string();
    let parent = if path == "." { None } else { Some(path) };
    let text = inner.to_string();
    // serde_json appends " at line L column C"; the rest is serde's message.
    let message = text
        .rfind(" at line ")
        .map_or(text.as_str(), |at| &text[..at]);
    let (field, message) = describe(parent, message);
    Problem::unprocessable(vec![FieldError::new(field, message)])
}

/// Turns serde's message into `(field, message)`. Serde quotes the offending value
/// (`invalid type: string "hunter2", expected u32`), which may be a secret: only the
/// expectation is kept.
fn describe(parent: Option<String>, message: &str) -> (String, String) {
    let join = |name: &str| match &parent {
        Some(parent) => format!("{parent}.{name}"),
        None => name.to_owned(),
    };
    let whole = || parent.clone().unwrap_or_else(|| "body".to_owned());
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or_default();
        return (join(name), "is required".to_owned());
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        return (join(name), "is not allowed".to_owned());
    }
    if let Some((_, expected)) = message.split_once(", expected ") {
        return (whole(), format!("expected {expected}"));
    }
    (whole(), "is invalid".to_owned())
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::post;
    use serde::Deserialize;
    use tower::ServiceExt;

    use super::*;

    #[derive(Debug, Deserialize, Serialize)]
    struct SignUp {
        email: String,
        age: u32,
        #[serde(default)]
        tags: Vec<Tag>,
    }

    #[derive(Debug, Deserialize, Serialize)]
    struct Tag {
        name: String,
    }

    async fn echo(Json(body): Json<SignUp>) -> Json<SignUp> {
        Json(body)
    }

    /// The status, and the problem when it is an error.
    async fn post_body(content_type: Option<&str>, body: &str) -> (StatusCode, Option<Problem>) {
        let app = Router::new()
            .route("/", post(echo))
            .layer(axum::extract::DefaultBodyLimit::max(64));
        let mut request = axum::http::Request::post("/");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let response = app
            .oneshot(request.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            if status.is_success() {
                "application/json"
            } else {
                crate::PROBLEM_JSON
            }
        );
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        if status.is_success() {
            return (status, None);
        }
        (status, Some(serde_json::from_slice(&bytes).unwrap()))
    }

    #[tokio::test]
    async fn accepts_a_valid_body() {
        let (status, _) = post_body(
            Some("application/json; charset=utf-8"),
            r#"{"email":"a@b.c","age":3}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_body_that_is_not_json_is_a_400() {
        for body in ["{", "nope", r#"{"email":"a@b.c","age":3} trailing"#] {
            let (status, Some(problem)) = post_body(Some("application/json"), body).await else {
                panic!("expected a problem")
            };
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(problem.problem_type, "urn:agora:problem:bad-request");
        }
    }

    #[tokio::test]
    async fn a_missing_field_is_a_422_naming_it() {
        let (status, Some(problem)) = post_body(Some("application/json"), r#"{"age":3}"#).await
        else {
            panic!("expected a problem")
        };
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem.errors, [FieldError::new("email", "is required")]);
    }

    #[tokio::test]
    async fn a_wrong_type_is_a_422_that_does_not_echo_the_value() {
        let (status, Some(problem)) = post_body(
            Some("application/json"),
            r#"{"email":"a@b.c","age":"s3cret"}"#,
        )
        .await
        else {
            panic!("expected a problem")
        };
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem.errors.len(), 1);
        assert_eq!(problem.errors[0].field, "age");
        assert!(problem.errors[0].message.starts_with("expected"));
        assert!(!serde_json::to_string(&problem).unwrap().contains("s3cret"));
    }

    #[tokio::test]
    async fn nested_fields_are_named_by_their_path() {
        let (status, Some(problem)) = post_body(
            Some("application/json"),
            r#"{"email":"a","age":1,"tags":[{}]}"#,
        )
        .await
        else {
            panic!("expected a problem")
        };
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem.errors[0].field, "tags[0].name");
    }

    #[tokio::test]
    async fn a_body_of_the_wrong_shape_is_a_422_on_the_body() {
        let (status, Some(problem)) = post_body(Some("application/json"), "\"text\"").await else {
            panic!("expected a problem")
        };
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem.errors[0].field, "body");
    }

    #[tokio::test]
    async fn another_content_type_is_a_415() {
        for content_type in [None, Some("text/plain")] {
            let (status, _) = post_body(content_type, r#"{"email":"a","age":1}"#).await;
            assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
        let (status, _) = post_body(
            Some("application/merge-patch+json"),
            r#"{"email":"a","age":1}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_413() {
        let body = format!(r#"{{"email":"{}","age":1}}"#, "a".repeat(100));
        let (status, Some(problem)) = post_body(Some("application/json"), &body).await else {
            panic!("expected a problem")
        };
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(problem.status, 413);
    }
}
