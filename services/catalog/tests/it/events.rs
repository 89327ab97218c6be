//! The events catalog publishes, as the bus delivers them.

use agora_contracts::{ProductAdded, ProductDeleted, ProductUpdated};
use axum::http::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::support::{Backend, call, call_raw, start};

crate::on_both_backends!(
    every_change_is_published_with_the_next_version,
    concurrent_changes_publish_distinct_increasing_versions,
    an_event_carries_the_admins_trace,
);

async fn every_change_is_published_with_the_next_version(backend: Backend) {
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
        Some(json!({"name": "Mug", "description": "Holds coffee."})),
    )
    .await;
    let id = Uuid::parse_str(added.body["id"].as_str().unwrap()).unwrap();
    let path = format!("/api/catalog/products/{id}");
    let renamed = json!({"name": "Big Mug", "description": "Holds more.", "image_url": "https://img.example.org/m.png"});
    for _ in 0..2 {
        // The second, identical, replacement publishes nothing.
        let answer = call(
            &router,
            Method::PUT,
            &path,
            Some(&admin),
            Some(renamed.clone()),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let answer = call(&router, Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    // A refused second delete publishes nothing either.
    let answer = call(&router, Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let other = call(
        &router,
        Method::POST,
        "/api/catalog/products",
        Some(&admin),
        Some(json!({"name": "Sentinel", "description": ""})),
    )
    .await;
    assert_eq!(other.status, StatusCode::CREATED);

    // Everything up to the sentinel: exactly three events about the mug.
    let events = env.events(4).await;
    assert_eq!(events.len(), 4, "{events:?}");
    for envelope in &events[..3] {
        assert_eq!(envelope.source, "catalog");
        assert_eq!(envelope.subject, id.to_string());
        assert_eq!(envelope.correlation_id, id.to_string());
    }
    let added: ProductAdded = events[0].decode().unwrap();
    assert_eq!(added.product_id, id);
    assert_eq!(added.name, "Mug");
    assert_eq!(added.description, "Holds coffee.");
    assert_eq!(added.image_url, None);
    assert_eq!(added.version, 1);

    let updated: ProductUpdated = events[1].decode().unwrap();
    assert_eq!(updated.product_id, id);
    assert_eq!(updated.name, "Big Mug");
    assert_eq!(updated.description, "Holds more.");
    assert_eq!(
        updated.image_url.as_deref(),
        Some("https://img.example.org/m.png")
    );
    assert_eq!(updated.version, 2);
    assert!(updated.updated_at >= added.added_at);

    let deleted: ProductDeleted = events[2].decode().unwrap();
    assert_eq!(deleted.product_id, id);
    assert_eq!(deleted.version, 3);
    assert!(deleted.deleted_at >= updated.updated_at);

    let sentinel: ProductAdded = events[3].decode().unwrap();
    assert_eq!(sentinel.name, "Sentinel");
    catalog.shutdown().await;
}

async fn concurrent_changes_publish_distinct_increasing_versions(backend: Backend) {
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
        Some(json!({"name": "Mug", "description": ""})),
    )
    .await;
    let path = format!(
        "/api/catalog/products/{}",
        added.body["id"].as_str().unwrap()
    );
    let updates: Vec<_> = (0..10)
        .map(|n| {
            let (router, admin, path) = (router.clone(), admin.clone(), path.clone());
            tokio::spawn(async move {
                let body = json!({"name": format!("Mug {n}"), "description": ""});
                call(&router, Method::PUT, &path, Some(&admin), Some(body)).await
            })
        })
        .collect();
    let mut versions = Vec::new();
    for update in updates {
        let answer = update.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        versions.push(answer.body["version"].as_u64().unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (2..=11).collect::<Vec<u64>>());

    // Published in version order, each with the name it committed.
    let events = env.events(11).await;
    let published: Vec<u64> = events[1..]
        .iter()
        .map(|e| e.decode::<ProductUpdated>().unwrap().version)
        .collect();
    assert_eq!(published, (2..=11).collect::<Vec<u64>>());
    let last: ProductUpdated = events[10].decode().unwrap();
    let read = call(&router, Method::GET, &path, None, None).await;
    assert_eq!(read.body["version"], 11);
    assert_eq!(read.body["name"], last.name.as_str());
    catalog.shutdown().await;
}

async fn an_event_carries_the_admins_trace(backend: Backend) {
    let Some((env, catalog)) = start(backend).await else {
        return;
    };
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let answer = call_raw(
        &catalog.router(),
        Method::POST,
        "/api/catalog/products",
        Some(&env.admin()),
        &[("traceparent", traceparent)],
        Some((
            "application/json",
            json!({"name": "Mug", "description": ""})
                .to_string()
                .into_bytes(),
        )),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let events = env.events(1).await;
    assert_eq!(events[0].traceparent.as_deref(), Some(traceparent));
    catalog.shutdown().await;
}
