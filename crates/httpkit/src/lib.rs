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
//! Both derive `utoipa::ToSchema`: document error answers with
//! `body = agora_httpkit::Problem, content_type = "application/problem+json"`.
//!
//! What this crate must never do: put internals in an answer. A problem's text is
//! written by the service for the client; errors from a database, the file system or a
//! library are logged by the service and answered with [`Problem::internal`], never
//! quoted. This crate has no business logic and knows no service.

#![forbid(unsafe_code)]

mod json;
mod problem;

pub use json::Json;
pub use problem::{FieldError, PROBLEM_JSON, Problem};
