//! Payment's own part of the harness (`agora-service-testkit` has the rest): a
//! scripted, counting provider, its config, ordering's accepted orders, and its
//! internal routes with ordering's service token.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agora_contracts::{Address, AddressSource, Money, OrderAccepted, OrderLine};
use agora_messaging::{Backoff, Envelope};
use agora_payment::{
    Payment, PaymentConfig, PaymentProvider, ProviderAuthorization, ProviderCapture, ProviderError,
    ProviderRefund,
};
use agora_service_testkit::TestEnv;
use agora_service_testkit::http::{self, bearer};
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// One answer of payment's (the harness's `Answer`: `Answer` here is the fake
/// provider's).
pub use agora_service_testkit::http::Answer as Reply;
pub use agora_service_testkit::{Backend, TEST_PLANE};

/// What the fake provider answers to one call.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    Approve,
    Decline(&'static str),
    Unavailable,
    /// Never answers (the service's timeout must).
    Hang,
}

/// A provider that counts its calls and answers from a script (then `fallback`). With
/// a closed gate, every authorization waits until the test opens it. Captures,
/// refunds and voids answer from their own script (then approve), and are counted with
/// the idempotency keys they carried.
pub struct FakeProvider {
    calls: AtomicUsize,
    /// The idempotency key of every authorization call.
    authorize_keys: std::sync::Mutex<Vec<String>>,
    /// Never held across an await.
    script: std::sync::Mutex<VecDeque<Answer>>,
    fallback: Answer,
    gate: tokio::sync::Semaphore,
    /// `(operation, reference, idempotency key)` of every capture, refund and void.
    settlements: std::sync::Mutex<Vec<(&'static str, String, String)>>,
    settlement_script: std::sync::Mutex<VecDeque<Answer>>,
    settlement_gate: tokio::sync::Semaphore,
}

impl FakeProvider {
    pub fn new(fallback: Answer) -> Arc<FakeProvider> {
        Self::scripted([], fallback)
    }

    pub fn scripted(script: impl IntoIterator<Item = Answer>, fallback: Answer) -> Arc<Self> {
        Arc::new(FakeProvider {
            calls: AtomicUsize::new(0),
            authorize_keys: std::sync::Mutex::new(Vec::new()),
            script: std::sync::Mutex::new(script.into_iter().collect()),
            fallback,
            gate: tokio::sync::Semaphore::new(tokio::sync::Semaphore::MAX_PERMITS),
            settlements: std::sync::Mutex::new(Vec::new()),
            settlement_script: std::sync::Mutex::new(VecDeque::new()),
            settlement_gate: tokio::sync::Semaphore::new(tokio::sync::Semaphore::MAX_PERMITS),
        })
    }

    /// From now on, captures, refunds and voids wait for
    /// [`FakeProvider::open_settlements`] (once they are counted).
    pub fn gate_settlements(&self) {
        self.settlement_gate
            .forget_permits(tokio::sync::Semaphore::MAX_PERMITS);
    }

    pub fn open_settlements(&self) {
        self.settlement_gate.add_permits(1_000);
    }

    /// The next captures, refunds and voids answer these, in order (then approve).
    pub fn script_settlements(&self, answers: impl IntoIterator<Item = Answer>) {
        self.settlement_script.lock().unwrap().extend(answers);
    }

    /// How many captures, refunds or voids (`operation`) were asked.
    pub fn settlements(&self, operation: &str) -> usize {
        self.settlements
            .lock()
            .unwrap()
            .iter()
            .filter(|(op, _, _)| *op == operation)
            .count()
    }

    /// The idempotency keys of every call of `operation`.
    pub fn keys(&self, operation: &str) -> Vec<String> {
        self.settlements
            .lock()
            .unwrap()
            .iter()
            .filter(|(op, _, _)| *op == operation)
            .map(|(_, _, key)| key.clone())
            .collect()
    }

    async fn settle(&self, operation: &'static str, reference: &str, key: &str) -> Answer {
        assert!(!reference.is_empty() && !key.is_empty());
        self.settlements
            .lock()
            .unwrap()
            .push((operation, reference.to_owned(), key.to_owned()));
        let answer = self
            .settlement_script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Answer::Approve);
        let _permit = self.settlement_gate.acquire().await.unwrap();
        answer
    }

    /// A provider whose calls wait for [`FakeProvider::open`].
    pub fn gated(fallback: Answer) -> Arc<Self> {
        let provider = Self::new(fallback);
        provider
            .gate
            .forget_permits(tokio::sync::Semaphore::MAX_PERMITS);
        provider
    }

    pub fn open(&self) {
        self.gate.add_permits(1_000);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The idempotency keys authorizations were asked with, in order.
    pub fn authorize_keys(&self) -> Vec<String> {
        self.authorize_keys.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl PaymentProvider for FakeProvider {
    async fn authorize(
        &self,
        token: &str,
        amount: &Money,
        idempotency_key: &str,
    ) -> Result<ProviderAuthorization, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.authorize_keys
            .lock()
            .unwrap()
            .push(idempotency_key.to_owned());
        let answer = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(self.fallback);
        let _permit = self.gate.acquire().await.unwrap();
        assert!(!token.is_empty() && amount.amount_cents > 0);
        match answer {
            Answer::Approve => Ok(ProviderAuthorization {
                reference: format!("fake_{}", Uuid::now_v7().simple()),
                expires_at: Some(time::OffsetDateTime::now_utc() + time::Duration::days(7)),
            }),
            Answer::Decline(reason) => Err(ProviderError::Declined {
                reason: reason.to_owned(),
            }),
            Answer::Unavailable => Err(ProviderError::Unavailable),
            Answer::Hang => std::future::pending().await,
        }
    }

    async fn capture(
        &self,
        reference: &str,
        amount: &Money,
        idempotency_key: &str,
    ) -> Result<ProviderCapture, ProviderError> {
        assert!(amount.amount_cents > 0);
        let answer = self.settle("capture", reference, idempotency_key).await;
        answer_with(answer, || ProviderCapture {
            reference: format!("fake_capture_{}", Uuid::now_v7().simple()),
        })
        .await
    }

    async fn refund(
        &self,
        capture_reference: &str,
        amount: &Money,
        idempotency_key: &str,
    ) -> Result<ProviderRefund, ProviderError> {
        assert!(capture_reference.starts_with("fake_capture_") && amount.amount_cents > 0);
        let answer = self
            .settle("refund", capture_reference, idempotency_key)
            .await;
        answer_with(answer, || ProviderRefund {
            reference: format!("fake_refund_{}", Uuid::now_v7().simple()),
        })
        .await
    }

    async fn void(&self, reference: &str, idempotency_key: &str) -> Result<(), ProviderError> {
        let answer = self.settle("void", reference, idempotency_key).await;
        answer_with(answer, || ()).await
    }
}

async fn answer_with<T>(answer: Answer, ok: impl FnOnce() -> T) -> Result<T, ProviderError> {
    match answer {
        Answer::Approve => Ok(ok()),
        Answer::Decline(reason) => Err(ProviderError::Declined {
            reason: reason.to_owned(),
        }),
        Answer::Unavailable => Err(ProviderError::Unavailable),
        Answer::Hang => std::future::pending().await,
    }
}

/// A store and a bus for one test.
pub struct Env(TestEnv);

agora_service_testkit::env_deref!(Env);

impl Env {
    /// `None` (after a loud skip) when the backend is unreachable.
    pub async fn new(backend: Backend) -> Option<Env> {
        let sources = [agora_payment::SOURCE];
        TestEnv::new(backend, "payment", &sources).await.map(Env)
    }

    pub fn config(&self, provider: Arc<dyn PaymentProvider>) -> PaymentConfig {
        PaymentConfig {
            provider,
            provider_timeout: Duration::from_secs(5),
            capture_retry: Backoff::new(Duration::from_millis(10), Duration::from_millis(50)),
            internal: TEST_PLANE.clone(),
            ..PaymentConfig::new(self.db_url.clone(), self.shared_bus(), self.issuer.keys())
        }
    }

    pub async fn start_with(&self, config: PaymentConfig) -> Payment {
        agora_payment::build(config).await.expect("payment starts")
    }

    pub async fn start(&self, provider: Arc<dyn PaymentProvider>) -> Payment {
        self.start_with(self.config(provider)).await
    }

    /// Every event payment published so far (waiting until there are `at_least`).
    pub async fn events(&self, at_least: usize) -> Vec<Envelope> {
        self.published(agora_payment::SOURCE, at_least).await
    }

    /// Every event payment published before a sentinel: a fresh authorization made
    /// now, whose event the relay publishes after every event committed before it.
    /// What this returns is therefore all there is, not just all there is so far.
    pub async fn events_before_sentinel(&self, router: &axum::Router) -> Vec<Envelope> {
        let sentinel = authorize(router, &request_body()).await;
        assert_eq!(sentinel.status, StatusCode::CREATED, "{}", sentinel.body);
        let id = sentinel.body["authorization_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut reader = self.reader_of(agora_payment::SOURCE).await;
        let mut at_least = 1;
        loop {
            let events = reader.read(at_least).await;
            if let Some(at) = events.iter().position(|e| e.subject == id) {
                return events[..at].to_vec();
            }
            at_least = events.len() + 1;
        }
    }

    /// Publishes ordering's `OrderAccepted` for `authorization` (an answer body of
    /// `POST /internal/payment/authorizations`); returns its envelope.
    pub async fn accept_order(&self, authorization: &Value) -> Envelope {
        let order_id = authorization["order_id"].as_str().unwrap();
        self.emit(&order_accepted(authorization), order_id).await
    }

    /// Waits until payment's consumer of accepted orders has settled every message
    /// (acked, or dead-lettered).
    pub async fn orders_settled(&self) {
        let config = agora_payment::orders_subscriber_config().consumer_config();
        self.consumer_settled(&config).await;
    }
}

/// Ordering's `OrderAccepted` for `authorization`, totalling its amount.
pub fn order_accepted(authorization: &Value) -> OrderAccepted {
    let uuid = |field: &str| Uuid::parse_str(authorization[field].as_str().unwrap()).unwrap();
    OrderAccepted {
        order_id: uuid("order_id"),
        customer_id: uuid("customer_id"),
        lines: vec![OrderLine {
            product_id: Uuid::now_v7(),
            quantity: 1,
            unit_price_cents: authorization["amount_cents"].as_i64().unwrap(),
        }],
        total_cents: authorization["amount_cents"].as_i64().unwrap(),
        currency: authorization["currency"].as_str().unwrap().to_owned(),
        shipping_address: Address {
            line1: "1 Main Street".to_owned(),
            line2: None,
            city: "Berlin".to_owned(),
            postal_code: "10115".to_owned(),
            country: "DE".to_owned(),
        },
        address_source: AddressSource::Replica,
        payment_authorization_id: uuid("authorization_id"),
        accepted_at: time::OffsetDateTime::now_utc(),
        version: 1,
    }
}

/// A valid authorization request body with a fresh request id.
pub fn request_body() -> Value {
    json!({
        "request_id": Uuid::now_v7(),
        "order_id": Uuid::now_v7(),
        "customer_id": Uuid::now_v7(),
        "amount_cents": 4_990,
        "currency": "EUR",
        "payment_token": "tok_visa",
    })
}

/// One request through the router, with a raw body and content type.
pub async fn call_raw(
    router: &axum::Router,
    method: Method,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
) -> Reply {
    call_with_headers(router, method, path, &[], body).await
}

/// `Bearer <a service token of ordering's for payment>`.
pub fn service_authorization() -> String {
    bearer(&agora_service_testkit::service_token("ordering", "payment"))
}

/// One request through the router, with extra headers; with a service token unless
/// `headers` has an `authorization` of its own.
pub async fn call_with_headers(
    router: &axum::Router,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
) -> Reply {
    let authorization = service_authorization();
    let mut all = Vec::new();
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
    {
        all.push(("authorization", authorization.as_str()));
    }
    all.extend_from_slice(headers);
    http::send(router, method, path, &all, body).await
}

/// `POST /internal/payment/authorizations` with `body`.
pub async fn authorize(router: &axum::Router, body: &Value) -> Reply {
    call_raw(
        router,
        Method::POST,
        "/internal/payment/authorizations",
        Some(("application/json", body.to_string().into_bytes())),
    )
    .await
}

/// `GET /internal/payment/authorizations/{id}`.
pub async fn get_authorization(router: &axum::Router, id: &str) -> Reply {
    call_raw(
        router,
        Method::GET,
        &format!("/internal/payment/authorizations/{id}"),
        None,
    )
    .await
}

/// `POST /internal/payment/authorizations` with `body` and `Agora-Budget-Ms: budget_ms`.
pub async fn authorize_with_budget(router: &axum::Router, body: &Value, budget_ms: &str) -> Reply {
    call_with_headers(
        router,
        Method::POST,
        "/internal/payment/authorizations",
        &[("agora-budget-ms", budget_ms)],
        Some(("application/json", body.to_string().into_bytes())),
    )
    .await
}

/// `POST /internal/payment/authorizations/{id}/{operation}` (`refund` or `void`) for
/// the order `order_id`.
pub async fn give_back(router: &axum::Router, id: &str, operation: &str, order_id: &str) -> Reply {
    call_raw(
        router,
        Method::POST,
        &format!("/internal/payment/authorizations/{id}/{operation}"),
        Some((
            "application/json",
            json!({"order_id": order_id, "reason": "out_of_stock"})
                .to_string()
                .into_bytes(),
        )),
    )
    .await
}
