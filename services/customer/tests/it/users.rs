//! Identity's `UserSignedUp`: given these events, when a sign-up arrives, then this
//! profile holds and these events are published.

use agora_bus::Bus;
use agora_contracts::{
    CustomerAddressChanged, CustomerRegistered, PaymentMethodChanged, bus_subject,
};
use serde_json::json;

use crate::support::{
    Backend, berlin, eventually, get_me, put_address, put_payment_method, start, visa,
};

crate::on_both_backends!(
    a_sign_up_creates_the_profile_and_publishes_customer_registered,
    a_redelivered_sign_up_changes_nothing,
    a_write_before_the_sign_up_merges_into_one_profile,
    a_sign_up_that_breaks_the_contract_is_dead_lettered,
);

async fn a_sign_up_creates_the_profile_and_publishes_customer_registered(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let (id, token) = env.issuer.customer();
    let sign_up = env
        .publish_sign_up(id, "Ada Lovelace", "ada@example.org")
        .await;
    eventually("the profile is registered", || async {
        get_me(&router, &token).await.body["version"] == 1
    })
    .await;
    assert_eq!(
        get_me(&router, &token).await.body,
        json!({
            "id": id,
            "name": "Ada Lovelace",
            "email": "ada@example.org",
            "address": null,
            "payment_method": null,
            "version": 1,
        })
    );

    let events = env.events(1).await;
    assert_eq!(events.len(), 1);
    let registered: CustomerRegistered = events[0].decode().unwrap();
    let signed_up: agora_contracts::UserSignedUp = sign_up.decode().unwrap();
    assert_eq!(
        registered,
        CustomerRegistered {
            customer_id: id,
            name: "Ada Lovelace".into(),
            email: "ada@example.org".into(),
            registered_at: signed_up.signed_up_at,
            version: 1,
        }
    );
    // Same flow, caused by the sign-up.
    assert_eq!(events[0].subject, id.to_string());
    assert_eq!(events[0].correlation_id, sign_up.correlation_id);
    assert_eq!(
        events[0].causation_id.as_deref(),
        Some(sign_up.id.to_string().as_str())
    );
    customer.shutdown().await;
}

async fn a_redelivered_sign_up_changes_nothing(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let (id, token) = env.issuer.customer();
    let sign_up = env.publish_sign_up(id, "Ada", "ada@example.org").await;
    let router = customer.router();
    eventually("the profile is registered", || async {
        get_me(&router, &token).await.body["version"] == 1
    })
    .await;
    customer.shutdown().await;

    // The consumer starts over from the beginning of identity's stream: every sign-up
    // is delivered again, and the inbox knows them.
    env.bus
        .delete_consumer("IDENTITY", agora_customer::USERS_CONSUMER)
        .await
        .unwrap();
    let customer = env.start().await;
    let router = customer.router();
    env.sign_ups_settled().await;
    // The same sign-up in a new envelope (a replay by the producer): the profile is
    // registered already.
    let mut replay = sign_up.clone();
    replay.id = uuid::Uuid::now_v7();
    env.publish(&replay).await;
    env.sign_ups_settled().await;
    assert!(
        agora_messaging::Inbox::contains(customer.db(), agora_customer::USERS_CONSUMER, replay.id)
            .await
            .unwrap()
    );

    let me = get_me(&router, &token).await.body;
    assert_eq!(me["version"], 1);
    assert_eq!(me["name"], "Ada");
    // One registration only: a later change comes right after it.
    put_payment_method(&router, &token, visa()).await;
    let events = env.events(2).await;
    assert_eq!(events.len(), 2);
    assert!(events[0].is::<CustomerRegistered>());
    let changed: PaymentMethodChanged = events[1].decode().unwrap();
    assert_eq!(changed.version, 2);
    assert!(env.bus.dead_letters().await.unwrap().is_empty());
    customer.shutdown().await;
}

async fn a_write_before_the_sign_up_merges_into_one_profile(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let (id, token) = env.issuer.customer();
    // The customer is faster than the bus.
    let answer = put_address(&router, &token, berlin()).await;
    assert_eq!(answer.body["version"], 1);
    assert_eq!(answer.body["name"], "");

    env.publish_sign_up(id, "Ada Lovelace", "ada@example.org")
        .await;
    eventually("the sign-up is merged", || async {
        get_me(&router, &token).await.body["version"] == 2
    })
    .await;
    let me = get_me(&router, &token).await.body;
    assert_eq!(me["name"], "Ada Lovelace");
    assert_eq!(me["email"], "ada@example.org");
    assert_eq!(me["address"]["line1"], "Unter den Linden 1");
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customer_profiles")
        .fetch_one(customer.db().pool())
        .await
        .unwrap();
    assert_eq!(count, 1);

    let events = env.events(2).await;
    assert_eq!(events.len(), 2);
    let changed: CustomerAddressChanged = events[0].decode().unwrap();
    assert_eq!(changed.version, 1);
    let registered: CustomerRegistered = events[1].decode().unwrap();
    assert_eq!(registered.version, 2);
    assert_eq!(registered.customer_id, id);
    assert_eq!(registered.name, "Ada Lovelace");

    // Later changes go on from there.
    let answer = put_payment_method(&router, &token, visa()).await;
    assert_eq!(answer.body["version"], 3);
    assert_eq!(answer.body["name"], "Ada Lovelace");
    assert_eq!(
        bus_subject::<CustomerRegistered>(),
        "customer.CustomerRegistered"
    );
    customer.shutdown().await;
}

async fn a_sign_up_that_breaks_the_contract_is_dead_lettered(backend: Backend) {
    let Some((env, customer)) = start(backend).await else {
        return;
    };
    let router = customer.router();
    let (id, token) = env.issuer.customer();
    let mut broken = env.publish_sign_up(id, "Ada", "ada@example.org").await;
    // Not published: only its shape is borrowed. The data lacks the user id.
    broken.id = uuid::Uuid::now_v7();
    broken.data = json!({"email": "ada@example.org", "name": "Ada"});
    let (_, other_token) = env.issuer.customer();
    env.publish(&broken).await;
    eventually("the broken sign-up is dead-lettered", || async {
        env.bus
            .dead_letters()
            .await
            .unwrap()
            .iter()
            .any(|d| d.message_id == broken.id.to_string())
    })
    .await;
    let dead = env.bus.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].consumer, agora_customer::USERS_CONSUMER);
    assert_eq!(dead[0].deliveries, 1, "a contract breach is not retried");
    // The valid sign-up was applied; the service goes on.
    eventually("the valid sign-up is applied", || async {
        get_me(&router, &token).await.body["name"] == "Ada"
    })
    .await;
    assert_eq!(
        put_address(&router, &other_token, berlin()).await.body["version"],
        1
    );
    customer.shutdown().await;
}
