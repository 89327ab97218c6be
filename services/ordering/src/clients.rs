//! The two synchronous calls ordering makes, as traits: authorize a payment at payment,
//! fetch a customer live at customer (sync mode only). The composition gives the
//! resilient clients ([`ResilientPaymentClient`], [`ResilientCustomerClient`]: breaker,
//! bulkhead, deadline, retries where safe); tests give fakes.

use std::fmt::Debug;
use std::time::Duration;

use agora_contracts::{Address, PaymentMethod};
use agora_resilience::{CallError, CircuitBreaker, ClientConfig, Deadline, ResilientClient};
use async_trait::async_trait;
use axum::http::Method;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// What ordering asks payment to authorize.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    /// Derived from (customer, idempotency key): payment authorizes each request id
    /// once, so a retried checkout never authorizes twice.
    pub request_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub amount_cents: i64,
    pub currency: String,
    pub payment_token: String,
}

/// Payment's answer to an authorization it granted (201).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    pub authorization_id: Uuid,
    pub request_id: Uuid,
    pub order_id: Uuid,
    pub status: String,
    pub amount_cents: i64,
    pub currency: String,
    #[serde(with = "time::serde::rfc3339")]
    pub authorized_at: OffsetDateTime,
}

/// Why no authorization was granted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The provider declined (402): final, no order.
    #[error("payment declined")]
    Declined,
    /// Payment could not answer in time: unreachable, timed out, 5xx, breaker open.
    /// Whether an authorization exists is unknown; a retry with the same request id
    /// finds out.
    #[error("payment unavailable: {0}")]
    Unavailable(String),
    /// Payment answered something the contract does not allow (e.g. a 4xx other than
    /// 402): a bug somewhere, not something the client can fix.
    #[error("unexpected answer from payment: {0}")]
    Unexpected(String),
}

/// Authorizes payments at the payment service.
#[async_trait]
pub trait PaymentClient: Send + Sync + Debug + 'static {
    async fn authorize(
        &self,
        request: &AuthorizationRequest,
    ) -> Result<Authorization, PaymentError>;

    /// Whether payment is known to be out of reach right now (its breaker open):
    /// checkout then answers 503 before writing anything. No by default.
    fn known_unavailable(&self) -> bool {
        false
    }
}

/// A customer as the customer service serves it on its internal route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRecord {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    #[serde(default)]
    pub address: Option<Address>,
    #[serde(default)]
    pub payment_method: Option<PaymentMethod>,
    pub version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Why the customer service did not give a customer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CustomerError {
    /// Unreachable, timed out, 5xx, breaker open.
    #[error("customer service unavailable: {0}")]
    Unavailable(String),
}

/// Fetches customers live from the customer service (sync mode).
#[async_trait]
pub trait CustomerClient: Send + Sync + Debug + 'static {
    /// `None`: the customer service knows no such customer (404).
    async fn fetch(&self, customer_id: Uuid) -> Result<Option<CustomerRecord>, CustomerError>;
}

/// Payment through the resilient stack ([`agora_resilience::ResilientClient`]): a
/// breaker and a bulkhead for the target `payment`, a timeout per attempt, the caller's
/// deadline (the task-local [`Deadline`], else this client's own) sent as a budget.
/// The authorization carries `Idempotency-Key: <request id>` (payment authorizes each
/// request id once), so the stack may retry it on a timeout, a broken connection or a
/// 502/503/504.
#[derive(Clone, Debug)]
pub struct ResilientPaymentClient {
    client: ResilientClient,
    deadline: Duration,
}

impl ResilientPaymentClient {
    /// The client of payment at `base_url`; `deadline` bounds each authorization, retries
    /// included (a caller's nearer deadline wins).
    pub fn new(
        base_url: &str,
        config: ClientConfig,
        deadline: Duration,
    ) -> Result<Self, crate::Error> {
        let client = agora_resilience::client("payment", base_url, config)
            .map_err(|e| crate::Error::Config(format!("payment client: {e}")))?;
        Ok(Self::over(client, deadline))
    }

    /// Over a resilient client built elsewhere (e.g. shared with other callers).
    pub fn over(client: ResilientClient, deadline: Duration) -> Self {
        Self { client, deadline }
    }

    /// The breaker of the target (of its first instance), for the ops console.
    pub fn breaker(&self) -> &CircuitBreaker {
        self.client.breaker()
    }

    /// The breaker of each instance of the target.
    pub fn breakers(&self) -> &[CircuitBreaker] {
        self.client.breakers()
    }
}

#[async_trait]
impl PaymentClient for ResilientPaymentClient {
    fn known_unavailable(&self) -> bool {
        self.client.open_remaining().is_some()
    }

    async fn authorize(
        &self,
        request: &AuthorizationRequest,
    ) -> Result<Authorization, PaymentError> {
        let call = self
            .client
            .request(Method::POST, "/internal/payment/authorizations")
            .route("/internal/payment/authorizations")
            .idempotency_key(&request.request_id.to_string())
            .json_body(request)
            .json::<Authorization>();
        Deadline::after(self.deadline)
            .scope(call)
            .await
            .map_err(payment_error)
    }
}

/// What a failed resilient call means for an authorization: as [`HttpPaymentClient`]
/// reads statuses.
fn payment_error(error: CallError) -> PaymentError {
    match error.status() {
        Some(402) => PaymentError::Declined,
        Some(status @ (408 | 429 | 500..=599)) => {
            PaymentError::Unavailable(format!("status {status}"))
        }
        Some(status) => PaymentError::Unexpected(format!("status {status}")),
        None if error.is_unavailable() => PaymentError::Unavailable(call_kind(&error)),
        None => PaymentError::Unexpected(call_kind(&error)),
    }
}

/// Customer through the resilient stack: breaker, bulkhead and timeout for the target
/// `customer`; the GET is idempotent, so the stack may retry it within the deadline.
#[derive(Clone, Debug)]
pub struct ResilientCustomerClient {
    client: ResilientClient,
    deadline: Duration,
}

impl ResilientCustomerClient {
    /// The client of customer at `base_url`; `deadline` (250 ms is what sync mode is
    /// meant to run with) bounds each fetch, retries included.
    pub fn new(
        base_url: &str,
        config: ClientConfig,
        deadline: Duration,
    ) -> Result<Self, crate::Error> {
        let client = agora_resilience::client("customer", base_url, config)
            .map_err(|e| crate::Error::Config(format!("customer client: {e}")))?;
        Ok(Self::over(client, deadline))
    }

    pub fn over(client: ResilientClient, deadline: Duration) -> Self {
        Self { client, deadline }
    }

    /// The breaker of the target (of its first instance), for the ops console.
    pub fn breaker(&self) -> &CircuitBreaker {
        self.client.breaker()
    }

    /// The breaker of each instance of the target.
    pub fn breakers(&self) -> &[CircuitBreaker] {
        self.client.breakers()
    }
}

#[async_trait]
impl CustomerClient for ResilientCustomerClient {
    async fn fetch(&self, customer_id: Uuid) -> Result<Option<CustomerRecord>, CustomerError> {
        let path = format!("/internal/customers/{customer_id}");
        let fetched = Deadline::after(self.deadline)
            .scope(
                self.client
                    .request(Method::GET, &path)
                    .route("/internal/customers/{id}")
                    .json::<CustomerRecord>(),
            )
            .await;
        match fetched {
            Ok(record) => Ok(Some(record)),
            Err(error) if error.status() == Some(404) => Ok(None),
            Err(error) => Err(CustomerError::Unavailable(match error.status() {
                Some(status) => format!("status {status}"),
                None => call_kind(&error),
            })),
        }
    }
}

/// The kind of a failed call, without bodies or URLs.
fn call_kind(error: &CallError) -> String {
    match error {
        CallError::Timeout => "timeout",
        CallError::DeadlineExceeded => "deadline exceeded",
        CallError::CircuitOpen => "circuit breaker open",
        CallError::BulkheadFull => "too many calls in flight",
        CallError::Connect(_) => "connection failed",
        CallError::Transport(_) => "transport failed",
        CallError::Status(..) => "unexpected status",
        CallError::Decode(_) => "cannot decode",
        CallError::InvalidRequest(_) => "invalid request",
    }
    .to_owned()
}
