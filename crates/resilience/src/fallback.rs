//! Fallbacks: what a caller answers with when the call fails and it has a plan B
//! (a cached copy, a replica, a default).

use std::future::Future;

use crate::CallError;

/// Awaits `call`; on failure, answers `fallback(error)` instead. The fallback sees the
/// error, so it can decide (e.g. use a stale copy only when
/// [`CallError::is_unavailable`]) and log why.
pub async fn call_with_fallback<T, F, Fb>(call: F, fallback: Fb) -> T
where
    F: Future<Output = Result<T, CallError>>,
    Fb: FnOnce(CallError) -> T,
{
    match call.await {
        Ok(value) => value,
        Err(error) => {
            tracing::debug!(%error, "call failed; using the fallback");
            fallback(error)
        }
    }
}

/// [`call_with_fallback`] as a method on any call (its futures are `Send`, for
/// handlers):
/// `client.get_json::<Price>("/…").or_fallback(|_| cached).await`.
pub trait FallbackExt<T>: Future<Output = Result<T, CallError>> + Sized {
    fn or_fallback<Fb>(self, fallback: Fb) -> impl Future<Output = T> + Send
    where
        Self: Send,
        Fb: FnOnce(CallError) -> T + Send,
        T: Send,
    {
        call_with_fallback(self, fallback)
    }

    /// Falls back only when the target is unavailable
    /// ([`CallError::is_unavailable`]); other errors (a 404, a 422) stay errors.
    fn or_fallback_if_unavailable<Fb>(
        self,
        fallback: Fb,
    ) -> impl Future<Output = Result<T, CallError>> + Send
    where
        Self: Send,
        Fb: FnOnce(&CallError) -> T + Send,
        T: Send,
    {
        async move {
            match self.await {
                Ok(value) => Ok(value),
                Err(error) if error.is_unavailable() => {
                    tracing::debug!(%error, "target unavailable; using the fallback");
                    Ok(fallback(&error))
                }
                Err(error) => Err(error),
            }
        }
    }
}

impl<T, F> FallbackExt<T> for F where F: Future<Output = Result<T, CallError>> {}
