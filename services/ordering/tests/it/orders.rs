//! Reading orders: mine, newest first; one by id for its owner or an admin.

use axum::http::{Method, StatusCode};

use crate::support::{
    Backend, assert_problem, call, customer_with_data, lines, place_order, product, request, start,
};

crate::on_both_backends!(
    my_orders_newest_first,
    an_order_is_shown_to_its_owner_and_admins_only,
    my_orders_come_in_pages_linked_by_a_cursor,
    an_order_is_found_by_its_reference,
);

async fn my_orders_newest_first(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let lamp = product(&env, &ordering, "Lamp", 1000).await;
    let (_, token) = customer_with_data(&env, &ordering).await;
    let (_, other) = customer_with_data(&env, &ordering).await;
    let mut ids = Vec::new();
    for key in ["a", "b", "c"] {
        let answer = place_order(&ordering, &token, Some(key), lines(&[(lamp, 1)])).await;
        assert_eq!(answer.status, StatusCode::CREATED);
        ids.push(answer.body["id"].clone());
    }
    let answer = place_order(&ordering, &other, Some("a"), lines(&[(lamp, 1)])).await;
    assert_eq!(answer.status, StatusCode::CREATED);

    let (status, _, orders) = call(
        &ordering.router(),
        Method::GET,
        "/api/ordering/orders",
        Some(&token),
        &[],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<_> = orders
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].clone())
        .collect();
    ids.reverse();
    assert_eq!(listed, ids);
    assert_eq!(orders[0]["lines"][0]["name"], "Lamp");
    assert_eq!(orders[0]["history"][0]["status"], "accepted");

    let answer = request(
        &ordering.router(),
        Method::GET,
        "/api/ordering/orders",
        None,
        &[],
        None,
    )
    .await;
    assert_problem(&answer, StatusCode::UNAUTHORIZED);
    ordering.shutdown().await;
}

async fn an_order_is_shown_to_its_owner_and_admins_only(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let lamp = product(&env, &ordering, "Lamp", 1000).await;
    let (_, token) = customer_with_data(&env, &ordering).await;
    let created = place_order(&ordering, &token, Some("a"), lines(&[(lamp, 1)])).await;
    let path = format!(
        "/api/ordering/orders/{}",
        created.body["id"].as_str().unwrap()
    );
    let router = ordering.router();

    let (status, _, order) = call(&router, Method::GET, &path, Some(&token), &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(order, created.body);

    let (_, admin) = env.issuer.admin();
    let (status, _, order) = call(&router, Method::GET, &path, Some(&admin), &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(order, created.body);

    let (_, stranger) = env.issuer.customer();
    let answer = request(&router, Method::GET, &path, Some(&stranger), &[], None).await;
    assert_problem(&answer, StatusCode::NOT_FOUND);
    let answer = request(
        &router,
        Method::GET,
        "/api/ordering/orders/not-an-id",
        Some(&token),
        &[],
        None,
    )
    .await;
    assert_problem(&answer, StatusCode::NOT_FOUND);
    let answer = request(
        &router,
        Method::GET,
        &format!("/api/ordering/orders/{}", uuid::Uuid::now_v7()),
        Some(&token),
        &[],
        None,
    )
    .await;
    assert_problem(&answer, StatusCode::NOT_FOUND);
    ordering.shutdown().await;
}

async fn my_orders_come_in_pages_linked_by_a_cursor(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let lamp = product(&env, &ordering, "Lamp", 1000).await;
    let (_, token) = customer_with_data(&env, &ordering).await;
    let (_, other) = customer_with_data(&env, &ordering).await;
    let mut placed = Vec::new();
    for n in 0..7 {
        let key = format!("order-{n}");
        let answer = place_order(&ordering, &token, Some(&key), lines(&[(lamp, 1)])).await;
        assert_eq!(answer.status, StatusCode::CREATED);
        placed.push(answer.body["id"].clone());
    }
    placed.reverse();
    let answer = place_order(&ordering, &other, Some("x"), lines(&[(lamp, 1)])).await;
    assert_eq!(answer.status, StatusCode::CREATED);

    // Pages of 3 by following the Link header: 3, 3, 1, the last without a link.
    let mut path = "/api/ordering/orders?limit=3".to_owned();
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    loop {
        let answer = request(
            &ordering.router(),
            Method::GET,
            &path,
            Some(&token),
            &[],
            None,
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
        let page = answer.body.as_array().unwrap().clone();
        pages.push(page.len());
        seen.extend(page.iter().map(|o| o["id"].clone()));
        assert!(page.iter().all(|o| o["lines"][0]["name"] == "Lamp"));
        let Some(link) = answer.headers.get("link") else {
            break;
        };
        let link = link.to_str().unwrap();
        assert!(link.ends_with(">; rel=\"next\""), "{link}");
        path = link
            .trim_start_matches('<')
            .split_once('>')
            .unwrap()
            .0
            .to_owned();
        assert!(
            path.starts_with("/api/ordering/orders?limit=3&cursor="),
            "{path}"
        );
    }
    assert_eq!(pages, [3, 3, 1]);
    assert_eq!(
        seen, placed,
        "every order once, newest first, none of another's"
    );

    // No limit: the default page (50) holds them all, with no link.
    let answer = request(
        &ordering.router(),
        Method::GET,
        "/api/ordering/orders",
        Some(&token),
        &[],
        None,
    )
    .await;
    assert_eq!(answer.body.as_array().unwrap().len(), 7);
    assert!(answer.headers.get("link").is_none());

    for bad in [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=many",
        "cursor=nope",
        "cursor=12.zz",
        "cursor=.0190a0a0a0a07000800000000000000",
    ] {
        let answer = request(
            &ordering.router(),
            Method::GET,
            &format!("/api/ordering/orders?{bad}"),
            Some(&token),
            &[],
            None,
        )
        .await;
        assert_problem(&answer, StatusCode::BAD_REQUEST);
    }
    ordering.shutdown().await;
}

async fn an_order_is_found_by_its_reference(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let lamp = product(&env, &ordering, "Lamp", 1000).await;
    let (_, token) = customer_with_data(&env, &ordering).await;
    let created = place_order(&ordering, &token, Some("a"), lines(&[(lamp, 1)])).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = uuid::Uuid::parse_str(created.body["id"].as_str().unwrap()).unwrap();
    let reference = created.body["reference"].as_str().unwrap().to_owned();
    assert_eq!(
        reference,
        agora_contracts::OrderReference::of(id).to_string(),
        "the answer carries the reference derived in one place"
    );
    let router = ordering.router();

    // As shown, as typed (lower case, no dashes): the same order.
    for typed in [reference.clone(), reference.to_lowercase().replace('-', "")] {
        let path = format!("/api/ordering/orders/{typed}");
        let (status, _, order) = call(&router, Method::GET, &path, Some(&token), &[], None).await;
        assert_eq!(status, StatusCode::OK, "{typed}");
        assert_eq!(order, created.body);
    }
    let path = format!("/api/ordering/orders/{reference}");
    let (_, admin) = env.issuer.admin();
    let (status, _, order) = call(&router, Method::GET, &path, Some(&admin), &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(order["id"], created.body["id"]);

    // Another customer's reference is not found, nor is a reference nobody has.
    let (_, stranger) = env.issuer.customer();
    let answer = request(&router, Method::GET, &path, Some(&stranger), &[], None).await;
    assert_problem(&answer, StatusCode::NOT_FOUND);
    let other = if reference.ends_with('0') { "1" } else { "0" };
    let unknown = format!(
        "/api/ordering/orders/{}{other}",
        &reference[..reference.len() - 1]
    );
    let answer = request(&router, Method::GET, &unknown, Some(&token), &[], None).await;
    assert_problem(&answer, StatusCode::NOT_FOUND);

    // The list carries it too.
    let (_, _, orders) = call(
        &router,
        Method::GET,
        "/api/ordering/orders",
        Some(&token),
        &[],
        None,
    )
    .await;
    assert_eq!(orders[0]["reference"], reference.as_str());
    ordering.shutdown().await;
}
