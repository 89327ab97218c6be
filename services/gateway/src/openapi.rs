//! `/api/openapi.json`: the gateway's own paths and the services' documents, merged,
//! with the answers the edge itself may give added to every operation it forwards.

use agora_httpkit::{BearerSecurity, FieldError, Problem};
use utoipa::OpenApi as _;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Content, Header, OpenApi, Ref, RefOr};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Agora",
        description = "The public HTTP API of Agora, an online shop made of autonomous services.",
    ),
    paths(
        crate::edge::healthz,
        crate::ops::readyz,
        crate::edge::metrics,
        crate::edge::openapi_json,
        crate::compose::products,
        crate::ops::status,
        crate::ops::set_chaos,
        crate::ops::set_bus,
        crate::ops::set_settings,
        crate::ops::events,
        crate::ops::dead_letters,
        crate::ops::redrive,
        crate::traces::traces,
        crate::traces::trace,
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&BearerSecurity),
)]
struct GatewayDoc;

/// The whole document: the gateway's paths, then each service's.
pub fn document(service_docs: Vec<OpenApi>) -> OpenApi {
    let mut doc = GatewayDoc::openapi();
    let own: Vec<String> = doc.paths.paths.keys().cloned().collect();
    for service in service_docs {
        doc.merge(service);
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        let forwarded = !own.contains(path);
        let templated = path.contains('{');
        for operation in operations(item) {
            add_edge_answers(operation, forwarded, templated);
        }
    }
    doc
}

pub(crate) fn render(service_docs: Vec<OpenApi>) -> String {
    serde_json::to_string(&document(service_docs)).expect("an OpenAPI document serializes")
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// What the edge may answer before (or instead of) the service.
fn add_edge_answers(operation: &mut Operation, forwarded: bool, templated: bool) {
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_body = operation.request_body.is_some();
    let mut add = |status: &str, description: &str, retry_after: bool| {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| problem(description, retry_after));
    };
    add("429", "Too many requests; retry after the time given", true);
    if templated {
        // A path parameter that spells a dot segment, an encoded separator, a `;` or
        // a control character makes a path the gateway refuses before routing.
        add(
            "400",
            "The request path is malformed (dot segments, encoded separators, `;`, empty segments or control characters)",
            false,
        );
    }
    if has_body {
        add("413", "The request body is over 64 KiB", false);
    }
    if secured {
        add("401", "No valid bearer token", false);
    }
    if forwarded {
        add(
            "503",
            "The service cannot be reached; retry after the time given",
            true,
        );
        add("504", "The service did not answer in time", false);
        add("502", "The service's answer broke off", false);
    }
}

fn problem(description: &str, retry_after: bool) -> RefOr<utoipa::openapi::Response> {
    let mut response = ResponseBuilder::new().description(description).content(
        agora_httpkit::PROBLEM_JSON,
        Content::new(Some(Ref::from_schema_name("Problem"))),
    );
    if retry_after {
        let seconds = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0));
        response = response.header("Retry-After", Header::new(seconds));
    }
    RefOr::T(response.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_answers_are_documented_on_forwarded_operations() {
        let doc = document(Vec::new());
        let json = serde_json::to_value(&doc).expect("json");
        assert_eq!(json["openapi"], "3.1.0");
        let status = &json["paths"]["/api/ops/status"]["get"]["responses"];
        assert!(status["401"].is_object() && status["429"].is_object());
        assert!(
            status["503"].is_null(),
            "the gateway's own route is not forwarded"
        );
        assert!(json["components"]["securitySchemes"]["bearer"].is_object());
        assert!(json["components"]["schemas"]["Problem"].is_object());
    }
}
