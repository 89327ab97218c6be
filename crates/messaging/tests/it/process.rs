//! The process-manager runtime, given/when/then, on both backends: a "rendezvous"
//! process waits for parts `a`, `b` and `c` of one flow, completes once, compensates on
//! a `fail` part or on its timeout.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use agora_contracts::Event;
use agora_messaging::{
    Clock, Context, Db, Decision, Envelope, HandlerError, InstanceStatus, ManualClock, Process,
    ProcessManager, TimerConfig, TurnOutcome, migrate_processes,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::on_both_backends;
use crate::support::{TestStore, eventually};

const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PartArrived {
    flow: Uuid,
    part: String,
    version: u64,
}

impl Event for PartArrived {
    const TYPE: &'static str = "PartArrived";
    const SOURCE: &'static str = "parts";
    fn subject(&self) -> String {
        self.flow.to_string()
    }
    fn version(&self) -> u64 {
        self.version
    }
}

/// What the process publishes: `outcome` is `completed`, `failed` or `timed_out`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct FlowEnded {
    flow: Uuid,
    outcome: String,
    version: u64,
}

impl Event for FlowEnded {
    const TYPE: &'static str = "FlowEnded";
    const SOURCE: &'static str = "rendezvous";
    fn subject(&self) -> String {
        self.flow.to_string()
    }
    fn version(&self) -> u64 {
        self.version
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RendezvousState {
    parts: BTreeSet<String>,
    compensated: bool,
}

/// Records the compensations that succeeded, and fails the next ones on demand.
#[derive(Clone, Default)]
struct Compensations {
    done: Arc<parking_lot::Mutex<Vec<Uuid>>>,
    failures_left: Arc<AtomicU32>,
    /// When set, a compensation reports that it started and waits for a permit.
    gate: Option<Arc<(tokio::sync::Semaphore, tokio::sync::Notify)>>,
}

struct Rendezvous {
    compensations: Compensations,
}

impl Rendezvous {
    fn end(
        &self,
        state: &mut RendezvousState,
        flow: Uuid,
        outcome: &str,
        version: u64,
        context: &Context,
    ) -> Result<Decision<Uuid>, HandlerError> {
        let event = FlowEnded {
            flow,
            outcome: outcome.to_owned(),
            version,
        };
        let mut decision = Decision::none()
            .emit(Envelope::new(&event, context)?)
            .terminal();
        if outcome != "completed" && !state.compensated {
            state.compensated = true;
            decision = decision.step(flow);
        }
        Ok(decision)
    }
}

#[async_trait]
impl Process for Rendezvous {
    type State = RendezvousState;
    type Step = Uuid;
    const NAME: &'static str = "rendezvous";

    fn correlate(&self, envelope: &Envelope) -> Result<Option<Uuid>, HandlerError> {
        if !envelope.is::<PartArrived>() {
            return Ok(None);
        }
        Ok(Some(envelope.decode::<PartArrived>()?.flow))
    }

    fn handle(
        &self,
        state: &mut RendezvousState,
        envelope: &Envelope,
        turn: &agora_messaging::Turn,
    ) -> Result<Decision<Uuid>, HandlerError> {
        let part: PartArrived = envelope.decode()?;
        let first = state.parts.is_empty();
        state.parts.insert(part.part.clone());
        let context = envelope.context_for_effects();
        if part.part == "fail" {
            return self.end(state, turn.id, "failed", turn.version, &context);
        }
        if ["a", "b", "c"].iter().all(|p| state.parts.contains(*p)) {
            return self.end(state, turn.id, "completed", turn.version, &context);
        }
        Ok(if first {
            Decision::none().timeout_at(turn.now + TIMEOUT)
        } else {
            Decision::none()
        })
    }

    fn on_timeout(
        &self,
        state: &mut RendezvousState,
        turn: &agora_messaging::Turn,
    ) -> Result<Decision<Uuid>, HandlerError> {
        if state.parts.contains("poison") {
            return Err(HandlerError::permanent("a poisoned flow cannot time out"));
        }
        let context = Context::new(turn.id.to_string());
        self.end(state, turn.id, "timed_out", turn.version, &context)
    }

    async fn run(&self, step: &Uuid) -> Result<(), HandlerError> {
        if let Some(gate) = &self.compensations.gate {
            gate.1.notify_one();
            let _permit = gate.0.acquire().await.unwrap();
        }
        let failures = &self.compensations.failures_left;
        if failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(HandlerError::transient("compensation target unavailable"));
        }
        self.compensations.done.lock().push(*step);
        Ok(())
    }
}

struct Fixture {
    manager: ProcessManager<Rendezvous>,
    clock: Arc<ManualClock>,
    compensations: Compensations,
}

async fn fixture(db: &Db) -> Fixture {
    migrate_processes(db).await.expect("migrate processes");
    let clock = Arc::new(ManualClock::starting_now());
    let compensations = Compensations::default();
    let manager = manager_on(db, &clock, &compensations);
    Fixture {
        manager,
        clock,
        compensations,
    }
}

fn manager_on(
    db: &Db,
    clock: &Arc<ManualClock>,
    compensations: &Compensations,
) -> ProcessManager<Rendezvous> {
    let clock: Arc<dyn Clock> = clock.clone();
    ProcessManager::new(
        db,
        Rendezvous {
            compensations: compensations.clone(),
        },
        clock,
    )
}

fn part(flow: Uuid, name: &str) -> Envelope {
    let event = PartArrived {
        flow,
        part: name.to_owned(),
        version: 1,
    };
    Envelope::new(&event, &Context::new(flow.to_string())).unwrap()
}

/// One delivery, as the subscriber makes it: one transaction around the turn.
async fn deliver(
    manager: &ProcessManager<Rendezvous>,
    db: &Db,
    envelope: &Envelope,
) -> Result<TurnOutcome, HandlerError> {
    let mut tx = db.begin().await?;
    let outcome = manager.apply(&mut tx, envelope).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// The outcomes of `FlowEnded` events in the outbox for `flow`.
async fn ended(db: &Db, flow: Uuid) -> Vec<String> {
    let payloads: Vec<(String,)> =
        sqlx::query_as("SELECT payload FROM messaging_outbox WHERE subject = $1 ORDER BY position")
            .bind(agora_contracts::bus_subject::<FlowEnded>())
            .fetch_all(db.pool())
            .await
            .unwrap();
    payloads
        .into_iter()
        .map(|(payload,)| Envelope::from_json(payload.as_bytes()).unwrap())
        .map(|envelope| envelope.decode::<FlowEnded>().unwrap())
        .filter(|event| event.flow == flow)
        .map(|event| event.outcome)
        .collect()
}

const PERMUTATIONS: [[&str; 3]; 6] = [
    ["a", "b", "c"],
    ["a", "c", "b"],
    ["b", "a", "c"],
    ["b", "c", "a"],
    ["c", "a", "b"],
    ["c", "b", "a"],
];

async fn completes_exactly_once_in_any_order_with_duplicates(store: TestStore) {
    let f = fixture(&store.db).await;
    for order in PERMUTATIONS {
        // Given the three parts in this order, each delivered twice (two distinct
        // messages with the same meaning, as a producer retry would make),
        let flow = Uuid::now_v7();
        for name in order {
            deliver(&f.manager, &store.db, &part(flow, name))
                .await
                .unwrap();
            deliver(&f.manager, &store.db, &part(flow, name))
                .await
                .unwrap();
        }
        // then the flow completed exactly once, and the instance is terminal.
        assert_eq!(ended(&store.db, flow).await, ["completed"], "{order:?}");
        let instance = f.manager.instance(flow).await.unwrap().unwrap();
        assert_eq!(instance.status, InstanceStatus::Terminal);
        assert_eq!(instance.timeout_at, None);
    }
    assert!(f.compensations.done.lock().is_empty());
}

async fn events_after_terminal_are_ignored(store: TestStore) {
    let f = fixture(&store.db).await;
    // Given a flow that failed and compensated,
    let flow = Uuid::now_v7();
    deliver(&f.manager, &store.db, &part(flow, "a"))
        .await
        .unwrap();
    deliver(&f.manager, &store.db, &part(flow, "fail"))
        .await
        .unwrap();
    let version = f.manager.instance(flow).await.unwrap().unwrap().version;
    // when more parts arrive, even ones that would complete it or fail it again,
    for name in ["b", "c", "fail", "a"] {
        let outcome = deliver(&f.manager, &store.db, &part(flow, name))
            .await
            .unwrap();
        assert_eq!(outcome, TurnOutcome::Ignored);
    }
    // then nothing is published, compensated or written.
    assert_eq!(ended(&store.db, flow).await, ["failed"]);
    assert_eq!(*f.compensations.done.lock(), [flow]);
    let instance = f.manager.instance(flow).await.unwrap().unwrap();
    assert_eq!(instance.version, version);
}

async fn timeout_fires_on_the_clock_and_compensates(store: TestStore) {
    let f = fixture(&store.db).await;
    // Given a flow with one part,
    let flow = Uuid::now_v7();
    deliver(&f.manager, &store.db, &part(flow, "a"))
        .await
        .unwrap();
    let instance = f.manager.instance(flow).await.unwrap().unwrap();
    assert_eq!(instance.timeout_at, Some(f.clock.now() + TIMEOUT));
    // when the clock has not reached the timeout, nothing fires;
    f.clock.advance(TIMEOUT - Duration::from_secs(1));
    assert_eq!(f.manager.fire_due_timeouts(100).await.unwrap(), 0);
    assert!(ended(&store.db, flow).await.is_empty());
    // when it has, the flow times out once, compensated.
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(f.manager.fire_due_timeouts(100).await.unwrap(), 1);
    assert_eq!(f.manager.fire_due_timeouts(100).await.unwrap(), 0);
    assert_eq!(ended(&store.db, flow).await, ["timed_out"]);
    assert_eq!(*f.compensations.done.lock(), [flow]);
    let instance = f.manager.instance(flow).await.unwrap().unwrap();
    assert_eq!(instance.status, InstanceStatus::Terminal);
    // and a late part changes nothing.
    let late = deliver(&f.manager, &store.db, &part(flow, "b")).await;
    assert_eq!(late.unwrap(), TurnOutcome::Ignored);
    assert_eq!(ended(&store.db, flow).await, ["timed_out"]);
}

async fn timeout_that_fell_while_down_fires_after_restart(store: TestStore) {
    let f = fixture(&store.db).await;
    // Given a flow waiting, with its timer running,
    let flow = Uuid::now_v7();
    let timer = f.manager.spawn_timer(TimerConfig {
        interval: Duration::from_millis(20),
        batch: 10,
    });
    deliver(&f.manager, &store.db, &part(flow, "a"))
        .await
        .unwrap();
    // when the process stops, its timeout falls while it is down,
    timer.shutdown().await;
    drop(f.manager);
    store.db.close().await;
    f.clock.advance(TIMEOUT + Duration::from_secs(5));
    // and it starts again on the same store,
    let db = Db::connect(&store.url).await.unwrap();
    let manager = manager_on(&db, &f.clock, &f.compensations);
    let timer = manager.spawn_timer(TimerConfig {
        interval: Duration::from_secs(3600),
        batch: 10,
    });
    // then the timeout fires at start, once.
    eventually(Duration::from_secs(10), "the timeout fired", || async {
        ended(&db, flow).await == ["timed_out"]
    })
    .await;
    timer.shutdown().await;
    assert_eq!(*f.compensations.done.lock(), [flow]);
}

async fn failed_compensation_writes_nothing_and_is_retried(store: TestStore) {
    let f = fixture(&store.db).await;
    // Given a flow, and a compensation target that fails once,
    let flow = Uuid::now_v7();
    deliver(&f.manager, &store.db, &part(flow, "a"))
        .await
        .unwrap();
    f.compensations.failures_left.store(1, Ordering::SeqCst);
    // when the failing part arrives, the turn fails transiently and writes nothing;
    let fail = part(flow, "fail");
    let error = deliver(&f.manager, &store.db, &fail).await.unwrap_err();
    assert!(!error.is_permanent());
    assert!(ended(&store.db, flow).await.is_empty());
    let instance = f.manager.instance(flow).await.unwrap().unwrap();
    assert_eq!(instance.status, InstanceStatus::Active);
    assert_eq!(instance.version, 1);
    // when it is redelivered, it compensates once and fails the flow.
    deliver(&f.manager, &store.db, &fail).await.unwrap();
    assert_eq!(*f.compensations.done.lock(), [flow]);
    assert_eq!(ended(&store.db, flow).await, ["failed"]);
}

async fn failed_timeout_stays_due_and_is_retried(store: TestStore) {
    let f = fixture(&store.db).await;
    let flow = Uuid::now_v7();
    deliver(&f.manager, &store.db, &part(flow, "a"))
        .await
        .unwrap();
    f.compensations.failures_left.store(3, Ordering::SeqCst);
    f.clock.advance(TIMEOUT);
    // Each compensation failure is counted and moves the timeout back: 1 s, 2 s, 4 s.
    for (failures, wait) in [(1, 1), (2, 2), (3, 4)] {
        assert_eq!(f.manager.fire_due_timeouts(100).await.unwrap(), 0);
        assert!(ended(&store.db, flow).await.is_empty());
        let instance = f.manager.instance(flow).await.unwrap().unwrap();
        assert_eq!(instance.timeout_failures, failures);
        assert_eq!(
            f.manager.failing_timeouts().await.unwrap(),
            [(flow, failures, instance.timeout_at)]
        );
        // Not due again before its wait,
        f.clock
            .advance(Duration::from_secs(wait) - Duration::from_millis(1));
        assert_eq!(f.manager.fire_due_timeouts(100).await.unwrap(), 0);
        assert_eq!(
            f.manager
                .instance(flow)
                .await
                .unwrap()
                .unwrap()
                .timeout_failures,
            failures,
            "not tried before its time"
        );
        f.clock.advance(Duration::from_millis(1));
    }
    // and once the compensation works, the scan completes it.
    assert_eq!(f.manager.fire_due_timeouts(100).await.unwrap(), 1);
    assert_eq!(ended(&store.db, flow).await, ["timed_out"]);
    assert_eq!(*f.compensations.done.lock(), [flow]);
    assert!(f.manager.failing_timeouts().await.unwrap().is_empty());
}

async fn a_timeout_that_can_never_succeed_is_parked(store: TestStore) {
    let f = fixture(&store.db).await;
    let flow = Uuid::now_v7();
    deliver(&f.manager, &store.db, &part(flow, "poison"))
        .await
        .unwrap();
    f.clock.advance(TIMEOUT);
    assert_eq!(f.manager.fire_due_timeouts(100).await.unwrap(), 0);
    let instance = f.manager.instance(flow).await.unwrap().unwrap();
    assert_eq!((instance.timeout_failures, instance.timeout_at), (1, None));
    assert_eq!(
        f.manager.failing_timeouts().await.unwrap(),
        [(flow, 1, None)]
    );
    // Parked: later scans leave it alone.
    f.clock.advance(Duration::from_secs(3_600));
    assert_eq!(f.manager.fire_due_timeouts(100).await.unwrap(), 0);
    assert_eq!(
        f.manager
            .instance(flow)
            .await
            .unwrap()
            .unwrap()
            .timeout_failures,
        1
    );
}

async fn concurrent_workers_never_lose_an_advance(store: TestStore) {
    let f = fixture(&store.db).await;
    // Given two workers (two processes: two pools on one store) on one instance,
    let second_db = Db::connect(&store.url).await.unwrap();
    let second = manager_on(&second_db, &f.clock, &f.compensations);
    let flow = Uuid::now_v7();
    // when 20 distinct parts are delivered concurrently, half to each, each retried on
    // a conflict as the subscriber would,
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (manager, db) = if i % 2 == 0 {
            (f.manager.clone(), store.db.clone())
        } else {
            (second.clone(), second_db.clone())
        };
        tasks.spawn(async move {
            let envelope = part(flow, &format!("p{i}"));
            let mut conflicts = 0u32;
            loop {
                match deliver(&manager, &db, &envelope).await {
                    Ok(_) => return conflicts,
                    Err(error) => {
                        assert!(!error.is_permanent(), "{error}");
                        conflicts += 1;
                        tokio::task::yield_now().await;
                    }
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    // then every part was applied exactly once: one version per delivery, none lost.
    let instance = f.manager.instance(flow).await.unwrap().unwrap();
    assert_eq!(instance.state.parts.len(), 20);
    assert_eq!(instance.version, 20);
}

on_both_backends!(
    completes_exactly_once_in_any_order_with_duplicates,
    events_after_terminal_are_ignored,
    timeout_fires_on_the_clock_and_compensates,
    timeout_that_fell_while_down_fires_after_restart,
    failed_compensation_writes_nothing_and_is_retried,
    failed_timeout_stays_due_and_is_retried,
    concurrent_workers_never_lose_an_advance,
    a_malformed_event_of_its_type_is_refused_permanently,
    a_timeout_that_can_never_succeed_is_parked,
);

async fn a_malformed_event_of_its_type_is_refused_permanently(store: TestStore) {
    let f = fixture(&store.db).await;
    let flow = Uuid::now_v7();
    // A PartArrived whose data lacks the flow: the process cannot tell whose it is.
    let mut malformed = part(flow, "a");
    malformed.data = serde_json::json!({"part": "a", "version": 1});
    let error = deliver(&f.manager, &store.db, &malformed)
        .await
        .unwrap_err();
    assert!(
        error.is_permanent(),
        "dead-lettered, not acked unseen: {error}"
    );
    assert!(f.manager.instance(flow).await.unwrap().is_none());
    // An event of a type the process does not take is still ignored.
    let other = Envelope::new(
        &FlowEnded {
            flow,
            outcome: "completed".into(),
            version: 1,
        },
        &Context::new(flow.to_string()),
    )
    .unwrap();
    assert_eq!(
        deliver(&f.manager, &store.db, &other).await.unwrap(),
        TurnOutcome::Ignored
    );
}

/// Two instances of one service scan the same due timeout: on PostgreSQL the second
/// skips the row the first has locked, so the compensation runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_instances_never_fire_one_timeout_twice() {
    let Some(store) = TestStore::postgres().await else {
        return;
    };
    migrate_processes(&store.db).await.unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let gate = Arc::new((tokio::sync::Semaphore::new(0), tokio::sync::Notify::new()));
    let compensations = Compensations {
        gate: Some(gate.clone()),
        ..Compensations::default()
    };
    let first = manager_on(&store.db, &clock, &compensations);
    let second_db = Db::connect(&store.url).await.unwrap();
    let second = manager_on(&second_db, &clock, &compensations);
    let flow = Uuid::now_v7();
    deliver(&first, &store.db, &part(flow, "a")).await.unwrap();
    clock.advance(TIMEOUT);
    // The first instance's turn is running its compensation, its row locked,
    let started = gate.1.notified();
    let running = tokio::spawn(async move { first.fire_timeout(flow).await });
    started.await;
    // when the second instance fires the same timeout, it passes at once, doing nothing,
    let skipped = tokio::time::timeout(Duration::from_secs(5), second.fire_timeout(flow))
        .await
        .expect("the second instance does not wait for the first");
    assert_eq!(skipped.unwrap(), TurnOutcome::Ignored);
    // and the first completes the flow: one compensation, one end.
    gate.0.add_permits(1);
    assert_eq!(running.await.unwrap().unwrap(), TurnOutcome::Advanced);
    assert_eq!(*compensations.done.lock(), [flow]);
    assert_eq!(ended(&store.db, flow).await, ["timed_out"]);
}

/// PostgreSQL runs transactions side by side (SQLite's `BEGIN IMMEDIATE` serializes
/// them), so there the interleaving that optimistic concurrency guards against can be
/// forced: a turn that read version 1 must not write over a turn that committed 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stale_turn_is_refused() {
    let Some(store) = TestStore::postgres().await else {
        return;
    };
    let f = fixture(&store.db).await;
    let flow = Uuid::now_v7();
    deliver(&f.manager, &store.db, &part(flow, "a"))
        .await
        .unwrap();
    // Given a first worker that advanced the instance, not yet committed,
    let mut first = store.db.begin().await.unwrap();
    let outcome = f.manager.apply(&mut first, &part(flow, "b")).await;
    assert_eq!(outcome.unwrap(), TurnOutcome::Advanced);
    // when a second worker reads version 1 and blocks on its write,
    let manager = f.manager.clone();
    let db = store.db.clone();
    let second = tokio::spawn(async move { deliver(&manager, &db, &part(flow, "c")).await });
    eventually(
        Duration::from_secs(10),
        "the second worker waits",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(store.db.pool())
            .await
            .unwrap();
            waiting == 1
        },
    )
    .await;
    // and the first commits,
    first.commit().await.unwrap();
    // then the second is refused, transiently (its delivery will be retried),
    let error = second.await.unwrap().unwrap_err();
    assert!(!error.is_permanent());
    assert!(error.reason().contains("concurrently"), "{error}");
    let instance = f.manager.instance(flow).await.unwrap().unwrap();
    assert_eq!(instance.version, 2);
    assert!(!instance.state.parts.contains("c"));
    // and its retry applies on the new state and completes the flow.
    deliver(&f.manager, &store.db, &part(flow, "c"))
        .await
        .unwrap();
    assert_eq!(ended(&store.db, flow).await, ["completed"]);
}
