//! Several instances of one service: each learns every revocation (not one of them per
//! event, as the consumers of a group would), a new one learns those made before it
//! started, and none leaves a consumer behind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_auth::{Claims, Error, MemoryKeySource, ServiceAuth, Verifier};
use agora_bus::SharedBus;
use agora_bus::embedded::EmbeddedBus;
use agora_bus::nats::NatsBus;
use agora_contracts::{Event, PasswordChanged, Role, UserSignedOut};
use agora_messaging::{Context, Db, Envelope};
use agora_testkit::{NatsServer, PgDatabase};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::support::{TestKey, jwks, now};

const WAIT: Duration = Duration::from_secs(10);

async fn publish(bus: &SharedBus, event: &impl Event, about: Uuid) {
    let envelope = Envelope::new(event, &Context::new(about.to_string())).expect("envelope");
    bus.publish(envelope.to_message().expect("message"))
        .await
        .expect("published");
}

fn token_of(key: &TestKey, user: Uuid) -> (Claims, String) {
    let claims = Claims::new(user, vec![Role::Customer], now(), Duration::from_secs(300));
    let token = key.sign(&claims);
    (claims, token)
}

async fn refuses_soon(verifier: &Verifier, token: &str, what: &str) {
    let deadline = Instant::now() + WAIT;
    while verifier.verify(token).await != Err(Error::Revoked) {
        assert!(Instant::now() < deadline, "{what}: still accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn consumer_names(bus: &SharedBus) -> Vec<String> {
    let consumers = bus.consumers().await.expect("consumers");
    consumers.into_iter().map(|c| c.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_refuses_what_was_revoked_and_leaves_no_consumer_behind() {
    let (Some(nats), Some(pg)) = (NatsServer::start(), PgDatabase::create().await) else {
        return;
    };
    let bus: SharedBus = Arc::new(NatsBus::connect(&nats.url()).await.expect("bus"));
    let db = Db::connect(pg.url()).await.expect("db");
    db.migrate_messaging().await.expect("migrate");
    let key = TestKey::generate("k1");
    let keys = Arc::new(MemoryKeySource::new(jwks(&[&key])));
    let first = ServiceAuth::start("catalog", &db, &bus, keys.clone())
        .await
        .expect("first instance");
    let second = ServiceAuth::start("catalog", &db, &bus, keys.clone())
        .await
        .expect("second instance");
    let user = Uuid::now_v7();
    let (signed_out, signed_out_token) = token_of(&key, user);
    let (_, other_token) = token_of(&key, user);
    for verifier in [first.verifier(), second.verifier()] {
        verifier.verify(&signed_out_token).await.expect("accepted");
    }

    // Several sign-outs: with one consumer group, each would reach one instance only.
    for token_id in [Uuid::now_v7(), signed_out.jti, Uuid::now_v7()] {
        let event = UserSignedOut {
            user_id: user,
            token_id,
            signed_out_at: OffsetDateTime::now_utc(),
            version: 2,
        };
        publish(&bus, &event, user).await;
    }
    refuses_soon(first.verifier(), &signed_out_token, "first").await;
    refuses_soon(second.verifier(), &signed_out_token, "second").await;
    second
        .verifier()
        .verify(&other_token)
        .await
        .expect("other session");

    tokio::time::sleep(Duration::from_millis(5)).await;
    let changed = PasswordChanged {
        user_id: user,
        changed_at: OffsetDateTime::now_utc(),
        version: 3,
    };
    publish(&bus, &changed, user).await;
    refuses_soon(first.verifier(), &other_token, "first, password").await;
    refuses_soon(second.verifier(), &other_token, "second, password").await;

    assert_eq!(consumer_names(&bus).await.len(), 4, "two per instance");
    first.shutdown().await;
    second.shutdown().await;
    assert_eq!(consumer_names(&bus).await, Vec::<String>::new());
}

/// A restarted (or added) instance refuses at once, without waiting for anything,
/// every token revoked before it started: it replays them from the bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_refuses_what_was_revoked_before_it_started() {
    let dir = tempfile::tempdir().expect("dir");
    let bus: SharedBus = Arc::new(
        EmbeddedBus::open(dir.path().join("bus.db"))
            .await
            .expect("bus"),
    );
    let url = format!("sqlite://{}", dir.path().join("service.db").display());
    let db = Db::connect(&url).await.expect("db");
    db.migrate_messaging().await.expect("migrate");
    let key = TestKey::generate("k1");
    let keys = Arc::new(MemoryKeySource::new(jwks(&[&key])));
    let running = ServiceAuth::start("catalog", &db, &bus, keys.clone())
        .await
        .expect("an instance");
    let user = Uuid::now_v7();
    let (signed_out, signed_out_token) = token_of(&key, user);
    let changed_user = Uuid::now_v7();
    let (_, old_token) = token_of(&key, changed_user);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let event = UserSignedOut {
        user_id: user,
        token_id: signed_out.jti,
        signed_out_at: OffsetDateTime::now_utc(),
        version: 2,
    };
    publish(&bus, &event, user).await;
    let changed = PasswordChanged {
        user_id: changed_user,
        changed_at: OffsetDateTime::now_utc(),
        version: 3,
    };
    publish(&bus, &changed, changed_user).await;
    refuses_soon(running.verifier(), &signed_out_token, "running").await;
    running.shutdown().await;

    let restarted = ServiceAuth::start("catalog", &db, &bus, keys)
        .await
        .expect("restarted");
    for token in [&signed_out_token, &old_token] {
        assert_eq!(
            restarted.verifier().verify(token).await,
            Err(Error::Revoked)
        );
    }
    restarted.shutdown().await;
}
