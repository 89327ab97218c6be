//! `GET /api/shipping/shipments?order_id=`: every answer it gives.

use axum::http::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::support::{Backend, call, shipments, start};

crate::on_both_backends!(
    the_owner_and_an_admin_see_the_shipment,
    another_customer_sees_nothing,
    it_needs_a_token_and_a_role,
    the_order_id_must_be_a_uuid,
    an_order_reference_finds_the_shipment_of_its_owner_only,
    a_store_that_cannot_answer_is_a_503_to_retry,
);

/// Its store out of reach (a database restarting): 503 with `Retry-After`, not a 500.
async fn a_store_that_cannot_answer_is_a_503_to_retry(backend: Backend) {
    let Some((env, shipping)) = start(backend).await else {
        return;
    };
    let (_, token) = env.issuer.customer();
    shipping.db().pool().close().await;
    let answer = shipments(&shipping.router(), &Uuid::now_v7().to_string(), &token).await;
    answer.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answer.headers.contains_key("retry-after"),
        "{:?}",
        answer.headers
    );
    shipping.shutdown().await;
}

async fn the_owner_and_an_admin_see_the_shipment(backend: Backend) {
    let Some((env, shipping)) = start(backend).await else {
        return;
    };
    let router = shipping.router();
    let (customer, token) = env.issuer.customer();
    let order = Uuid::now_v7();
    let before = shipments(&router, &order.to_string(), &token).await;
    assert_eq!(before.status, StatusCode::OK);
    assert_eq!(before.body, json!([]));

    env.accept(order, customer).await;
    env.ready(order, customer).await;
    env.settled(&shipping).await;
    let answer = shipments(&router, &order.to_string(), &token).await;
    assert_eq!(answer.status, StatusCode::OK);
    let list = answer.body.as_array().unwrap();
    assert_eq!(list.len(), 1);
    let shipment = &list[0];
    assert_eq!(shipment["order_id"], order.to_string());
    assert_eq!(shipment["status"], "dispatched");
    assert_eq!(
        shipment["address"],
        json!({"line1": "Unter den Linden 1", "line2": null, "city": "Berlin",
               "postal_code": "10117", "country": "DE"})
    );
    assert!(shipment["dispatched_at"].is_string());
    assert!(shipment["id"].is_string());

    let (_, admin) = env.issuer.admin();
    let by_admin = shipments(&router, &order.to_string(), &admin).await;
    assert_eq!(by_admin.body, answer.body);
    shipping.shutdown().await;
}

async fn another_customer_sees_nothing(backend: Backend) {
    let Some((env, shipping)) = start(backend).await else {
        return;
    };
    let router = shipping.router();
    let (customer, _) = env.issuer.customer();
    let (_, other) = env.issuer.customer();
    let order = Uuid::now_v7();
    env.accept(order, customer).await;
    env.ready(order, customer).await;
    env.settled(&shipping).await;
    let answer = shipments(&router, &order.to_string(), &other).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, json!([]));
    shipping.shutdown().await;
}

async fn it_needs_a_token_and_a_role(backend: Backend) {
    let Some((env, shipping)) = start(backend).await else {
        return;
    };
    let router = shipping.router();
    let path = format!("/api/shipping/shipments?order_id={}", Uuid::now_v7());
    call(&router, Method::GET, &path, None, None)
        .await
        .assert_problem(StatusCode::UNAUTHORIZED);
    call(&router, Method::GET, &path, Some("garbage"), None)
        .await
        .assert_problem(StatusCode::UNAUTHORIZED);
    let nobody = env.issuer.token(Uuid::now_v7(), &[]);
    call(&router, Method::GET, &path, Some(&nobody), None)
        .await
        .assert_problem(StatusCode::FORBIDDEN);
    shipping.shutdown().await;
}

async fn the_order_id_must_be_a_uuid(backend: Backend) {
    let Some((env, shipping)) = start(backend).await else {
        return;
    };
    let router = shipping.router();
    let (_, token) = env.issuer.customer();
    for path in [
        "/api/shipping/shipments",
        "/api/shipping/shipments?order_id=",
        "/api/shipping/shipments?order_id=nope",
    ] {
        let answer = call(&router, Method::GET, path, Some(&token), None).await;
        assert_eq!(answer.invalid_fields(), ["order_id"], "{path}");
    }
    shipping.shutdown().await;
}

/// The order's human reference (`AG-XXXX-XXXX`, as people type it) works where its id
/// does, for its owner and an admin; for another customer it finds nothing.
async fn an_order_reference_finds_the_shipment_of_its_owner_only(backend: Backend) {
    let Some((env, shipping)) = start(backend).await else {
        return;
    };
    let router = shipping.router();
    let (customer, token) = env.issuer.customer();
    let (_, other) = env.issuer.customer();
    let (_, admin) = env.issuer.admin();
    let order = Uuid::now_v7();
    env.accept(order, customer).await;
    env.ready(order, customer).await;
    env.settled(&shipping).await;
    let by_id = shipments(&router, &order.to_string(), &token).await;
    assert_eq!(by_id.body.as_array().map(Vec::len), Some(1));

    let reference = agora_contracts::OrderReference::of(order).to_string();
    for typed in [reference.clone(), reference.to_lowercase().replace('-', "")] {
        let answer = shipments(&router, &typed, &token).await;
        assert_eq!(
            (answer.status, &answer.body),
            (StatusCode::OK, &by_id.body),
            "{typed}"
        );
        let answer = shipments(&router, &typed, &admin).await;
        assert_eq!(answer.body, by_id.body, "{typed} by an admin");
    }
    let answer = shipments(&router, &reference, &other).await;
    assert_eq!((answer.status, answer.body), (StatusCode::OK, json!([])));
    shipping.shutdown().await;
}
