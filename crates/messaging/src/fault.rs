//! Crash injection, for the tests that prove nothing is lost or applied twice when a
//! process dies between two steps.
//!
//! A [`FaultPlan`] names one [`CrashPoint`] and how many times it is passed before it
//! fires. When it fires, the task that reached it stops there for good (it never takes
//! the next step) and the plan reports the crash; the test then aborts every task,
//! drops every handle and restarts from the same files. From then on every checkpoint
//! of the plan stops its task too: a dead process takes no more steps.
//!
//! The default plan, [`FaultPlan::none`], costs one branch per checkpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

/// A step boundary of outbox → relay → bus → inbox → handler where a crash is the
/// most likely to lose or duplicate work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CrashPoint {
    /// The caller's own checkpoint: after a business transaction (with its outbox rows)
    /// committed, before anything else happens.
    AfterBusinessCommit,
    /// The relay read unpublished rows and has not published them.
    RelayBeforePublish,
    /// The relay published a batch and has not marked it published.
    RelayAfterPublish,
    /// A subscriber received and decoded a delivery and has not begun its transaction.
    BeforeHandle,
    /// The handler ran in the transaction, which is not committed.
    HandlerBeforeCommit,
    /// The transaction (inbox record and handler's changes) committed; not acked.
    CommitBeforeAck,
}

impl CrashPoint {
    pub const ALL: [CrashPoint; 6] = [
        CrashPoint::AfterBusinessCommit,
        CrashPoint::RelayBeforePublish,
        CrashPoint::RelayAfterPublish,
        CrashPoint::BeforeHandle,
        CrashPoint::HandlerBeforeCommit,
        CrashPoint::CommitBeforeAck,
    ];
}

/// Where (if anywhere) to crash. Cheap to clone; clones share one plan, so give the
/// same plan to every component of one simulated process.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    inner: Option<Arc<Plan>>,
    /// Commits left to fail, as a database hiccup would ([`FaultPlan::fail_commits`]).
    failing_commits: Option<Arc<AtomicU64>>,
}

#[derive(Debug)]
struct Plan {
    point: CrashPoint,
    /// Passes of `point` left before it fires.
    passes_left: AtomicU64,
    crashed: AtomicBool,
    crash_seen: Notify,
}

impl FaultPlan {
    /// Never crash.
    pub fn none() -> Self {
        Self::default()
    }

    /// Crash the `passes + 1`-th time `point` is reached.
    pub fn crash_at(point: CrashPoint, passes: u64) -> Self {
        Self {
            inner: Some(Arc::new(Plan {
                point,
                passes_left: AtomicU64::new(passes),
                crashed: AtomicBool::new(false),
                crash_seen: Notify::new(),
            })),
            failing_commits: None,
        }
    }

    /// No crash; the next `times` commits of a subscriber's batch fail (the store
    /// hiccups), then they succeed again.
    pub fn fail_commits(times: u64) -> Self {
        Self {
            inner: None,
            failing_commits: Some(Arc::new(AtomicU64::new(times))),
        }
    }

    /// Whether the commit about to be made is to fail (one of
    /// [`FaultPlan::fail_commits`]'s failures is used up).
    pub fn commit_fails(&self) -> bool {
        self.failing_commits.as_ref().is_some_and(|left| {
            left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        })
    }

    pub fn has_crashed(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|p| p.crashed.load(Ordering::SeqCst))
    }

    /// Waits until the plan fires; never returns for [`FaultPlan::none`].
    pub async fn crashed(&self) {
        let Some(plan) = &self.inner else {
            return std::future::pending().await;
        };
        loop {
            let notified = plan.crash_seen.notified();
            if plan.crashed.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// Marks a step boundary. Returns at once, unless the plan fires here or has fired
    /// already: then it never returns, and the task is expected to be aborted.
    pub async fn checkpoint(&self, point: CrashPoint) {
        let Some(plan) = &self.inner else { return };
        if !plan.crashed.load(Ordering::SeqCst) {
            if point != plan.point {
                return;
            }
            let fire = plan
                .passes_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(1)
                })
                .is_err();
            if !fire {
                return;
            }
            plan.crashed.store(true, Ordering::SeqCst);
            plan.crash_seen.notify_waiters();
            tracing::warn!(?point, "injected crash");
        }
        std::future::pending::<()>().await;
    }
}
