//! Customer's own part of the harness (`agora-service-testkit` has the rest): its
//! config, a publisher of identity's sign-ups, and its routes with their fixtures.

use agora_contracts::{Role, UserSignedUp, bus_subject};
use agora_customer::{Customer, CustomerConfig};
use agora_messaging::{Envelope, SubscriberConfig};
use agora_service_testkit::{EventReader, TestEnv, service_token};
use axum::http::Method;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

pub use agora_service_testkit::http::{Answer, call, send};
pub use agora_service_testkit::{Backend, eventually};

/// A store, a bus, a token issuer and the internal plane's key (`internal`, which
/// customer is given) that outlive restarts of customer.
pub struct Env(TestEnv);

agora_service_testkit::env_deref!(Env);

impl Env {
    /// `None` (after a loud skip) when the backend is unreachable.
    pub async fn new(backend: Backend) -> Option<Env> {
        let sources = [agora_customer::SOURCE, "identity"];
        TestEnv::new(backend, "customer", &sources).await.map(Env)
    }

    pub fn config(&self) -> CustomerConfig {
        CustomerConfig {
            db_url: self.db_url.clone(),
            bus: self.shared_bus(),
            keys: self.issuer.keys(),
            internal: self.internal.clone(),
        }
    }

    /// A service token of ordering's for customer (what the sync-mode client sends).
    pub fn service_token(&self) -> String {
        service_token("ordering", "customer")
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
        self.emit(&event, user_id).await
    }

    /// Waits until customer's consumer of sign-ups has settled every message.
    pub async fn sign_ups_settled(&self) {
        let config = SubscriberConfig::on_source(agora_customer::USERS_CONSUMER, "identity")
            .filter(bus_subject::<UserSignedUp>())
            .consumer_config();
        self.consumer_settled(&config).await;
    }

    /// A reader of customer's stream from its start.
    pub async fn reader(&self) -> EventReader {
        self.reader_of(agora_customer::SOURCE).await
    }

    /// Every event customer published so far, waiting until there are `at_least`.
    pub async fn events(&self, at_least: usize) -> Vec<Envelope> {
        self.published(agora_customer::SOURCE, at_least).await
    }
}

/// A started customer on a fresh store: `None` when the backend is unreachable.
pub async fn start(backend: Backend) -> Option<(Env, Customer)> {
    let env = Env::new(backend).await?;
    let customer = env.start().await;
    Some((env, customer))
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
