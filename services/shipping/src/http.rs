//! The HTTP API of shipping: the shipments of an order, its OpenAPI document, and the
//! one table that maps errors to problems.

use agora_auth::{Caller, Verifier};
use agora_contracts::Role;
use agora_httpkit::{BearerSecurity, FieldError, Json, Problem, responses};
use agora_messaging::Db;
use axum::Router;
use axum::extract::{FromRef, Query, State as AxumState};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::store::{self, Shipment};

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct State {
    pub db: Db,
    pub verifier: Verifier,
}

impl FromRef<State> for Verifier {
    fn from_ref(state: &State) -> Verifier {
        state.verifier.clone()
    }
}

pub fn router(state: State) -> Router {
    Router::new()
        .route("/api/shipping/shipments", get(list_shipments))
        .with_state(state)
}

/// Why a request failed. [`ApiError::problem`] is the one place these become answers.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("not authenticated: {0}")]
    Unauthenticated(agora_auth::Error),
    #[error("neither a customer nor an admin")]
    Forbidden,
    #[error(transparent)]
    Internal(#[from] crate::Error),
}

impl ApiError {
    fn problem(&self) -> Problem {
        match self {
            ApiError::Invalid(errors) => Problem::unprocessable(errors.clone()),
            ApiError::Unauthenticated(error) => error.into(),
            ApiError::Forbidden => {
                Problem::forbidden().with_detail("This needs the customer or the admin role.")
            }
            ApiError::Internal(error) => agora_service::internal_problem("shipping", error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

// Wire types.

/// A shipment of an order.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Shipment)]
pub struct ShipmentBody {
    id: Uuid,
    order_id: Uuid,
    /// `dispatched`.
    #[schema(example = "dispatched")]
    status: String,
    /// Where it goes: the order's shipping address as accepted.
    address: AddressBody,
    carrier: String,
    tracking_number: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    dispatched_at: OffsetDateTime,
}

/// A postal address.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ShipmentAddress)]
pub struct AddressBody {
    line1: String,
    /// `null` when the address has no second line.
    #[schema(required = true)]
    line2: Option<String>,
    city: String,
    postal_code: String,
    /// ISO 3166-1 alpha-2.
    country: String,
}

impl From<Shipment> for ShipmentBody {
    fn from(shipment: Shipment) -> Self {
        ShipmentBody {
            id: shipment.id,
            order_id: shipment.order_id,
            status: shipment.status,
            address: AddressBody {
                line1: shipment.address.line1,
                line2: shipment.address.line2,
                city: shipment.address.city,
                postal_code: shipment.address.postal_code,
                country: shipment.address.country,
            },
            carrier: shipment.carrier,
            tracking_number: shipment.tracking_number,
            dispatched_at: shipment.dispatched_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShipmentsQuery {
    /// The order: its id (UUID) or its reference (`AG-XXXX-XXXX`).
    #[param(required = true)]
    order_id: Option<String>,
}

/// The shipments of an order.
///
/// For the order's customer or an admin. Empty until the order is dispatched, and for
/// another customer's order (the answer does not tell whether it exists).
#[utoipa::path(
    get,
    path = "/api/shipping/shipments",
    tag = "shipping",
    operation_id = "shipping_list_shipments",
    security(("bearer" = [])),
    params(ShipmentsQuery),
    responses(
        (status = 200, description = "The order's shipments (none yet, or not the \
            caller's order: empty).", body = [ShipmentBody]),
        (status = 403, description = "Neither the customer nor the admin role.",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`order_id` is missing, or neither an order id (UUID) \
            nor an order reference.",
            body = Problem, content_type = "application/problem+json"),
        responses::NoValidToken, responses::InternalError,
    )
)]
async fn list_shipments(
    AxumState(state): AxumState<State>,
    caller: Result<Caller, agora_auth::Error>,
    query: Result<Query<ShipmentsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<ShipmentBody>>, ApiError> {
    let caller = caller.map_err(ApiError::Unauthenticated)?;
    let admin = caller.has_role(&Role::Admin);
    if !admin && !caller.has_role(&Role::Customer) {
        return Err(ApiError::Forbidden);
    }
    let order = query
        .ok()
        .and_then(|Query(q)| q.order_id)
        .unwrap_or_default();
    let shipments = if let Ok(order_id) = Uuid::parse_str(order.trim()) {
        store::shipments_of_order(&state.db, order_id).await?
    } else if let Some(reference) = agora_contracts::OrderReference::parse(&order) {
        store::shipments_of_reference(&state.db, reference).await?
    } else {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "order_id",
            "must be an order id (UUID) or an order reference (AG-XXXX-XXXX)",
        )]));
    };
    Ok(Json(
        shipments
            .into_iter()
            .filter(|s| admin || s.customer_id == caller.user_id)
            .map(ShipmentBody::from)
            .collect(),
    ))
}

/// The OpenAPI document of the public paths.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Agora shipping", description = "Shipments of orders."),
    paths(list_shipments),
    components(schemas(ShipmentBody, AddressBody, Problem, FieldError)),
    modifiers(&BearerSecurity),
    tags((name = "shipping", description = "Shipments."))
)]
pub struct ApiDoc;
