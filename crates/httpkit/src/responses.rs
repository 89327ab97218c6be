//! The problem answers many operations share, for their OpenAPI annotations: list
//! them in `responses(...)` beside the operation's own tuples, e.g.
//!
//! ```ignore
//! #[utoipa::path(put, path = "/api/catalog/products/{id}", responses(
//!     (status = 200, description = "The product as it is now", body = ProductResponse),
//!     (status = 404, description = "No such product", body = Problem,
//!         content_type = "application/problem+json"),
//!     JsonBodyProblems, AdminProblems, InvalidFields,
//! ))]
//! ```
//!
//! Each is an `application/problem+json` answer whose body is the `Problem` schema (a
//! document using them lists `Problem` in its `components(schemas(...))`). An answer
//! whose description says something of the operation's own stays a tuple.

use utoipa::IntoResponses;

use crate::Problem;

/// 400, 413, 415: a JSON body refused before the handler reads it (not JSON, over
/// 64 KiB, not `application/json`).
#[derive(Debug, IntoResponses)]
pub enum JsonBodyProblems {
    #[response(
        status = 400,
        description = "The body is not JSON",
        content_type = "application/problem+json"
    )]
    NotJson(Problem),
    #[response(
        status = 413,
        description = "The body is over 64 KiB",
        content_type = "application/problem+json"
    )]
    TooLarge(Problem),
    #[response(
        status = 415,
        description = "The body is not application/json",
        content_type = "application/problem+json"
    )]
    NotJsonMediaType(Problem),
}

/// 400: the body is not JSON.
#[derive(Debug, IntoResponses)]
#[response(
    status = 400,
    description = "The body is not JSON",
    content_type = "application/problem+json"
)]
pub struct NotJson(pub Problem);

/// 413: the body is over 64 KiB.
#[derive(Debug, IntoResponses)]
#[response(
    status = 413,
    description = "The body is over 64 KiB",
    content_type = "application/problem+json"
)]
pub struct BodyTooLarge(pub Problem);

/// 415: the body is not `application/json`.
#[derive(Debug, IntoResponses)]
#[response(
    status = 415,
    description = "The body is not application/json",
    content_type = "application/problem+json"
)]
pub struct NotJsonMediaType(pub Problem);

/// 401: no valid bearer token.
#[derive(Debug, IntoResponses)]
#[response(
    status = 401,
    description = "No valid bearer token",
    content_type = "application/problem+json"
)]
pub struct NoValidToken(pub Problem);

/// 403: the caller is not an admin.
#[derive(Debug, IntoResponses)]
#[response(
    status = 403,
    description = "The caller is not an admin",
    content_type = "application/problem+json"
)]
pub struct NotAdmin(pub Problem);

/// 401, 403: an operation for admins only.
#[derive(Debug, IntoResponses)]
pub enum AdminProblems {
    #[response(
        status = 401,
        description = "No valid bearer token",
        content_type = "application/problem+json"
    )]
    NoValidToken(Problem),
    #[response(
        status = 403,
        description = "The caller is not an admin",
        content_type = "application/problem+json"
    )]
    NotAdmin(Problem),
}

/// 401, 403: an operation for customers only.
#[derive(Debug, IntoResponses)]
pub enum CustomerProblems {
    #[response(
        status = 401,
        description = "No valid bearer token",
        content_type = "application/problem+json"
    )]
    NoValidToken(Problem),
    #[response(
        status = 403,
        description = "The caller is not a customer",
        content_type = "application/problem+json"
    )]
    NotCustomer(Problem),
}

/// 422: invalid fields, named in `errors`.
#[derive(Debug, IntoResponses)]
#[response(
    status = 422,
    description = "Invalid fields; `errors` names them",
    content_type = "application/problem+json"
)]
pub struct InvalidFields(pub Problem);

/// 500: something failed that the client cannot fix.
#[derive(Debug, IntoResponses)]
#[response(
    status = 500,
    description = "An internal error",
    content_type = "application/problem+json"
)]
pub struct InternalError(pub Problem);

/// 504: the caller's time budget was spent (`Agora-Budget-Ms`).
#[derive(Debug, IntoResponses)]
#[response(
    status = 504,
    description = "The caller's time budget (`Agora-Budget-Ms`) was spent",
    content_type = "application/problem+json"
)]
pub struct BudgetSpent(pub Problem);

#[cfg(test)]
mod tests {
    use utoipa::openapi::{RefOr, Response};

    use super::*;

    fn problem_answer(response: &RefOr<Response>) -> serde_json::Value {
        let json = serde_json::to_value(response).unwrap();
        json["content"]["application/problem+json"]["schema"].clone()
    }

    #[test]
    fn every_set_answers_problem_json_with_the_problem_schema() {
        let sets = [
            (JsonBodyProblems::responses(), vec!["400", "413", "415"]),
            (NotJson::responses(), vec!["400"]),
            (BodyTooLarge::responses(), vec!["413"]),
            (NotJsonMediaType::responses(), vec!["415"]),
            (NoValidToken::responses(), vec!["401"]),
            (NotAdmin::responses(), vec!["403"]),
            (AdminProblems::responses(), vec!["401", "403"]),
            (CustomerProblems::responses(), vec!["401", "403"]),
            (InvalidFields::responses(), vec!["422"]),
            (InternalError::responses(), vec!["500"]),
            (BudgetSpent::responses(), vec!["504"]),
        ];
        for (responses, statuses) in sets {
            assert_eq!(responses.keys().collect::<Vec<_>>(), statuses);
            for response in responses.values() {
                assert_eq!(
                    problem_answer(response),
                    serde_json::json!({"$ref": "#/components/schemas/Problem"})
                );
            }
        }
    }
}
