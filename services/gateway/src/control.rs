//! What the ops API can change in the running shop: faults injected into a service
//! (chaos) and the bus pause. Every service instance serves its levers on its
//! internal API; the gateway drives them there (`remote.rs`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The name the ops API knows the (simulated) payment provider by: its chaos is `ok`
/// or `down`.
pub const PAYMENT_PROVIDER: &str = "payment-provider";

/// The fault injected into one service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChaosMode {
    /// No fault.
    #[default]
    Ok,
    /// The service answers 503 to every request but its levers' and is cut off the
    /// bus: its consumers stop and it publishes nothing.
    Down,
    /// Every request waits `latency_ms` before it is handled.
    Slow,
    /// A share `error_rate` of requests is answered 503.
    Flaky,
}

/// A service's chaos setting, as `PUT /api/ops/chaos/{service}` takes it and
/// `GET /api/ops/status` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Chaos {
    pub mode: ChaosMode,
    /// For `slow`: the added latency, 1..=60000 ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// For `flaky`: the share of requests that fail, 0.0..=1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
}

impl Chaos {
    pub const OK: Chaos = Chaos {
        mode: ChaosMode::Ok,
        latency_ms: None,
        error_rate: None,
    };

    /// The setting if it is complete and in range; what is wrong otherwise.
    pub fn validate(self) -> Result<Chaos, agora_httpkit::FieldError> {
        use agora_httpkit::FieldError;
        match self.mode {
            ChaosMode::Slow => match self.latency_ms {
                Some(ms) if (1..=60_000).contains(&ms) => Ok(Chaos {
                    error_rate: None,
                    ..self
                }),
                _ => Err(FieldError::new(
                    "latency_ms",
                    "is required for slow, from 1 to 60000",
                )),
            },
            ChaosMode::Flaky => match self.error_rate {
                Some(rate) if (0.0..=1.0).contains(&rate) => Ok(Chaos {
                    latency_ms: None,
                    ..self
                }),
                _ => Err(FieldError::new(
                    "error_rate",
                    "is required for flaky, from 0.0 to 1.0",
                )),
            },
            ChaosMode::Ok | ChaosMode::Down => Ok(Chaos {
                mode: self.mode,
                latency_ms: None,
                error_rate: None,
            }),
        }
    }
}

/// Why a control operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no service named {0:?} can be controlled")]
    UnknownService(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Failed(String),
}

/// One service instance's levers, as its internal control API answers them
/// (`GET /internal/<service>/control`, when the services run as separate processes).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Levers {
    pub chaos: Chaos,
    /// Whether the bus is paused, as this instance applies it.
    pub bus_paused: bool,
    /// Payment's simulated provider: whether it is down (absent elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_down: Option<bool>,
}
