//! A request id is authorized at most once: retries, concurrent duplicates, reused
//! ids, declines and an unavailable provider.

use std::time::{Duration, Instant};

use agora_contracts::PaymentAuthorized;
use axum::http::{StatusCode, header};
use serde_json::json;

use crate::support::{
    Answer, Backend, Env, FakeProvider, authorize, authorize_with_budget, request_body,
};

crate::on_both_backends!(
    a_retry_gets_the_same_authorization_without_a_second_call,
    concurrent_duplicates_make_one_call_and_one_authorization,
    a_request_id_reused_with_another_body_is_refused,
    a_decline_is_recorded_and_replayed,
    an_unavailable_provider_is_a_503_and_a_retry_succeeds,
    a_provider_slower_than_the_timeout_counts_as_unavailable,
    a_claim_left_by_a_crashed_process_is_taken_over_after_its_lease,
    a_spent_budget_starts_nothing_and_bounds_the_wait,
);

async fn a_retry_gets_the_same_authorization_without_a_second_call(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let provider = FakeProvider::new(Answer::Approve);
    let payment = env.start(provider.clone()).await;
    let router = payment.router();
    let body = request_body();
    let first = authorize(&router, &body).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    for _ in 0..3 {
        let retry = authorize(&router, &body).await;
        assert_eq!(retry.status, StatusCode::CREATED);
        assert_eq!(retry.body, first.body);
    }
    // Also after a restart.
    payment.shutdown().await;
    let payment = env.start(provider.clone()).await;
    let retry = authorize(&payment.router(), &body).await;
    assert_eq!(retry.body, first.body);
    assert_eq!(provider.calls(), 1);

    let sentinel = authorize(&payment.router(), &request_body()).await;
    assert_eq!(sentinel.status, StatusCode::CREATED);
    let events = env.events(2).await;
    assert_eq!(events.len(), 2, "one event per authorization");
    let event: PaymentAuthorized = events[0].decode().unwrap();
    assert_eq!(
        event.authorization_id.to_string(),
        first.body["authorization_id"].as_str().unwrap()
    );
    payment.shutdown().await;
}

async fn concurrent_duplicates_make_one_call_and_one_authorization(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    // The first call waits at the gate until the test opens it, so that the
    // duplicates arrive while the request is pending.
    let provider = FakeProvider::gated(Answer::Approve);
    let payment = env.start(provider.clone()).await;
    let router = payment.router();
    let body = request_body();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let router = router.clone();
            let body = body.clone();
            tokio::spawn(async move { authorize(&router, &body).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while provider.calls() == 0 {
        assert!(Instant::now() < deadline, "the provider was never called");
        tokio::task::yield_now().await;
    }
    provider.open();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    assert_eq!(provider.calls(), 1);
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        assert_eq!(answer.body, answers[0].body);
    }

    let sentinel = authorize(&router, &request_body()).await;
    let events = env.events(2).await;
    assert_eq!(events.len(), 2, "one event per authorization");
    assert_eq!(
        events[0].subject,
        answers[0].body["authorization_id"].as_str().unwrap()
    );
    assert_eq!(
        events[1].subject,
        sentinel.body["authorization_id"].as_str().unwrap()
    );
    payment.shutdown().await;
}

async fn a_request_id_reused_with_another_body_is_refused(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let provider = FakeProvider::new(Answer::Approve);
    let payment = env.start(provider.clone()).await;
    let router = payment.router();
    let body = request_body();
    let first = authorize(&router, &body).await;
    assert_eq!(first.status, StatusCode::CREATED);
    for (field, value) in [
        ("order_id", json!(uuid::Uuid::now_v7())),
        ("customer_id", json!(uuid::Uuid::now_v7())),
        ("amount_cents", json!(4_991)),
        ("currency", json!("USD")),
        ("payment_token", json!("tok_declined")),
    ] {
        let mut other = body.clone();
        other[field] = value;
        let answer = authorize(&router, &other).await;
        answer.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            answer.body["errors"],
            json!([{"field": "request_id", "message": "was already used for a different request"}]),
            "{field}"
        );
    }
    // The original still answers as before, and nothing else reached the provider.
    let retry = authorize(&router, &body).await;
    assert_eq!(retry.body, first.body);
    assert_eq!(provider.calls(), 1);
    payment.shutdown().await;
}

async fn a_decline_is_recorded_and_replayed(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let provider = FakeProvider::scripted([Answer::Decline("card_declined")], Answer::Approve);
    let payment = env.start(provider.clone()).await;
    let router = payment.router();
    let body = request_body();
    let first = authorize(&router, &body).await;
    first.assert_problem(StatusCode::PAYMENT_REQUIRED);
    assert_eq!(first.body["type"], "urn:agora:problem:payment-declined");
    // The provider would approve now; the recorded decline is the answer.
    let retry = authorize(&router, &body).await;
    retry.assert_problem(StatusCode::PAYMENT_REQUIRED);
    assert_eq!(retry.body, first.body);
    assert_eq!(provider.calls(), 1);
    // A new request id is a new attempt.
    let again = authorize(&router, &request_body()).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(provider.calls(), 2);
    payment.shutdown().await;
}

async fn an_unavailable_provider_is_a_503_and_a_retry_succeeds(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let provider =
        FakeProvider::scripted([Answer::Unavailable, Answer::Unavailable], Answer::Approve);
    let payment = env.start(provider.clone()).await;
    let router = payment.router();
    let body = request_body();
    for _ in 0..2 {
        let answer = authorize(&router, &body).await;
        answer.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.headers[header::RETRY_AFTER], "1");
    }
    let retry = authorize(&router, &body).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert_eq!(provider.calls(), 3);
    let events = env.events(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].subject,
        retry.body["authorization_id"].as_str().unwrap()
    );
    payment.shutdown().await;
}

async fn a_provider_slower_than_the_timeout_counts_as_unavailable(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let provider = FakeProvider::scripted([Answer::Hang], Answer::Approve);
    let mut config = env.config(provider.clone());
    config.provider_timeout = Duration::from_millis(100);
    let payment = env.start_with(config).await;
    let router = payment.router();
    let body = request_body();
    let answer = authorize(&router, &body).await;
    answer.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    let retry = authorize(&router, &body).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert_eq!(provider.calls(), 2);
    payment.shutdown().await;
}

async fn a_claim_left_by_a_crashed_process_is_taken_over_after_its_lease(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let provider = FakeProvider::new(Answer::Approve);
    let payment = env.start(provider.clone()).await;
    let router = payment.router();
    // What a process that died while asking the provider leaves behind: a pending
    // request, claimed an hour ago (long past any lease), and a fresh one.
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let stale = request_body();
    let fresh = request_body();
    for (body, claimed_at_ms) in [(&stale, now_ms - 3_600_000), (&fresh, now_ms)] {
        sqlx::query(
            "INSERT INTO payment_requests
                (request_id, order_id, customer_id, amount_cents, currency, payment_token,
                 state, claim_id, claimed_at_ms, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $8)",
        )
        .bind(body["request_id"].as_str().unwrap().to_owned())
        .bind(body["order_id"].as_str().unwrap().to_owned())
        .bind(body["customer_id"].as_str().unwrap().to_owned())
        .bind(body["amount_cents"].as_i64().unwrap())
        .bind(body["currency"].as_str().unwrap().to_owned())
        .bind(body["payment_token"].as_str().unwrap().to_owned())
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(claimed_at_ms)
        .execute(payment.db().pool())
        .await
        .unwrap();
    }
    let retry = authorize(&router, &stale).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert_eq!(retry.body["request_id"], stale["request_id"]);
    assert_eq!(provider.calls(), 1);
    assert_eq!(authorize(&router, &stale).await.body, retry.body);
    assert_eq!(provider.calls(), 1);

    // A pending request still refuses another body at once.
    let mut other = fresh.clone();
    other["amount_cents"] = json!(1);
    authorize(&router, &other)
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(provider.calls(), 1);
    payment.shutdown().await;
}

async fn a_spent_budget_starts_nothing_and_bounds_the_wait(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let provider = FakeProvider::gated(Answer::Approve);
    let payment = env.start(provider.clone()).await;
    let router = payment.router();
    let body = request_body();

    // Spent on arrival: 504, nothing asked, nothing recorded.
    let spent = authorize_with_budget(&router, &body, "0").await;
    spent.assert_problem(StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(provider.calls(), 0);

    // The first request waits at the provider; a duplicate with 50 ms to live waits
    // no longer than that.
    let first = {
        let router = router.clone();
        let body = body.clone();
        tokio::spawn(async move { authorize(&router, &body).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while provider.calls() == 0 {
        assert!(Instant::now() < deadline, "the provider was never called");
        tokio::task::yield_now().await;
    }
    let started = Instant::now();
    let duplicate = authorize_with_budget(&router, &body, "50").await;
    duplicate.assert_problem(StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(1));
    provider.open();
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    // A budget that is not spent changes nothing.
    let retry = authorize_with_budget(&router, &body, "5000").await;
    assert_eq!(retry.body, first.body);
    assert_eq!(provider.calls(), 1);
    payment.shutdown().await;
}
