//! Ordering's own part of the harness (`agora-service-testkit` has the rest): fake
//! payment and customer clients, its config, its replicas' events, and its routes
//! (the `/internal` ones with the gateway's service token).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::Duration;

use agora_contracts::{
    Address, CustomerAddressChanged, Event, PaymentMethod, PaymentMethodChanged, ProductAdded,
};
use agora_messaging::{Context, Envelope, Handler};
use agora_ordering::{
    Authorization, AuthorizationRequest, CustomerClient, CustomerError, CustomerRecord,
    CustomerReplicaHandler, Ordering, OrderingConfig, PaymentClient, PaymentError,
    ProductReplicaHandler,
};
use agora_service_testkit::http::{self, json};
use agora_service_testkit::{TEST_PLANE, TestEnv};
use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::Mutex;
use uuid::Uuid;

pub use agora_service_testkit::http::Answer;
pub use agora_service_testkit::{Backend, eventually};

/// How the fake payment answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentMode {
    Approve,
    Decline,
    Unavailable,
    /// Never answers (the service's deadline must cut it).
    Hang,
}

/// A payment service in memory: counts calls, and, like the real one, authorizes each
/// request id once (a repeated request id gets the first authorization back).
#[derive(Debug)]
pub struct FakePayment {
    pub mode: std::sync::Mutex<PaymentMode>,
    pub calls: AtomicUsize,
    pub delay: Duration,
    pub granted: Mutex<Vec<(AuthorizationRequest, Authorization)>>,
}

impl FakePayment {
    pub fn new(mode: PaymentMode) -> Arc<Self> {
        Self::with_delay(mode, Duration::ZERO)
    }

    pub fn with_delay(mode: PaymentMode, delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            mode: std::sync::Mutex::new(mode),
            calls: AtomicUsize::new(0),
            delay,
            granted: Mutex::new(Vec::new()),
        })
    }

    pub fn set_mode(&self, mode: PaymentMode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn calls(&self) -> usize {
        self.calls.load(AtomicOrdering::SeqCst)
    }

    pub async fn requests(&self) -> Vec<AuthorizationRequest> {
        self.granted
            .lock()
            .await
            .iter()
            .map(|(r, _)| r.clone())
            .collect()
    }
}

#[async_trait]
impl PaymentClient for FakePayment {
    async fn authorize(
        &self,
        request: &AuthorizationRequest,
    ) -> Result<Authorization, PaymentError> {
        self.calls.fetch_add(1, AtomicOrdering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let mode = *self.mode.lock().unwrap();
        match mode {
            PaymentMode::Decline => Err(PaymentError::Declined),
            PaymentMode::Unavailable => Err(PaymentError::Unavailable("down".into())),
            PaymentMode::Hang => {
                std::future::pending::<()>().await;
                Err(PaymentError::Unavailable("unreachable".into()))
            }
            PaymentMode::Approve => {
                let mut granted = self.granted.lock().await;
                if let Some((_, a)) = granted
                    .iter()
                    .find(|(r, _)| r.request_id == request.request_id)
                {
                    return Ok(a.clone());
                }
                let authorization = Authorization {
                    authorization_id: Uuid::now_v7(),
                    request_id: request.request_id,
                    order_id: request.order_id,
                    status: "authorized".into(),
                    amount_cents: request.amount_cents,
                    currency: request.currency.clone(),
                    authorized_at: OffsetDateTime::now_utc(),
                };
                granted.push((request.clone(), authorization.clone()));
                Ok(authorization)
            }
        }
    }
}

/// How the fake customer service answers.
#[derive(Clone, Debug)]
pub enum CustomerMode {
    /// Serves these records.
    Up(Vec<CustomerRecord>),
    Down,
    Hang,
}

#[derive(Debug)]
pub struct FakeCustomer {
    pub mode: std::sync::Mutex<CustomerMode>,
    pub calls: AtomicUsize,
}

impl FakeCustomer {
    pub fn new(mode: CustomerMode) -> Arc<Self> {
        Arc::new(Self {
            mode: std::sync::Mutex::new(mode),
            calls: AtomicUsize::new(0),
        })
    }

    pub fn set_mode(&self, mode: CustomerMode) {
        *self.mode.lock().unwrap() = mode;
    }
}

#[async_trait]
impl CustomerClient for FakeCustomer {
    async fn fetch(&self, customer_id: Uuid) -> Result<Option<CustomerRecord>, CustomerError> {
        self.calls.fetch_add(1, AtomicOrdering::SeqCst);
        let mode = self.mode.lock().unwrap().clone();
        match mode {
            CustomerMode::Up(records) => Ok(records.into_iter().find(|r| r.id == customer_id)),
            CustomerMode::Down => Err(CustomerError::Unavailable("connection refused".into())),
            CustomerMode::Hang => {
                std::future::pending::<()>().await;
                Ok(None)
            }
        }
    }
}

/// A store, a bus, an issuer and the fakes, outliving restarts of ordering.
pub struct Env {
    app: TestEnv,
    pub payment: Arc<FakePayment>,
    pub customer: Arc<FakeCustomer>,
}

agora_service_testkit::env_deref!(Env.app);

impl Env {
    /// `None` (after a loud skip) when the backend is unreachable.
    pub async fn new(backend: Backend) -> Option<Env> {
        let sources = ["ordering", "customer", "catalog", "identity"];
        Some(Env {
            app: TestEnv::new(backend, "ordering", &sources).await?,
            payment: FakePayment::new(PaymentMode::Approve),
            customer: FakeCustomer::new(CustomerMode::Down),
        })
    }

    pub fn config(&self) -> OrderingConfig {
        OrderingConfig {
            internal: TEST_PLANE.clone(),
            ..OrderingConfig::new(
                self.db_url.clone(),
                self.shared_bus(),
                self.issuer.keys(),
                self.payment.clone(),
                self.customer.clone(),
            )
        }
    }

    pub async fn start(&self) -> Ordering {
        agora_ordering::build(self.config())
            .await
            .expect("ordering starts")
    }

    /// Every event ordering published so far (waiting until there are `at_least`).
    pub async fn ordering_events(&self, at_least: usize) -> Vec<Envelope> {
        self.published(agora_ordering::SOURCE, at_least).await
    }
}

/// A started ordering on a fresh store: `None` when the backend is unreachable.
pub async fn start(backend: Backend) -> Option<(Env, Ordering)> {
    let env = Env::new(backend).await?;
    let ordering = env.start().await;
    Some((env, ordering))
}

/// Applies events to ordering's replicas through the handlers, as the subscriber would
/// (one transaction per event).
pub async fn apply(ordering: &Ordering, events: &[Envelope]) {
    for envelope in events {
        let mut tx = ordering.db().begin().await.unwrap();
        if envelope.source == "catalog" {
            ProductReplicaHandler
                .handle(&mut tx, envelope)
                .await
                .unwrap();
        } else {
            CustomerReplicaHandler
                .handle(&mut tx, envelope)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
}

pub fn envelope<E: Event>(event: &E) -> Envelope {
    Envelope::new(event, &Context::new(event.subject())).unwrap()
}

pub fn address(line1: &str) -> Address {
    Address {
        line1: line1.into(),
        line2: None,
        city: "Berlin".into(),
        postal_code: "10115".into(),
        country: "DE".into(),
    }
}

pub fn address_changed(customer_id: Uuid, line1: &str, version: u64) -> Envelope {
    envelope(&CustomerAddressChanged {
        customer_id,
        address: address(line1),
        changed_at: OffsetDateTime::from_unix_timestamp(1_700_000_000 + version as i64).unwrap(),
        version,
    })
}

pub fn payment_method_changed(customer_id: Uuid, token: &str, version: u64) -> Envelope {
    envelope(&PaymentMethodChanged {
        customer_id,
        payment_method: PaymentMethod {
            token: token.into(),
            last4: "4242".into(),
        },
        changed_at: OffsetDateTime::now_utc(),
        version,
    })
}

pub fn product_added(product_id: Uuid, name: &str, version: u64) -> Envelope {
    envelope(&ProductAdded {
        product_id,
        name: name.into(),
        description: "A thing".into(),
        image_url: None,
        added_at: OffsetDateTime::now_utc(),
        version,
    })
}

/// A customer with an address and a payment method in the replica.
pub async fn customer_with_data(env: &Env, ordering: &Ordering) -> (Uuid, String) {
    let (id, token) = env.issuer.customer();
    apply(
        ordering,
        &[
            address_changed(id, "Main St 1", 2),
            payment_method_changed(id, "tok_visa", 3),
        ],
    )
    .await;
    (id, token)
}

/// A product with a name in the replica and a price of `cents` EUR.
pub async fn product(env: &Env, ordering: &Ordering, name: &str, cents: i64) -> Uuid {
    let id = Uuid::now_v7();
    apply(ordering, &[product_added(id, name, 1)]).await;
    set_price(env, ordering, id, cents, "EUR").await;
    id
}

pub async fn set_price(env: &Env, ordering: &Ordering, id: Uuid, cents: i64, currency: &str) {
    let (_, admin) = env.issuer.admin();
    let (status, _, body) = call(
        &ordering.router(),
        Method::PUT,
        &format!("/api/ordering/prices/{id}"),
        Some(&admin),
        &[],
        Some(json!({"amount_cents": cents, "currency": currency})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A service token of the gateway's for ordering (what the ops console's calls carry).
pub fn service_token() -> String {
    agora_service_testkit::service_token("gateway", "ordering")
}

/// One request; to an `/internal` path without `token`, with a [`service_token`].
pub async fn request(
    router: &axum::Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    let service = path.starts_with("/internal/").then(service_token);
    let token = token.or(service.as_deref());
    http::send_as(
        router,
        method,
        path,
        token,
        headers,
        body.as_ref().map(json),
    )
    .await
}

/// One request: status, content type and JSON body.
pub async fn call(
    router: &axum::Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, String, Value) {
    let answer = request(router, method, path, token, headers, body).await;
    (answer.status, answer.content_type, answer.body)
}

/// `POST /api/ordering/orders` with `key` (none when `None`).
pub async fn place_order(
    ordering: &Ordering,
    token: &str,
    key: Option<&str>,
    body: Value,
) -> Answer {
    let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
    request(
        &ordering.router(),
        Method::POST,
        "/api/ordering/orders",
        Some(token),
        &headers,
        Some(body),
    )
    .await
}

pub fn lines(items: &[(Uuid, u32)]) -> Value {
    json!({
        "lines": items
            .iter()
            .map(|(id, q)| json!({"product_id": id, "quantity": q}))
            .collect::<Vec<_>>()
    })
}

/// Asserts a problem+json answer with `expected`.
pub fn assert_problem(answer: &Answer, expected: StatusCode) {
    answer.assert_problem(expected);
}

/// The field paths of a 422's errors.
pub fn error_fields(answer: &Answer) -> Vec<String> {
    answer.error_fields()
}
