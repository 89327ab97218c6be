//! Fulfilment's only route, internal: a process instance for the ops console.

use agora_auth::InternalAuth;
use agora_httpkit::Problem;
use agora_messaging::{InstanceStatus, ProcessManager};
use axum::Router;
use axum::extract::{Path, State as AxumState};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::process::{CompensationRecord, FulfilmentProcess, Received};

#[derive(Clone)]
pub(crate) struct State {
    pub(crate) manager: ProcessManager<FulfilmentProcess>,
}

/// No public path: fulfilment only reacts to events.
#[derive(utoipa::OpenApi)]
#[openapi(info(title = "Agora fulfilment", description = "No public paths."))]
pub(crate) struct ApiDoc;

/// The one route, behind `internal`'s guard: a service token for fulfilment only.
pub(crate) fn router(state: State, internal: &InternalAuth) -> Router {
    Router::new()
        .route(
            "/internal/fulfilment/processes/{order_id}",
            get(get_process),
        )
        .route_layer(internal.guard())
        .with_state(state)
}

/// Why a request failed; [`ApiError::problem`] is the one place these become answers.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("no such process")]
    NotFound,
    #[error(transparent)]
    Internal(#[from] agora_messaging::Error),
}

impl ApiError {
    fn problem(&self) -> Problem {
        match self {
            ApiError::NotFound => Problem::not_found(),
            ApiError::Internal(error) => agora_service::internal_problem("fulfilment", error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

#[derive(Serialize)]
struct ProcessView {
    order_id: Uuid,
    /// `waiting`, `compensating`, `ready_for_shipping` or `failed`.
    status: &'static str,
    /// No event can change the instance any more.
    terminal: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    received: Vec<Received>,
    compensations: Vec<CompensationRecord>,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    timeout_at: Option<OffsetDateTime>,
    version: u64,
}

async fn get_process(
    AxumState(state): AxumState<State>,
    Path(order_id): Path<String>,
) -> Result<axum::Json<ProcessView>, ApiError> {
    // An id that is not a UUID names no process.
    let order_id = Uuid::parse_str(&order_id).map_err(|_| ApiError::NotFound)?;
    let instance = state
        .manager
        .instance(order_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let process = instance.state;
    Ok(axum::Json(ProcessView {
        order_id,
        status: process.status(),
        terminal: instance.status == InstanceStatus::Terminal,
        reason: process.failure.as_ref().map(|r| r.as_str().to_owned()),
        detail: process.failure_detail.clone(),
        received: process.received.iter().copied().collect(),
        compensations: process.compensations.clone(),
        timeout_at: instance.timeout_at,
        version: instance.version,
    }))
}
