//! What the tests share: a running customer on either backend, tokens, HTTP helpers,
//! a publisher of identity's events and a reader of the events customer published.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use agora_auth::{InternalKey, TestIssuer};
use agora_bus::embedded::EmbeddedBus;
use agora_bus::{Bus, ConsumerConfig, SharedBus};
use agora_contracts::{Role, UserSignedUp, bus_subject};
use agora_customer::{Customer, CustomerConfig};
use agora_messaging::{Context, Envelope, SubscriberConfig, stream_config};
use agora_testkit::PgDatabase;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;
use time::OffsetDateTime;
use tower::ServiceExt;
use uuid::Uuid;

pub use agora_testkit::Backend;

/// A store, a bus and a token issuer that outlive restarts of customer.
pub struct Env {
    pub db_url: String,
    pub bus: Arc<EmbeddedBus>,
    pub issuer: TestIssuer,
    /// The deployment's internal-plane key, which customer is given.
    pub internal: InternalKey,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

impl Env {
    /// `None` (after a loud skip) when the backend is unreachable.
    pub async fn new(backend: Backend) -> Option<Env> {
        let dir = tempfile::tempdir().unwrap();
        let (db_url, pg) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("customer.db").display()),
                None,
            ),
            Backend::Postgres => {
                let pg = PgDatabase::create().await?;
                (pg.url().to_owned(), Some(pg))
            }
        };
        let bus = EmbeddedBus::open(dir.path().join("bus.db")).await.unwrap();
        for source in [agora_customer::SOURCE, "identity"] {
            bus.ensure_stream(&stream_config(source)).await.unwrap();
        }
        Some(Env {
            db_url,
            bus: Arc::new(bus),
            issuer: TestIssuer::new(),
            internal: InternalKey::generate(),
            _dir: dir,
            _pg: pg,
        })
    }

    pub fn config(&self) -> CustomerConfig {
        CustomerConfig {
            db_url: self.db_url.clone(),
            bus: self.bus.clone() as SharedBus,
            keys: self.issuer.keys(),
            internal: self.internal.clone(),
        }
    }

    /// A service token of ordering's for customer (what the sync-mode client sends).
    pub fn service_token(&self) -> String {
        self.internal
            .service("ordering")
            .token_for("customer")
            .expect("a service token")
    }

    pub async fn start(&self) -> Customer {
        agora_customer::build(self.config())
            .await
            .expect("customer starts")
    }

    /// Publishes identity's `UserSignedUp` for `user_id`, as identity's relay would;
    /// returns the envelope.
    pub async fn publish_sign_up(&self, user_id: Uuid, name: &str, email: &str) -> Envelope {
        let event = UserSignedUp {
            user_id,
            email: email.to_owned(),
            name: name.to_owned(),
            role: Role::Customer,
            signed_up_at: OffsetDateTime::now_utc(),
            version: 1,
        };
        let envelope = Envelope::new(&event, &Context::new(user_id.to_string())).unwrap();
        self.publish(&envelope).await;
        envelope
    }

    pub async fn publish(&self, envelope: &Envelope) {
        self.bus
            .publish(envelope.to_message().unwrap())
            .await
            .unwrap();
    }

    /// Waits until customer's consumer of sign-ups has settled every message.
    pub async fn sign_ups_settled(&self) {
        let config = SubscriberConfig::on_source(agora_customer::USERS_CONSUMER, "identity")
            .filter(bus_subject::<UserSignedUp>())
            .consumer_config();
        let consumer = self.bus.consumer(&config).await.unwrap();
        eventually("the sign-ups are settled", || async {
            let info = consumer.info().await.unwrap();
            info.pending == 0 && info.ack_pending == 0
        })
        .await;
    }

    /// A reader of customer's stream from its start.
    pub async fn reader(&self) -> EventReader {
        let n = READERS.fetch_add(1, Ordering::SeqCst);
        let consumer = self
            .bus
            .consumer(&ConsumerConfig::new("CUSTOMER", format!("test-{n}")))
            .await
            .unwrap();
        EventReader {
            consumer,
            seen: Vec::new(),
        }
    }

    /// Every event customer published so far, waiting until there are `at_least`.
    pub async fn events(&self, at_least: usize) -> Vec<Envelope> {
        self.reader().await.read(at_least).await
    }
}

static READERS: AtomicU32 = AtomicU32::new(0);

/// Reads customer's events through its own durable consumer.
pub struct EventReader {
    consumer: Arc<dyn agora_bus::Consumer>,
    seen: Vec<Envelope>,
}

impl EventReader {
    /// Everything read so far, after waiting until that is at least `at_least`.
    pub async fn read(&mut self, at_least: usize) -> Vec<Envelope> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for delivery in self
                .consumer
                .fetch(100, Duration::from_millis(50))
                .await
                .unwrap()
            {
                self.seen
                    .push(Envelope::from_json(&delivery.payload).unwrap());
                delivery.ack().await.unwrap();
            }
            if self.seen.len() >= at_least {
                return self.seen.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{} events published, expected at least {at_least}",
                self.seen.len()
            );
        }
    }
}

/// A started customer on a fresh store: `None` when the backend is unreachable.
pub async fn start(backend: Backend) -> Option<(Env, Customer)> {
    let env = Env::new(backend).await?;
    let customer = env.start().await;
    Some((env, customer))
}

/// Polls `condition` until it holds; fails after 10 s.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An answer: status, content type, headers and the JSON body (`Value::Null` when
/// empty).
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// Asserts a problem+json answer with `expected`.
    pub fn assert_problem(&self, expected: StatusCode) {
        assert_eq!(self.status, expected, "{}", self.body);
        assert_eq!(self.content_type, "application/problem+json");
        assert_eq!(self.body["status"], expected.as_u16());
        assert!(
            self.body["type"].is_string()
                && self.body["title"].is_string()
                && self.body["detail"].is_string()
        );
    }

    /// The fields named by a 422's `errors`.
    pub fn invalid_fields(&self) -> Vec<String> {
        self.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
        self.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// One request through the router, with a raw body and its content type.
pub async fn send(
    router: &axum::Router,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = match body {
        Some((content_type, bytes)) => {
            request = request.header(header::CONTENT_TYPE, content_type);
            Body::from(bytes)
        }
        None => Body::empty(),
    };
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Answer {
        status,
        content_type,
        headers,
        body,
    }
}

/// One JSON request, with a bearer token if given.
pub async fn call(
    router: &axum::Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let authorization = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = authorization
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
    send(router, method, path, &headers, body).await
}

pub async fn get_me(router: &axum::Router, token: &str) -> Answer {
    call(router, Method::GET, "/api/customers/me", Some(token), None).await
}

pub async fn put_address(router: &axum::Router, token: &str, address: Value) -> Answer {
    call(
        router,
        Method::PUT,
        "/api/customers/me/address",
        Some(token),
        Some(address),
    )
    .await
}

pub async fn put_payment_method(router: &axum::Router, token: &str, method: Value) -> Answer {
    call(
        router,
        Method::PUT,
        "/api/customers/me/payment-method",
        Some(token),
        Some(method),
    )
    .await
}

pub fn berlin() -> Value {
    serde_json::json!({
        "line1": "Unter den Linden 1",
        "city": "Berlin",
        "postal_code": "10117",
        "country": "DE",
    })
}

pub fn visa() -> Value {
    serde_json::json!({"token": "tok_visa", "last4": "4242"})
}
