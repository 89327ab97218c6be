//! Fulfilment's own part of the harness (`agora-service-testkit` has the rest): a
//! manual clock and a fake compensator that outlive restarts of fulfilment, the
//! outcomes it committed, and the events the other services publish about an order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use agora_contracts::{
    Address, AddressSource, CancelReason, CustomerBilled, FulfilmentFailed, Money, OrderAccepted,
    OrderLine, OrderReadyForShipping, PaymentFailed, PaymentOperation, StockLine,
    StockReservationFailed, StockReserved, StockShortage, bus_subject,
};
use agora_fulfilment::{CompensationError, Compensator, Fulfilment, FulfilmentConfig, Runtime};
use agora_messaging::{Context, Envelope, Inbox, ManualClock};
use agora_service_testkit::http::{self, bearer};
use agora_service_testkit::{TEST_PLANE, TestEnv, service_token};
use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

pub const TIMEOUT: Duration = Duration::from_secs(30);

pub use agora_service_testkit::{Backend, eventually};

/// A compensation call the fake received and answered with success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Refund(Uuid),
    Void(Uuid),
    Release(Uuid),
}

/// Records successful calls (by order id); fails the next calls on demand.
#[derive(Default)]
pub struct FakeCompensator {
    // Never held across an await.
    calls: std::sync::Mutex<Vec<Call>>,
    pub failures_left: AtomicU32,
}

impl FakeCompensator {
    pub fn calls(&self, order_id: Uuid) -> Vec<Call> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|call| match call {
                Call::Refund(id) | Call::Void(id) | Call::Release(id) => *id == order_id,
            })
            .cloned()
            .collect()
    }

    fn answer(&self, call: Call) -> Result<(), CompensationError> {
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(CompensationError {
                target: "fake",
                operation: "any",
                reason: "injected failure".into(),
            });
        }
        self.calls.lock().unwrap().push(call);
        Ok(())
    }
}

#[async_trait]
impl Compensator for FakeCompensator {
    async fn refund(
        &self,
        _authorization_id: Uuid,
        order_id: Uuid,
        _reason: &CancelReason,
    ) -> Result<(), CompensationError> {
        self.answer(Call::Refund(order_id))
    }

    async fn void(
        &self,
        _authorization_id: Uuid,
        order_id: Uuid,
        _reason: &CancelReason,
    ) -> Result<(), CompensationError> {
        self.answer(Call::Void(order_id))
    }

    async fn release(
        &self,
        order_id: Uuid,
        _reason: &CancelReason,
    ) -> Result<(), CompensationError> {
        self.answer(Call::Release(order_id))
    }
}

/// A store, a bus, a clock and a compensator that outlive restarts of fulfilment.
pub struct Env {
    app: TestEnv,
    pub clock: Arc<ManualClock>,
    pub compensator: Arc<FakeCompensator>,
}

agora_service_testkit::env_deref!(Env.app);

impl Env {
    /// `None` (after a loud skip) when the backend is unreachable.
    pub async fn new(backend: Backend) -> Option<Env> {
        Some(Env {
            app: TestEnv::new(backend, "fulfilment", &[]).await?,
            clock: Arc::new(ManualClock::starting_now()),
            compensator: Arc::new(FakeCompensator::default()),
        })
    }

    pub fn config(&self) -> FulfilmentConfig {
        FulfilmentConfig {
            db_url: self.db_url.clone(),
            bus: self.shared_bus(),
            keys: self.issuer.keys(),
            // Never called: the fake compensator stands in for both.
            payment_url: "http://127.0.0.1:9".into(),
            inventory_url: "http://127.0.0.1:9".into(),
            timeout: TIMEOUT,
            internal: TEST_PLANE.clone(),
        }
    }

    pub async fn start(&self) -> Fulfilment {
        let runtime = Runtime {
            clock: self.clock.clone(),
            compensator: Some(self.compensator.clone()),
            timer_interval: Duration::from_millis(20),
            retry: agora_messaging::Backoff::new(
                Duration::from_millis(2),
                Duration::from_millis(10),
            ),
        };
        agora_fulfilment::build_with(self.config(), runtime)
            .await
            .expect("fulfilment starts")
    }

    /// Publishes `envelope` and waits until `service` processed it.
    pub async fn deliver(&self, service: &Fulfilment, envelope: &Envelope) {
        self.publish(envelope).await;
        let consumer = match envelope.source.as_str() {
            "ordering" => agora_fulfilment::CONSUMER_ORDERING,
            "payment" => agora_fulfilment::CONSUMER_PAYMENT,
            _ => agora_fulfilment::CONSUMER_INVENTORY,
        };
        let id = envelope.id;
        eventually(&format!("{} is processed", envelope.event_type), || async {
            Inbox::contains(service.db(), consumer, id).await.unwrap()
        })
        .await;
    }
    /// The outcomes fulfilment committed to its outbox for `order_id`, in order.
    pub async fn outcomes(&self, service: &Fulfilment, order_id: Uuid) -> Vec<Outcome> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT subject, payload FROM messaging_outbox WHERE subject IN ($1, $2)
             ORDER BY position",
        )
        .bind(bus_subject::<OrderReadyForShipping>())
        .bind(bus_subject::<FulfilmentFailed>())
        .fetch_all(service.db().pool())
        .await
        .unwrap();
        rows.into_iter()
            .map(|(_, payload)| Envelope::from_json(payload.as_bytes()).unwrap())
            .filter_map(|envelope| {
                if let Ok(ready) = envelope.decode::<OrderReadyForShipping>() {
                    (ready.order_id == order_id).then_some(Outcome::Ready(ready.customer_id))
                } else {
                    let failed: FulfilmentFailed = envelope.decode().unwrap();
                    (failed.order_id == order_id).then_some(Outcome::Failed(failed.reason))
                }
            })
            .collect()
    }

    /// Waits until the outcomes of `order_id` are `expected`.
    pub async fn outcomes_become(
        &self,
        service: &Fulfilment,
        order_id: Uuid,
        expected: &[Outcome],
    ) {
        eventually(&format!("outcomes {expected:?}"), || async {
            self.outcomes(service, order_id).await == expected
        })
        .await;
    }
}

/// `GET /internal/fulfilment/processes/{order_id}` with the gateway's service token:
/// the status and the JSON body.
pub async fn get_process(service: &Fulfilment, order_id: &str) -> (StatusCode, Value) {
    let authorization = bearer(&service_token("gateway", "fulfilment"));
    let path = format!("/internal/fulfilment/processes/{order_id}");
    let headers = [("authorization", authorization.as_str())];
    let answer = http::send(&service.router(), Method::GET, &path, &headers, None).await;
    (answer.status, answer.body)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ready(Uuid),
    Failed(CancelReason),
}

/// One order's flow: its ids, and the events the other services publish about it.
#[derive(Clone, Copy, Debug)]
pub struct Order {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub authorization_id: Uuid,
}

impl Order {
    pub fn new() -> Self {
        Self {
            order_id: Uuid::now_v7(),
            customer_id: Uuid::now_v7(),
            authorization_id: Uuid::now_v7(),
        }
    }

    fn context(&self) -> Context {
        Context::new(self.order_id.to_string())
    }

    /// A fresh envelope every call: a duplicate is a second message with the same data.
    pub fn accepted(&self) -> Envelope {
        let event = OrderAccepted {
            order_id: self.order_id,
            customer_id: self.customer_id,
            lines: vec![OrderLine {
                product_id: Uuid::nil(),
                quantity: 2,
                unit_price_cents: 1250,
            }],
            total_cents: 2500,
            currency: "EUR".into(),
            shipping_address: Address {
                line1: "1 Main Street".into(),
                line2: None,
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "DE".into(),
            },
            address_source: AddressSource::Replica,
            payment_authorization_id: self.authorization_id,
            accepted_at: OffsetDateTime::now_utc(),
            version: 1,
        };
        Envelope::new(&event, &self.context()).unwrap()
    }

    pub fn billed(&self) -> Envelope {
        let event = CustomerBilled {
            authorization_id: self.authorization_id,
            capture_id: Uuid::now_v7(),
            order_id: self.order_id,
            customer_id: self.customer_id,
            amount: Money {
                amount_cents: 2500,
                currency: "EUR".into(),
            },
            billed_at: OffsetDateTime::now_utc(),
            version: 2,
        };
        Envelope::new(&event, &self.context()).unwrap()
    }

    pub fn payment_failed(&self) -> Envelope {
        let event = PaymentFailed {
            authorization_id: self.authorization_id,
            order_id: self.order_id,
            customer_id: self.customer_id,
            operation: PaymentOperation::Capture,
            reason: "card_declined".into(),
            failed_at: OffsetDateTime::now_utc(),
            version: 2,
        };
        Envelope::new(&event, &self.context()).unwrap()
    }

    pub fn reserved(&self) -> Envelope {
        let event = StockReserved {
            order_id: self.order_id,
            lines: vec![StockLine {
                product_id: Uuid::nil(),
                quantity: 2,
            }],
            reserved_at: OffsetDateTime::now_utc(),
            version: 1,
        };
        Envelope::new(&event, &self.context()).unwrap()
    }

    pub fn reservation_failed(&self) -> Envelope {
        let event = StockReservationFailed {
            order_id: self.order_id,
            shortages: vec![StockShortage {
                product_id: Uuid::nil(),
                requested: 2,
                available: 1,
            }],
            failed_at: OffsetDateTime::now_utc(),
            version: 1,
        };
        Envelope::new(&event, &self.context()).unwrap()
    }
}
