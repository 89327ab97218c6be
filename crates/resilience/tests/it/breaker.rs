use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use agora_resilience::{BreakerConfig, BreakerLayer, BreakerState, CallError, CircuitBreaker};
use axum::http::{Request, Response};
use bytes::Bytes;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

use crate::support::{Counter, answer, get};

/// A target whose answer status the test sets; status 0 means "times out" (an error).
#[derive(Clone)]
struct Target {
    status: Arc<AtomicU16>,
    calls: Counter,
    delay: Duration,
}

impl Target {
    fn new() -> Self {
        Target {
            status: Arc::new(AtomicU16::new(200)),
            calls: Counter::default(),
            delay: Duration::ZERO,
        }
    }

    fn answers(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn behind(
        &self,
        breaker: &CircuitBreaker,
    ) -> impl Service<
        Request<Bytes>,
        Response = Response<Bytes>,
        Error = CallError,
        Future = impl Send + 'static,
    > + Clone
    + 'static {
        let target = self.clone();
        ServiceBuilder::new()
            .layer(BreakerLayer::new(breaker.clone()))
            .service(service_fn(move |_request: Request<Bytes>| {
                target.calls.hit();
                let status = target.status.load(Ordering::SeqCst);
                let delay = target.delay;
                async move {
                    tokio::time::sleep(delay).await;
                    match status {
                        0 => Err(CallError::Timeout),
                        status => Ok(answer(status)),
                    }
                }
            }))
    }
}

async fn call<S>(service: &S) -> Result<Response<Bytes>, CallError>
where
    S: Service<Request<Bytes>, Response = Response<Bytes>, Error = CallError> + Clone,
{
    service.clone().oneshot(get("/")).await
}

fn breaker() -> CircuitBreaker {
    CircuitBreaker::new("payment", BreakerConfig::default())
}

/// Drives the default breaker open: 10 failures.
async fn open<S>(target: &Target, service: &S, breaker: &CircuitBreaker)
where
    S: Service<Request<Bytes>, Response = Response<Bytes>, Error = CallError> + Clone,
{
    target.answers(503);
    for _ in 0..10 {
        let _ = call(service).await;
    }
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn it_opens_at_half_failures_once_it_has_ten_calls() {
    let breaker = breaker();
    let target = Target::new();
    let service = target.behind(&breaker);
    for _ in 0..5 {
        call(&service).await.unwrap();
    }
    target.answers(0);
    for _ in 0..4 {
        let _ = call(&service).await;
    }
    assert_eq!(breaker.state(), BreakerState::Closed, "9 calls are too few");

    let _ = call(&service).await;

    assert_eq!(breaker.state(), BreakerState::Open, "5 failures of 10");
    assert_eq!(breaker.name(), "payment");
    assert_eq!(breaker.snapshot().times_opened, 1);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_rejects_at_once_without_calling() {
    let breaker = breaker();
    let target = Target::new();
    let service = target.behind(&breaker);
    open(&target, &service, &breaker).await;
    let calls = target.calls.get();
    let start = tokio::time::Instant::now();

    for _ in 0..100 {
        let result = call(&service).await;
        assert!(matches!(result, Err(CallError::CircuitOpen)), "{result:?}");
    }

    assert_eq!(target.calls.get(), calls);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(breaker.snapshot().rejected, 100);
}

#[tokio::test(start_paused = true)]
async fn below_the_rate_it_stays_closed() {
    let breaker = breaker();
    let target = Target::new();
    let service = target.behind(&breaker);

    for round in 0..100 {
        // 2 failures in every 5 calls, successes first: 40% in any window.
        target.answers(if round % 5 >= 3 { 502 } else { 200 });
        let _ = call(&service).await;
    }

    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn client_errors_are_not_failures() {
    let breaker = breaker();
    let target = Target::new();
    let service = target.behind(&breaker);
    target.answers(404);

    for _ in 0..50 {
        assert_eq!(call(&service).await.unwrap().status(), 404);
    }

    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn the_window_forgets_calls_older_than_ten_seconds() {
    let breaker = breaker();
    let target = Target::new();
    let service = target.behind(&breaker);
    target.answers(500);
    for _ in 0..9 {
        let _ = call(&service).await;
    }

    tokio::time::advance(Duration::from_secs(11)).await;
    let _ = call(&service).await;

    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.snapshot().window_calls, 1);
}

#[tokio::test(start_paused = true)]
async fn after_the_open_period_one_probe_goes_through_and_closes_on_success() {
    let breaker = breaker();
    let mut target = Target::new();
    let service = target.behind(&breaker);
    open(&target, &service, &breaker).await;

    assert_eq!(breaker.open_remaining(), Some(Duration::from_secs(5)));
    tokio::time::advance(Duration::from_millis(4_999)).await;
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(breaker.open_remaining(), Some(Duration::from_millis(1)));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert_eq!(breaker.open_remaining(), None);

    // A slow probe is in flight: other calls are still refused without a call.
    target.answers(200);
    target.delay = Duration::from_millis(100);
    let slow = target.behind(&breaker);
    let calls = target.calls.get();
    let probe = tokio::spawn(async move { call(&slow).await });
    tokio::task::yield_now().await;
    assert_eq!(target.calls.get(), calls + 1);
    assert!(matches!(call(&service).await, Err(CallError::CircuitOpen)));
    assert_eq!(target.calls.get(), calls + 1);

    assert_eq!(probe.await.unwrap().unwrap().status(), 200);

    assert_eq!(breaker.state(), BreakerState::Closed);
    call(&service).await.unwrap();
    assert_eq!(target.calls.get(), calls + 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_it_again() {
    let breaker = breaker();
    let target = Target::new();
    let service = target.behind(&breaker);
    open(&target, &service, &breaker).await;
    tokio::time::advance(Duration::from_secs(5)).await;

    let probe = call(&service).await;

    assert_eq!(probe.unwrap().status(), 503);
    assert_eq!(breaker.state(), BreakerState::Open);
    assert!(matches!(call(&service).await, Err(CallError::CircuitOpen)));
    assert_eq!(breaker.snapshot().times_opened, 2);
    // And the next open period ends in a probe again.
    tokio::time::advance(Duration::from_secs(5)).await;
    target.answers(200);
    call(&service).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_frees_its_slot() {
    let breaker = breaker();
    let mut target = Target::new();
    let service = target.behind(&breaker);
    open(&target, &service, &breaker).await;
    tokio::time::advance(Duration::from_secs(5)).await;
    target.answers(200);
    target.delay = Duration::from_secs(60);
    let slow = target.behind(&breaker);

    let cancelled = tokio::time::timeout(Duration::from_millis(10), call(&slow)).await;

    assert!(cancelled.is_err());
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    target.delay = Duration::ZERO;
    let fast = target.behind(&breaker);
    call(&fast).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn its_settings_are_configurable() {
    let breaker = CircuitBreaker::new(
        "customer",
        BreakerConfig {
            min_calls: 2,
            failure_rate: 1.0,
            open_duration: Duration::from_secs(1),
            ..BreakerConfig::default()
        },
    );
    let target = Target::new();
    let service = target.behind(&breaker);
    target.answers(0);

    let _ = call(&service).await;
    assert_eq!(breaker.state(), BreakerState::Closed);
    let _ = call(&service).await;
    assert_eq!(breaker.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    let snapshot = serde_json::to_value(breaker.snapshot()).unwrap();
    assert_eq!(snapshot["name"], "customer");
    assert_eq!(snapshot["state"], "half_open");
}

#[tokio::test(start_paused = true)]
async fn a_proxy_breaker_ignores_error_answers_but_not_timeouts() {
    let breaker = CircuitBreaker::new(
        "ordering",
        BreakerConfig {
            count_server_errors: false,
            ..BreakerConfig::default()
        },
    );
    let target = Target::new();
    let service = target.behind(&breaker);
    target.answers(503);
    for _ in 0..20 {
        let _ = call(&service).await;
    }
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "503 answers are answers"
    );
    target.answers(0);
    for _ in 0..20 {
        let _ = call(&service).await;
    }
    assert_eq!(breaker.state(), BreakerState::Open, "timeouts still count");
}

#[tokio::test(start_paused = true)]
async fn an_idle_breaker_past_its_open_period_is_scraped_half_open_not_open() {
    agora_telemetry::install();
    let breaker = CircuitBreaker::new("idle-target", BreakerConfig::default());
    breaker.observe("idle-caller");
    let target = Target::new();
    let service = target.behind(&breaker);
    let series = r#"agora_breaker_state{service="idle-caller",breaker="idle-target"}"#;
    let scraped = async || {
        let text = agora_telemetry::scrape().await;
        let line = text
            .lines()
            .find(|line| line.starts_with(series))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .to_owned();
        line.rsplit(' ').next().unwrap().to_owned()
    };
    assert_eq!(scraped().await, "0", "closed");

    open(&target, &service, &breaker).await;
    assert_eq!(scraped().await, "1", "open");

    // Nobody calls; the open period ends.
    tokio::time::advance(BreakerConfig::default().open_duration).await;
    assert_eq!(
        scraped().await,
        "2",
        "half-open: the next call goes through as a probe"
    );
    assert_eq!(target.calls.get(), 10, "no call was made to find out");
}
