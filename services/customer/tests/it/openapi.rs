//! The OpenAPI document of the public paths.

use serde_json::Value;

#[test]
fn openapi_documents_the_public_paths_and_every_answer() {
    let doc = serde_json::to_value(agora_customer::openapi()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    let mut names: Vec<&str> = paths.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "/api/customers/me",
            "/api/customers/me/address",
            "/api/customers/me/payment-method",
        ]
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let expected: [(&str, &str, &[&str]); 3] = [
        (
            "/api/customers/me",
            "get",
            &["200", "401", "403", "500", "504"],
        ),
        (
            "/api/customers/me/address",
            "put",
            &[
                "200", "400", "401", "403", "413", "415", "422", "500", "504",
            ],
        ),
        (
            "/api/customers/me/payment-method",
            "put",
            &[
                "200", "400", "401", "403", "413", "415", "422", "500", "504",
            ],
        ),
    ];
    for (path, method, statuses) in expected {
        let operation = &doc["paths"][path][method];
        assert_eq!(operation["security"][0]["bearer"], Value::Array(vec![]));
        let responses = operation["responses"].as_object().unwrap();
        let mut documented: Vec<&str> = responses.keys().map(String::as_str).collect();
        documented.sort_unstable();
        assert_eq!(documented, statuses, "{method} {path}");
        for (status, response) in responses {
            let content = response["content"].as_object().unwrap();
            let media = if status == "200" {
                "application/json"
            } else {
                "application/problem+json"
            };
            assert!(content.contains_key(media), "{method} {path} {status}");
        }
    }
    // Every schema a path refers to is defined.
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "{name} is not defined");
    }
    // Every field of a customer is always there; the address and payment method may be
    // null, name and email are strings (empty until the sign-up is known).
    let customer = &schemas["Customer"];
    let mut required: Vec<&str> = customer["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort_unstable();
    assert_eq!(
        required,
        [
            "address",
            "email",
            "id",
            "name",
            "payment_method",
            "version"
        ]
    );
    for field in ["name", "email"] {
        assert_eq!(customer["properties"][field]["type"], "string");
    }
    for field in ["address", "payment_method"] {
        assert_eq!(
            customer["properties"][field]["oneOf"][0]["type"], "null",
            "{field}"
        );
    }
}
