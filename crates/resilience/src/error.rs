//! The one error type of a resilient call.

use std::convert::Infallible;

use bytes::Bytes;

/// Why a call through the resilient stack did not give an answer the caller can use.
///
/// Every layer of the stack answers with this type, so a caller branches on what
/// happened, not on strings. [`CallError::is_unavailable`] groups the cases where the
/// caller should itself answer 503 (the target is down, slow, shedding load, or the
/// time ran out), as opposed to a definite answer of the target (a 4xx, say).
#[derive(Clone, Debug, thiserror::Error)]
pub enum CallError {
    /// The per-call timeout elapsed before the target answered.
    #[error("the call timed out")]
    Timeout,
    /// The caller's deadline passed: before the call (no call was made) or during it.
    #[error("the deadline was exceeded")]
    DeadlineExceeded,
    /// The target's circuit breaker is open: no call was made.
    #[error("the circuit breaker of the target is open")]
    CircuitOpen,
    /// The target's bulkhead is full: no call was made.
    #[error("too many calls in flight to the target")]
    BulkheadFull,
    /// The connection to the target could not be made.
    #[error("cannot connect to the target: {0}")]
    Connect(String),
    /// The connection failed after it was made (reset, protocol error, body cut short).
    #[error("transport error: {0}")]
    Transport(String),
    /// The target answered with a status that is not a success (2xx); the body as sent
    /// (often `application/problem+json`).
    #[error("the target answered {0}")]
    Status(u16, Bytes),
    /// The target's success answer could not be decoded.
    #[error("cannot decode the answer: {0}")]
    Decode(String),
    /// The request could not be built (a bad path or header, a body that does not
    /// serialize): a bug of the caller, never retried.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl CallError {
    /// Whether the caller should treat the target as unavailable right now, and answer
    /// its own caller 503 (with `Retry-After`) or use a fallback: timeouts, an exceeded
    /// deadline, an open breaker, a full bulkhead, connection and transport failures,
    /// and the statuses 502, 503 and 504.
    pub fn is_unavailable(&self) -> bool {
        match self {
            CallError::Timeout
            | CallError::DeadlineExceeded
            | CallError::CircuitOpen
            | CallError::BulkheadFull
            | CallError::Connect(_)
            | CallError::Transport(_) => true,
            CallError::Status(status, _) => matches!(status, 502..=504),
            CallError::Decode(_) | CallError::InvalidRequest(_) => false,
        }
    }

    /// The status of a [`CallError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Status(status, _) => Some(*status),
            _ => None,
        }
    }

    /// The body of a [`CallError::Status`] decoded as JSON (e.g. into an
    /// `agora_httpkit::Problem`), if it is one.
    pub fn body_json<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        match self {
            CallError::Status(_, body) => serde_json::from_slice(body).ok(),
            _ => None,
        }
    }

    /// Whether a retry of an idempotent request may help: a timeout or a broken
    /// connection (the other outcomes say "no call was made, and none should be", or are
    /// definite).
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(
            self,
            CallError::Timeout | CallError::Connect(_) | CallError::Transport(_)
        )
    }

    /// Whether the error says something about the target's health (counted by the
    /// breaker). An exceeded deadline is the caller's budget, a full bulkhead the
    /// caller's own load, an open breaker no call at all.
    pub(crate) fn is_target_failure(&self) -> bool {
        matches!(
            self,
            CallError::Timeout | CallError::Connect(_) | CallError::Transport(_)
        ) || matches!(self, CallError::Status(status, _) if *status >= 500)
    }
}

impl From<Infallible> for CallError {
    fn from(never: Infallible) -> Self {
        match never {}
    }
}

impl From<reqwest::Error> for CallError {
    fn from(error: reqwest::Error) -> Self {
        // The URL is the caller's own configuration, not a secret; keep the message but
        // without the URL, which the caller knows.
        let (timeout, connect, builder, decode) = (
            error.is_timeout(),
            error.is_connect(),
            error.is_builder(),
            error.is_decode(),
        );
        let message = error.without_url().to_string();
        if timeout {
            CallError::Timeout
        } else if connect {
            CallError::Connect(message)
        } else if builder {
            CallError::InvalidRequest(message)
        } else if decode {
            CallError::Decode(message)
        } else {
            CallError::Transport(message)
        }
    }
}
