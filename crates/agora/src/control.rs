//! The levers of one service instance on its internal API: what the gateway's ops API
//! drives, one instance at a time, over the internal plane (a service token for the
//! service is required). The same in `agora up` (every service on its own listener in
//! one process) and `agora run` (one per process): no lever is an in-process handle
//! held across a service boundary.
//!
//! - `GET /internal/<service>/control`: the instance's [`Levers`];
//! - `PUT /internal/<service>/control/chaos` with a [`Chaos`]: `down` answers 503 to
//!   everything but these routes and cuts the instance off the bus; `slow` and `flaky`
//!   as in `agora up`;
//! - `PUT /internal/<service>/control/bus` with `{"paused": bool}`: the bus pause, as
//!   this instance sees it;
//! - `PUT /internal/<service>/control/provider` with `{"down": bool}` (payment): the
//!   simulated payment provider.

use std::sync::Arc;

use agora_auth::InternalAuth;
use agora_bus::{BusSwitch, SharedBus, SwitchedBus};
use agora_gateway::{Chaos, ChaosMode, Levers};
use agora_httpkit::{Json, Problem};
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde::Deserialize;

use crate::host::{ChaosCell, service_router};
use crate::provider::SwitchedProvider;

/// One instance's levers.
#[derive(Debug, Clone)]
pub struct InstanceControl {
    pub chaos: ChaosCell,
    /// Cut when the instance is `down`.
    pub own_bus: BusSwitch,
    /// The shop-wide bus pause, as this instance applies it.
    pub bus: BusSwitch,
    /// Payment's simulated provider.
    pub provider: Option<SwitchedProvider>,
}

impl InstanceControl {
    /// Levers at rest; payment's also switch its simulated `provider`.
    pub fn new(provider: Option<SwitchedProvider>) -> Self {
        Self {
            chaos: ChaosCell::default(),
            own_bus: BusSwitch::new(),
            bus: BusSwitch::new(),
            provider,
        }
    }

    /// `bus` as the instance sees it: cut while the bus is paused or it is `down`.
    pub fn bus(&self, bus: SharedBus) -> SharedBus {
        Arc::new(SwitchedBus::new(
            bus,
            vec![self.bus.clone(), self.own_bus.clone()],
        ))
    }

    /// The service's `router` with these levers: their routes behind `internal`'s
    /// guard, the chaos they set applied to everything else, `/healthz`.
    pub fn serve(self, service: &str, router: Router, internal: &InternalAuth) -> Router {
        let chaos = self.chaos.clone();
        service_router(router.merge(self.routes(service, internal)), chaos)
    }

    fn levers(&self) -> Levers {
        Levers {
            chaos: self.chaos.get(),
            bus_paused: self.bus.is_paused(),
            provider_down: self.provider.as_ref().map(SwitchedProvider::is_down),
        }
    }

    /// The control routes of `service`, behind `internal`'s guard.
    fn routes(self, service: &str, internal: &InternalAuth) -> Router {
        let base = format!("/internal/{service}/control");
        Router::new()
            .route(&base, get(levers))
            .route(&format!("{base}/chaos"), put(set_chaos))
            .route(&format!("{base}/bus"), put(set_bus))
            .route(&format!("{base}/provider"), put(set_provider))
            .route_layer(internal.guard())
            .with_state(self)
    }
}

async fn levers(State(control): State<InstanceControl>) -> Json<Levers> {
    Json(control.levers())
}

async fn set_chaos(State(control): State<InstanceControl>, Json(chaos): Json<Chaos>) -> Response {
    let chaos = match chaos.validate() {
        Ok(chaos) => chaos,
        Err(error) => return Problem::unprocessable(vec![error]).into_response(),
    };
    if chaos.mode == ChaosMode::Down {
        control.own_bus.pause();
    } else {
        control.own_bus.resume();
    }
    control.chaos.set(chaos);
    tracing::warn!(?chaos, "chaos set");
    Json(control.levers()).into_response()
}

#[derive(Deserialize)]
struct BusBody {
    paused: bool,
}

async fn set_bus(
    State(control): State<InstanceControl>,
    Json(body): Json<BusBody>,
) -> Json<Levers> {
    if body.paused {
        control.bus.pause();
    } else {
        control.bus.resume();
    }
    Json(control.levers())
}

#[derive(Deserialize)]
struct ProviderBody {
    down: bool,
}

async fn set_provider(
    State(control): State<InstanceControl>,
    Json(body): Json<ProviderBody>,
) -> Response {
    let Some(provider) = &control.provider else {
        return Problem::not_found().into_response();
    };
    provider.set_down(body.down);
    Json(control.levers()).into_response()
}
