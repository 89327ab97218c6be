//! The simulated payment provider as the shop runs it: behind a switch, so that the
//! ops API can take "the outside world" down (`PUT /api/ops/chaos/payment-provider`)
//! and show what payment does when its provider does not answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use agora_contracts::Money;
use agora_payment::{
    PaymentProvider, ProviderAuthorization, ProviderCapture, ProviderError, ProviderRefund,
    Replaying, SimulatedProvider,
};
use async_trait::async_trait;

/// A [`SimulatedProvider`] that answers a repeated idempotency key as it did the first
/// time ([`Replaying`]), and [`ProviderError::Unavailable`] while it is down.
#[derive(Debug, Clone, Default)]
pub struct SwitchedProvider {
    inner: Arc<Replaying<SimulatedProvider>>,
    down: Arc<AtomicBool>,
}

impl SwitchedProvider {
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<(), ProviderError> {
        if self.is_down() {
            Err(ProviderError::Unavailable)
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl PaymentProvider for SwitchedProvider {
    async fn authorize(
        &self,
        token: &str,
        amount: &Money,
        idempotency_key: &str,
    ) -> Result<ProviderAuthorization, ProviderError> {
        self.check()?;
        self.inner.authorize(token, amount, idempotency_key).await
    }

    async fn capture(
        &self,
        reference: &str,
        amount: &Money,
        idempotency_key: &str,
    ) -> Result<ProviderCapture, ProviderError> {
        self.check()?;
        self.inner.capture(reference, amount, idempotency_key).await
    }

    async fn refund(
        &self,
        capture_reference: &str,
        amount: &Money,
        idempotency_key: &str,
    ) -> Result<ProviderRefund, ProviderError> {
        self.check()?;
        self.inner
            .refund(capture_reference, amount, idempotency_key)
            .await
    }

    async fn void(&self, reference: &str, idempotency_key: &str) -> Result<(), ProviderError> {
        self.check()?;
        self.inner.void(reference, idempotency_key).await
    }
}
