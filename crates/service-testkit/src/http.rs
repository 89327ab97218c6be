//! One request through a service's router (`Router::oneshot`, as axum's testing
//! example does), its answer, and what a problem answer must look like.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

/// The largest answer body read (1 MiB).
const ANSWER_LIMIT: usize = 1 << 20;

/// One answer: status, headers, content type (empty when none) and the JSON body
/// (`Value::Null` when empty; a body that is not JSON is kept as a JSON string).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub content_type: String,
    pub body: Value,
}

impl Answer {
    /// Asserts a problem+json answer with `expected` (see [`assert_problem`]).
    pub fn assert_problem(&self, expected: StatusCode) {
        assert_problem(self.status, &self.content_type, &self.body, expected);
    }

    /// The fields named by a 422's `errors`, after asserting that it is one.
    pub fn invalid_fields(&self) -> Vec<String> {
        self.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(self.body["errors"].is_array(), "{}", self.body);
        self.error_fields()
    }

    /// The field paths of the body's `errors` (none when it has none).
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["field"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Asserts a problem answer (RFC 9457, httpkit's `Problem`) with `expected`: that
/// status, `application/problem+json`, the same `status` in the body, and a `type`, a
/// `title` and a `detail`.
pub fn assert_problem(status: StatusCode, content_type: &str, body: &Value, expected: StatusCode) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(content_type, "application/problem+json", "{body}");
    assert_eq!(body["status"], expected.as_u16(), "{body}");
    assert!(
        body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// One request through `router`: `headers` in their order, then the body's content
/// type (`body` is a content type and bytes).
pub async fn send(
    router: &Router,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = match body {
        Some((content_type, bytes)) => {
            request = request.header(header::CONTENT_TYPE, content_type);
            Body::from(bytes)
        }
        None => Body::empty(),
    };
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), ANSWER_LIMIT)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Answer {
        status,
        headers,
        content_type,
        body,
    }
}

/// A JSON body for [`send`].
pub fn json(body: &Value) -> (&'static str, Vec<u8>) {
    ("application/json", body.to_string().into_bytes())
}

/// One request through `router` like [`send`], with `token` as its bearer token if
/// given (before `headers`).
pub async fn send_as(
    router: &Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
) -> Answer {
    let authorization = token.map(bearer);
    let mut all: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + 1);
    all.extend(authorization.as_deref().map(|a| ("authorization", a)));
    all.extend_from_slice(headers);
    send(router, method, path, &all, body).await
}

/// One JSON request through `router`, with `token` as its bearer token if given.
pub async fn call(
    router: &Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    send_as(router, method, path, token, &[], body.as_ref().map(json)).await
}
