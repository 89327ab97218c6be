//! The outbox and its relay, against a recording bus double.

use std::sync::atomic::Ordering;
use std::time::Duration;

use agora_messaging::{Backend, Backoff, Db, Outbox, Relay, RelayConfig};

use crate::support::{RecordingBus, TestStore, assert_unique, commit_events, credited, eventually};

crate::on_both_backends!(
    relay_publishes_committed_events_in_order,
    rolled_back_transactions_publish_nothing,
    relay_retries_a_failing_bus_without_loss_or_reordering,
    commits_without_a_wake_up_are_found_by_the_poll,
    published_rows_can_be_pruned,
    two_relays_publish_every_row_once_in_order,
    the_relay_deletes_published_rows_past_the_retention,
);

const WAIT: Duration = Duration::from_secs(10);

fn config() -> RelayConfig {
    RelayConfig {
        batch_size: 4,
        // Long: these tests must be woken by commits, not by the poll.
        poll_interval: Duration::from_secs(3600),
        backoff: Backoff::new(Duration::from_millis(5), Duration::from_millis(20)),
        ..RelayConfig::default()
    }
}

async fn relay_publishes_committed_events_in_order(store: TestStore) {
    let bus = RecordingBus::failing(0);
    let relay = Relay::spawn(&store.db, bus.shared(), config());
    let envelopes: Vec<_> = (0..23).map(credited).collect();
    for chunk in envelopes.chunks(5) {
        commit_events(&store.db, chunk).await;
    }
    eventually(WAIT, "23 published", || async {
        bus.published().len() == 23
    })
    .await;

    let published = bus.published();
    let ids: Vec<String> = published.iter().map(|m| m.id.clone()).collect();
    let expected: Vec<String> = envelopes.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(ids, expected, "in commit order, message id = event id");
    assert_eq!(published[0], envelopes[0].to_message().unwrap());
    let outbox = Outbox::new(&store.db);
    eventually(WAIT, "all marked published", || async {
        outbox.unpublished().await.unwrap() == 0
    })
    .await;
    relay.shutdown().await;
}

async fn rolled_back_transactions_publish_nothing(store: TestStore) {
    let bus = RecordingBus::failing(0);
    let relay = Relay::spawn(&store.db, bus.shared(), config());
    let outbox = Outbox::new(&store.db);

    let mut tx = store.db.begin().await.unwrap();
    Outbox::append(&mut tx, &credited(1)).await.unwrap();
    tx.rollback().await.unwrap();

    let mut tx = store.db.begin().await.unwrap();
    Outbox::append(&mut tx, &credited(2)).await.unwrap();
    drop(tx); // an error path that never reaches commit
    outbox.wake();

    let committed = credited(3);
    commit_events(&store.db, std::slice::from_ref(&committed)).await;
    // Published, and marked published: the relay may be stopped between the two, in
    // which case the row is (rightly) published again by the next relay.
    eventually(WAIT, "the committed event published and marked", || async {
        !bus.published().is_empty() && outbox.unpublished().await.unwrap() == 0
    })
    .await;
    relay.shutdown().await;

    let ids: Vec<String> = bus.published().into_iter().map(|m| m.id).collect();
    assert_eq!(ids, [committed.id.to_string()]);
    assert_eq!(outbox.unpublished().await.unwrap(), 0);
}

async fn relay_retries_a_failing_bus_without_loss_or_reordering(store: TestStore) {
    let bus = RecordingBus::failing(3);
    let envelopes: Vec<_> = (0..10).map(credited).collect();
    commit_events(&store.db, &envelopes).await;
    let relay = Relay::spawn(&store.db, bus.shared(), config());
    eventually(WAIT, "10 published", || async {
        bus.published().len() == 10
    })
    .await;
    relay.shutdown().await;

    assert!(
        bus.publish_calls.load(Ordering::SeqCst) >= 3 + 3,
        "3 failures, then 3 batches"
    );
    let ids: Vec<String> = bus.published().into_iter().map(|m| m.id).collect();
    assert_unique(&ids);
    let expected: Vec<String> = envelopes.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(ids, expected);
    assert_eq!(Outbox::new(&store.db).unpublished().await.unwrap(), 0);
}

async fn commits_without_a_wake_up_are_found_by_the_poll(store: TestStore) {
    let bus = RecordingBus::failing(0);
    let relay = Relay::spawn(
        &store.db,
        bus.shared(),
        RelayConfig {
            poll_interval: Duration::from_millis(50),
            ..config()
        },
    );
    // Another process's commit: plain `commit`, nobody wakes this relay.
    let mut tx = store.db.begin().await.unwrap();
    Outbox::append(&mut tx, &credited(1)).await.unwrap();
    tx.commit().await.unwrap();
    eventually(WAIT, "published by the poll", || async {
        bus.published().len() == 1
    })
    .await;
    relay.shutdown().await;
}

async fn published_rows_can_be_pruned(store: TestStore) {
    let bus = RecordingBus::failing(0);
    commit_events(&store.db, &[credited(1), credited(2)]).await;
    let published = Relay::publish_pending(&store.db, &bus.shared(), 1)
        .await
        .unwrap();
    assert_eq!(published, 1);
    let outbox = Outbox::new(&store.db);
    assert_eq!(outbox.unpublished().await.unwrap(), 1);
    let future = std::time::SystemTime::now() + Duration::from_secs(60);
    assert_eq!(outbox.prune_published(future).await.unwrap(), 1);
    assert_eq!(
        outbox.unpublished().await.unwrap(),
        1,
        "unpublished rows stay"
    );
    assert_eq!(
        Relay::publish_pending(&store.db, &bus.shared(), 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(bus.published().len(), 2);
}

async fn two_relays_publish_every_row_once_in_order(store: TestStore) {
    // On PostgreSQL a second handle on the database stands for a second process (the
    // advisory lock keeps it out); on SQLite, whose store belongs to one process, the
    // second relay runs on the same handle (the in-process lock keeps it out).
    let second = match store.db.backend() {
        Backend::Postgres => Db::connect(&store.url).await.unwrap(),
        Backend::Sqlite => store.db.clone(),
    };
    let bus = RecordingBus::failing(0);
    let fast = RelayConfig {
        batch_size: 3,
        poll_interval: Duration::from_millis(5),
        ..config()
    };
    let first_relay = Relay::spawn(&store.db, bus.shared(), fast.clone());
    let second_relay = Relay::spawn(&second, bus.shared(), fast);
    let envelopes: Vec<_> = (0..40).map(credited).collect();
    for chunk in envelopes.chunks(2) {
        commit_events(&store.db, chunk).await;
        commit_events(&second, &[]).await; // wakes the second relay too
    }
    eventually(WAIT, "40 published", || async {
        bus.published().len() == 40
    })
    .await;
    first_relay.shutdown().await;
    second_relay.shutdown().await;

    let ids: Vec<String> = bus.published().into_iter().map(|m| m.id).collect();
    let expected: Vec<String> = envelopes.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(ids, expected);
    assert_eq!(
        bus.duplicates.load(Ordering::SeqCst),
        0,
        "no row published twice"
    );
}

async fn the_relay_deletes_published_rows_past_the_retention(store: TestStore) {
    let bus = RecordingBus::failing(0);
    let relay = Relay::spawn(
        &store.db,
        bus.shared(),
        RelayConfig {
            retention: Some(Duration::from_millis(200)),
            prune_every: Duration::from_millis(20),
            poll_interval: Duration::from_millis(20),
            ..config()
        },
    );
    commit_events(&store.db, &[credited(1), credited(2)]).await;
    eventually(WAIT, "published", || async { bus.published().len() == 2 }).await;
    let rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM messaging_outbox")
            .fetch_one(store.db.pool())
            .await
            .unwrap()
    };
    assert_eq!(rows().await, 2, "kept for a while");
    eventually(WAIT, "deleted after the retention", || async {
        rows().await == 0
    })
    .await;
    relay.shutdown().await;
    assert_eq!(bus.published().len(), 2, "published once each");
}
