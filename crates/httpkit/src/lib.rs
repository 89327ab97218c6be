//! The HTTP conventions every Agora service shares, so that clients see one API:
//!
//! - [`Problem`]: an RFC 9457 `application/problem+json` error (`type`, `title`,
//!   `status`, `detail`, and `errors: [{field, message}]` for validation failures),
//!   with constructors for the answers services give ([`Problem::not_found`],
//!   [`Problem::unprocessable`], [`Problem::conflict`], [`Problem::unauthorized`], …);
//! - [`Json`]: a JSON body extractor (and response) whose rejections are problems: a
//!   body that is not JSON is a 400, JSON of the wrong shape a 422 naming the field, a
//!   missing `Content-Type` a 415, a body over the limit a 413.
//!
//! - [`ErrorCode`]: the one table of problem codes (each `type`, its status, title and
//!   meaning), from which `Problem`'s constructors take theirs and `docs/errors.md` is
//!   generated;
//! - [`BearerSecurity`]: the `bearer` security scheme of every OpenAPI document;
//! - [`responses`]: the problem answers many operations share, for `responses(...)`
//!   of `#[utoipa::path]` (`JsonBodyProblems`, `AdminProblems`, …);
//! - [`BODY_LIMIT`]: the one request body limit.
//!
//! `Problem` and `FieldError` derive `utoipa::ToSchema`: document an operation's own
//! error answers with
//! `body = agora_httpkit::Problem, content_type = "application/problem+json"`.
//!
//! What this crate must never do: put internals in an answer. A problem's text is
//! written by the service for the client; errors from a database, the file system or a
//! library are logged by the service and answered with [`Problem::internal`], never
//! quoted. This crate has no business logic and knows no service.

#![forbid(unsafe_code)]

mod code;
mod json;
mod openapi;
mod problem;
pub mod responses;

pub use code::{ErrorCode, PROBLEM_TYPE_PREFIX};
pub use json::Json;
pub use openapi::BearerSecurity;
pub use problem::{FieldError, PROBLEM_JSON, Problem};

/// The largest request body a service takes (64 KiB); larger ones are refused with
/// 413: `.layer(DefaultBodyLimit::max(BODY_LIMIT))`.
pub const BODY_LIMIT: usize = 64 * 1024;

/// `From` each source error for a service's API error, through its `Internal` variant
/// (which takes anything its own error converts from): the `?` of a handler on a store
/// or bus call.
///
/// ```ignore
/// agora_httpkit::internal_from!(ApiError: agora_messaging::Error, sqlx::Error);
/// ```
#[macro_export]
macro_rules! internal_from {
    ($target:ident: $($source:ty),+ $(,)?) => {$(
        impl From<$source> for $target {
            fn from(error: $source) -> Self {
                $target::Internal(error.into())
            }
        }
    )+};
}
