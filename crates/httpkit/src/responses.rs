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

use std::collections::BTreeMap;

use utoipa::IntoResponses;
use utoipa::openapi::RefOr;
use utoipa::openapi::response::Response;

use crate::Problem;

/// Problem answers, one type each: `status`, `description`, `application/problem+json`
/// with the `Problem` schema.
macro_rules! problem_answers {
    ($($(#[$doc:meta])* $name:ident = ($status:literal, $description:literal);)+) => {$(
        $(#[$doc])*
        #[derive(Debug, IntoResponses)]
        #[response(
            status = $status,
            description = $description,
            content_type = "application/problem+json"
        )]
        pub struct $name(pub Problem);
    )+};
}

/// A set of problem answers: all the answers of its members.
macro_rules! problem_set {
    ($(#[$doc:meta])* $name:ident = $($member:ident)|+) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                let mut all = BTreeMap::new();
                $(all.extend($member::responses());)+
                all
            }
        }
    };
}

problem_answers! {
    /// 400: the body is not JSON.
    NotJson = (400, "The body is not JSON");
    /// 413: the body is over 64 KiB.
    BodyTooLarge = (413, "The body is over 64 KiB");
    /// 415: the body is not `application/json`.
    NotJsonMediaType = (415, "The body is not application/json");
    /// 401: no valid bearer token.
    NoValidToken = (401, "No valid bearer token");
    /// 403: the caller is not an admin.
    NotAdmin = (403, "The caller is not an admin");
    /// 403: the caller is not a customer.
    NotCustomer = (403, "The caller is not a customer");
    /// 422: invalid fields, named in `errors`.
    InvalidFields = (422, "Invalid fields; `errors` names them");
    /// 500: something failed that the client cannot fix.
    InternalError = (500, "An internal error");
    /// 504: the caller's time budget (`Agora-Budget-Ms`) was spent.
    BudgetSpent = (504, "The caller's time budget (`Agora-Budget-Ms`) was spent");
}

problem_set!(
    /// 400, 413, 415: a JSON body refused before the handler reads it (not JSON, over
    /// 64 KiB, not `application/json`).
    JsonBodyProblems = NotJson | BodyTooLarge | NotJsonMediaType
);
problem_set!(
    /// 401, 403: an operation for admins only.
    AdminProblems = NoValidToken | NotAdmin
);
problem_set!(
    /// 401, 403: an operation for customers only.
    CustomerProblems = NoValidToken | NotCustomer
);

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
            (NotCustomer::responses(), vec!["403"]),
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
