//! Prices: set by admins, versioned, published as PriceChanged; read by anyone.

use agora_contracts::{PriceChanged, ProductDeleted};
use axum::http::{Method, StatusCode};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::support::{Backend, apply, assert_problem, call, envelope, request, start};

crate::on_both_backends!(
    admins_set_prices_and_each_change_is_published,
    price_refusals
);

async fn admins_set_prices_and_each_change_is_published(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let router = ordering.router();
    let (_, admin) = env.issuer.admin();
    let lamp = Uuid::now_v7();
    let path = format!("/api/ordering/prices/{lamp}");
    for (cents, version) in [(1000, 1), (1200, 2), (1200, 2)] {
        let (status, _, body) = call(
            &router,
            Method::PUT,
            &path,
            Some(&admin),
            &[],
            Some(json!({"amount_cents": cents, "currency": "EUR"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            json!({"product_id": lamp, "amount_cents": cents, "currency": "EUR", "version": version})
        );
    }
    let (status, _, prices) = call(
        &router,
        Method::GET,
        "/api/ordering/prices",
        None,
        &[],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        prices,
        json!([{"product_id": lamp, "amount_cents": 1200, "currency": "EUR", "version": 2}])
    );

    // Two changes, two events (setting the same price again changes nothing).
    let events = env.ordering_events(2).await;
    assert_eq!(events.len(), 2);
    let changes: Vec<PriceChanged> = events.iter().map(|e| e.decode().unwrap()).collect();
    assert_eq!(changes[0].version, 1);
    assert_eq!(changes[0].price.amount_cents, 1000);
    assert_eq!(changes[1].version, 2);
    assert_eq!(changes[1].price.amount_cents, 1200);
    assert_eq!(changes[1].product_id, lamp);

    // A product deleted in the catalog is no longer listed.
    apply(
        &ordering,
        &[envelope(&ProductDeleted {
            product_id: lamp,
            deleted_at: OffsetDateTime::now_utc(),
            version: 5,
        })],
    )
    .await;
    let (_, _, prices) = call(
        &router,
        Method::GET,
        "/api/ordering/prices",
        None,
        &[],
        None,
    )
    .await;
    assert_eq!(prices, json!([]));
    ordering.shutdown().await;
}

async fn price_refusals(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let router = ordering.router();
    let path = format!("/api/ordering/prices/{}", Uuid::now_v7());
    let body = json!({"amount_cents": 1000, "currency": "EUR"});
    let answer = request(&router, Method::PUT, &path, None, &[], Some(body.clone())).await;
    assert_problem(&answer, StatusCode::UNAUTHORIZED);
    let (_, customer) = env.issuer.customer();
    let answer = request(
        &router,
        Method::PUT,
        &path,
        Some(&customer),
        &[],
        Some(body),
    )
    .await;
    assert_problem(&answer, StatusCode::FORBIDDEN);
    let (_, admin) = env.issuer.admin();
    let answer = request(
        &router,
        Method::PUT,
        &path,
        Some(&admin),
        &[],
        Some(json!({"amount_cents": 0, "currency": "euro"})),
    )
    .await;
    assert_problem(&answer, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.body["errors"].as_array().unwrap().len(), 2);
    let answer = request(
        &router,
        Method::PUT,
        "/api/ordering/prices/not-a-uuid",
        Some(&admin),
        &[],
        Some(json!({"amount_cents": 10, "currency": "EUR"})),
    )
    .await;
    assert_problem(&answer, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, _, prices) = call(
        &router,
        Method::GET,
        "/api/ordering/prices",
        None,
        &[],
        None,
    )
    .await;
    assert_eq!(prices, json!([]));
    ordering.shutdown().await;
}
