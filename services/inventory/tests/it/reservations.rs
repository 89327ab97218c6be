//! Given stock and these events, when an order (or its release, or its shipment)
//! arrives, then these events are published and this stock holds — duplicates and
//! reordering included.

use agora_contracts::{
    StockLine, StockReleased, StockReservationFailed, StockReserved, StockShortage,
};
use axum::http::StatusCode;
use uuid::Uuid;

use crate::support::{Backend, Env, order_accepted, release, set_stock, start, stock_of};
use agora_messaging::{Context, Envelope};

crate::on_both_backends!(
    an_order_is_reserved_once_however_often_delivered,
    a_shortage_holds_nothing_and_names_the_lines,
    a_release_gives_back_once,
    a_release_before_the_order_reserves_nothing_later,
    a_shipped_order_leaves_stock_and_is_not_released,
    concurrent_reservations_never_oversell,
    stock_cannot_be_set_below_what_is_reserved,
    a_restart_keeps_reservations_and_redeliveries_stay_no_ops,
);

fn sorted(mut lines: Vec<StockLine>) -> Vec<StockLine> {
    lines.sort_by_key(|l| l.product_id);
    lines
}

async fn an_order_is_reserved_once_however_often_delivered(backend: Backend) {
    let Some((env, inventory)) = start(backend).await else {
        return;
    };
    let router = inventory.router();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    set_stock(&env, &router, a, 5).await;
    set_stock(&env, &router, b, 3).await;
    let order = Uuid::now_v7();
    // Two lines of `a` are merged into one hold.
    let envelope = env.accept(order, &[(a, 1), (b, 1), (a, 1)]).await;
    env.publish(&envelope).await; // the same event again
    // The same order under a new event id (a producer retry).
    let again = Envelope::new(
        &order_accepted(order, &[(a, 1), (b, 1), (a, 1)]),
        &Context::new(order.to_string()),
    )
    .unwrap();
    env.publish(&again).await;

    let events = env.events(&inventory).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let reserved: StockReserved = events[0].decode().unwrap();
    assert_eq!(reserved.order_id, order);
    assert_eq!(reserved.version, 1);
    assert_eq!(
        reserved.lines,
        sorted(vec![
            StockLine {
                product_id: a,
                quantity: 2
            },
            StockLine {
                product_id: b,
                quantity: 1
            },
        ])
    );
    assert_eq!(events[0].correlation_id, order.to_string());
    assert_eq!(events[0].subject, order.to_string());
    assert_eq!(stock_of(&router, a).await, (5, 2, 3));
    assert_eq!(stock_of(&router, b).await, (3, 1, 2));
    inventory.shutdown().await;
}

async fn a_shortage_holds_nothing_and_names_the_lines(backend: Backend) {
    let Some((env, inventory)) = start(backend).await else {
        return;
    };
    let router = inventory.router();
    let (a, b, unknown) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    set_stock(&env, &router, a, 5).await;
    set_stock(&env, &router, b, 1).await;
    let order = Uuid::now_v7();
    let envelope = env.accept(order, &[(a, 2), (b, 2), (unknown, 1)]).await;
    env.publish(&envelope).await;

    let events = env.events(&inventory).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let failed: StockReservationFailed = events[0].decode().unwrap();
    assert_eq!(failed.order_id, order);
    let mut expected = vec![
        StockShortage {
            product_id: b,
            requested: 2,
            available: 1,
        },
        StockShortage {
            product_id: unknown,
            requested: 1,
            available: 0,
        },
    ];
    expected.sort_by_key(|s| s.product_id);
    assert_eq!(failed.shortages, expected);
    // Nothing held, not even the line that could be served.
    assert_eq!(stock_of(&router, a).await, (5, 0, 5));
    assert_eq!(stock_of(&router, b).await, (1, 0, 1));
    // A release of a failed order releases nothing.
    let answer = release(&router, order, Some("out_of_stock")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["status"], "failed");
    assert_eq!(answer.body["released"], serde_json::json!([]));
    assert_eq!(env.events(&inventory).await.len(), 1);
    inventory.shutdown().await;
}

async fn a_release_gives_back_once(backend: Backend) {
    let Some((env, inventory)) = start(backend).await else {
        return;
    };
    let router = inventory.router();
    let a = Uuid::now_v7();
    set_stock(&env, &router, a, 4).await;
    let order = Uuid::now_v7();
    env.accept(order, &[(a, 3)]).await;
    env.settled(&inventory).await;
    assert_eq!(stock_of(&router, a).await, (4, 3, 1));

    let releases = futures_join(&router, order).await;
    let released_lines: usize = releases
        .iter()
        .map(|body| body["released"].as_array().unwrap().len())
        .sum();
    assert_eq!(released_lines, 1, "exactly one call released the line");
    for body in &releases {
        assert_eq!(body["status"], "released");
    }
    assert_eq!(stock_of(&router, a).await, (4, 0, 4));

    let events = env.events(&inventory).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let released: StockReleased = events[1].decode().unwrap();
    assert_eq!(released.order_id, order);
    assert_eq!(
        released.lines,
        vec![StockLine {
            product_id: a,
            quantity: 3
        }]
    );
    assert_eq!(
        released.reason,
        Some(agora_contracts::CancelReason::Timeout)
    );
    assert_eq!(released.version, 2);
    inventory.shutdown().await;
}

/// Four concurrent releases of one order, then one without a body.
async fn futures_join(router: &axum::Router, order: Uuid) -> Vec<serde_json::Value> {
    let (a, b, c, d) = tokio::join!(
        release(router, order, Some("timeout")),
        release(router, order, Some("timeout")),
        release(router, order, Some("timeout")),
        release(router, order, Some("timeout")),
    );
    let e = release(router, order, None).await;
    [a, b, c, d, e]
        .into_iter()
        .map(|answer| {
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
            answer.body
        })
        .collect()
}

async fn a_release_before_the_order_reserves_nothing_later(backend: Backend) {
    let Some((env, inventory)) = start(backend).await else {
        return;
    };
    let router = inventory.router();
    let a = Uuid::now_v7();
    set_stock(&env, &router, a, 4).await;
    let order = Uuid::now_v7();
    let answer = release(&router, order, Some("timeout")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["status"], "released");
    assert_eq!(answer.body["released"], serde_json::json!([]));

    env.accept(order, &[(a, 1)]).await;
    let events = env.events(&inventory).await;
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(stock_of(&router, a).await, (4, 0, 4));
    inventory.shutdown().await;
}

async fn a_shipped_order_leaves_stock_and_is_not_released(backend: Backend) {
    let Some((env, inventory)) = start(backend).await else {
        return;
    };
    let router = inventory.router();
    let a = Uuid::now_v7();
    set_stock(&env, &router, a, 4).await;
    let order = Uuid::now_v7();
    env.accept(order, &[(a, 3)]).await;
    env.settled(&inventory).await;
    let dispatched = env.dispatch(order).await;
    env.publish(&dispatched).await;
    env.dispatch(order).await; // a second shipment event of the same order
    env.settled(&inventory).await;
    assert_eq!(stock_of(&router, a).await, (1, 0, 1));

    let answer = release(&router, order, Some("timeout")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["status"], "shipped");
    assert_eq!(stock_of(&router, a).await, (1, 0, 1));
    let events = env.events(&inventory).await;
    assert_eq!(events.len(), 1, "only StockReserved: {events:?}");
    assert!(events[0].is::<StockReserved>());
    inventory.shutdown().await;
}

async fn concurrent_reservations_never_oversell(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    // Two instances share the consumer: four workers reserve at once.
    let first = env.start().await;
    let second = env.start().await;
    let router = first.router();
    let a = Uuid::now_v7();
    set_stock(&env, &router, a, 10).await;
    let orders: Vec<Uuid> = (0..30).map(|_| Uuid::now_v7()).collect();
    for order in &orders {
        env.accept(*order, &[(a, 1)]).await;
    }
    env.settled(&second).await;
    let events = env.events(&first).await;
    assert_eq!(events.len(), 30);
    let reserved = events.iter().filter(|e| e.is::<StockReserved>()).count();
    let failed = events
        .iter()
        .filter(|e| e.is::<StockReservationFailed>())
        .count();
    assert_eq!((reserved, failed), (10, 20));
    assert_eq!(stock_of(&router, a).await, (10, 10, 0));
    first.shutdown().await;
    second.shutdown().await;
}

async fn stock_cannot_be_set_below_what_is_reserved(backend: Backend) {
    let Some((env, inventory)) = start(backend).await else {
        return;
    };
    let router = inventory.router();
    let a = Uuid::now_v7();
    set_stock(&env, &router, a, 5).await;
    env.accept(Uuid::now_v7(), &[(a, 3)]).await;
    env.settled(&inventory).await;
    let (_, admin) = env.issuer.admin();
    let answer = crate::support::call(
        &router,
        axum::http::Method::PUT,
        &format!("/api/inventory/stock/{a}"),
        Some(&admin),
        Some(serde_json::json!({"on_hand": 2})),
    )
    .await;
    assert_eq!(answer.invalid_fields(), ["on_hand"]);
    assert_eq!(stock_of(&router, a).await, (5, 3, 2));
    set_stock(&env, &router, a, 3).await;
    assert_eq!(stock_of(&router, a).await, (3, 3, 0));
    inventory.shutdown().await;
}

async fn a_restart_keeps_reservations_and_redeliveries_stay_no_ops(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let inventory = env.start().await;
    let a = Uuid::now_v7();
    set_stock(&env, &inventory.router(), a, 2).await;
    let order = Uuid::now_v7();
    let envelope = env.accept(order, &[(a, 2)]).await;
    env.settled(&inventory).await;
    inventory.shutdown().await;

    let inventory = env.start().await;
    let router = inventory.router();
    assert_eq!(stock_of(&router, a).await, (2, 2, 0));
    env.publish(&envelope).await;
    let events = env.events(&inventory).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].is::<StockReserved>());
    assert_eq!(stock_of(&router, a).await, (2, 2, 0));
    inventory.shutdown().await;
}
