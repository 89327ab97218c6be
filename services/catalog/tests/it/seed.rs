//! The demo products: added once, to an empty catalog only, with their events.

use agora_catalog::demo_products;
use agora_contracts::ProductAdded;
use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::{Backend, Env, call, start};

crate::on_both_backends!(
    demo_products_seed_an_empty_catalog_once,
    a_catalog_that_ever_held_a_product_is_not_seeded,
);

async fn demo_products_seed_an_empty_catalog_once(backend: Backend) {
    let Some((env, catalog)) = start(backend).await else {
        return;
    };
    let demo = demo_products();
    assert_eq!(catalog.seed_demo().await.unwrap(), demo.len());
    assert_eq!(catalog.seed_demo().await.unwrap(), 0);
    catalog.shutdown().await;
    // Nor on the next start.
    let catalog = env.start().await;
    assert_eq!(catalog.seed_demo().await.unwrap(), 0);

    let list = call(
        &catalog.router(),
        Method::GET,
        "/api/catalog/products",
        None,
        None,
    )
    .await;
    assert_eq!(list.status, StatusCode::OK);
    let expected: Vec<_> = demo
        .iter()
        .map(|p| json!({"id": p.id, "name": p.name, "description": p.description, "version": 1}))
        .collect();
    assert_eq!(list.body, json!(expected));

    let events = env.events(demo.len()).await;
    assert_eq!(events.len(), demo.len());
    for (envelope, product) in events.iter().zip(&demo) {
        let added: ProductAdded = envelope.decode().unwrap();
        assert_eq!(added.product_id, product.id);
        assert_eq!(added.name, product.name);
        assert_eq!(added.version, 1);
    }
    catalog.shutdown().await;
}

async fn a_catalog_that_ever_held_a_product_is_not_seeded(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let catalog = env.start().await;
    let router = catalog.router();
    let admin = env.admin();
    let added = call(
        &router,
        Method::POST,
        "/api/catalog/products",
        Some(&admin),
        Some(json!({"name": "Only", "description": ""})),
    )
    .await;
    let path = format!(
        "/api/catalog/products/{}",
        added.body["id"].as_str().unwrap()
    );
    let deleted = call(&router, Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(catalog.seed_demo().await.unwrap(), 0);
    let list = call(&router, Method::GET, "/api/catalog/products", None, None).await;
    assert_eq!(list.body, json!([]));
    catalog.shutdown().await;
}
