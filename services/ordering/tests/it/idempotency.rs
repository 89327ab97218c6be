//! Checkout idempotency: the same key and body give the same answer, once; the store
//! arbitrates between concurrent duplicates.

use std::time::Duration;

use agora_contracts::OrderAccepted;
use axum::http::StatusCode;

use crate::support::{
    Backend, Env, FakePayment, PaymentMode, assert_problem, customer_with_data, error_fields,
    lines, place_order, product, start,
};

crate::on_both_backends!(
    a_repeated_request_gets_the_same_answer_and_makes_no_second_order,
    the_same_key_with_another_body_is_refused,
    a_request_refused_before_payment_leaves_the_key_unused,
    keys_are_scoped_to_the_customer,
    twenty_concurrent_duplicates_make_one_order_and_one_authorization,
    an_abandoned_claim_is_taken_over_after_its_lease,
);

async fn a_repeated_request_gets_the_same_answer_and_makes_no_second_order(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let lamp = product(&env, &ordering, "Lamp", 1000).await;
    let (_, token) = customer_with_data(&env, &ordering).await;
    let first = place_order(&ordering, &token, Some("same"), lines(&[(lamp, 2)])).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    for _ in 0..3 {
        let again = place_order(&ordering, &token, Some("same"), lines(&[(lamp, 2)])).await;
        assert_eq!(again.status, StatusCode::CREATED);
        assert_eq!(again.body, first.body);
    }
    assert_eq!(env.payment.calls(), 1);
    assert_eq!(ordering.order_count().await.unwrap(), 1);
    // One OrderAccepted (after the PriceChanged).
    let events = env.ordering_events(2).await;
    assert_eq!(events.iter().filter(|e| e.is::<OrderAccepted>()).count(), 1);
    ordering.shutdown().await;
}

async fn the_same_key_with_another_body_is_refused(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let lamp = product(&env, &ordering, "Lamp", 1000).await;
    let (_, token) = customer_with_data(&env, &ordering).await;
    let first = place_order(&ordering, &token, Some("k"), lines(&[(lamp, 1)])).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let other = place_order(&ordering, &token, Some("k"), lines(&[(lamp, 2)])).await;
    assert_problem(&other, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_fields(&other), vec!["Idempotency-Key"]);
    assert_eq!(env.payment.calls(), 1);
    assert_eq!(ordering.order_count().await.unwrap(), 1);
    ordering.shutdown().await;
}

async fn a_request_refused_before_payment_leaves_the_key_unused(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let lamp = product(&env, &ordering, "Lamp", 1000).await;
    let (_, token) = customer_with_data(&env, &ordering).await;
    // Refused (unknown product) before payment was asked,
    let unknown = uuid::Uuid::now_v7();
    let refused = place_order(&ordering, &token, Some("k"), lines(&[(unknown, 1)])).await;
    assert_problem(&refused, StatusCode::UNPROCESSABLE_ENTITY);
    // so the corrected request may use the same key,
    let fixed = place_order(&ordering, &token, Some("k"), lines(&[(lamp, 1)])).await;
    assert_eq!(fixed.status, StatusCode::CREATED, "{}", fixed.body);
    // and the first body, once its product is priced, is then another request.
    crate::support::set_price(&env, &ordering, unknown, 300, "EUR").await;
    let again = place_order(&ordering, &token, Some("k"), lines(&[(unknown, 1)])).await;
    assert_problem(&again, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_fields(&again), vec!["Idempotency-Key"]);
    assert_eq!(env.payment.calls(), 1);
    assert_eq!(ordering.order_count().await.unwrap(), 1);
    ordering.shutdown().await;
}

async fn keys_are_scoped_to_the_customer(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let lamp = product(&env, &ordering, "Lamp", 1000).await;
    let (ada, ada_token) = customer_with_data(&env, &ordering).await;
    let (bob, bob_token) = customer_with_data(&env, &ordering).await;
    let a = place_order(&ordering, &ada_token, Some("1"), lines(&[(lamp, 1)])).await;
    let b = place_order(&ordering, &bob_token, Some("1"), lines(&[(lamp, 1)])).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(b.status, StatusCode::CREATED);
    assert_eq!(a.body["customer_id"], ada.to_string());
    assert_eq!(b.body["customer_id"], bob.to_string());
    assert_ne!(a.body["id"], b.body["id"]);
    assert_eq!(env.payment.calls(), 2);
    ordering.shutdown().await;
}

async fn twenty_concurrent_duplicates_make_one_order_and_one_authorization(backend: Backend) {
    let Some(mut env) = Env::new(backend).await else {
        return;
    };
    // A slow payment, so that the duplicates arrive while the first is in flight.
    env.payment = FakePayment::with_delay(PaymentMode::Approve, Duration::from_millis(150));
    let ordering = env.start().await;
    let lamp = product(&env, &ordering, "Lamp", 1000).await;
    let (_, token) = customer_with_data(&env, &ordering).await;

    let mut tasks = tokio::task::JoinSet::new();
    let router = ordering.router();
    for _ in 0..20 {
        let router = router.clone();
        let token = token.clone();
        let body = lines(&[(lamp, 1)]);
        tasks.spawn(async move {
            crate::support::request(
                &router,
                axum::http::Method::POST,
                "/api/ordering/orders",
                Some(&token),
                &[("Idempotency-Key", "once")],
                Some(body),
            )
            .await
        });
    }
    let mut answers = Vec::new();
    while let Some(answer) = tasks.join_next().await {
        answers.push(answer.unwrap());
    }

    assert_eq!(env.payment.calls(), 1, "exactly one authorization call");
    assert_eq!(
        ordering.order_count().await.unwrap(),
        1,
        "exactly one order"
    );
    let created: Vec<_> = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .collect();
    // Every duplicate waited for the first answer and repeats it.
    assert_eq!(created.len(), 20);
    for answer in &created {
        assert_eq!(answer.body, created[0].body);
    }
    ordering.shutdown().await;
}

/// A claim whose holder died mid-request (its instance killed) blocks its key for the
/// lease, judged by the store's clock, then a retry takes it over.
async fn an_abandoned_claim_is_taken_over_after_its_lease(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    env.payment.set_mode(PaymentMode::Hang);
    let lease = Duration::from_secs(1);
    let ordering = agora_ordering::build(agora_ordering::OrderingConfig {
        idempotency_lease: lease,
        idempotency_wait: Duration::from_millis(100),
        payment_deadline: Duration::from_secs(3600),
        ..env.config()
    })
    .await
    .unwrap();
    let lamp = product(&env, &ordering, "Lamp", 1000).await;
    let (_, token) = customer_with_data(&env, &ordering).await;
    let router = ordering.router();
    let (holder_token, body) = (token.clone(), lines(&[(lamp, 1)]));
    let before_claim = std::time::Instant::now();
    let holder = tokio::spawn(async move {
        crate::support::request(
            &router,
            axum::http::Method::POST,
            "/api/ordering/orders",
            Some(&holder_token),
            &[("Idempotency-Key", "abandoned")],
            Some(body),
        )
        .await
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while env.payment.calls() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the holder reaches payment"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    holder.abort();
    let _ = holder.await;
    let claimed = std::time::Instant::now();
    env.payment.set_mode(PaymentMode::Approve);

    let within = place_order(&ordering, &token, Some("abandoned"), lines(&[(lamp, 1)])).await;
    if claimed.elapsed() < lease {
        assert_problem(&within, StatusCode::CONFLICT);
    }
    let mut after = within;
    while after.status != StatusCode::CREATED {
        assert!(
            std::time::Instant::now() < deadline,
            "taken over: {}",
            after.body
        );
        assert_problem(&after, StatusCode::CONFLICT);
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = place_order(&ordering, &token, Some("abandoned"), lines(&[(lamp, 1)])).await;
    }
    assert!(
        before_claim.elapsed() >= lease - Duration::from_millis(20),
        "not before the lease"
    );
    assert_eq!(ordering.order_count().await.unwrap(), 1);
    ordering.shutdown().await;
}
