//! The one table of the problem codes Agora answers with (meilisearch's `ErrorCode`
//! idea): each code's `type`, HTTP status, title and what it means, defined once.
//! `Problem`'s constructors take theirs from here, and `docs/errors.md` is generated
//! from it (a test compares the two: `AGORA_UPDATE_DOCS=1 cargo test -p
//! agora-httpkit` rewrites the file after a change of the table).

use axum::http::StatusCode;

/// The prefix of every problem `type`: `urn:agora:problem:<code>`.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:agora:problem:";

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = ($status:ident, $code:literal, $title:literal, $meaning:literal);)+) => {
        /// A kind of problem: its `type` (`urn:agora:problem:<code>`), status and
        /// title never change once answered (clients branch on the `type`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)+
        }

        impl ErrorCode {
            /// Every code, in the table's order (by status).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The last segment of the problem's `type`, e.g. `not-found`.
            pub const fn code(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)+ }
            }

            pub const fn status(self) -> StatusCode {
                match self { $(ErrorCode::$variant => StatusCode::$status,)+ }
            }

            /// The problem's `title`: the same for every answer of the code.
            pub const fn title(self) -> &'static str {
                match self { $(ErrorCode::$variant => $title,)+ }
            }

            /// What the code means, in one line (for `docs/errors.md`).
            pub const fn meaning(self) -> &'static str {
                match self { $(ErrorCode::$variant => $meaning,)+ }
            }
        }
    };
}

error_codes! {
    BadRequest = (BAD_REQUEST, "bad-request", "Bad request",
        "The request cannot be understood: a body that is not JSON, a malformed query, a missing or malformed header such as `Idempotency-Key`.");
    BadPath = (BAD_REQUEST, "bad-path", "Bad request path",
        "The gateway refuses a path that later readers could see differently: dot or empty segments, backslashes, `;`, characters outside the allowed sets, malformed or double-meaning percent-escapes.");
    Unauthorized = (UNAUTHORIZED, "unauthorized", "Unauthorized",
        "No valid bearer token (missing, malformed, expired, revoked, or signed by another key); the answer carries `WWW-Authenticate: Bearer`.");
    PaymentDeclined = (PAYMENT_REQUIRED, "payment-declined", "Payment declined",
        "The payment provider declined the payment method; at checkout, no order was placed.");
    Forbidden = (FORBIDDEN, "forbidden", "Forbidden",
        "A valid token without the role the operation needs (or a user's token on the internal plane).");
    NotFound = (NOT_FOUND, "not-found", "Not found",
        "No such resource, or one whose existence is not revealed to the caller (another customer's).");
    MethodNotAllowed = (METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed",
        "The path exists, the method does not.");
    Conflict = (CONFLICT, "conflict", "Conflict",
        "The request conflicts with the current state: a taken email, a concurrent change, an ambiguous order reference, an `Idempotency-Key` in progress (with `Retry-After`).");
    PayloadTooLarge = (PAYLOAD_TOO_LARGE, "payload-too-large", "Payload too large",
        "The request body is over 64 KiB.");
    UnsupportedMediaType = (UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type",
        "The request body is not `application/json`.");
    Validation = (UNPROCESSABLE_ENTITY, "validation", "Invalid request",
        "Well-formed but invalid; `errors` names each field (a JSON path) and what is wrong with it, without echoing the value.");
    TooManyRequests = (TOO_MANY_REQUESTS, "too-many-requests", "Too many requests",
        "Too many requests from this client, or sign-ins for this email; try again after `Retry-After` seconds.");
    Internal = (INTERNAL_SERVER_ERROR, "internal", "Internal error",
        "Something failed that the client cannot fix; the cause is logged, never answered.");
    BadGateway = (BAD_GATEWAY, "bad-gateway", "Bad gateway",
        "The gateway's call to a service broke off before a whole answer came.");
    PaymentProviderRefused = (BAD_GATEWAY, "payment-provider-refused", "Payment provider refused",
        "The payment provider refused to give money back (refund or void).");
    Unavailable = (SERVICE_UNAVAILABLE, "unavailable", "Service unavailable",
        "A service or a dependency cannot answer right now (down, breaker open, store unreachable, too busy); try again after `Retry-After` seconds.");
    Timeout = (GATEWAY_TIMEOUT, "timeout", "Gateway timeout",
        "The gateway's call to a service, or the whole request, took too long.");
    DeadlineExceeded = (GATEWAY_TIMEOUT, "deadline-exceeded", "Deadline exceeded",
        "The request's time budget (`Agora-Budget-Ms`) was spent before it could be served.");
}

impl ErrorCode {
    /// The problem's `type`: `urn:agora:problem:<code>`.
    pub fn type_uri(self) -> String {
        format!("{PROBLEM_TYPE_PREFIX}{}", self.code())
    }

    /// The code whose `type` segment is `code`.
    pub fn from_code(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.code() == code)
    }

    /// `docs/errors.md`: every code with its status and meaning.
    pub fn reference() -> String {
        let mut doc = String::from(
            "# Error codes\n\n\
             <!-- Generated from `ErrorCode` (crates/httpkit/src/code.rs) by \
             `AGORA_UPDATE_DOCS=1 cargo test -p agora-httpkit`; do not edit by hand. -->\n\n\
             Every error answer of Agora's API is `application/problem+json` (RFC 9457):\n\
             `{type, title, status, detail}`, plus `errors: [{field, message}]` for 422. The\n\
             `type` is `urn:agora:problem:<code>` and never changes for a kind of problem:\n\
             branch on it, never on `title` or `detail` (`detail` is written for people and\n\
             may name the case, e.g. which dependency is unavailable). Where an answer\n\
             carries a header, its meaning names it.\n\n\
             | code (`type` = `urn:agora:problem:<code>`) | status | title | meaning |\n\
             |---|---|---|---|\n",
        );
        for code in ErrorCode::ALL {
            doc.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                code.code(),
                code.status().as_u16(),
                code.title(),
                code.meaning()
            ));
        }
        doc
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn codes_are_unique_and_sorted_by_status() {
        let codes: HashSet<_> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(codes.len(), ErrorCode::ALL.len());
        let statuses: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.status().as_u16()).collect();
        assert!(statuses.is_sorted(), "{statuses:?}");
        for code in ErrorCode::ALL {
            assert!(code.status().is_client_error() || code.status().is_server_error());
            assert_eq!(ErrorCode::from_code(code.code()), Some(*code));
            assert!(!code.meaning().contains('|') && !code.meaning().contains('\n'));
        }
    }

    /// `docs/errors.md` is the table, as `ErrorCode::reference` renders it.
    #[test]
    fn docs_errors_md_lists_every_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md");
        let generated = ErrorCode::reference();
        if std::env::var_os("AGORA_UPDATE_DOCS").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/errors.md differs from ErrorCode: run \
             `AGORA_UPDATE_DOCS=1 cargo test -p agora-httpkit` and commit it"
        );
    }
}
