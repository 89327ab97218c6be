//! The outbox as a feed, and catching up from an owner's feed onto the bus.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use agora_bus::{DeliverPolicy, SharedBus};
use agora_messaging::{
    Backend, CatchUp, Envelope, Error, Feed, FeedPage, Outbox, Relay, RelayConfig, Subscriber,
    SubscriberConfig,
};
use async_trait::async_trait;

use crate::support::{
    CountingHandler, RecordingBus, STREAM, TestStore, applied, commit_events, credited,
    embedded_bus, eventually,
};

crate::on_both_backends!(
    the_feed_is_the_published_events_in_pages_that_never_change,
    a_consumer_catches_up_from_the_feed_and_meets_the_bus_without_gap_or_double,
    a_catch_up_waits_for_an_event_committed_before_the_switch,
    a_catch_up_goes_on_from_where_it_stopped,
);

const WAIT: Duration = Duration::from_secs(15);

/// An owner's outbox served in pages of `size`, failing the calls after `works` of them.
#[derive(Debug)]
struct Paged {
    outbox: Outbox,
    size: usize,
    works: AtomicU32,
}

impl Paged {
    fn new(store: &TestStore, size: usize) -> Arc<Self> {
        Self::failing_after(store, size, u32::MAX)
    }

    fn failing_after(store: &TestStore, size: usize, works: u32) -> Arc<Self> {
        Arc::new(Self {
            outbox: Outbox::new(&store.db),
            size,
            works: AtomicU32::new(works),
        })
    }
}

#[async_trait]
impl Feed for Paged {
    async fn page(&self, after: u64) -> Result<FeedPage, Error> {
        if self
            .works
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(Error::Feed("the owner is unreachable".into()));
        }
        self.outbox.feed(after, self.size).await
    }
}

/// A second store on the same backend as `store`: the consumer's.
async fn consumer_store(store: &TestStore) -> TestStore {
    match store.db.backend() {
        Backend::Sqlite => TestStore::sqlite().await,
        Backend::Postgres => TestStore::postgres().await,
    }
    .expect("a second store")
}

/// Publishes `events` through a relay to a bus that is then thrown away: events older
/// than any stream the consumer can read.
async fn publish_elsewhere(
    store: &TestStore,
    events: std::ops::RangeInclusive<u64>,
) -> Vec<Envelope> {
    let gone = RecordingBus::failing(0);
    let events: Vec<_> = events.map(credited).collect();
    let relay = Relay::spawn(&store.db, gone.shared(), RelayConfig::default());
    commit_events(&store.db, &events).await;
    eventually(WAIT, "published", || async {
        Outbox::new(&store.db).unpublished().await.unwrap() == 0
    })
    .await;
    relay.shutdown().await;
    assert_eq!(gone.published().len(), events.len());
    events
}

async fn the_feed_is_the_published_events_in_pages_that_never_change(store: TestStore) {
    let outbox = Outbox::new(&store.db);
    let events: Vec<_> = (1..=23).map(credited).collect();
    let bus = RecordingBus::failing(0);
    let relay = Relay::spawn(
        &store.db,
        bus.shared(),
        RelayConfig {
            batch_size: 4,
            ..RelayConfig::default()
        },
    );
    for chunk in events.chunks(5) {
        commit_events(&store.db, chunk).await;
    }
    eventually(WAIT, "published", || async {
        outbox.unpublished().await.unwrap() == 0
    })
    .await;
    relay.shutdown().await;

    let first = outbox.feed(0, 10).await.unwrap();
    let second = outbox.feed(10, 10).await.unwrap();
    let last = outbox.feed(20, 10).await.unwrap();
    let all: Vec<_> = [&first, &second, &last]
        .iter()
        .flat_map(|page| page.events.iter())
        .collect();
    let positions: Vec<u64> = all.iter().map(|event| event.position).collect();
    assert_eq!(positions, (1..=23).collect::<Vec<_>>(), "1, 2, 3… no hole");
    let ids: Vec<_> = all.iter().map(|event| event.decode().unwrap().id).collect();
    assert_eq!(
        ids,
        events.iter().map(|event| event.id).collect::<Vec<_>>(),
        "in the order published"
    );
    assert_eq!(all[0].decode().unwrap(), events[0], "the whole envelope");
    assert_eq!(first.pending_since, None, "everything published");
    assert!(outbox.feed(23, 10).await.unwrap().events.is_empty());

    // A committed event is not in the feed until published; then it comes last.
    let before = SystemTime::now() - Duration::from_secs(1);
    commit_events(&store.db, &[credited(24)]).await;
    let waiting = outbox.feed(20, 10).await.unwrap();
    assert_eq!(waiting.events, last.events, "not in the feed yet");
    let since = waiting.pending_since.expect("an event waits for the relay");
    assert!(since >= before, "{since:?} is when it was committed");
    Relay::publish_pending(&store.db, &bus.shared(), 10)
        .await
        .unwrap();
    let grown = outbox.feed(20, 10).await.unwrap();
    assert_eq!(grown.events.len(), 4);
    assert_eq!(grown.events[3].position, 24);
    assert_eq!(grown.pending_since, None);
    assert_eq!(
        outbox.feed(0, 10).await.unwrap(),
        first,
        "a full page never changes"
    );
}

async fn a_consumer_catches_up_from_the_feed_and_meets_the_bus_without_gap_or_double(
    owner: TestStore,
) {
    // Twenty events the new bus never saw, then five it did.
    let mut events = publish_elsewhere(&owner, 1..=20).await;
    let new_bus = owner.dir.path().join("new");
    std::fs::create_dir_all(&new_bus).unwrap();
    let bus: SharedBus = embedded_bus(&new_bus).await;
    let relay = Relay::spawn(&owner.db, bus.clone(), RelayConfig::default());
    events.extend((21..=25).map(credited));
    commit_events(&owner.db, &events[20..]).await;
    eventually(WAIT, "published on the new bus", || async {
        Outbox::new(&owner.db).unpublished().await.unwrap() == 0
    })
    .await;

    let consumer = consumer_store(&owner).await;
    let switch = SystemTime::now() - Duration::from_secs(60);
    let mut config = SubscriberConfig::new("replica", STREAM);
    config.deliver = DeliverPolicy::FromTime(switch);
    let subscriber = Subscriber::spawn(
        &consumer.db,
        &bus,
        config.clone(),
        CountingHandler::new("replica"),
    )
    .await
    .unwrap();
    let catching_up = CatchUp::new(
        &consumer.db,
        Paged::new(&owner, 7),
        "replica",
        CountingHandler::new("replica"),
        switch,
    )
    .spawn();
    // Events keep coming while it catches up.
    for n in 26..=30 {
        events.push(credited(n));
        commit_events(&owner.db, &events[events.len() - 1..]).await;
    }

    eventually(WAIT, "all thirty applied", || async {
        applied(&consumer.db, "replica").await.len() == 30
    })
    .await;
    eventually(WAIT, "caught up", || async {
        CatchUp::state(&consumer.db, "replica").await.unwrap().done
    })
    .await;
    let state = CatchUp::state(&consumer.db, "replica").await.unwrap();
    assert!(state.position >= 25, "read to the end: {state:?}");
    eventually(WAIT, "the bus consumer settled", || async {
        let info = bus
            .consumer(&config.consumer_config())
            .await
            .unwrap()
            .info()
            .await
            .unwrap();
        info.pending == 0 && info.ack_pending == 0
    })
    .await;
    catching_up.shutdown().await;
    subscriber.shutdown().await;
    relay.shutdown().await;

    let mut seen = applied(&consumer.db, "replica").await;
    seen.sort();
    let mut expected: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    expected.sort();
    assert_eq!(
        seen.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        expected,
        "every event, the old ones from the feed"
    );
    assert!(
        seen.iter().all(|(_, count)| *count == 1),
        "each applied once, though 21–30 came both ways: {seen:?}"
    );
}

async fn a_catch_up_waits_for_an_event_committed_before_the_switch(owner: TestStore) {
    publish_elsewhere(&owner, 1..=3).await;
    // Committed, and perhaps on the bus already: its relay has not marked it yet.
    commit_events(&owner.db, &[credited(4)]).await;
    let consumer = consumer_store(&owner).await;
    let catch_up = CatchUp::new(
        &consumer.db,
        Paged::new(&owner, 2),
        "replica",
        CountingHandler::new("replica"),
        SystemTime::now() + Duration::from_secs(1),
    );
    assert!(
        !catch_up.run_once().await.unwrap(),
        "not caught up while an event from before the switch is unpublished"
    );
    assert_eq!(applied(&consumer.db, "replica").await.len(), 3);
    Relay::publish_pending(&owner.db, &RecordingBus::failing(0).shared(), 10)
        .await
        .unwrap();
    assert!(catch_up.run_once().await.unwrap());
    assert_eq!(applied(&consumer.db, "replica").await.len(), 4);

    // An event committed after the switch is the bus consumer's: no need to wait.
    let later = CatchUp::new(
        &consumer.db,
        Paged::new(&owner, 2),
        "later",
        CountingHandler::new("later"),
        SystemTime::now() - Duration::from_secs(60),
    );
    commit_events(&owner.db, &[credited(5)]).await;
    assert!(later.run_once().await.unwrap());
}

async fn a_catch_up_goes_on_from_where_it_stopped(owner: TestStore) {
    publish_elsewhere(&owner, 1..=10).await;
    let consumer = consumer_store(&owner).await;
    let switch = SystemTime::now();
    let handler = CountingHandler::new("replica");
    let calls = handler.calls.clone();
    let broken = CatchUp::new(
        &consumer.db,
        Paged::failing_after(&owner, 3, 2),
        "replica",
        handler,
        switch,
    );
    assert!(broken.run_once().await.is_err(), "the third page fails");
    assert_eq!(
        CatchUp::state(&consumer.db, "replica")
            .await
            .unwrap()
            .position,
        6
    );
    let resumed = CatchUp::new(
        &consumer.db,
        Paged::new(&owner, 3),
        "replica",
        CountingHandler::new("replica"),
        switch,
    );
    assert!(resumed.run_once().await.unwrap());
    let seen = applied(&consumer.db, "replica").await;
    assert_eq!(seen.len(), 10);
    assert!(seen.iter().all(|(_, count)| *count == 1), "{seen:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 6, "the first run applied six");
    assert!(CatchUp::state(&consumer.db, "replica").await.unwrap().done);
}
