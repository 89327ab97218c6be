//! Checkout: where customer data comes from (replica, live, override), the payment
//! authorization and its failures, and every refusal.

use std::time::{Duration, Instant};

use agora_contracts::{OrderAccepted, ProductDeleted};
use agora_ordering::{CustomerData, CustomerRecord, IdempotencyKey, payment_request_id};
use axum::http::{Method, StatusCode, header};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::support::{
    Backend, CustomerMode, Env, PaymentMode, address, address_changed, apply, assert_problem, call,
    customer_with_data, envelope, error_fields, lines, payment_method_changed, place_order,
    product, request, set_price, start,
};

crate::on_both_backends!(
    replica_mode_accepts_and_publishes_order_accepted,
    sync_mode_takes_the_address_from_the_customer_service,
    sync_mode_answers_503_fast_when_customer_is_down_or_hangs,
    replica_mode_goes_on_when_customer_is_down,
    a_given_address_overrides,
    payment_unavailable_answers_503_keeps_no_order_and_a_retry_reuses_the_request,
    a_retry_after_payment_was_reached_asks_for_exactly_the_same,
    payment_declined_answers_402_and_keeps_no_order,
    refusals,
    preview_has_the_documented_shape,
    settings_switch_at_runtime,
    a_store_that_cannot_answer_is_a_503_to_retry,
    the_settings_lever_takes_a_service_token_only,
);

async fn replica_mode_accepts_and_publishes_order_accepted(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let lamp = product(&env, &ordering, "Lamp", 1999).await;
    let chair = product(&env, &ordering, "Chair", 4500).await;
    let (customer_id, token) = customer_with_data(&env, &ordering).await;

    let answer = place_order(
        &ordering,
        &token,
        Some("k-1"),
        lines(&[(lamp, 2), (chair, 1)]),
    )
    .await;

    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
    let order = &answer.body;
    assert_eq!(order["status"], "accepted");
    assert_eq!(order["settled"], false, "accepted changes on");
    assert_eq!(order["customer_id"], customer_id.to_string());
    assert_eq!(order["address_source"], "replica");
    assert_eq!(order["shipping_address"]["line1"], "Main St 1");
    assert_eq!(order["total_cents"], 2 * 1999 + 4500);
    assert_eq!(order["currency"], "EUR");
    assert_eq!(order["lines"][0]["name"], "Lamp");
    assert_eq!(order["lines"][0]["quantity"], 2);
    assert_eq!(order["lines"][0]["unit_price_cents"], 1999);
    assert_eq!(order["lines"][0]["line_total_cents"], 3998);
    assert_eq!(order["history"][0]["status"], "accepted");
    assert!(order["history"][0]["at"].is_string());
    let order_id: Uuid = order["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(order_id.get_version_num(), 7);

    // Payment was asked once, with the request id derived from customer and key.
    let requests = env.payment.requests().await;
    assert_eq!(requests.len(), 1);
    let key = IdempotencyKey::parse("k-1").unwrap();
    assert_eq!(
        requests[0].request_id,
        payment_request_id(customer_id, &key)
    );
    assert_eq!(requests[0].order_id, order_id);
    assert_eq!(requests[0].amount_cents, 2 * 1999 + 4500);
    assert_eq!(requests[0].payment_token, "tok_visa");

    // Two PriceChanged, then the OrderAccepted.
    let events = env.ordering_events(3).await;
    let accepted: Vec<OrderAccepted> = events
        .iter()
        .filter(|e| e.is::<OrderAccepted>())
        .map(|e| e.decode().unwrap())
        .collect();
    assert_eq!(accepted.len(), 1);
    let event = &accepted[0];
    assert_eq!(event.order_id, order_id);
    assert_eq!(event.customer_id, customer_id);
    assert_eq!(event.total_cents, 2 * 1999 + 4500);
    assert_eq!(event.lines.len(), 2);
    assert_eq!(event.shipping_address, address("Main St 1"));
    assert_eq!(event.address_source.as_str(), "replica");
    assert_eq!(event.version, 1);
    let granted = env.payment.granted.lock().await;
    assert_eq!(
        event.payment_authorization_id,
        granted[0].1.authorization_id
    );
    drop(granted);
    let envelope = events.iter().find(|e| e.is::<OrderAccepted>()).unwrap();
    assert_eq!(envelope.subject, order_id.to_string());
    assert_eq!(envelope.correlation_id, order_id.to_string());
    ordering.shutdown().await;
}

fn record(id: Uuid, line1: &str) -> CustomerRecord {
    CustomerRecord {
        id,
        name: "Ada".into(),
        email: "ada@example.org".into(),
        address: Some(address(line1)),
        payment_method: Some(agora_contracts::PaymentMethod {
            token: "tok_visa".into(),
            last4: "1111".into(),
        }),
        version: 7,
        updated_at: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
    }
}

async fn sync_mode_takes_the_address_from_the_customer_service(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let lamp = product(&env, &ordering, "Lamp", 1000).await;
    // The replica holds an older address; the customer service the current one.
    let (customer_id, token) = customer_with_data(&env, &ordering).await;
    env.customer
        .set_mode(CustomerMode::Up(vec![record(customer_id, "Live St 5")]));
    ordering
        .set_customer_data(CustomerData::Sync)
        .await
        .unwrap();

    let answer = place_order(&ordering, &token, Some("k"), lines(&[(lamp, 1)])).await;

    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.body["address_source"], "customer_service");
    assert_eq!(answer.body["shipping_address"]["line1"], "Live St 5");
    assert_eq!(
        env.customer.calls.load(std::sync::atomic::Ordering::SeqCst),
        1
    );

    // A customer the customer service does not know has no address: 422.
    let (_, stranger) = env.issuer.customer();
    let answer = place_order(&ordering, &stranger, Some("k"), lines(&[(lamp, 1)])).await;
    assert_problem(&answer, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(error_fields(&answer).contains(&"shipping_address".to_owned()));
    ordering.shutdown().await;
}

async fn sync_mode_answers_503_fast_when_customer_is_down_or_hangs(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let lamp = product(&env, &ordering, "Lamp", 1000).await;
    let (_, token) = customer_with_data(&env, &ordering).await;
    ordering
        .set_customer_data(CustomerData::Sync)
        .await
        .unwrap();

    for (mode, key) in [(CustomerMode::Down, "down"), (CustomerMode::Hang, "hang")] {
        env.customer.set_mode(mode);
        let started = Instant::now();
        let answer = place_order(&ordering, &token, Some(key), lines(&[(lamp, 1)])).await;
        let took = started.elapsed();
        assert_problem(&answer, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.headers[header::RETRY_AFTER], "1");
        assert!(took < Duration::from_millis(300), "{key}: took {took:?}");
    }
    assert_eq!(env.payment.calls(), 0);
    assert_eq!(ordering.order_count().await.unwrap(), 0);
    ordering.shutdown().await;
}

async fn replica_mode_goes_on_when_customer_is_down(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    env.customer.set_mode(CustomerMode::Down);
    let lamp = product(&env, &ordering, "Lamp", 1000).await;
    let (_, token) = customer_with_data(&env, &ordering).await;
    let answer = place_order(&ordering, &token, Some("k"), lines(&[(lamp, 1)])).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.body["address_source"], "replica");
    assert_eq!(
        env.customer.calls.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    ordering.shutdown().await;
}

async fn a_given_address_overrides(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let lamp = product(&env, &ordering, "Lamp", 1000).await;
    let (_, token) = customer_with_data(&env, &ordering).await;
    let mut body = lines(&[(lamp, 1)]);
    body["shipping_address"] = json!({
        "line1": "Elsewhere 9", "city": "Paris", "postal_code": "75001", "country": "FR"
    });
    let answer = place_order(&ordering, &token, Some("k"), body.clone()).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.body["address_source"], "override");
    assert_eq!(answer.body["shipping_address"]["line1"], "Elsewhere 9");
    assert_eq!(answer.body["shipping_address"]["country"], "FR");

    // Also when the replica knows no address for the customer.
    let (customer_id, token) = env.issuer.customer();
    apply(
        &ordering,
        &[payment_method_changed(customer_id, "tok_visa", 2)],
    )
    .await;
    let answer = place_order(&ordering, &token, Some("k"), body.clone()).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.body["address_source"], "override");

    // An invalid override is a 422 naming its fields.
    body["shipping_address"]["country"] = json!("France");
    let answer = place_order(&ordering, &token, Some("k2"), body).await;
    assert_problem(&answer, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_fields(&answer), vec!["shipping_address.country"]);
    ordering.shutdown().await;
}

async fn payment_unavailable_answers_503_keeps_no_order_and_a_retry_reuses_the_request(
    backend: Backend,
) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let mut config = env.config();
    config.payment_deadline = Duration::from_millis(200);
    let ordering = agora_ordering::build(config).await.unwrap();
    let lamp = product(&env, &ordering, "Lamp", 1000).await;
    let (_, token) = customer_with_data(&env, &ordering).await;

    env.payment.set_mode(PaymentMode::Unavailable);
    let answer = place_order(&ordering, &token, Some("k"), lines(&[(lamp, 1)])).await;
    assert_problem(&answer, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers[header::RETRY_AFTER], "1");

    env.payment.set_mode(PaymentMode::Hang);
    let started = Instant::now();
    let answer = place_order(&ordering, &token, Some("k"), lines(&[(lamp, 1)])).await;
    assert_problem(&answer, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(ordering.order_count().await.unwrap(), 0);

    // Payment is back: the retry with the same key is accepted, and every attempt asked
    // for the same payment request and the same order id.
    env.payment.set_mode(PaymentMode::Approve);
    let answer = place_order(&ordering, &token, Some("k"), lines(&[(lamp, 1)])).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(env.payment.calls(), 3);
    let requests = env.payment.requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].order_id.to_string(),
        answer.body["id"].as_str().unwrap()
    );
    assert_eq!(ordering.order_count().await.unwrap(), 1);
    ordering.shutdown().await;
}

async fn a_retry_after_payment_was_reached_asks_for_exactly_the_same(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let lamp = product(&env, &ordering, "Lamp", 1000).await;
    let (_, token) = customer_with_data(&env, &ordering).await;
    env.payment.set_mode(PaymentMode::Unavailable);
    let answer = place_order(&ordering, &token, Some("k"), lines(&[(lamp, 2)])).await;
    assert_problem(&answer, StatusCode::SERVICE_UNAVAILABLE);

    // The price changes before the retry: the retry still asks payment for the amount
    // of the first attempt (its payment request id is the same), and the order keeps
    // the price the customer was shown.
    set_price(&env, &ordering, lamp, 1500, "EUR").await;
    env.payment.set_mode(PaymentMode::Approve);
    let answer = place_order(&ordering, &token, Some("k"), lines(&[(lamp, 2)])).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.body["total_cents"], 2000);
    assert_eq!(answer.body["lines"][0]["unit_price_cents"], 1000);
    let requests = env.payment.requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].amount_cents, 2000);
    // A new key takes the new price.
    let answer = place_order(&ordering, &token, Some("k2"), lines(&[(lamp, 2)])).await;
    assert_eq!(answer.body["total_cents"], 3000);
    ordering.shutdown().await;
}

async fn payment_declined_answers_402_and_keeps_no_order(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let lamp = product(&env, &ordering, "Lamp", 1000).await;
    let (_, token) = customer_with_data(&env, &ordering).await;
    env.payment.set_mode(PaymentMode::Decline);
    let answer = place_order(&ordering, &token, Some("k"), lines(&[(lamp, 1)])).await;
    assert_problem(&answer, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(answer.body["type"], "urn:agora:problem:payment-declined");
    assert_eq!(ordering.order_count().await.unwrap(), 0);

    // The same key and body: the same answer, without asking payment again.
    env.payment.set_mode(PaymentMode::Approve);
    let again = place_order(&ordering, &token, Some("k"), lines(&[(lamp, 1)])).await;
    assert_problem(&again, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(again.body, answer.body);
    assert_eq!(env.payment.calls(), 1);
    assert_eq!(ordering.order_count().await.unwrap(), 0);
    ordering.shutdown().await;
}

async fn refusals(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let lamp = product(&env, &ordering, "Lamp", 1000).await;
    let dollars = product(&env, &ordering, "Import", 1000).await;
    set_price(&env, &ordering, dollars, 1200, "USD").await;
    let gone = product(&env, &ordering, "Gone", 1000).await;
    apply(
        &ordering,
        &[envelope(&ProductDeleted {
            product_id: gone,
            deleted_at: OffsetDateTime::now_utc(),
            version: 2,
        })],
    )
    .await;
    let (_, token) = customer_with_data(&env, &ordering).await;

    // 400: no key, a key too long, a key with a control character.
    let answer = place_order(&ordering, &token, None, lines(&[(lamp, 1)])).await;
    assert_problem(&answer, StatusCode::BAD_REQUEST);
    let long = "k".repeat(201);
    let answer = place_order(&ordering, &token, Some(&long), lines(&[(lamp, 1)])).await;
    assert_problem(&answer, StatusCode::BAD_REQUEST);

    // 422s, each naming the field.
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (lines(&[(Uuid::now_v7(), 1)]), "lines[0].product_id"),
        (lines(&[(gone, 1)]), "lines[0].product_id"),
        (lines(&[(lamp, 1), (dollars, 1)]), "lines[1].product_id"),
        (lines(&[(lamp, 0)]), "lines[0].quantity"),
        (lines(&[(lamp, 101)]), "lines[0].quantity"),
        (json!({"lines": []}), "lines"),
        (
            lines(&(0..51).map(|_| (Uuid::now_v7(), 1)).collect::<Vec<_>>()),
            "lines",
        ),
        (
            json!({"lines": [{"product_id": "not-a-uuid", "quantity": 1}]}),
            "lines[0].product_id",
        ),
    ];
    for (index, (body, field)) in cases.into_iter().enumerate() {
        let key = format!("case-{index}");
        let answer = place_order(&ordering, &token, Some(&key), body).await;
        assert_problem(&answer, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error_fields(&answer), vec![field], "case {index}");
    }

    // 422: no address known and none given; no payment method.
    let (no_address, no_address_token) = env.issuer.customer();
    apply(
        &ordering,
        &[payment_method_changed(no_address, "tok_visa", 2)],
    )
    .await;
    let answer = place_order(&ordering, &no_address_token, Some("k"), lines(&[(lamp, 1)])).await;
    assert_problem(&answer, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_fields(&answer), vec!["shipping_address"]);
    let (no_method, no_method_token) = env.issuer.customer();
    apply(&ordering, &[address_changed(no_method, "Main St 1", 2)]).await;
    let answer = place_order(&ordering, &no_method_token, Some("k"), lines(&[(lamp, 1)])).await;
    assert_problem(&answer, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_fields(&answer), vec!["payment_method"]);

    // 401 without a token, 403 for an admin (orders are placed by customers).
    let answer = request(
        &ordering.router(),
        Method::POST,
        "/api/ordering/orders",
        None,
        &[("Idempotency-Key", "k")],
        Some(lines(&[(lamp, 1)])),
    )
    .await;
    assert_problem(&answer, StatusCode::UNAUTHORIZED);
    let (_, admin) = env.issuer.admin();
    let answer = place_order(&ordering, &admin, Some("k"), lines(&[(lamp, 1)])).await;
    assert_problem(&answer, StatusCode::FORBIDDEN);

    // 413 over 64 KiB.
    let big = json!({"lines": [], "pad": "x".repeat(70 * 1024)});
    let answer = place_order(&ordering, &token, Some("big"), big).await;
    assert_problem(&answer, StatusCode::PAYLOAD_TOO_LARGE);

    assert_eq!(env.payment.calls(), 0);
    assert_eq!(ordering.order_count().await.unwrap(), 0);
    ordering.shutdown().await;
}

async fn preview_has_the_documented_shape(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let lamp = product(&env, &ordering, "Lamp", 1999).await;
    // Priced, but the catalog replica has no name for it yet.
    let unnamed = Uuid::now_v7();
    set_price(&env, &ordering, unnamed, 500, "EUR").await;
    let (_, token) = customer_with_data(&env, &ordering).await;

    let (status, _, preview) = call(
        &ordering.router(),
        Method::POST,
        "/api/ordering/checkout/preview",
        Some(&token),
        &[],
        Some(lines(&[(lamp, 3), (unnamed, 1)])),
    )
    .await;

    assert_eq!(status, StatusCode::OK, "{preview}");
    let mut keys: Vec<_> = preview.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "address_as_of",
            "address_source",
            "currency",
            "lines",
            "payment_method",
            "shipping_address",
            "total_cents"
        ]
    );
    assert_eq!(
        preview["lines"][0],
        json!({"product_id": lamp, "name": "Lamp", "quantity": 3,
               "unit_price_cents": 1999, "line_total_cents": 5997})
    );
    assert_eq!(preview["lines"][1]["name"], serde_json::Value::Null);
    assert_eq!(preview["total_cents"], 5997 + 500);
    assert_eq!(preview["currency"], "EUR");
    assert_eq!(preview["shipping_address"]["line1"], "Main St 1");
    assert_eq!(preview["address_source"], "replica");
    // The address event's changed_at (version 2 in the helper).
    assert_eq!(preview["address_as_of"], "2023-11-14T22:13:22Z");
    assert_eq!(preview["payment_method"], json!({"last4": "4242"}));

    // Nothing known about a customer: nulls, not errors.
    let (_, stranger) = env.issuer.customer();
    let (status, _, preview) = call(
        &ordering.router(),
        Method::POST,
        "/api/ordering/checkout/preview",
        Some(&stranger),
        &[],
        Some(lines(&[(lamp, 1)])),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(preview["shipping_address"], serde_json::Value::Null);
    assert_eq!(preview["address_source"], serde_json::Value::Null);
    assert_eq!(preview["payment_method"], serde_json::Value::Null);
    // No order, no payment.
    assert_eq!(env.payment.calls(), 0);
    ordering.shutdown().await;
}

async fn settings_switch_at_runtime(backend: Backend) {
    let Some((_env, ordering)) = start(backend).await else {
        return;
    };
    let router = ordering.router();
    let path = "/internal/ordering/settings";
    let (status, _, body) = call(&router, Method::GET, path, None, &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"customer_data": "replica"}));
    let (status, _, body) = call(
        &router,
        Method::PUT,
        path,
        None,
        &[],
        Some(json!({"customer_data": "sync"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"customer_data": "sync"}));
    assert_eq!(ordering.customer_data().await.unwrap(), CustomerData::Sync);
    let (status, _, _) = call(
        &router,
        Method::PUT,
        path,
        None,
        &[],
        Some(json!({"customer_data": "sometimes"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    ordering
        .set_customer_data(CustomerData::Replica)
        .await
        .unwrap();
    let (_, _, body) = call(&router, Method::GET, path, None, &[], None).await;
    assert_eq!(body, json!({"customer_data": "replica"}));
    ordering.shutdown().await;
}

async fn the_settings_lever_takes_a_service_token_only(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let router = ordering.router();
    let (_, customer) = env.issuer.customer();
    let (_, admin) = env.issuer.admin();
    let foreign = agora_auth::InternalKey::generate()
        .service("gateway")
        .token_for("ordering")
        .unwrap();
    let sync = json!({"customer_data": "sync"});
    for (token, status) in [
        (customer.as_str(), StatusCode::FORBIDDEN),
        (admin.as_str(), StatusCode::FORBIDDEN),
        (foreign.as_str(), StatusCode::UNAUTHORIZED),
        ("", StatusCode::UNAUTHORIZED),
    ] {
        for path in ["/internal/ordering/settings", "/internal/ordering/breakers"] {
            let (got, content_type, _) = call(
                &router,
                Method::PUT,
                path,
                Some(token),
                &[],
                Some(sync.clone()),
            )
            .await;
            // The breakers take no PUT: 405 whoever asks.
            if path.ends_with("settings") {
                assert_eq!(
                    (got, content_type.as_str()),
                    (status, "application/problem+json")
                );
            }
            let (got, _, body) = call(&router, Method::GET, path, Some(token), &[], None).await;
            assert_eq!(got, status, "{path}: {body}");
        }
    }
    assert_eq!(
        ordering.customer_data().await.unwrap(),
        CustomerData::Replica
    );
    ordering.shutdown().await;
}

/// Its store out of reach (a database restarting), checkout answers 503 with
/// Retry-After, not a 500: the client should come back, nothing went wrong with it.
async fn a_store_that_cannot_answer_is_a_503_to_retry(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let lamp = product(&env, &ordering, "Lamp", 1000).await;
    let (_, token) = customer_with_data(&env, &ordering).await;
    ordering.db().pool().close().await;
    let answer = place_order(&ordering, &token, Some("k1"), lines(&[(lamp, 1)])).await;
    assert_problem(&answer, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers.contains_key(header::RETRY_AFTER));
    ordering.shutdown().await;
}
