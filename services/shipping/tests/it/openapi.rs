//! The OpenAPI document of the public paths.

use serde_json::Value;

#[test]
fn openapi_documents_the_public_paths_and_every_answer() {
    let doc = serde_json::to_value(agora_shipping::openapi()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    assert_eq!(paths, ["/api/shipping/shipments"]);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let operation = &doc["paths"]["/api/shipping/shipments"]["get"];
    assert_eq!(operation["security"][0]["bearer"], Value::Array(vec![]));
    assert_eq!(operation["parameters"][0]["name"], "order_id");
    assert_eq!(operation["parameters"][0]["required"], true);
    let responses = operation["responses"].as_object().unwrap();
    let mut documented: Vec<&str> = responses.keys().map(String::as_str).collect();
    documented.sort_unstable();
    assert_eq!(documented, ["200", "401", "403", "422", "500"]);
    for (status, response) in responses {
        let media = if status == "200" {
            "application/json"
        } else {
            "application/problem+json"
        };
        assert!(response["content"].as_object().unwrap().contains_key(media));
    }
    // Prefixed, so that they stay unique when the gateway merges every service's.
    for (_, item) in doc["paths"].as_object().unwrap() {
        for (_, operation) in item.as_object().unwrap() {
            if let Some(id) = operation.get("operationId") {
                assert!(id.as_str().unwrap().starts_with("shipping_"), "{id}");
            }
        }
    }
}
