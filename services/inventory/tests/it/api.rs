//! The HTTP paths: every answer they give.

use axum::http::{Method, Request, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::support::{Backend, call, get_stock, send, set_stock, start, stock_of};

crate::on_both_backends!(
    an_admin_sets_stock_and_anyone_reads_it,
    a_product_never_stocked_is_404,
    setting_stock_needs_an_admin,
    invalid_stock_is_refused_with_the_field,
    unreadable_bodies_are_refused,
    the_batch_read_answers_every_id_asked,
    the_batch_read_refuses_bad_ids,
    seeding_fills_only_an_empty_store,
    the_release_refuses_what_it_cannot_read,
    the_internal_routes_take_a_service_token_for_inventory_only,
);

async fn an_admin_sets_stock_and_anyone_reads_it(backend: Backend) {
    let Some((env, inventory)) = start(backend).await else {
        return;
    };
    let router = inventory.router();
    let product = Uuid::now_v7();
    set_stock(&env, &router, product, 25).await;
    let answer = get_stock(&router, product).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body,
        json!({"product_id": product, "on_hand": 25, "reserved": 0, "available": 25})
    );
    set_stock(&env, &router, product, 0).await;
    assert_eq!(stock_of(&router, product).await, (0, 0, 0));
    inventory.shutdown().await;
}

async fn a_product_never_stocked_is_404(backend: Backend) {
    let Some((_env, inventory)) = start(backend).await else {
        return;
    };
    let router = inventory.router();
    get_stock(&router, Uuid::now_v7())
        .await
        .assert_problem(StatusCode::NOT_FOUND);
    call(
        &router,
        Method::GET,
        "/api/inventory/stock/not-a-uuid",
        None,
        None,
    )
    .await
    .assert_problem(StatusCode::NOT_FOUND);
    inventory.shutdown().await;
}

async fn setting_stock_needs_an_admin(backend: Backend) {
    let Some((env, inventory)) = start(backend).await else {
        return;
    };
    let router = inventory.router();
    let path = format!("/api/inventory/stock/{}", Uuid::now_v7());
    let body = json!({"on_hand": 3});
    call(&router, Method::PUT, &path, None, Some(body.clone()))
        .await
        .assert_problem(StatusCode::UNAUTHORIZED);
    call(
        &router,
        Method::PUT,
        &path,
        Some("not-a-token"),
        Some(body.clone()),
    )
    .await
    .assert_problem(StatusCode::UNAUTHORIZED);
    let (_, customer) = env.issuer.customer();
    call(&router, Method::PUT, &path, Some(&customer), Some(body))
        .await
        .assert_problem(StatusCode::FORBIDDEN);
    inventory.shutdown().await;
}

async fn invalid_stock_is_refused_with_the_field(backend: Backend) {
    let Some((env, inventory)) = start(backend).await else {
        return;
    };
    let router = inventory.router();
    let (_, admin) = env.issuer.admin();
    let product = Uuid::now_v7();
    let path = format!("/api/inventory/stock/{product}");
    for body in [
        json!({"on_hand": -1}),
        json!({"on_hand": 1_000_001}),
        json!({"on_hand": "3"}),
        json!({"on_hand": 1.5}),
        json!({}),
    ] {
        let answer = call(
            &router,
            Method::PUT,
            &path,
            Some(&admin),
            Some(body.clone()),
        )
        .await;
        assert_eq!(answer.invalid_fields(), ["on_hand"], "{body}");
    }
    call(
        &router,
        Method::PUT,
        "/api/inventory/stock/nope",
        Some(&admin),
        Some(json!({"on_hand": 1})),
    )
    .await
    .assert_problem(StatusCode::NOT_FOUND);
    get_stock(&router, product)
        .await
        .assert_problem(StatusCode::NOT_FOUND);
    inventory.shutdown().await;
}

async fn unreadable_bodies_are_refused(backend: Backend) {
    let Some((env, inventory)) = start(backend).await else {
        return;
    };
    let router = inventory.router();
    let (_, admin) = env.issuer.admin();
    let path = format!("/api/inventory/stock/{}", Uuid::now_v7());
    send(
        &router,
        Method::PUT,
        &path,
        Some(&admin),
        Some(("application/json", b"{".to_vec())),
    )
    .await
    .assert_problem(StatusCode::BAD_REQUEST);
    send(
        &router,
        Method::PUT,
        &path,
        Some(&admin),
        Some(("text/plain", b"{}".to_vec())),
    )
    .await
    .assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = format!("{{\"on_hand\": 1, \"pad\": \"{}\"}}", "x".repeat(70 * 1024));
    send(
        &router,
        Method::PUT,
        &path,
        Some(&admin),
        Some(("application/json", big.into_bytes())),
    )
    .await
    .assert_problem(StatusCode::PAYLOAD_TOO_LARGE);
    inventory.shutdown().await;
}

async fn the_batch_read_answers_every_id_asked(backend: Backend) {
    let Some((env, inventory)) = start(backend).await else {
        return;
    };
    let router = inventory.router();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    set_stock(&env, &router, a, 7).await;
    let path = format!("/internal/inventory/stock?ids={b},{a}");
    let answer = call(&router, Method::GET, &path, None, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body,
        json!([
            {"product_id": b, "on_hand": 0, "reserved": 0, "available": 0},
            {"product_id": a, "on_hand": 7, "reserved": 0, "available": 7},
        ])
    );
    let empty = call(
        &router,
        Method::GET,
        "/internal/inventory/stock?ids=",
        None,
        None,
    )
    .await;
    assert_eq!(empty.body, json!([]));
    inventory.shutdown().await;
}

async fn the_batch_read_refuses_bad_ids(backend: Backend) {
    let Some((_env, inventory)) = start(backend).await else {
        return;
    };
    let router = inventory.router();
    call(
        &router,
        Method::GET,
        "/internal/inventory/stock?ids=a,b",
        None,
        None,
    )
    .await
    .assert_problem(StatusCode::BAD_REQUEST);
    let many: Vec<String> = (0..1001).map(|_| Uuid::now_v7().to_string()).collect();
    let path = format!("/internal/inventory/stock?ids={}", many.join(","));
    call(&router, Method::GET, &path, None, None)
        .await
        .assert_problem(StatusCode::BAD_REQUEST);
    inventory.shutdown().await;
}

async fn seeding_fills_only_an_empty_store(backend: Backend) {
    let Some((env, inventory)) = start(backend).await else {
        return;
    };
    let router = inventory.router();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    assert!(inventory.seed(&[(a, 10), (b, 2_000_000)]).await.unwrap());
    assert_eq!(stock_of(&router, a).await, (10, 0, 10));
    assert_eq!(stock_of(&router, b).await, (1_000_000, 0, 1_000_000));
    set_stock(&env, &router, a, 3).await;
    assert!(!inventory.seed(&[(a, 10)]).await.unwrap());
    assert_eq!(stock_of(&router, a).await, (3, 0, 3));
    inventory.shutdown().await;
}

async fn the_release_refuses_what_it_cannot_read(backend: Backend) {
    let Some((_env, inventory)) = start(backend).await else {
        return;
    };
    let router = inventory.router();
    call(
        &router,
        Method::POST,
        "/internal/inventory/reservations/nope/release",
        None,
        None,
    )
    .await
    .assert_problem(StatusCode::NOT_FOUND);
    let path = format!(
        "/internal/inventory/reservations/{}/release",
        Uuid::now_v7()
    );
    send(
        &router,
        Method::POST,
        &path,
        None,
        Some(("application/json", b"{".to_vec())),
    )
    .await
    .assert_problem(StatusCode::BAD_REQUEST);
    let answer = call(
        &router,
        Method::POST,
        &path,
        None,
        Some(json!({"reason": 3})),
    )
    .await;
    assert_eq!(answer.invalid_fields(), ["reason"]);
    inventory.shutdown().await;
}

async fn the_internal_routes_take_a_service_token_for_inventory_only(backend: Backend) {
    let Some((env, inventory)) = start(backend).await else {
        return;
    };
    let router = inventory.router();
    let product = Uuid::now_v7();
    set_stock(&env, &router, product, 5).await;
    let (_, customer) = env.issuer.customer();
    let (_, admin) = env.issuer.admin();
    let wrong_audience = crate::support::TEST_PLANE
        .service("fulfilment")
        .token_for("payment")
        .unwrap();
    let order = Uuid::now_v7();
    let routes = [
        (
            Method::GET,
            format!("/internal/inventory/stock?ids={product}"),
        ),
        (
            Method::POST,
            format!("/internal/inventory/reservations/{order}/release"),
        ),
    ];
    for (method, path) in &routes {
        for (token, status) in [
            ("not-a-jwt", StatusCode::UNAUTHORIZED),
            (wrong_audience.as_str(), StatusCode::UNAUTHORIZED),
            (customer.as_str(), StatusCode::FORBIDDEN),
            (admin.as_str(), StatusCode::FORBIDDEN),
        ] {
            call(&router, method.clone(), path, Some(token), None)
                .await
                .assert_problem(status);
        }
        let bare = Request::builder()
            .method(method.clone())
            .uri(path.as_str())
            .body(axum::body::Body::empty())
            .unwrap();
        let answer = tower::ServiceExt::oneshot(router.clone(), bare)
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    }
    // The stock is as it was, and with the service token the read works.
    let answer = call(&router, Method::GET, &routes[0].1, None, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body[0]["available"], 5);
    inventory.shutdown().await;
}
