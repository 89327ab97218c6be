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
//!
//! One gateway keeps its buckets in memory. Gateways on a shared PostgreSQL store
//! (several instances) keep them in it, one row per bucket changed by one atomic
//! statement on the database's clock, so that a limit is the same whatever the number
//! of gateways. A store that fails lets the request through (logged): the limits
//! protect the shop, they must not take it down.

use std::collections::HashMap;
use std::time::Duration;

use agora_messaging::{Backend, Db, Migration};
use parking_lot::Mutex;
use sqlx::Row;
use tokio::time::Instant;

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "rate-limit buckets shared by the gateways",
    // Never applied on SQLite (one gateway, buckets in memory); kept valid.
    sqlite: "CREATE TABLE gateway_rate_buckets (
        limiter TEXT NOT NULL,
        key TEXT NOT NULL,
        tokens DOUBLE PRECISION NOT NULL,
        at TEXT NOT NULL,
        admitted BOOLEAN NOT NULL,
        PRIMARY KEY (limiter, key)
    );",
    postgres: "CREATE TABLE gateway_rate_buckets (
        limiter TEXT NOT NULL,
        key TEXT NOT NULL,
        tokens DOUBLE PRECISION NOT NULL,
        at TIMESTAMPTZ NOT NULL,
        admitted BOOLEAN NOT NULL,
        PRIMARY KEY (limiter, key)
    );",
}];

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
    /// In memory: for one gateway.
    pub fn new(limits: Limits) -> Self {
        Self {
            per_client: limits.per_client.map(Limiter::new),
            per_user: limits.per_user.map(Limiter::new),
            credentials: limits.credentials.map(Limiter::new),
        }
    }

    /// In `db` when it is PostgreSQL (shared by every gateway on it), else in memory.
    pub async fn on(limits: Limits, db: &Db) -> Result<Self, agora_messaging::Error> {
        if db.backend() != Backend::Postgres {
            return Ok(Self::new(limits));
        }
        db.migrate("gateway-limits", MIGRATIONS).await?;
        let shared = |name: &'static str, rate: Option<Rate>| {
            rate.map(|rate| Limiter::shared(rate, db.clone(), name))
        };
        Ok(Self {
            per_client: shared("per_client", limits.per_client),
            per_user: shared("per_user", limits.per_user),
            credentials: shared("credentials", limits.credentials),
        })
    }
}

/// Token buckets by key. Idle keys are forgotten once the table grows.
#[derive(Debug)]
pub(crate) struct Limiter {
    rate: Rate,
    buckets: Buckets,
}

/// Where a limiter keeps its buckets.
#[derive(Debug)]
enum Buckets {
    Memory(Mutex<HashMap<String, Bucket>>),
    /// Rows of `gateway_rate_buckets` under `name`.
    Shared {
        db: Db,
        name: &'static str,
    },
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

/// One token taken, if there is one, on the database's clock: the refill and the take
/// in one statement, so that gateways racing on a key never both spend its last token.
///
/// Its commit does not wait for the disk (`synchronous_commit` off for this statement's
/// transaction): a crash may forget the last few milliseconds of spent tokens, which
/// costs a limit nothing, and a check takes 0.16 ms instead of 1.8 ms (pgbench, one
/// client, this machine).
const TAKE_SQL: &str = "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
     INSERT INTO gateway_rate_buckets AS b (limiter, key, tokens, at, admitted)
     SELECT $1, $2, $3 - 1, now(), TRUE FROM relaxed
     ON CONFLICT (limiter, key) DO UPDATE SET
         admitted = LEAST($3, b.tokens + EXTRACT(EPOCH FROM now() - b.at)::float8 * $4) >= 1,
         tokens = LEAST($3, b.tokens + EXTRACT(EPOCH FROM now() - b.at)::float8 * $4)
             - CASE WHEN LEAST($3, b.tokens + EXTRACT(EPOCH FROM now() - b.at)::float8 * $4) >= 1
                    THEN 1 ELSE 0 END,
         at = now()
     RETURNING admitted, tokens";

const REFUND_SQL: &str = "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
     UPDATE gateway_rate_buckets
     SET tokens = LEAST($3, tokens + EXTRACT(EPOCH FROM now() - at)::float8 * $4 + $5), at = now()
     FROM relaxed
     WHERE limiter = $1 AND key = $2";

/// Buckets full again (idle for `$2` seconds) are forgotten.
const PRUNE_SQL: &str = "DELETE FROM gateway_rate_buckets
     WHERE limiter = $1 AND at < now() - make_interval(secs => $2)";

/// One shared check in this many also forgets the idle buckets.
const PRUNE_EVERY: u32 = 1_000;

impl Limiter {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Buckets::Memory(Mutex::new(HashMap::new())),
        }
    }

    fn shared(rate: Rate, db: Db, name: &'static str) -> Self {
        Self {
            rate,
            buckets: Buckets::Shared { db, name },
        }
    }

    /// How long until one token is available with `tokens` left.
    fn wait(&self, tokens: f64) -> Duration {
        let wait = if self.rate.per_second > 0.0 {
            (1.0 - tokens) / self.rate.per_second
        } else {
            3_600.0
        };
        Duration::from_secs_f64(wait.max(0.0))
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub async fn check(&self, key: &str) -> Result<(), Duration> {
        match &self.buckets {
            Buckets::Memory(buckets) => self.check_in(buckets, key),
            Buckets::Shared { db, name } => self.check_shared(db, name, key).await,
        }
    }

    async fn check_shared(&self, db: &Db, name: &str, key: &str) -> Result<(), Duration> {
        let burst = f64::from(self.rate.burst.max(1));
        if rand::random::<u32>().is_multiple_of(PRUNE_EVERY) {
            let idle = (burst / self.rate.per_second.max(1e-6)).min(86_400.0);
            if let Err(error) = sqlx::query(PRUNE_SQL)
                .bind(name)
                .bind(idle)
                .execute(db.pool())
                .await
            {
                tracing::warn!(%error, "forgetting idle rate-limit buckets failed");
            }
        }
        let taken = sqlx::query(TAKE_SQL)
            .bind(name)
            .bind(key)
            .bind(burst)
            .bind(self.rate.per_second)
            .fetch_one(db.pool())
            .await
            .and_then(|row| Ok((row.try_get::<bool, _>(0)?, row.try_get::<f64, _>(1)?)));
        match taken {
            Ok((true, _)) => Ok(()),
            Ok((false, tokens)) => Err(self.wait(tokens)),
            Err(error) => {
                tracing::warn!(%error, limiter = name, "rate-limit store failed; request let through");
                Ok(())
            }
        }
    }

    fn check_in(
        &self,
        buckets: &Mutex<HashMap<String, Bucket>>,
        key: &str,
    ) -> Result<(), Duration> {
        let now = Instant::now();
        let burst = f64::from(self.rate.burst.max(1));
        let mut buckets = buckets.lock();
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
            Err(self.wait(tokens))
        }
    }
}

impl Limiter {
    /// Gives `amount` tokens back to `key`'s bucket (never above the burst), e.g.
    /// when the request they were spent on turned out to be an honest one.
    pub async fn refund(&self, key: &str, amount: f64) {
        let burst = f64::from(self.rate.burst.max(1));
        let buckets = match &self.buckets {
            Buckets::Memory(buckets) => buckets,
            Buckets::Shared { db, name } => {
                let refunded = sqlx::query(REFUND_SQL)
                    .bind(*name)
                    .bind(key)
                    .bind(burst)
                    .bind(self.rate.per_second)
                    .bind(amount)
                    .execute(db.pool())
                    .await;
                if let Err(error) = refunded {
                    tracing::warn!(%error, limiter = name, "rate-limit refund failed");
                }
                return;
            }
        };
        let now = Instant::now();
        let mut buckets = buckets.lock();
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

    impl Limiter {
        fn memory(&self) -> &Mutex<HashMap<String, Bucket>> {
            match &self.buckets {
                Buckets::Memory(buckets) => buckets,
                Buckets::Shared { .. } => panic!("a shared limiter"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_sustained_rate() {
        let limiter = Limiter::new(Rate::new(3, 2.0));
        for _ in 0..3 {
            assert!(limiter.check("a").await.is_ok());
        }
        let wait = limiter.check("a").await.expect_err("the burst is spent");
        assert_eq!(wait, Duration::from_millis(500));
        assert!(limiter.check("b").await.is_ok(), "keys are independent");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(limiter.check("a").await.is_ok(), "one token after 1/rate");
        assert!(limiter.check("a").await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn successes_cost_a_tenth_of_failures() {
        // The default credential rate: 10 at once, then one every 2 s.
        let limiter = Limiter::new(Rate::new(10, 0.5));
        // A busy office: 100 people sign in successfully within a few seconds.
        for person in 0..100 {
            limiter
                .check("office")
                .await
                .unwrap_or_else(|wait| panic!("sign-in {person} refused, wait {wait:?}"));
            limiter.refund("office", SUCCESS_REFUND).await;
            tokio::time::advance(Duration::from_millis(40)).await;
        }
        // A guesser from another address: 10 failures, then one every 2 s.
        for _ in 0..10 {
            assert!(limiter.check("guesser").await.is_ok());
        }
        assert!(limiter.check("guesser").await.is_err());
        limiter.refund("nobody", SUCCESS_REFUND).await;
        assert!(limiter.memory().lock().get("nobody").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refund_never_lifts_a_bucket_over_its_burst() {
        let limiter = Limiter::new(Rate::new(2, 0.0));
        assert!(limiter.check("a").await.is_ok());
        limiter.refund("a", 5.0).await;
        assert!(limiter.check("a").await.is_ok());
        assert!(limiter.check("a").await.is_ok());
        assert!(limiter.check("a").await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_are_forgotten_when_the_table_grows() {
        let limiter = Limiter::new(Rate::new(1, 10.0));
        for key in 0..=PRUNE_ABOVE {
            limiter
                .check(&key.to_string())
                .await
                .expect("first request");
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        limiter.check("new").await.expect("first request");
        assert!(limiter.memory().lock().len() <= 2);
    }
}

#[cfg(test)]
mod shared_tests {
    use super::*;

    /// Two gateways on one PostgreSQL store: the credential limit (10 at once) is
    /// the same for both together, not 10 each; a refund reaches the shared bucket.
    #[tokio::test]
    async fn gateways_on_one_database_share_their_buckets() {
        let Some(database) = agora_testkit::PgDatabase::create().await else {
            return;
        };
        let db = Db::connect(database.url()).await.expect("connect");
        let limits = Limits {
            per_client: None,
            per_user: None,
            credentials: Some(Rate::new(10, 0.001)),
        };
        let first = Limiters::on(limits, &db).await.expect("first gateway");
        let second = Limiters::on(limits, &db).await.expect("second gateway");
        let (first, second) = (
            first.credentials.expect("a limiter"),
            second.credentials.expect("a limiter"),
        );
        for attempt in 0..10 {
            let gateway = if attempt % 2 == 0 { &first } else { &second };
            assert!(gateway.check("10.0.0.1").await.is_ok(), "attempt {attempt}");
        }
        let wait = second
            .check("10.0.0.1")
            .await
            .expect_err("the burst is spent");
        assert!(wait > Duration::from_secs(100), "{wait:?}");
        assert!(first.check("10.0.0.1").await.is_err());
        assert!(
            first.check("10.0.0.2").await.is_ok(),
            "keys are independent"
        );
        second.refund("10.0.0.1", 1.0).await;
        assert!(
            first.check("10.0.0.1").await.is_ok(),
            "the refund is shared"
        );
        assert!(first.check("10.0.0.1").await.is_err());
    }
}
