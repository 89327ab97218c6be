//! Fulfilment: the capture on `OrderAccepted`, exactly once, and the compensations
//! (refund, void), idempotent and racing each other and the capture.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_bus::Bus;
use agora_contracts::{
    AuthorizationVoided, CustomerBilled, Event, OrderAccepted, PaymentAuthorized, PaymentFailed,
    PaymentOperation, PaymentRefunded, bus_subject,
};
use agora_messaging::{Context, Envelope};
use agora_payment::SimulatedProvider;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{
    Answer, Backend, Env, FakeProvider, authorize, call_raw, get_authorization, give_back,
    order_accepted, request_body,
};

crate::on_both_backends!(
    a_duplicated_order_acceptance_captures_once,
    a_declined_capture_fails_the_payment_and_can_still_be_voided,
    an_unavailable_provider_is_retried_until_the_capture_succeeds,
    a_refund_after_the_capture_happens_once,
    a_void_before_the_capture_happens_once_and_the_capture_never_does,
    a_void_after_the_capture_refunds,
    a_refund_before_the_capture_voids,
    concurrent_compensations_make_one_provider_call_and_one_event,
    unknown_authorizations_and_foreign_orders_are_refused,
    an_unavailable_provider_leaves_a_compensation_to_retry,
);

/// A fresh authorization through the router; its answer body.
async fn authorized(router: &axum::Router) -> Value {
    let answer = authorize(router, &request_body()).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    answer.body
}

fn id_of(authorization: &Value) -> &str {
    authorization["authorization_id"].as_str().unwrap()
}

fn order_of(authorization: &Value) -> &str {
    authorization["order_id"].as_str().unwrap()
}

/// The events about `authorization`, by type, in order.
fn types_of(events: &[Envelope], authorization: &Value) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.subject == id_of(authorization))
        .map(|e| e.event_type.clone())
        .collect()
}

/// Waits until `authorization` has `status`.
async fn wait_for_status(router: &axum::Router, authorization: &Value, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let read = get_authorization(router, id_of(authorization)).await;
        assert_eq!(read.status, StatusCode::OK);
        if read.body["status"] == status {
            return read.body;
        }
        assert!(Instant::now() < deadline, "never {status}: {}", read.body);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn a_duplicated_order_acceptance_captures_once(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let provider = FakeProvider::new(Answer::Approve);
    let payment = env.start(provider.clone()).await;
    let router = payment.router();
    let authorization = authorized(&router).await;

    // The same message twice (the bus deduplicates it), the same event in another
    // envelope (as a republishing producer would send it: the inbox does not know it),
    // and a delivery after a restart.
    let first = env.accept_order(&authorization).await;
    env.publish(&first).await;
    let again = Envelope::new(
        &order_accepted(&authorization),
        &Context::new(order_of(&authorization)),
    )
    .unwrap();
    env.publish(&again).await;
    env.orders_settled().await;
    payment.shutdown().await;
    let payment = env.start(provider.clone()).await;
    let router = payment.router();
    let third = Envelope::new(
        &order_accepted(&authorization),
        &Context::new(order_of(&authorization)),
    )
    .unwrap();
    env.publish(&third).await;
    env.orders_settled().await;

    assert_eq!(provider.settlements("capture"), 1);
    assert_eq!(
        provider.keys("capture"),
        vec![format!("capture-{}", id_of(&authorization))]
    );
    let events = env.events_before_sentinel(&router).await;
    assert_eq!(
        types_of(&events, &authorization),
        vec![PaymentAuthorized::TYPE, CustomerBilled::TYPE]
    );
    let billed = &events[1];
    assert_eq!(billed.source, "payment");
    assert_eq!(billed.correlation_id, order_of(&authorization));
    let causation = billed.causation_id.clone().unwrap();
    assert!(
        causation == first.id.to_string() || causation == again.id.to_string(),
        "{causation}"
    );
    let event: CustomerBilled = billed.decode().unwrap();
    assert_eq!(event.authorization_id.to_string(), id_of(&authorization));
    assert_eq!(event.order_id.to_string(), order_of(&authorization));
    assert_eq!(
        event.customer_id.to_string(),
        authorization["customer_id"].as_str().unwrap()
    );
    assert_eq!(event.amount.amount_cents, 4_990);
    assert_eq!(event.amount.currency, "EUR");
    assert_eq!(event.version, 2);

    let read = get_authorization(&router, id_of(&authorization)).await;
    assert_eq!(read.body["status"], "captured");
    assert_eq!(read.body["captured_cents"], 4_990);
    assert_eq!(read.body["refunded_cents"], 0);
    assert_eq!(read.body["capture_id"], json!(event.capture_id));
    assert_eq!(read.body["version"], 2);
    let captured_at = time::OffsetDateTime::parse(
        read.body["captured_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(captured_at, event.billed_at);
    payment.shutdown().await;
}

async fn a_declined_capture_fails_the_payment_and_can_still_be_voided(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    // The simulated provider's token for "authorized, but the capture is declined".
    let payment = env.start(Arc::new(SimulatedProvider::default())).await;
    let router = payment.router();
    let mut body = request_body();
    body["payment_token"] = json!("tok_capture_fails");
    let answer = authorize(&router, &body).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let authorization = answer.body;
    let accepted = env.accept_order(&authorization).await;
    let failed = wait_for_status(&router, &authorization, "capture_failed").await;
    assert_eq!(failed["captured_cents"], 0);
    assert_eq!(failed["capture_failure"], "capture_declined");
    assert_eq!(failed["version"], 2);
    // Redelivered: still one failure.
    let again = Envelope::new(
        &order_accepted(&authorization),
        &Context::new(order_of(&authorization)),
    )
    .unwrap();
    env.publish(&again).await;
    env.orders_settled().await;

    // Fulfilment gives the money back: the hold is voided.
    let voided = give_back(
        &router,
        id_of(&authorization),
        "refund",
        order_of(&authorization),
    )
    .await;
    assert_eq!(voided.status, StatusCode::OK, "{}", voided.body);
    assert_eq!(
        voided.body,
        json!({"authorization_id": id_of(&authorization), "status": "voided"})
    );

    let events = env.events_before_sentinel(&router).await;
    assert_eq!(
        types_of(&events, &authorization),
        vec![
            PaymentAuthorized::TYPE,
            PaymentFailed::TYPE,
            AuthorizationVoided::TYPE
        ]
    );
    let failure: PaymentFailed = events[1].decode().unwrap();
    assert_eq!(failure.operation, PaymentOperation::Capture);
    assert_eq!(failure.reason, "capture_declined");
    assert_eq!(failure.order_id.to_string(), order_of(&authorization));
    assert_eq!(failure.version, 2);
    assert_eq!(
        events[1].causation_id.as_deref(),
        Some(accepted.id.to_string().as_str())
    );
    let void: AuthorizationVoided = events[2].decode().unwrap();
    assert_eq!(void.version, 3);
    assert_eq!(void.amount.amount_cents, 4_990);
    payment.shutdown().await;
}

async fn an_unavailable_provider_is_retried_until_the_capture_succeeds(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let provider = FakeProvider::new(Answer::Approve);
    provider.script_settlements([Answer::Unavailable, Answer::Unavailable]);
    let payment = env.start(provider.clone()).await;
    let router = payment.router();
    let authorization = authorized(&router).await;
    env.accept_order(&authorization).await;
    let captured = wait_for_status(&router, &authorization, "captured").await;
    assert_eq!(captured["version"], 2);
    env.orders_settled().await;
    // Twice unavailable (nothing recorded), then captured, always under the same key.
    assert_eq!(provider.settlements("capture"), 3);
    let key = format!("capture-{}", id_of(&authorization));
    assert_eq!(
        provider.keys("capture"),
        vec![key.clone(), key.clone(), key]
    );
    let events = env.events_before_sentinel(&router).await;
    assert_eq!(
        types_of(&events, &authorization),
        vec![PaymentAuthorized::TYPE, CustomerBilled::TYPE]
    );
    payment.shutdown().await;
}

async fn a_refund_after_the_capture_happens_once(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let provider = FakeProvider::new(Answer::Approve);
    let payment = env.start(provider.clone()).await;
    let router = payment.router();
    let authorization = authorized(&router).await;
    env.accept_order(&authorization).await;
    wait_for_status(&router, &authorization, "captured").await;

    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let first = crate::support::call_with_headers(
        &router,
        Method::POST,
        &format!(
            "/internal/payment/authorizations/{}/refund",
            id_of(&authorization)
        ),
        &[("traceparent", traceparent)],
        Some((
            "application/json",
            json!({"order_id": order_of(&authorization), "reason": "out_of_stock"})
                .to_string()
                .into_bytes(),
        )),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["status"], "refunded");
    assert_eq!(first.body["authorization_id"], id_of(&authorization));
    let refund_id = first.body["refund_id"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        let again = give_back(
            &router,
            id_of(&authorization),
            "refund",
            order_of(&authorization),
        )
        .await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(again.body, first.body);
    }
    // The reason is optional.
    let bare = call_raw(
        &router,
        Method::POST,
        &format!(
            "/internal/payment/authorizations/{}/refund",
            id_of(&authorization)
        ),
        Some((
            "application/json",
            json!({"order_id": order_of(&authorization)})
                .to_string()
                .into_bytes(),
        )),
    )
    .await;
    assert_eq!(bare.body, first.body);
    assert_eq!(provider.settlements("refund"), 1);
    assert_eq!(provider.settlements("void"), 0);
    assert_eq!(
        provider.keys("refund"),
        vec![format!("refund-{}", id_of(&authorization))]
    );

    let read = get_authorization(&router, id_of(&authorization)).await;
    assert_eq!(read.body["status"], "refunded");
    assert_eq!(read.body["captured_cents"], 4_990);
    assert_eq!(read.body["refunded_cents"], 4_990);
    assert_eq!(read.body["refund_id"], refund_id.as_str());
    assert!(read.body["refunded_at"].is_string());
    assert_eq!(read.body["version"], 3);

    let events = env.events_before_sentinel(&router).await;
    assert_eq!(
        types_of(&events, &authorization),
        vec![
            PaymentAuthorized::TYPE,
            CustomerBilled::TYPE,
            PaymentRefunded::TYPE
        ]
    );
    let envelope = &events[2];
    assert_eq!(envelope.correlation_id, order_of(&authorization));
    assert_eq!(envelope.traceparent.as_deref(), Some(traceparent));
    let refunded: PaymentRefunded = envelope.decode().unwrap();
    assert_eq!(refunded.refund_id.to_string(), refund_id);
    assert_eq!(refunded.amount.amount_cents, 4_990);
    assert_eq!(refunded.version, 3);
    payment.shutdown().await;
}

async fn a_void_before_the_capture_happens_once_and_the_capture_never_does(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let provider = FakeProvider::new(Answer::Approve);
    let payment = env.start(provider.clone()).await;
    let router = payment.router();
    let authorization = authorized(&router).await;
    let expected = json!({"authorization_id": id_of(&authorization), "status": "voided"});
    for _ in 0..3 {
        let voided = give_back(
            &router,
            id_of(&authorization),
            "void",
            order_of(&authorization),
        )
        .await;
        assert_eq!(voided.status, StatusCode::OK, "{}", voided.body);
        assert_eq!(voided.body, expected);
    }
    // The order's acceptance arrives after the compensation: no capture.
    env.accept_order(&authorization).await;
    env.orders_settled().await;
    assert_eq!(provider.settlements("capture"), 0);
    assert_eq!(provider.settlements("void"), 1);
    assert_eq!(
        provider.keys("void"),
        vec![format!("void-{}", id_of(&authorization))]
    );

    let read = get_authorization(&router, id_of(&authorization)).await;
    assert_eq!(read.body["status"], "voided");
    assert_eq!(read.body["captured_cents"], 0);
    assert!(read.body["voided_at"].is_string());
    assert_eq!(read.body["version"], 2);
    let events = env.events_before_sentinel(&router).await;
    assert_eq!(
        types_of(&events, &authorization),
        vec![PaymentAuthorized::TYPE, AuthorizationVoided::TYPE]
    );
    let voided: AuthorizationVoided = events[1].decode().unwrap();
    assert_eq!(voided.order_id.to_string(), order_of(&authorization));
    assert_eq!(voided.amount.amount_cents, 4_990);
    assert_eq!(voided.version, 2);
    payment.shutdown().await;
}

async fn a_void_after_the_capture_refunds(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let provider = FakeProvider::new(Answer::Approve);
    let payment = env.start(provider.clone()).await;
    let router = payment.router();
    let authorization = authorized(&router).await;
    env.accept_order(&authorization).await;
    wait_for_status(&router, &authorization, "captured").await;
    let first = give_back(
        &router,
        id_of(&authorization),
        "void",
        order_of(&authorization),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["status"], "refunded");
    assert!(first.body["refund_id"].is_string());
    // Repeated, by either route: the same answer.
    for operation in ["void", "refund"] {
        let again = give_back(
            &router,
            id_of(&authorization),
            operation,
            order_of(&authorization),
        )
        .await;
        assert_eq!(again.body, first.body);
    }
    assert_eq!(provider.settlements("refund"), 1);
    assert_eq!(provider.settlements("void"), 0);
    let events = env.events_before_sentinel(&router).await;
    assert_eq!(
        types_of(&events, &authorization),
        vec![
            PaymentAuthorized::TYPE,
            CustomerBilled::TYPE,
            PaymentRefunded::TYPE
        ]
    );
    payment.shutdown().await;
}

async fn a_refund_before_the_capture_voids(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let provider = FakeProvider::new(Answer::Approve);
    let payment = env.start(provider.clone()).await;
    let router = payment.router();
    let authorization = authorized(&router).await;
    let first = give_back(
        &router,
        id_of(&authorization),
        "refund",
        order_of(&authorization),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(
        first.body,
        json!({"authorization_id": id_of(&authorization), "status": "voided"})
    );
    for operation in ["refund", "void"] {
        let again = give_back(
            &router,
            id_of(&authorization),
            operation,
            order_of(&authorization),
        )
        .await;
        assert_eq!(again.body, first.body);
    }
    env.accept_order(&authorization).await;
    env.orders_settled().await;
    assert_eq!(provider.settlements("void"), 1);
    assert_eq!(provider.settlements("refund"), 0);
    assert_eq!(provider.settlements("capture"), 0);
    let events = env.events_before_sentinel(&router).await;
    assert_eq!(
        types_of(&events, &authorization),
        vec![PaymentAuthorized::TYPE, AuthorizationVoided::TYPE]
    );
    payment.shutdown().await;
}

async fn concurrent_compensations_make_one_provider_call_and_one_event(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let provider = FakeProvider::new(Answer::Approve);
    let payment = env.start(provider.clone()).await;
    let router = payment.router();
    // One authorization compensated before its capture, one after.
    let uncaptured = authorized(&router).await;
    let captured = authorized(&router).await;
    env.accept_order(&captured).await;
    wait_for_status(&router, &captured, "captured").await;

    // The first compensation of each authorization waits at the provider while the
    // others arrive.
    provider.gate_settlements();
    let calls: Vec<_> = (0..16)
        .map(|n| {
            let router = router.clone();
            let authorization = if n % 2 == 0 {
                uncaptured.clone()
            } else {
                captured.clone()
            };
            let operation = if n % 4 < 2 { "refund" } else { "void" };
            tokio::spawn(async move {
                let answer = give_back(
                    &router,
                    id_of(&authorization),
                    operation,
                    order_of(&authorization),
                )
                .await;
                (authorization, answer)
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while provider.settlements("void") + provider.settlements("refund") == 0 {
        assert!(Instant::now() < deadline, "the provider was never called");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Meanwhile, no second call for the same authorization reaches the provider: the
    // others wait for its lock. (On PostgreSQL the other authorization's first call
    // may; on SQLite the lock is the whole store's.)
    let window = Instant::now() + Duration::from_millis(200);
    while Instant::now() < window {
        assert!(provider.settlements("void") <= 1);
        assert!(provider.settlements("refund") <= 1);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    provider.open_settlements();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    for (authorization, answer) in &answers {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        let expected = if authorization == &captured {
            "refunded"
        } else {
            "voided"
        };
        assert_eq!(answer.body["status"], expected);
        let same = answers
            .iter()
            .find(|(other, _)| other == authorization)
            .unwrap();
        assert_eq!(answer.body, same.1.body);
    }
    assert_eq!(provider.settlements("void"), 1);
    assert_eq!(provider.settlements("refund"), 1);
    let events = env.events_before_sentinel(&router).await;
    assert_eq!(
        types_of(&events, &uncaptured),
        vec![PaymentAuthorized::TYPE, AuthorizationVoided::TYPE]
    );
    assert_eq!(
        types_of(&events, &captured),
        vec![
            PaymentAuthorized::TYPE,
            CustomerBilled::TYPE,
            PaymentRefunded::TYPE
        ]
    );
    payment.shutdown().await;
}

async fn unknown_authorizations_and_foreign_orders_are_refused(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let provider = FakeProvider::new(Answer::Approve);
    let payment = env.start(provider.clone()).await;
    let router = payment.router();
    let authorization = authorized(&router).await;
    let order = order_of(&authorization).to_owned();

    for operation in ["refund", "void"] {
        for id in [Uuid::now_v7().to_string(), "nope".to_owned()] {
            give_back(&router, &id, operation, &order)
                .await
                .assert_problem(StatusCode::NOT_FOUND);
        }
        // Another order's authorization.
        let foreign = give_back(
            &router,
            id_of(&authorization),
            operation,
            &Uuid::now_v7().to_string(),
        )
        .await;
        foreign.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            foreign.body["errors"],
            json!([{"field": "order_id", "message": "is not the order of this authorization"}])
        );
        let path = format!(
            "/internal/payment/authorizations/{}/{operation}",
            id_of(&authorization)
        );
        for body in [
            json!({}),
            json!({"order_id": "x"}),
            json!({"order_id": order, "reason": "r".repeat(201)}),
            json!({"order_id": order, "reason": "a\nb"}),
        ] {
            call_raw(
                &router,
                Method::POST,
                &path,
                Some(("application/json", body.to_string().into_bytes())),
            )
            .await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
        }
        call_raw(
            &router,
            Method::POST,
            &path,
            Some(("text/plain", b"{}".to_vec())),
        )
        .await
        .assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    assert_eq!(
        provider.settlements("refund") + provider.settlements("void"),
        0
    );

    // An accepted order naming an authorization payment does not know: dead-lettered
    // at once, with the reason.
    let mut unknown = order_accepted(&authorization);
    unknown.payment_authorization_id = Uuid::now_v7();
    let envelope = Envelope::new(&unknown, &Context::new(order.clone())).unwrap();
    env.publish(&envelope).await;
    env.orders_settled().await;
    let dead = env.bus.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].consumer, agora_payment::CONSUMER_ORDERS);
    assert_eq!(dead[0].subject, bus_subject::<OrderAccepted>());
    assert_eq!(dead[0].message_id, envelope.id.to_string());
    assert_eq!(dead[0].deliveries, 1);
    assert!(
        dead[0].reason.contains("does not know")
            && dead[0]
                .reason
                .contains(&unknown.payment_authorization_id.to_string()),
        "{}",
        dead[0].reason
    );
    assert_eq!(provider.settlements("capture"), 0);
    let read = get_authorization(&router, id_of(&authorization)).await;
    assert_eq!(read.body["status"], "authorized");
    assert_eq!(read.body["version"], 1);
    payment.shutdown().await;
}

async fn an_unavailable_provider_leaves_a_compensation_to_retry(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let provider = FakeProvider::new(Answer::Approve);
    provider.script_settlements([Answer::Unavailable, Answer::Decline("do_not_honor")]);
    let payment = env.start(provider.clone()).await;
    let router = payment.router();
    let authorization = authorized(&router).await;
    let unavailable = give_back(
        &router,
        id_of(&authorization),
        "void",
        order_of(&authorization),
    )
    .await;
    unavailable.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(unavailable.headers.get("retry-after").is_some());
    let refused = give_back(
        &router,
        id_of(&authorization),
        "void",
        order_of(&authorization),
    )
    .await;
    refused.assert_problem(StatusCode::BAD_GATEWAY);
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("do_not_honor")
    );
    let read = get_authorization(&router, id_of(&authorization)).await;
    assert_eq!(read.body["status"], "authorized");
    // The retry succeeds, under the same provider key.
    let voided = give_back(
        &router,
        id_of(&authorization),
        "void",
        order_of(&authorization),
    )
    .await;
    assert_eq!(voided.status, StatusCode::OK, "{}", voided.body);
    assert_eq!(voided.body["status"], "voided");
    let key = format!("void-{}", id_of(&authorization));
    assert_eq!(provider.keys("void"), vec![key.clone(), key.clone(), key]);
    let events = env.events_before_sentinel(&router).await;
    assert_eq!(
        types_of(&events, &authorization),
        vec![PaymentAuthorized::TYPE, AuthorizationVoided::TYPE]
    );
    payment.shutdown().await;
}
