//! Orphan holds: an authorization whose order was never accepted is voided after the
//! orphan hold time; one whose order was accepted never is, whatever its capture does.

use std::time::{Duration, Instant};

use agora_contracts::AuthorizationVoided;
use agora_messaging::{Context, Envelope};
use axum::http::StatusCode;
use serde_json::Value;

use crate::support::{
    Answer, Backend, Env, FakeProvider, authorize, get_authorization, order_accepted, request_body,
};

crate::on_both_backends!(a_hold_without_an_accepted_order_is_voided_after_the_hold_time);

async fn status_of(router: &axum::Router, authorization: &Value) -> String {
    let read = get_authorization(router, authorization["authorization_id"].as_str().unwrap()).await;
    assert_eq!(read.status, StatusCode::OK);
    read.body["status"].as_str().unwrap().to_owned()
}

async fn a_hold_without_an_accepted_order_is_voided_after_the_hold_time(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let provider = FakeProvider::new(Answer::Approve);
    let mut config = env.config(provider.clone());
    config.orphan_hold = Duration::from_millis(800);
    config.orphan_sweep_interval = Duration::from_millis(50);
    let payment = env.start_with(config).await;
    let router = payment.router();
    let started = Instant::now();

    // Given an accepted order whose capture cannot happen (its total is more than the
    // hold: the capture is refused and the hold stays `authorized`),
    let accepted = authorize(&router, &request_body()).await.body;
    let mut event = order_accepted(&accepted);
    event.total_cents += 1;
    env.publish(&Envelope::new(&event, &Context::new(event.order_id.to_string())).unwrap())
        .await;
    // and, authorized after it, a hold whose order never comes,
    let orphan = authorize(&router, &request_body()).await.body;

    // when the orphan hold time has passed, the orphan is voided (once, with its event)
    let deadline = Instant::now() + Duration::from_secs(15);
    while status_of(&router, &orphan).await != "voided" {
        assert!(
            Instant::now() < deadline,
            "the orphan hold was never voided"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "not before the hold time"
    );
    assert_eq!(provider.settlements("void"), 1);
    let events = env.events(3).await;
    let voided: Vec<AuthorizationVoided> = events
        .iter()
        .filter(|e| e.is::<AuthorizationVoided>())
        .map(|e| e.decode().unwrap())
        .collect();
    assert_eq!(voided.len(), 1);
    assert_eq!(
        voided[0].authorization_id.to_string(),
        orphan["authorization_id"].as_str().unwrap()
    );
    // and the accepted order's hold, older, seen by the same sweeps, is left alone.
    assert_eq!(status_of(&router, &accepted).await, "authorized");
    payment.shutdown().await;
}
