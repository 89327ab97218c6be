//! The external payment provider, behind a trait, and the simulated one the shop runs
//! with.
//!
//! Every operation after the authorization (capture, refund, void) carries an
//! idempotency key that is stable for that operation on that authorization
//! (`capture-{authorization_id}`, …): payment records the provider's answer in the
//! transaction that asks for it, so a crash between the call and the commit makes it
//! ask again, and a real provider answers that second call like the first.

use std::time::Duration;

use agora_contracts::Money;
use async_trait::async_trait;
use rand::Rng;
use time::OffsetDateTime;
use uuid::Uuid;

/// A card-payment provider (Stripe-like): it holds an amount on the payment method a
/// token stands for.
///
/// Payment calls it at most once per authorization request it records; it puts its
/// own timeout around each call (a call that takes longer counts as
/// [`ProviderError::Unavailable`]).
#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    /// Authorizes (holds) `amount` on the payment method of `token`, once per
    /// `idempotency_key` (payment's request id: a retried call gets the first answer).
    async fn authorize(
        &self,
        token: &str,
        amount: &Money,
        idempotency_key: &str,
    ) -> Result<ProviderAuthorization, ProviderError>;

    /// Captures (charges) `amount` of the hold `reference`, once per `idempotency_key`.
    async fn capture(
        &self,
        reference: &str,
        amount: &Money,
        idempotency_key: &str,
    ) -> Result<ProviderCapture, ProviderError>;

    /// Pays `amount` of the capture `capture_reference` back, once per
    /// `idempotency_key`.
    async fn refund(
        &self,
        capture_reference: &str,
        amount: &Money,
        idempotency_key: &str,
    ) -> Result<ProviderRefund, ProviderError>;

    /// Releases the hold `reference` without charging it, once per `idempotency_key`.
    async fn void(&self, reference: &str, idempotency_key: &str) -> Result<(), ProviderError>;
}

/// A capture the provider made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderCapture {
    /// The provider's id of the charge, to refund it later.
    pub reference: String,
}

/// A refund the provider made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderRefund {
    pub reference: String,
}

/// A hold the provider granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderAuthorization {
    /// The provider's id of the hold, to capture or void it later.
    pub reference: String,
    /// When the hold lapses if it is neither captured nor voided.
    pub expires_at: Option<OffsetDateTime>,
}

/// Why the provider did not authorize.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// A final answer: the payment method does not cover this amount. `reason` is a
    /// short machine-readable code (`card_declined`, `unknown_token`, …).
    #[error("declined: {reason}")]
    Declined { reason: String },
    /// No answer (down, overloaded, timed out): asking again later may succeed.
    #[error("the payment provider is unavailable")]
    Unavailable,
}

/// The provider of the demo shop, in process.
///
/// Tokens: `tok_visa` approves (but see `decline_rate`), `tok_declined` always
/// declines (`card_declined`), `tok_capture_fails` authorizes but its capture is
/// declined (`capture_declined`), any other token declines (`unknown_token`).
/// Captures are declined (`capture_declined`) at `capture_decline_rate`; refunds and
/// voids always succeed. Each call takes `latency` (on `tokio::time`, so tests on
/// paused time see it exactly).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimulatedProvider {
    /// How long each call takes.
    pub latency: Duration,
    /// The share of `tok_visa` authorizations declined anyway
    /// (`insufficient_funds`), from 0.0 (never) to 1.0 (always).
    pub decline_rate: f64,
    /// The share of captures declined anyway (`capture_declined`), from 0.0 (never)
    /// to 1.0 (always).
    pub capture_decline_rate: f64,
}

impl Default for SimulatedProvider {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            decline_rate: 0.0,
            capture_decline_rate: 0.0,
        }
    }
}

impl SimulatedProvider {
    async fn wait(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }
}

/// Whether a draw at `rate` (clamped to 0.0..=1.0; NaN is 0.0) hits.
fn hits(rate: f64) -> bool {
    let rate = if rate.is_nan() {
        0.0
    } else {
        rate.clamp(0.0, 1.0)
    };
    rand::thread_rng().gen_bool(rate)
}

/// Marks the holds of `tok_capture_fails`, whose capture the simulation declines.
const CAPTURE_FAILS: &str = "_capture_fails";

/// How long a simulated hold lasts.
const HOLD: time::Duration = time::Duration::days(7);

#[async_trait]
impl PaymentProvider for SimulatedProvider {
    async fn authorize(
        &self,
        token: &str,
        _amount: &Money,
        _idempotency_key: &str,
    ) -> Result<ProviderAuthorization, ProviderError> {
        self.wait().await;
        let declined = |reason: &str| {
            Err(ProviderError::Declined {
                reason: reason.to_owned(),
            })
        };
        match token {
            "tok_visa" => {
                if hits(self.decline_rate) {
                    return declined("insufficient_funds");
                }
                Ok(ProviderAuthorization {
                    reference: format!("sim_auth_{}", Uuid::now_v7().simple()),
                    expires_at: Some(OffsetDateTime::now_utc() + HOLD),
                })
            }
            "tok_capture_fails" => Ok(ProviderAuthorization {
                reference: format!("sim_auth_{}{CAPTURE_FAILS}", Uuid::now_v7().simple()),
                expires_at: Some(OffsetDateTime::now_utc() + HOLD),
            }),
            "tok_declined" => declined("card_declined"),
            _ => declined("unknown_token"),
        }
    }

    async fn capture(
        &self,
        reference: &str,
        _amount: &Money,
        _idempotency_key: &str,
    ) -> Result<ProviderCapture, ProviderError> {
        self.wait().await;
        if reference.ends_with(CAPTURE_FAILS) || hits(self.capture_decline_rate) {
            return Err(ProviderError::Declined {
                reason: "capture_declined".to_owned(),
            });
        }
        Ok(ProviderCapture {
            reference: format!("sim_capture_{}", Uuid::now_v7().simple()),
        })
    }

    async fn refund(
        &self,
        _capture_reference: &str,
        _amount: &Money,
        _idempotency_key: &str,
    ) -> Result<ProviderRefund, ProviderError> {
        self.wait().await;
        Ok(ProviderRefund {
            reference: format!("sim_refund_{}", Uuid::now_v7().simple()),
        })
    }

    async fn void(&self, _reference: &str, _idempotency_key: &str) -> Result<(), ProviderError> {
        self.wait().await;
        Ok(())
    }
}

/// A provider that answers a repeated idempotency key with its first answer, as real
/// payment providers do: a call retried after a timeout or a crash can never come back
/// different (a second charge, another decline). Unavailability is no answer and is not
/// remembered. Remembers the last [`Replaying::CAPACITY`] keys.
#[derive(Debug)]
pub struct Replaying<P> {
    inner: P,
    answers: std::sync::Mutex<Remembered>,
}

#[derive(Clone, Debug)]
enum Answer {
    Authorization(Result<ProviderAuthorization, ProviderError>),
    Capture(Result<ProviderCapture, ProviderError>),
    Refund(Result<ProviderRefund, ProviderError>),
    Void(Result<(), ProviderError>),
}

#[derive(Debug, Default)]
struct Remembered {
    by_key: std::collections::HashMap<String, Answer>,
    order: std::collections::VecDeque<String>,
}

impl<P> Replaying<P> {
    /// Keys remembered at most (the oldest are forgotten first).
    pub const CAPACITY: usize = 100_000;

    pub fn new(inner: P) -> Self {
        Self {
            inner,
            answers: std::sync::Mutex::new(Remembered::default()),
        }
    }

    pub fn inner(&self) -> &P {
        &self.inner
    }

    fn remembered(&self, key: &str) -> Option<Answer> {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        answers.by_key.get(key).cloned()
    }

    /// Keeps `answer` for `key` unless one is kept already (a concurrent call with the
    /// same key answered first): returns the answer that stands.
    fn remember(&self, key: &str, answer: Answer) -> Answer {
        let unavailable = matches!(
            &answer,
            Answer::Authorization(Err(ProviderError::Unavailable))
                | Answer::Capture(Err(ProviderError::Unavailable))
                | Answer::Refund(Err(ProviderError::Unavailable))
                | Answer::Void(Err(ProviderError::Unavailable))
        );
        if unavailable {
            return answer;
        }
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(first) = answers.by_key.get(key) {
            return first.clone();
        }
        if answers.order.len() >= Self::CAPACITY
            && let Some(oldest) = answers.order.pop_front()
        {
            answers.by_key.remove(&oldest);
        }
        answers.order.push_back(key.to_owned());
        answers.by_key.insert(key.to_owned(), answer.clone());
        answer
    }
}

impl<P: Default> Default for Replaying<P> {
    fn default() -> Self {
        Self::new(P::default())
    }
}

#[async_trait]
impl<P: PaymentProvider> PaymentProvider for Replaying<P> {
    async fn authorize(
        &self,
        token: &str,
        amount: &Money,
        idempotency_key: &str,
    ) -> Result<ProviderAuthorization, ProviderError> {
        let answer = match self.remembered(idempotency_key) {
            Some(answer) => answer,
            None => {
                let fresh = self.inner.authorize(token, amount, idempotency_key).await;
                self.remember(idempotency_key, Answer::Authorization(fresh))
            }
        };
        match answer {
            Answer::Authorization(answer) => answer,
            _ => Err(ProviderError::Declined {
                reason: "idempotency_key_reused".to_owned(),
            }),
        }
    }

    async fn capture(
        &self,
        reference: &str,
        amount: &Money,
        idempotency_key: &str,
    ) -> Result<ProviderCapture, ProviderError> {
        let answer = match self.remembered(idempotency_key) {
            Some(answer) => answer,
            None => {
                let fresh = self.inner.capture(reference, amount, idempotency_key).await;
                self.remember(idempotency_key, Answer::Capture(fresh))
            }
        };
        match answer {
            Answer::Capture(answer) => answer,
            _ => Err(ProviderError::Declined {
                reason: "idempotency_key_reused".to_owned(),
            }),
        }
    }

    async fn refund(
        &self,
        capture_reference: &str,
        amount: &Money,
        idempotency_key: &str,
    ) -> Result<ProviderRefund, ProviderError> {
        let answer = match self.remembered(idempotency_key) {
            Some(answer) => answer,
            None => {
                let fresh = self
                    .inner
                    .refund(capture_reference, amount, idempotency_key)
                    .await;
                self.remember(idempotency_key, Answer::Refund(fresh))
            }
        };
        match answer {
            Answer::Refund(answer) => answer,
            _ => Err(ProviderError::Declined {
                reason: "idempotency_key_reused".to_owned(),
            }),
        }
    }

    async fn void(&self, reference: &str, idempotency_key: &str) -> Result<(), ProviderError> {
        let answer = match self.remembered(idempotency_key) {
            Some(answer) => answer,
            None => {
                let fresh = self.inner.void(reference, idempotency_key).await;
                self.remember(idempotency_key, Answer::Void(fresh))
            }
        };
        match answer {
            Answer::Void(answer) => answer,
            _ => Err(ProviderError::Declined {
                reason: "idempotency_key_reused".to_owned(),
            }),
        }
    }
}
