//! One path, decided once: the gateway refuses, before routing, every request path
//! that some later step (a router, an URL library, a service's framework) could read
//! differently from the way the gateway reads it.
//!
//! Refused with 400 `urn:agora:problem:bad-path`: dot segments (`.`, `..`), empty
//! segments (`//`), backslashes, `;` path parameters, characters outside the
//! unreserved and sub-delimiter sets (controls, spaces, quotes, brackets…), malformed
//! percent-escapes, and any escape that decodes to a dot, a slash, a backslash, a
//! percent sign (a double encoding), a semicolon, a control character or a byte that
//! is not UTF-8 (overlong dots such as `%c0%ae`). Every other escape (`%20`, `%C3%A9`)
//! names the same segment whichever way it is decoded, so it passes.
//!
//! A path that passes is what routing, the public/credential decision, the limits and
//! forwarding all use, unchanged: no step normalises it.

use agora_httpkit::Problem;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Why a path is refused (for the problem's detail; never echoes the path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadPath {
    NotAbsolute,
    EmptySegment,
    DotSegment,
    Character,
    Escape,
}

impl BadPath {
    fn detail(self) -> &'static str {
        match self {
            Self::NotAbsolute => "The request path must start with '/'.",
            Self::EmptySegment => "The request path has an empty segment ('//').",
            Self::DotSegment => "The request path has a '.' or '..' segment.",
            Self::Character => "The request path has a character that is not allowed.",
            Self::Escape => {
                "The request path has a percent-escape that is malformed or not allowed."
            }
        }
    }
}

/// The 400 answer to a refused path: one stable problem type.
pub(crate) fn problem(why: BadPath) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "bad-path",
        "Bad request path",
        why.detail(),
    )
}

/// Checks a request path (without its query): `Ok` when every reader of it would
/// see the same segments.
pub(crate) fn check(path: &str) -> Result<(), BadPath> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(BadPath::NotAbsolute);
    };
    if rest.is_empty() {
        return Ok(());
    }
    rest.split('/').try_for_each(check_segment)
}

fn check_segment(segment: &str) -> Result<(), BadPath> {
    match segment {
        "" => return Err(BadPath::EmptySegment),
        "." | ".." => return Err(BadPath::DotSegment),
        _ => {}
    }
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            let (Some(high), Some(low)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(BadPath::Escape);
            };
            let value = u8::try_from(high * 16 + low).map_err(|_| BadPath::Escape)?;
            if matches!(value, b'.' | b'/' | b'\\' | b'%' | b';') || value.is_ascii_control() {
                return Err(BadPath::Escape);
            }
            decoded.push(value);
            i += 3;
        } else if is_allowed(byte) {
            decoded.push(byte);
            i += 1;
        } else {
            return Err(BadPath::Character);
        }
    }
    // Bytes that are not UTF-8 (overlong forms of '.' or '/', for one) are decoded
    // differently by different libraries: refused.
    std::str::from_utf8(&decoded).map_err(|_| BadPath::Escape)?;
    Ok(())
}

/// Unreserved characters and the sub-delimiters, except `;` (RFC 3986 `pchar`).
fn is_allowed(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

/// The outermost check of the public router: a refused path never reaches routing.
pub(crate) async fn refuse_bad_paths(request: Request, next: Next) -> Response {
    match check(request.uri().path()) {
        Ok(()) => next.run(request).await,
        Err(why) => {
            tracing::debug!(?why, "request path refused");
            problem(why).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_paths_pass() {
        for path in [
            "/",
            "/healthz",
            "/ui/app.js",
            "/ui/style.css",
            "/api/openapi.json",
            "/api/identity/token",
            "/api/identity/users/me/password",
            "/api/catalog/products/0193a5b2-7c1e-7d3a-9f00-1234567890ab",
            "/api/inventory/stock/p-001",
            "/api/ops/dead-letters/42/redrive",
            "/api/catalog/products/caf%C3%A9",
            "/api/catalog/products/a%20b",
            "/api/catalog/products/v1.2",
            "/api/catalog/products/...",
            "/api/catalog/products/a:b@c!$&'()*+,=~_",
        ] {
            assert_eq!(check(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn every_spelling_of_a_traversal_is_refused() {
        for path in [
            "/api/ordering/../../internal/ordering/settings",
            "/api/ordering/./orders",
            "/api/ordering/..",
            "/api/ordering/.",
            "/api/ordering/%2e%2e/%2e%2e/internal/ordering/settings",
            "/api/ordering/%2E%2e/internal",
            "/api/ordering/%2E%2E/internal",
            "/api/ordering/.%2e/internal",
            "/api/ordering/%2e./internal",
            "/api/ordering/%2e/orders",
            "/api/ordering/%252e%252e/internal",
            "/api/ordering/%25/internal",
            "/api/ordering%2f..%2finternal",
            "/api/ordering/..%2F..%2Finternal",
            "/api/ordering/..%5c..%5cinternal",
            "/api/ordering/..%5C..%5Cinternal",
            "/api/ordering/..\\..\\internal",
            "/api/ordering/orders;x",
            "/api/ordering/..;/..;/internal",
            "/api/ordering/%3b/internal",
            "/api/ordering//orders",
            "//api/ordering/orders",
            "/api/ordering/orders/",
            "/api/identity/x/%2e%2e/token",
            "/api/ordering/%c0%ae%c0%ae/internal",
            "/api/ordering/%00",
            "/api/ordering/%0a",
            "/api/ordering/%7F",
            "/api/ordering/%zz",
            "/api/ordering/%2",
            "/api/ordering/a\u{0}b",
            "/api/ordering/a b",
            "/api/ordering/a\"b",
            "/api/ordering/<x>",
            "/api/ordering/a{b}",
            "/api/ordering/a|b",
            "api/ordering/orders",
            "*",
            "",
        ] {
            assert!(check(path).is_err(), "{path:?} passed");
        }
    }

    #[test]
    fn refusals_say_why_in_one_stable_type() {
        assert_eq!(check("/a/../b"), Err(BadPath::DotSegment));
        assert_eq!(check("/a//b"), Err(BadPath::EmptySegment));
        assert_eq!(check("/a/%2e%2e/b"), Err(BadPath::Escape));
        assert_eq!(check("/a;b"), Err(BadPath::Character));
        let problem = problem(BadPath::Escape);
        assert_eq!(problem.status, 400);
        assert_eq!(problem.problem_type, "urn:agora:problem:bad-path");
    }
}
