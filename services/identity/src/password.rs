//! Password hashing with Argon2id, off the async runtime and under a bound: each hash
//! holds about 19 MiB for tens of milliseconds, so a flood of sign-ins must queue for a
//! few permits instead of taking memory and threads without limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::domain::Password;

/// Argon2id with OWASP's first recommended configuration (19 MiB, 2 passes, 1 lane):
/// tens of milliseconds per hash here, costly in bulk for an attacker.
fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::DEFAULT)
}

/// Why hashing failed: never the password, never the hash.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("argon2: {0}")]
    Argon2(String),
    #[error("the hashing task failed")]
    Join,
    /// Every permit is taken and the queue is full, or the wait for a permit was too
    /// long: answer 503 and let the client come back.
    #[error("too many passwords are being hashed")]
    Busy,
}

/// How much hashing runs at once, and how much may wait for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashingLimits {
    /// Hashes (or verifications) running at once: ~19 MiB each.
    pub concurrency: usize,
    /// Requests waiting for a permit at most; one more is refused at once.
    pub max_waiting: usize,
    /// The longest a request waits for a permit before it is refused.
    pub max_wait: Duration,
}

impl Default for HashingLimits {
    /// One hash per CPU (hashing is CPU-bound: more at once only adds memory), up to 64
    /// waiting per CPU, for at most 5 s.
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self {
            concurrency: cpus,
            max_waiting: 64 * cpus,
            max_wait: Duration::from_secs(5),
        }
    }
}

/// Runs Argon2 on the blocking pool, at most [`HashingLimits::concurrency`] at once.
/// Cheap to clone; clones share the permits.
#[derive(Clone, Debug)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    limits: HashingLimits,
}

impl Hasher {
    pub fn new(limits: HashingLimits) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.concurrency.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            limits,
        }
    }

    /// The PHC string of `password` with a fresh random salt.
    pub async fn hash(&self, password: Password) -> Result<String, HashError> {
        self.run(move || {
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            argon2()
                .hash_password(password.expose().as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| HashError::Argon2(e.to_string()))
        })
        .await?
    }

    /// Whether `candidate` matches the PHC string `stored`; a malformed `stored` matches
    /// nothing. The parameters are those recorded in `stored`.
    pub async fn verify(&self, candidate: String, stored: String) -> Result<bool, HashError> {
        self.run(move || {
            let Ok(parsed) = PasswordHash::new(&stored) else {
                return false;
            };
            argon2()
                .verify_password(candidate.as_bytes(), &parsed)
                .is_ok()
        })
        .await
    }

    /// Runs `work` on the blocking pool once a permit is free. The permit moves into
    /// the blocking task: if the caller goes away, the work still counts until it ends.
    async fn run<T, F>(&self, work: F) -> Result<T, HashError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let waiting = Waiting::enter(&self.waiting, self.limits.max_waiting)?;
                let permit = tokio::time::timeout(
                    self.limits.max_wait,
                    Arc::clone(&self.permits).acquire_owned(),
                )
                .await;
                drop(waiting);
                match permit {
                    Ok(Ok(permit)) => permit,
                    // Timed out, or (never: the semaphore is not closed) closed.
                    Ok(Err(_)) | Err(_) => return Err(HashError::Busy),
                }
            }
        };
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|_| HashError::Join)
    }
}

/// A place in the queue for a permit, given back when dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize, max: usize) -> Result<Self, HashError> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| Waiting(count))
            .map_err(|_| HashError::Busy)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant;

    use super::*;

    /// Work that counts how many run at once and holds until the test lets it go.
    #[derive(Clone, Default)]
    struct Probe {
        running: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
        gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
    }

    impl Probe {
        fn work(&self) -> impl FnOnce() + Send + 'static {
            let probe = self.clone();
            move || {
                let now = probe.running.fetch_add(1, Ordering::SeqCst) + 1;
                probe.most.fetch_max(now, Ordering::SeqCst);
                let (open, changed) = &*probe.gate;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = changed.wait(open).unwrap();
                }
                probe.running.fetch_sub(1, Ordering::SeqCst);
            }
        }

        fn open(&self) {
            let (open, changed) = &*self.gate;
            *open.lock().unwrap() = true;
            changed.notify_all();
        }

        /// Polls (with a deadline) until `n` run at once.
        async fn until_running(&self, n: usize) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.running.load(Ordering::SeqCst) < n {
                assert!(Instant::now() < deadline, "{n} never ran at once");
                tokio::task::yield_now().await;
            }
        }
    }

    fn limits(concurrency: usize, max_waiting: usize, max_wait: Duration) -> HashingLimits {
        HashingLimits {
            concurrency,
            max_waiting,
            max_wait,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_than_the_limit_run_at_once_and_the_rest_wait_their_turn() {
        let hasher = Hasher::new(limits(2, 10, Duration::from_secs(30)));
        let probe = Probe::default();
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let (hasher, work) = (hasher.clone(), probe.work());
                tokio::spawn(async move { hasher.run(work).await })
            })
            .collect();
        probe.until_running(2).await;
        // Three wait for a permit: none of them is running.
        let deadline = Instant::now() + Duration::from_secs(10);
        while hasher.waiting.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "the others never queued");
            tokio::task::yield_now().await;
        }
        assert_eq!(probe.running.load(Ordering::SeqCst), 2);
        probe.open();
        for task in tasks {
            task.await.unwrap().expect("ran");
        }
        assert_eq!(probe.most.load(Ordering::SeqCst), 2);
        assert_eq!(hasher.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_or_a_long_wait_is_busy() {
        let hasher = Hasher::new(limits(1, 1, Duration::from_millis(300)));
        let probe = Probe::default();
        let holder = {
            let (hasher, work) = (hasher.clone(), probe.work());
            tokio::spawn(async move { hasher.run(work).await })
        };
        probe.until_running(1).await;
        // The one place in the queue times out...
        let started = Instant::now();
        assert!(matches!(hasher.run(|| ()).await, Err(HashError::Busy)));
        assert!(started.elapsed() >= Duration::from_millis(300));
        // ...and with the place taken, the next is refused at once.
        let waiter = {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.run(|| ()).await })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while hasher.waiting.load(Ordering::SeqCst) < 1 {
            assert!(Instant::now() < deadline, "never queued");
            tokio::task::yield_now().await;
        }
        assert!(matches!(hasher.run(|| ()).await, Err(HashError::Busy)));
        probe.open();
        holder.await.unwrap().expect("ran");
        let _ = waiter.await.unwrap();
        // Free again: hashing works.
        let hash = hasher
            .hash(Password::parse("correct horse battery").unwrap())
            .await
            .expect("hashed");
        assert!(
            hasher
                .verify("correct horse battery".into(), hash)
                .await
                .expect("verified")
        );
    }
}
