//! The compensations fulfilment asks of payment and inventory: synchronous, idempotent
//! internal calls, made through the resilient client.

use agora_auth::InternalAuth;
use agora_contracts::CancelReason;
use agora_resilience::{ClientConfig, ResilientClient};
use async_trait::async_trait;
use axum::http::Method;
use serde_json::json;
use uuid::Uuid;

/// Why a compensation call did not succeed; the turn that asked for it is retried.
#[derive(Debug, thiserror::Error)]
#[error("{target} {operation}: {reason}")]
pub struct CompensationError {
    pub target: &'static str,
    pub operation: &'static str,
    pub reason: String,
}

/// Undoing what payment and inventory did for an order. Every call must be idempotent:
/// a repeated call (after a crash, a conflict or a lost answer) is a no-op.
#[async_trait]
pub trait Compensator: Send + Sync + 'static {
    /// Pays a captured authorization back.
    async fn refund(
        &self,
        authorization_id: Uuid,
        order_id: Uuid,
        reason: &CancelReason,
    ) -> Result<(), CompensationError>;

    /// Releases an authorization that was not captured.
    async fn void(
        &self,
        authorization_id: Uuid,
        order_id: Uuid,
        reason: &CancelReason,
    ) -> Result<(), CompensationError>;

    /// Gives an order's reservation back to stock (fine when nothing is reserved).
    async fn release(&self, order_id: Uuid, reason: &CancelReason)
    -> Result<(), CompensationError>;
}

/// The compensator over HTTP:
///
/// - `POST {payment_url}/internal/payment/authorizations/{authorization_id}/refund` and
///   `.../void`, body `{"order_id", "reason"}`;
/// - `POST {inventory_url}/internal/inventory/reservations/{order_id}/release`, body
///   `{"reason"}`.
///
/// Any 2xx answer is success. Each call carries an `Idempotency-Key`, so the resilient
/// client may retry it (timeouts, 502/503/504) under its budget.
#[derive(Clone, Debug)]
pub struct HttpCompensator {
    payment: ResilientClient,
    inventory: ResilientClient,
}

impl HttpCompensator {
    /// Clients of payment and inventory at these URLs, each call with a service token
    /// of `internal` (fulfilment's side of the internal plane) for its target.
    pub fn new(
        payment_url: &str,
        inventory_url: &str,
        internal: &InternalAuth,
    ) -> Result<Self, crate::Error> {
        let config = || ClientConfig {
            caller: crate::SOURCE,
            ..ClientConfig::default()
        };
        let payment = agora_resilience::client("payment", payment_url, config())
            .map_err(|e| crate::Error::Config(format!("payment URL: {e}")))?
            .with_credentials(internal.credentials_for("payment"));
        let inventory = agora_resilience::client("inventory", inventory_url, config())
            .map_err(|e| crate::Error::Config(format!("inventory URL: {e}")))?
            .with_credentials(internal.credentials_for("inventory"));
        Ok(Self { payment, inventory })
    }

    async fn post(
        client: &ResilientClient,
        operation: &'static str,
        route: &'static str,
        path: String,
        key: String,
        body: serde_json::Value,
    ) -> Result<(), CompensationError> {
        client
            .request(Method::POST, &path)
            .route(route)
            .idempotency_key(&key)
            .json_body(&body)
            .send()
            .await
            .map(|_| ())
            .map_err(|error| CompensationError {
                target: if client.name() == "payment" {
                    "payment"
                } else {
                    "inventory"
                },
                operation,
                reason: error.to_string(),
            })
    }
}

#[async_trait]
impl Compensator for HttpCompensator {
    async fn refund(
        &self,
        authorization_id: Uuid,
        order_id: Uuid,
        reason: &CancelReason,
    ) -> Result<(), CompensationError> {
        Self::post(
            &self.payment,
            "refund",
            "/internal/payment/authorizations/{id}/refund",
            format!("/internal/payment/authorizations/{authorization_id}/refund"),
            format!("fulfilment-refund-{order_id}"),
            json!({ "order_id": order_id, "reason": reason.as_str() }),
        )
        .await
    }

    async fn void(
        &self,
        authorization_id: Uuid,
        order_id: Uuid,
        reason: &CancelReason,
    ) -> Result<(), CompensationError> {
        Self::post(
            &self.payment,
            "void",
            "/internal/payment/authorizations/{id}/void",
            format!("/internal/payment/authorizations/{authorization_id}/void"),
            format!("fulfilment-void-{order_id}"),
            json!({ "order_id": order_id, "reason": reason.as_str() }),
        )
        .await
    }

    async fn release(
        &self,
        order_id: Uuid,
        reason: &CancelReason,
    ) -> Result<(), CompensationError> {
        Self::post(
            &self.inventory,
            "release",
            "/internal/inventory/reservations/{order_id}/release",
            format!("/internal/inventory/reservations/{order_id}/release"),
            format!("fulfilment-release-{order_id}"),
            json!({ "reason": reason.as_str() }),
        )
        .await
    }
}
