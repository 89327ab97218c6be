//! Every route and every answer it can give, through the router.

use std::sync::Arc;

use agora_contracts::PaymentAuthorized;
use agora_payment::SimulatedProvider;
use axum::http::{Method, StatusCode, header};
use serde_json::json;
use uuid::Uuid;

use crate::support::{
    Answer, Backend, Env, FakeProvider, authorize, call_raw, call_with_headers, get_authorization,
    request_body,
};

crate::on_both_backends!(
    an_authorization_is_answered_stored_and_published,
    simulated_tokens_decline_with_402,
    invalid_requests_are_refused_with_the_fields_named,
    unknown_and_malformed_ids_are_not_found,
    the_event_carries_the_callers_trace,
    only_a_service_token_for_payment_reaches_a_route,
    the_provider_is_asked_with_the_request_id_as_its_idempotency_key,
);

async fn an_authorization_is_answered_stored_and_published(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let payment = env.start(Arc::new(SimulatedProvider::default())).await;
    let router = payment.router();
    let body = request_body();
    let answer = authorize(&router, &body).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let id = answer.body["authorization_id"].as_str().unwrap().to_owned();
    for field in [
        "request_id",
        "order_id",
        "customer_id",
        "amount_cents",
        "currency",
    ] {
        assert_eq!(answer.body[field], body[field], "{field}");
    }
    assert_eq!(answer.body["status"], "authorized");
    let authorized_at = answer.body["authorized_at"].as_str().unwrap();
    time::OffsetDateTime::parse(
        authorized_at,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    // Never the token.
    assert!(!answer.body.to_string().contains("tok_visa"));

    let read = get_authorization(&router, &id).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body, answer.body);

    let events = env.events(1).await;
    assert_eq!(events.len(), 1);
    let envelope = &events[0];
    assert_eq!(envelope.source, "payment");
    assert_eq!(envelope.subject, id);
    assert_eq!(envelope.correlation_id, body["order_id"].as_str().unwrap());
    let event: PaymentAuthorized = envelope.decode().unwrap();
    assert_eq!(event.authorization_id.to_string(), id);
    assert_eq!(
        event.order_id.to_string(),
        body["order_id"].as_str().unwrap()
    );
    assert_eq!(
        event.customer_id.to_string(),
        body["customer_id"].as_str().unwrap()
    );
    assert_eq!(event.amount.amount_cents, 4_990);
    assert_eq!(event.amount.currency, "EUR");
    assert_eq!(event.version, 1);
    assert!(event.expires_at.unwrap() > event.authorized_at);
    assert!(
        !envelope
            .to_json()
            .unwrap()
            .windows(8)
            .any(|w| w == b"tok_visa")
    );
    payment.shutdown().await;
}

async fn simulated_tokens_decline_with_402(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let payment = env.start(Arc::new(SimulatedProvider::default())).await;
    let router = payment.router();
    for (token, reason) in [
        ("tok_declined", "card_declined"),
        ("tok_mastercard", "unknown_token"),
    ] {
        let mut body = request_body();
        body["payment_token"] = json!(token);
        let answer = authorize(&router, &body).await;
        answer.assert_problem(StatusCode::PAYMENT_REQUIRED);
        assert_eq!(answer.body["type"], "urn:agora:problem:payment-declined");
        assert!(answer.body["detail"].as_str().unwrap().contains(reason));
    }
    // Every decline is final: no event. The next event is this sentinel's.
    let sentinel = authorize(&router, &request_body()).await;
    assert_eq!(sentinel.status, StatusCode::CREATED);
    let events = env.events(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].subject,
        sentinel.body["authorization_id"].as_str().unwrap()
    );
    payment.shutdown().await;
}

async fn invalid_requests_are_refused_with_the_fields_named(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let provider = FakeProvider::new(Answer::Approve);
    let payment = env.start(provider.clone()).await;
    let router = payment.router();
    let with = |field: &str, value: serde_json::Value| {
        let mut body = request_body();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = request_body();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases = [
        (with("amount_cents", json!(0)), vec!["amount_cents"]),
        (with("amount_cents", json!(-100)), vec!["amount_cents"]),
        (
            with("amount_cents", json!(10_000_000_001_i64)),
            vec!["amount_cents"],
        ),
        (with("amount_cents", json!(1.5)), vec!["amount_cents"]),
        (with("currency", json!("eur")), vec!["currency"]),
        (with("currency", json!("EURO")), vec!["currency"]),
        (with("payment_token", json!("")), vec!["payment_token"]),
        (
            with("payment_token", json!("tok visa")),
            vec!["payment_token"],
        ),
        (with("request_id", json!("not-a-uuid")), vec!["request_id"]),
        (with("order_id", json!(42)), vec!["order_id"]),
        (without("customer_id"), vec!["customer_id"]),
        (
            {
                let mut body = with("amount_cents", json!(0));
                body["currency"] = json!("eu");
                body
            },
            vec!["amount_cents", "currency"],
        ),
    ];
    for (body, fields) in cases {
        let answer = authorize(&router, &body).await;
        answer.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
        let named: Vec<_> = answer.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(named, fields, "{body}");
    }
    let path = "/internal/payment/authorizations";
    call_raw(
        &router,
        Method::POST,
        path,
        Some(("application/json", b"{".to_vec())),
    )
    .await
    .assert_problem(StatusCode::BAD_REQUEST);
    let text = request_body().to_string().into_bytes();
    call_raw(&router, Method::POST, path, Some(("text/plain", text)))
        .await
        .assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = with("payment_token", json!("t".repeat(70 * 1024)));
    authorize(&router, &huge)
        .await
        .assert_problem(StatusCode::PAYLOAD_TOO_LARGE);
    // None of it reached the provider.
    assert_eq!(provider.calls(), 0);
    payment.shutdown().await;
}

async fn unknown_and_malformed_ids_are_not_found(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let payment = env.start(FakeProvider::new(Answer::Approve)).await;
    let router = payment.router();
    for id in [Uuid::now_v7().to_string(), "nope".to_owned()] {
        let answer = get_authorization(&router, &id).await;
        answer.assert_problem(StatusCode::NOT_FOUND);
    }
    // A request id is not an authorization id.
    let body = request_body();
    let answer = authorize(&router, &body).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    get_authorization(&router, body["request_id"].as_str().unwrap())
        .await
        .assert_problem(StatusCode::NOT_FOUND);
    let unrouted = call_raw(
        &router,
        Method::GET,
        "/internal/payment/authorizations",
        None,
    )
    .await;
    assert_eq!(unrouted.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(unrouted.headers.get(header::ALLOW).is_some());
    payment.shutdown().await;
}

#[test]
fn the_public_description_has_no_paths() {
    let doc = serde_json::to_value(agora_payment::openapi()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(doc["info"]["title"], "Agora payment");
    assert_eq!(doc["paths"], json!({}));
}

async fn the_event_carries_the_callers_trace(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let payment = env.start(FakeProvider::new(Answer::Approve)).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let answer = call_with_headers(
        &payment.router(),
        Method::POST,
        "/internal/payment/authorizations",
        &[("traceparent", traceparent)],
        Some(("application/json", request_body().to_string().into_bytes())),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let events = env.events(1).await;
    assert_eq!(events[0].traceparent.as_deref(), Some(traceparent));
    payment.shutdown().await;
}

async fn only_a_service_token_for_payment_reaches_a_route(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let provider = FakeProvider::new(Answer::Approve);
    let payment = env.start(provider.clone()).await;
    let router = payment.router();
    let issuer = agora_auth::TestIssuer::new();
    let (_, customer) = issuer.customer();
    let (_, admin) = issuer.admin();
    let plane = &crate::support::TEST_PLANE;
    let bearer = |token: String| format!("Bearer {token}");
    let refused = [
        (None, StatusCode::UNAUTHORIZED),
        (
            Some(bearer(
                plane.service("ordering").token_for("customer").unwrap(),
            )),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Some(bearer(
                agora_auth::InternalKey::generate()
                    .service("ordering")
                    .token_for("payment")
                    .unwrap(),
            )),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Some("Bearer not-a-jwt".to_owned()),
            StatusCode::UNAUTHORIZED,
        ),
        (Some(bearer(customer)), StatusCode::FORBIDDEN),
        (Some(bearer(admin)), StatusCode::FORBIDDEN),
    ];
    let id = Uuid::now_v7();
    let body = request_body().to_string().into_bytes();
    let routes = [
        (Method::POST, "/internal/payment/authorizations".to_owned()),
        (
            Method::GET,
            format!("/internal/payment/authorizations/{id}"),
        ),
        (
            Method::POST,
            format!("/internal/payment/authorizations/{id}/refund"),
        ),
        (
            Method::POST,
            format!("/internal/payment/authorizations/{id}/void"),
        ),
    ];
    for (method, path) in &routes {
        for (authorization, status) in &refused {
            // A header that is not a bearer token at all stands for "none".
            let header = authorization.as_deref().unwrap_or("Basic Zm9vOmJhcg==");
            let answer = call_with_headers(
                &router,
                method.clone(),
                path,
                &[("authorization", header)],
                Some(("application/json", body.clone())),
            )
            .await;
            answer.assert_problem(*status);
        }
    }
    assert_eq!(provider.calls(), 0, "nothing reached the provider");
    // With ordering's token for payment, the same request goes through.
    let answer = authorize(&router, &request_body()).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    payment.shutdown().await;
}

async fn the_provider_is_asked_with_the_request_id_as_its_idempotency_key(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    // Unavailable once: the retry asks again under the same key.
    let provider = FakeProvider::scripted([Answer::Unavailable], Answer::Approve);
    let payment = env.start(provider.clone()).await;
    let router = payment.router();
    let body = request_body();
    assert_eq!(
        authorize(&router, &body).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(authorize(&router, &body).await.status, StatusCode::CREATED);
    let request_id = body["request_id"].as_str().unwrap().to_owned();
    assert_eq!(provider.authorize_keys(), [request_id.clone(), request_id]);
    payment.shutdown().await;
}
