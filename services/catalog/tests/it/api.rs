//! Every route and every answer it can give, through the router.

use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::support::{Backend, call, call_raw, start};

crate::on_both_backends!(
    products_are_added_read_replaced_and_deleted,
    reads_need_no_token_and_writes_need_an_admin,
    unknown_and_malformed_ids_are_not_found,
    invalid_bodies_are_refused_with_the_fields_named,
    the_list_is_oldest_first_without_deleted_products,
);

fn mug() -> Value {
    json!({"name": "  Mug ", "description": "Holds coffee."})
}

async fn products_are_added_read_replaced_and_deleted(backend: Backend) {
    let Some((env, catalog)) = start(backend).await else {
        return;
    };
    let router = catalog.router();
    let admin = env.admin();

    let added = call(
        &router,
        Method::POST,
        "/api/catalog/products",
        Some(&admin),
        Some(mug()),
    )
    .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    let id = added.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        added.body,
        json!({"id": id, "name": "Mug", "description": "Holds coffee.", "version": 1})
    );
    let path = format!("/api/catalog/products/{id}");
    assert_eq!(added.headers[header::LOCATION], path.as_str());

    let read = call(&router, Method::GET, &path, None, None).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body, added.body);

    let replaced = call(
        &router,
        Method::PUT,
        &path,
        Some(&admin),
        Some(json!({"name": "Big Mug", "description": "", "image_url": "https://img.example.org/mug.png"})),
    )
    .await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert_eq!(
        replaced.body,
        json!({"id": id, "name": "Big Mug", "description": "",
               "image_url": "https://img.example.org/mug.png", "version": 2})
    );

    // The same data again changes nothing, not even the version.
    let again = call(
        &router,
        Method::PUT,
        &path,
        Some(&admin),
        Some(json!({"name": "Big Mug ", "description": " ", "image_url": "https://img.example.org/mug.png"})),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, replaced.body);

    // A PUT replaces everything: no image_url removes the image.
    let plain = call(
        &router,
        Method::PUT,
        &path,
        Some(&admin),
        Some(json!({"name": "Big Mug", "description": ""})),
    )
    .await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(plain.body["version"], 3);
    assert!(plain.body.get("image_url").is_none());

    let deleted = call(&router, Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(deleted.body, Value::Null);

    call(&router, Method::GET, &path, None, None)
        .await
        .assert_problem(StatusCode::NOT_FOUND);
    call(&router, Method::DELETE, &path, Some(&admin), None)
        .await
        .assert_problem(StatusCode::NOT_FOUND);
    call(&router, Method::PUT, &path, Some(&admin), Some(mug()))
        .await
        .assert_problem(StatusCode::NOT_FOUND);
    let list = call(&router, Method::GET, "/api/catalog/products", None, None).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body, json!([]));
    catalog.shutdown().await;
}

async fn reads_need_no_token_and_writes_need_an_admin(backend: Backend) {
    let Some((env, catalog)) = start(backend).await else {
        return;
    };
    let router = catalog.router();
    let added = call(
        &router,
        Method::POST,
        "/api/catalog/products",
        Some(&env.admin()),
        Some(mug()),
    )
    .await;
    let path = format!(
        "/api/catalog/products/{}",
        added.body["id"].as_str().unwrap()
    );
    let customer = env.customer();
    // Signed by a key the service does not know.
    let stranger = agora_auth::TestIssuer::new().admin().1;

    for (method, path, body) in [
        (Method::POST, "/api/catalog/products", Some(mug())),
        (Method::PUT, path.as_str(), Some(mug())),
        (Method::DELETE, path.as_str(), None),
    ] {
        let none = call(&router, method.clone(), path, None, body.clone()).await;
        none.assert_problem(StatusCode::UNAUTHORIZED);
        assert_eq!(none.headers[header::WWW_AUTHENTICATE], "Bearer");
        call(
            &router,
            method.clone(),
            path,
            Some("not-a-jwt"),
            body.clone(),
        )
        .await
        .assert_problem(StatusCode::UNAUTHORIZED);
        call(&router, method.clone(), path, Some(&stranger), body.clone())
            .await
            .assert_problem(StatusCode::UNAUTHORIZED);
        call(&router, method.clone(), path, Some(&customer), body.clone())
            .await
            .assert_problem(StatusCode::FORBIDDEN);
    }
    // Nothing changed, and anyone may read.
    let read = call(&router, Method::GET, &path, None, None).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["version"], 1);
    let read = call(&router, Method::GET, &path, Some(&customer), None).await;
    assert_eq!(read.status, StatusCode::OK);
    let list = call(&router, Method::GET, "/api/catalog/products", None, None).await;
    assert_eq!(list.body.as_array().unwrap().len(), 1);
    catalog.shutdown().await;
}

async fn unknown_and_malformed_ids_are_not_found(backend: Backend) {
    let Some((env, catalog)) = start(backend).await else {
        return;
    };
    let router = catalog.router();
    let admin = env.admin();
    for id in ["0195f0a0-0000-7000-8000-000000000000", "not-a-uuid", "42"] {
        let path = format!("/api/catalog/products/{id}");
        call(&router, Method::GET, &path, None, None)
            .await
            .assert_problem(StatusCode::NOT_FOUND);
        call(&router, Method::PUT, &path, Some(&admin), Some(mug()))
            .await
            .assert_problem(StatusCode::NOT_FOUND);
        call(&router, Method::DELETE, &path, Some(&admin), None)
            .await
            .assert_problem(StatusCode::NOT_FOUND);
    }
    catalog.shutdown().await;
}

async fn invalid_bodies_are_refused_with_the_fields_named(backend: Backend) {
    let Some((env, catalog)) = start(backend).await else {
        return;
    };
    let router = catalog.router();
    let admin = env.admin();
    let added = call(
        &router,
        Method::POST,
        "/api/catalog/products",
        Some(&admin),
        Some(mug()),
    )
    .await;
    let path = format!(
        "/api/catalog/products/{}",
        added.body["id"].as_str().unwrap()
    );

    let cases = [
        (json!({"name": "   ", "description": "x"}), vec!["name"]),
        (
            json!({"name": "n".repeat(121), "description": "x"}),
            vec!["name"],
        ),
        (
            json!({"name": "ok", "description": "d".repeat(2001)}),
            vec!["description"],
        ),
        (
            json!({"name": "ok", "description": "x", "image_url": "ftp://x"}),
            vec!["image_url"],
        ),
        (
            json!({"name": "", "description": "d".repeat(2001)}),
            vec!["name", "description"],
        ),
        (json!({"description": "x"}), vec!["name"]),
        (json!({"name": 7, "description": "x"}), vec!["name"]),
    ];
    for (body, fields) in cases {
        for (method, path) in [
            (Method::POST, "/api/catalog/products"),
            (Method::PUT, path.as_str()),
        ] {
            let answer = call(&router, method, path, Some(&admin), Some(body.clone())).await;
            answer.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
            let named: Vec<_> = answer.body["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["field"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(named, fields, "{body}");
        }
    }
    // The limits themselves are accepted.
    let longest = json!({"name": "n".repeat(120), "description": "d".repeat(2000)});
    let answer = call(
        &router,
        Method::POST,
        "/api/catalog/products",
        Some(&admin),
        Some(longest),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED);

    let not_json = call_raw(
        &router,
        Method::POST,
        "/api/catalog/products",
        Some(&admin),
        &[],
        Some(("application/json", b"{not json".to_vec())),
    )
    .await;
    not_json.assert_problem(StatusCode::BAD_REQUEST);
    let not_declared = call_raw(
        &router,
        Method::POST,
        "/api/catalog/products",
        Some(&admin),
        &[],
        Some(("text/plain", mug().to_string().into_bytes())),
    )
    .await;
    not_declared.assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = json!({"name": "x", "description": "d".repeat(70 * 1024)});
    let too_large = call(&router, Method::PUT, &path, Some(&admin), Some(huge)).await;
    too_large.assert_problem(StatusCode::PAYLOAD_TOO_LARGE);

    // Nothing was changed by a refused request.
    let read = call(&router, Method::GET, &path, None, None).await;
    assert_eq!(read.body["version"], 1);
    catalog.shutdown().await;
}

async fn the_list_is_oldest_first_without_deleted_products(backend: Backend) {
    let Some((env, catalog)) = start(backend).await else {
        return;
    };
    let router = catalog.router();
    let admin = env.admin();
    let mut ids = Vec::new();
    for name in ["Zither", "Accordion", "Mandolin"] {
        let added = call(
            &router,
            Method::POST,
            "/api/catalog/products",
            Some(&admin),
            Some(json!({"name": name, "description": ""})),
        )
        .await;
        ids.push(added.body["id"].as_str().unwrap().to_owned());
    }
    let deleted = call(
        &router,
        Method::DELETE,
        &format!("/api/catalog/products/{}", ids[1]),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let list = call(&router, Method::GET, "/api/catalog/products", None, None).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(
        list.body,
        json!([
            {"id": ids[0], "name": "Zither", "description": "", "version": 1},
            {"id": ids[2], "name": "Mandolin", "description": "", "version": 1},
        ])
    );
    catalog.shutdown().await;
}
