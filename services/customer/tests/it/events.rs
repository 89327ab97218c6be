//! The events customer publishes about changes made through its API, as the bus
//! delivers them.

use agora_contracts::{Address, CustomerAddressChanged, PaymentMethod, PaymentMethodChanged};
use axum::http::{Method, StatusCode};
use serde_json::json;
use time::OffsetDateTime;

use crate::support::{Backend, berlin, put_address, put_payment_method, send, start, visa};

crate::on_both_backends!(
    changes_are_published_in_order_with_increasing_versions,
    a_change_that_changes_nothing_publishes_nothing,
    the_request_trace_goes_on_in_the_event,
    concurrent_changes_get_one_version_each,
);

async fn changes_are_published_in_order_with_increasing_versions(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let (id, token) = env.issuer.customer();
    let before = OffsetDateTime::now_utc() - time::Duration::milliseconds(1);
    put_address(&router, &token, berlin()).await;
    put_payment_method(&router, &token, visa()).await;
    let mut paris = json!({
        "line1": "Rue de Rivoli 1",
        "line2": "Bâtiment B",
        "city": "Paris",
        "postal_code": "75001",
        "country": "fr",
    });
    let answer = put_address(&router, &token, paris.clone()).await;
    assert_eq!(answer.body["version"], 3);

    let events = env.events(3).await;
    assert_eq!(events.len(), 3);
    for envelope in &events {
        assert_eq!(envelope.source, "customer");
        assert_eq!(envelope.subject, id.to_string());
        assert_eq!(envelope.correlation_id, id.to_string());
    }
    let first: CustomerAddressChanged = events[0].decode().unwrap();
    assert_eq!(first.customer_id, id);
    assert_eq!(first.version, 1);
    assert_eq!(
        first.address,
        Address {
            line1: "Unter den Linden 1".into(),
            line2: None,
            city: "Berlin".into(),
            postal_code: "10117".into(),
            country: "DE".into(),
        }
    );
    assert!(first.changed_at >= before);

    let second: PaymentMethodChanged = events[1].decode().unwrap();
    assert_eq!(second.version, 2);
    assert_eq!(
        second.payment_method,
        PaymentMethod {
            token: "tok_visa".into(),
            last4: "4242".into(),
        }
    );
    assert!(second.changed_at >= first.changed_at);

    let third: CustomerAddressChanged = events[2].decode().unwrap();
    assert_eq!(third.version, 3);
    paris["country"] = json!("FR");
    assert_eq!(serde_json::to_value(&third.address).unwrap(), paris);
    assert!(third.changed_at >= second.changed_at);
    customer.shutdown().await;
}

async fn a_change_that_changes_nothing_publishes_nothing(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let (_, token) = env.issuer.customer();
    let mut reader = env.reader().await;
    put_address(&router, &token, berlin()).await;
    assert_eq!(reader.read(1).await.len(), 1);
    put_address(&router, &token, berlin()).await;
    put_payment_method(&router, &token, visa()).await;
    put_payment_method(&router, &token, visa()).await;
    // The repeats are not published: the payment method's event comes right after
    // the first address, at version 2.
    let events = reader.read(2).await;
    assert_eq!(events.len(), 2);
    let changed: PaymentMethodChanged = events[1].decode().unwrap();
    assert_eq!(changed.version, 2);
    // Nothing else is in the outbox either.
    let outbox = agora_messaging::Outbox::new(customer.db());
    crate::support::eventually("the outbox is published", || async {
        outbox.unpublished().await.unwrap() == 0
    })
    .await;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messaging_outbox")
        .fetch_one(customer.db().pool())
        .await
        .unwrap();
    assert_eq!(total, 2);
    customer.shutdown().await;
}

async fn the_request_trace_goes_on_in_the_event(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let (_, token) = env.issuer.customer();
    let authorization = format!("Bearer {token}");
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let answer = send(
        &router,
        Method::PUT,
        "/api/customers/me/payment-method",
        &[
            ("authorization", authorization.as_str()),
            ("traceparent", traceparent),
        ],
        Some(("application/json", visa().to_string().into_bytes())),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    // A malformed traceparent is not carried on.
    let answer = send(
        &router,
        Method::PUT,
        "/api/customers/me/address",
        &[
            ("authorization", authorization.as_str()),
            ("traceparent", "not-a-trace"),
        ],
        Some(("application/json", berlin().to_string().into_bytes())),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let events = env.events(2).await;
    assert_eq!(events[0].traceparent.as_deref(), Some(traceparent));
    assert_eq!(events[1].traceparent, None);
    customer.shutdown().await;
}

async fn concurrent_changes_get_one_version_each(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let (_, token) = env.issuer.customer();
    let writes = 12;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..writes {
        let router = router.clone();
        let token = token.clone();
        tasks.spawn(async move {
            let mut address = berlin();
            address["line1"] = json!(format!("Street {n}"));
            put_address(&router, &token, address).await.status
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    let events = env.events(writes).await;
    assert_eq!(events.len(), writes);
    let mut versions: Vec<u64> = events
        .iter()
        .map(|e| e.decode::<CustomerAddressChanged>().unwrap().version)
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=writes as u64).collect::<Vec<_>>());
    // The profile holds what the newest event says.
    let newest = events
        .iter()
        .map(|e| e.decode::<CustomerAddressChanged>().unwrap())
        .max_by_key(|e| e.version)
        .unwrap();
    let me = crate::support::get_me(&router, &token).await.body;
    assert_eq!(me["version"], writes);
    assert_eq!(me["address"]["line1"], newest.address.line1.as_str());
    customer.shutdown().await;
}
