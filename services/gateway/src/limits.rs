//! Request rate limits: token buckets keyed by client address, by user, and a strict
//! one for the credential routes (sign-in and sign-up per client address, password
//! change per user), so that password guessing is slowed to a crawl while ordinary
//! use never notices.
//!
//! On the credential routes a success costs less than a failure: when identity
//! answers 2xx, [`SUCCESS_REFUND`] of the spent token goes back to the bucket. With
//! the default rate (burst 10, one token every 2 s), an office behind one NAT address
//! can sign in 10 people at once and then 5 a second for as long as they keep
//! succeeding, while guessing from that address stays at one try every 2 s.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// A sustained rate with a burst allowance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
    /// Requests per second sustained.
    pub per_second: f64,
}

impl Rate {
    pub const fn new(burst: u32, per_second: f64) -> Self {
        Self { burst, per_second }
    }
}

/// The gateway's limits; `None` switches one off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Per client address, every request.
    pub per_client: Option<Rate>,
    /// Per authenticated user, every request with a valid token.
    pub per_user: Option<Rate>,
    /// Per client address, `POST /api/identity/token` and `POST /api/identity/users`.
    pub credentials: Option<Rate>,
}

impl Default for Limits {
    /// 1,000 requests/s per client (burst 2,000), 200/s per user (burst 400), and 10
    /// credential attempts at once, then one every 2 s, per client.
    fn default() -> Self {
        Self {
            per_client: Some(Rate::new(2_000, 1_000.0)),
            per_user: Some(Rate::new(400, 200.0)),
            credentials: Some(Rate::new(10, 0.5)),
        }
    }
}

impl Limits {
    /// No limits at all (load tests from one address).
    pub fn unlimited() -> Self {
        Self {
            per_client: None,
            per_user: None,
            credentials: None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Limiters {
    pub per_client: Option<Limiter>,
    pub per_user: Option<Limiter>,
    pub credentials: Option<Limiter>,
}

impl Limiters {
    pub fn new(limits: Limits) -> Self {
        Self {
            per_client: limits.per_client.map(Limiter::new),
            per_user: limits.per_user.map(Limiter::new),
            credentials: limits.credentials.map(Limiter::new),
        }
    }
}

/// Token buckets by key. Idle keys are forgotten once the table grows.
#[derive(Debug)]
pub(crate) struct Limiter {
    rate: Rate,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The share of a credential token given back when the attempt succeeded: a
/// successful sign-in or sign-up costs a tenth of a failed one.
pub const SUCCESS_REFUND: f64 = 0.9;

/// Above this many keys, full (idle) buckets are dropped.
const PRUNE_ABOVE: usize = 10_000;

impl Limiter {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let burst = f64::from(self.rate.burst.max(1));
        let mut buckets = self.buckets.lock();
        if buckets.len() > PRUNE_ABOVE {
            let rate = self.rate.per_second;
            buckets.retain(|_, b| refill(b, now, rate, burst) < burst);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let tokens = refill(bucket, now, self.rate.per_second, burst);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            let wait = if self.rate.per_second > 0.0 {
                (1.0 - tokens) / self.rate.per_second
            } else {
                3_600.0
            };
            Err(Duration::from_secs_f64(wait))
        }
    }
}

impl Limiter {
    /// Gives `amount` tokens back to `key`'s bucket (never above the burst), e.g.
    /// when the request they were spent on turned out to be an honest one.
    pub fn refund(&self, key: &str, amount: f64) {
        let now = Instant::now();
        let burst = f64::from(self.rate.burst.max(1));
        let mut buckets = self.buckets.lock();
        if let Some(bucket) = buckets.get_mut(key) {
            let tokens = refill(bucket, now, self.rate.per_second, burst);
            *bucket = Bucket {
                tokens: (tokens + amount).min(burst),
                at: now,
            };
        }
    }
}

fn refill(bucket: &Bucket, now: Instant, per_second: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * per_second).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_sustained_rate() {
        let limiter = Limiter::new(Rate::new(3, 2.0));
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        let wait = limiter.check("a").expect_err("the burst is spent");
        assert_eq!(wait, Duration::from_millis(500));
        assert!(limiter.check("b").is_ok(), "keys are independent");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(limiter.check("a").is_ok(), "one token after 1/rate");
        assert!(limiter.check("a").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn successes_cost_a_tenth_of_failures() {
        // The default credential rate: 10 at once, then one every 2 s.
        let limiter = Limiter::new(Rate::new(10, 0.5));
        // A busy office: 100 people sign in successfully within a few seconds.
        for person in 0..100 {
            limiter
                .check("office")
                .unwrap_or_else(|wait| panic!("sign-in {person} refused, wait {wait:?}"));
            limiter.refund("office", SUCCESS_REFUND);
            tokio::time::advance(Duration::from_millis(40)).await;
        }
        // A guesser from another address: 10 failures, then one every 2 s.
        for _ in 0..10 {
            assert!(limiter.check("guesser").is_ok());
        }
        assert!(limiter.check("guesser").is_err());
        limiter.refund("nobody", SUCCESS_REFUND);
        assert!(limiter.buckets.lock().get("nobody").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refund_never_lifts_a_bucket_over_its_burst() {
        let limiter = Limiter::new(Rate::new(2, 0.0));
        assert!(limiter.check("a").is_ok());
        limiter.refund("a", 5.0);
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_are_forgotten_when_the_table_grows() {
        let limiter = Limiter::new(Rate::new(1, 10.0));
        for key in 0..=PRUNE_ABOVE {
            limiter.check(&key.to_string()).expect("first request");
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        limiter.check("new").expect("first request");
        assert!(limiter.buckets.lock().len() <= 2);
    }
}
