//! The OpenAPI description matches the routes: every path, method and answer.

use serde_json::Value;

fn document() -> Value {
    serde_json::to_value(agora_catalog::openapi()).unwrap()
}

fn statuses(doc: &Value, path: &str, method: &str) -> Vec<String> {
    let mut codes: Vec<String> = doc["paths"][path][method]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} is not described"))
        .keys()
        .cloned()
        .collect();
    codes.sort();
    codes
}

#[test]
fn describes_every_route_and_answer() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 2);
    let list = "/api/catalog/products";
    let one = "/api/catalog/products/{id}";
    assert_eq!(statuses(&doc, list, "get"), ["200"]);
    assert_eq!(
        statuses(&doc, list, "post"),
        ["201", "400", "401", "403", "413", "415", "422"]
    );
    assert_eq!(statuses(&doc, one, "get"), ["200", "404"]);
    assert_eq!(
        statuses(&doc, one, "put"),
        ["200", "400", "401", "403", "404", "413", "415", "422"]
    );
    assert_eq!(statuses(&doc, one, "delete"), ["204", "401", "403", "404"]);
    // Prefixed, so that they stay unique when the gateway merges every service's.
    assert_eq!(
        doc["paths"][one]["put"]["operationId"],
        "catalog_update_product"
    );
    let not_found = &doc["paths"][one]["get"]["responses"]["404"]["content"];
    assert!(not_found.get("application/problem+json").is_some());
}

#[test]
fn admin_routes_need_the_bearer_scheme() {
    let doc = document();
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    for (path, method) in [
        ("/api/catalog/products", "post"),
        ("/api/catalog/products/{id}", "put"),
        ("/api/catalog/products/{id}", "delete"),
    ] {
        assert!(
            doc["paths"][path][method]["security"][0]
                .get("bearer")
                .is_some(),
            "{method} {path}"
        );
    }
    for (path, method) in [
        ("/api/catalog/products", "get"),
        ("/api/catalog/products/{id}", "get"),
    ] {
        assert!(doc["paths"][path][method].get("security").is_none());
    }
}
