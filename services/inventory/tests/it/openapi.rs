//! The OpenAPI document of the public paths.

use serde_json::Value;

#[test]
fn openapi_documents_the_public_paths_and_every_answer() {
    let doc = serde_json::to_value(agora_inventory::openapi()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    assert_eq!(paths, ["/api/inventory/stock/{product_id}"]);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let expected: [(&str, &[&str]); 2] = [
        ("get", &["200", "404", "500"]),
        (
            "put",
            &[
                "200", "400", "401", "403", "404", "413", "415", "422", "500",
            ],
        ),
    ];
    for (method, statuses) in expected {
        let operation = &doc["paths"]["/api/inventory/stock/{product_id}"][method];
        let responses = operation["responses"].as_object().unwrap();
        let mut documented: Vec<&str> = responses.keys().map(String::as_str).collect();
        documented.sort_unstable();
        assert_eq!(documented, statuses, "{method}");
        for (status, response) in responses {
            let media = if status == "200" {
                "application/json"
            } else {
                "application/problem+json"
            };
            assert!(response["content"].as_object().unwrap().contains_key(media));
        }
    }
    let put = &doc["paths"]["/api/inventory/stock/{product_id}"]["put"];
    assert_eq!(put["security"][0]["bearer"], Value::Array(vec![]));
    // Prefixed, so that they stay unique when the gateway merges every service's.
    for (_, item) in doc["paths"].as_object().unwrap() {
        for (_, operation) in item.as_object().unwrap() {
            if let Some(id) = operation.get("operationId") {
                assert!(id.as_str().unwrap().starts_with("inventory_"), "{id}");
            }
        }
    }
}
