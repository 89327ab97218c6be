//! Payment's internal HTTP API (`/internal/payment/...`), and the one table that maps
//! its errors to problems.
//!
//! These routes have no authentication: the gateway never routes `/internal/`, so only
//! other services on the private network reach them.
//!
//! - `POST /internal/payment/authorizations` (ordering, at checkout): 201 / 402 / 422 /
//!   503 / 504, see [`authorize`].
//! - `GET /internal/payment/authorizations/{id}`: the authorization, its status and
//!   captured / refunded amounts.
//! - `POST /internal/payment/authorizations/{id}/refund` and `.../void` (fulfilment's
//!   compensations), body `{"order_id", "reason"?}`: both give the money back whatever
//!   the state — refund if captured, void if not — and answer 200
//!   `{"authorization_id", "status": "refunded", "refund_id"}` or
//!   `{"authorization_id", "status": "voided"}`, the same for every repetition; see
//!   [`give_back`].

use std::time::Duration;

use agora_auth::InternalAuth;
use agora_httpkit::{ErrorCode, FieldError, Json, Problem};
use agora_messaging::Context;
use agora_resilience::{ReceiveDeadlineLayer, deadline_exceeded_problem};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::authorize::{AuthorizeError, Authorizer, Outcome};
use crate::domain::{AmountCents, AuthorizationRequest, Currency, PaymentToken};
use crate::settle::{GiveBack, GiveBackError, GivenBack, Settler};
use crate::store::{self, Authorization, OperationKind};

/// What a caller should wait before retrying a 503.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the handlers share.
#[derive(Clone, Debug)]
struct AppState {
    authorizer: Authorizer,
    settler: Settler,
}

/// Every route is internal: only a service token for payment gets through.
pub fn router(authorizer: Authorizer, settler: Settler, internal: &InternalAuth) -> Router {
    Router::new()
        .route("/internal/payment/authorizations", post(authorize))
        .route("/internal/payment/authorizations/{id}", get(authorization))
        .route("/internal/payment/authorizations/{id}/refund", post(refund))
        .route("/internal/payment/authorizations/{id}/void", post(void))
        .route_layer(internal.guard())
        .layer(DefaultBodyLimit::max(agora_httpkit::BODY_LIMIT))
        // The caller's remaining budget (`Agora-Budget-Ms`): 504 when it is spent.
        .layer(ReceiveDeadlineLayer::new())
        .with_state(AppState {
            authorizer,
            settler,
        })
}

/// Why a request failed. [`ApiError::problem`] is the one place these become answers.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("declined: {0}")]
    Declined(String),
    #[error("no such authorization")]
    NotFound,
    #[error("the authorization is for another order")]
    OtherOrder,
    #[error("the provider refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Authorize(#[from] AuthorizeError),
}

impl ApiError {
    fn problem(&self) -> Problem {
        match self {
            ApiError::Invalid(errors) => Problem::unprocessable(errors.clone()),
            ApiError::Declined(reason) => Problem::of(
                ErrorCode::PaymentDeclined,
                format!("The payment provider declined the payment ({reason})."),
            ),
            ApiError::NotFound => {
                Problem::not_found().with_detail("There is no such authorization.")
            }
            ApiError::OtherOrder => Problem::unprocessable(vec![FieldError::new(
                "order_id",
                "is not the order of this authorization",
            )]),
            ApiError::Refused(reason) => Problem::of(
                ErrorCode::PaymentProviderRefused,
                format!("The payment provider refused to give the money back ({reason})."),
            ),
            ApiError::Authorize(AuthorizeError::RequestIdReused) => {
                Problem::unprocessable(vec![FieldError::new(
                    "request_id",
                    "was already used for a different request",
                )])
            }
            ApiError::Authorize(AuthorizeError::Unavailable) => {
                Problem::service_unavailable(RETRY_AFTER)
                    .with_detail("The payment provider cannot be reached; try again.")
            }
            ApiError::Authorize(AuthorizeError::InProgress) => {
                Problem::service_unavailable(RETRY_AFTER)
                    .with_detail("This request is still being processed; try again.")
            }
            ApiError::Authorize(AuthorizeError::DeadlineExceeded) => deadline_exceeded_problem(),
            ApiError::Authorize(AuthorizeError::Internal(error)) => {
                agora_service::internal_problem("payment", error)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

impl From<crate::Error> for ApiError {
    fn from(error: crate::Error) -> Self {
        ApiError::Authorize(AuthorizeError::Internal(error))
    }
}

impl From<GiveBackError> for ApiError {
    fn from(error: GiveBackError) -> Self {
        match error {
            GiveBackError::NotFound => ApiError::NotFound,
            GiveBackError::OtherOrder => ApiError::OtherOrder,
            GiveBackError::Refused(reason) => ApiError::Refused(reason),
            GiveBackError::Unavailable => ApiError::Authorize(AuthorizeError::Unavailable),
            GiveBackError::DeadlineExceeded => {
                ApiError::Authorize(AuthorizeError::DeadlineExceeded)
            }
            GiveBackError::Internal(error) => error.into(),
        }
    }
}

// Wire types: what callers send and receive, apart from the domain types.

/// `POST /internal/payment/authorizations`. The same `request_id` must always come
/// with the same other fields.
#[derive(Deserialize)]
struct AuthorizeBody {
    request_id: Uuid,
    order_id: Uuid,
    customer_id: Uuid,
    amount_cents: i64,
    currency: String,
    payment_token: String,
}

/// An authorization and what happened to it since: `status` is `authorized`,
/// `captured`, `capture_failed`, `refunded` or `voided`; `captured_cents` and
/// `refunded_cents` are 0 until then.
#[derive(Serialize)]
struct AuthorizationResponse {
    authorization_id: Uuid,
    request_id: Uuid,
    order_id: Uuid,
    customer_id: Uuid,
    status: String,
    amount_cents: i64,
    currency: String,
    #[serde(with = "time::serde::rfc3339")]
    authorized_at: OffsetDateTime,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    expires_at: Option<OffsetDateTime>,
    captured_cents: i64,
    refunded_cents: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    capture_id: Option<Uuid>,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    captured_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refund_id: Option<Uuid>,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    refunded_at: Option<OffsetDateTime>,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    voided_at: Option<OffsetDateTime>,
    /// Why the capture was declined (`capture_failed`, or voided after it).
    #[serde(skip_serializing_if = "Option::is_none")]
    capture_failure: Option<String>,
    /// The aggregate version: 1 when authorized, +1 per event since.
    version: u64,
}

impl From<Authorization> for AuthorizationResponse {
    fn from(authorization: Authorization) -> Self {
        let capture = authorization.operation(OperationKind::Capture).cloned();
        let refund = authorization.operation(OperationKind::Refund).cloned();
        let void = authorization.operation(OperationKind::Void).cloned();
        let failure = authorization
            .operation(OperationKind::CaptureFailed)
            .and_then(|o| o.reason.clone());
        Self {
            authorization_id: authorization.id,
            request_id: authorization.request_id,
            order_id: authorization.order_id,
            customer_id: authorization.customer_id,
            status: authorization.status.as_str().to_owned(),
            amount_cents: authorization.amount_cents,
            currency: authorization.currency,
            authorized_at: authorization.authorized_at,
            expires_at: authorization.expires_at,
            captured_cents: capture.as_ref().map_or(0, |o| o.amount_cents),
            refunded_cents: refund.as_ref().map_or(0, |o| o.amount_cents),
            capture_id: capture.as_ref().map(|o| o.id),
            captured_at: capture.map(|o| o.at),
            refund_id: refund.as_ref().map(|o| o.id),
            refunded_at: refund.map(|o| o.at),
            voided_at: void.map(|o| o.at),
            capture_failure: failure,
            version: authorization.version,
        }
    }
}

/// `POST /internal/payment/authorizations/{id}/refund` and `.../void`.
#[derive(Deserialize)]
struct GiveBackBody {
    order_id: Uuid,
    #[serde(default)]
    reason: Option<String>,
}

/// Where the money stands after a refund or void: `refunded` (with the `refund_id`)
/// or `voided`.
#[derive(Serialize)]
struct GivenBackResponse {
    authorization_id: Uuid,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refund_id: Option<Uuid>,
}

fn parse(body: AuthorizeBody) -> Result<AuthorizationRequest, ApiError> {
    let mut errors = Vec::new();
    let amount = AmountCents::parse(body.amount_cents)
        .map_err(|e| errors.push(e.on("amount_cents")))
        .ok();
    let currency = Currency::parse(&body.currency)
        .map_err(|e| errors.push(e.on("currency")))
        .ok();
    let token = PaymentToken::parse(&body.payment_token)
        .map_err(|e| errors.push(e.on("payment_token")))
        .ok();
    let (Some(amount), Some(currency), Some(token)) = (amount, currency, token) else {
        return Err(ApiError::Invalid(errors));
    };
    Ok(AuthorizationRequest {
        request_id: body.request_id,
        order_id: body.order_id,
        customer_id: body.customer_id,
        amount,
        currency,
        token,
    })
}

/// `POST /internal/payment/authorizations`: 201 the authorization (again, for a
/// retry); 402 declined (again, for a retry, without asking the provider); 422
/// invalid, or the request id reused with another body; 503 the provider gave no
/// answer in time, or a duplicate is still being processed (retry); 504 the caller's
/// budget (`Agora-Budget-Ms`) was spent before the provider was asked.
async fn authorize(
    AxumState(state): AxumState<AppState>,
    headers: HeaderMap,
    Json(body): Json<AuthorizeBody>,
) -> Result<Response, ApiError> {
    let request = parse(body)?;
    // The flow is about the order.
    let context = context_of(request.order_id, &headers);
    match state.authorizer.authorize(request, context).await? {
        Outcome::Authorized(authorization) => Ok((
            StatusCode::CREATED,
            Json(AuthorizationResponse::from(authorization)),
        )
            .into_response()),
        Outcome::Declined { reason } => Err(ApiError::Declined(reason)),
    }
}

/// `GET /internal/payment/authorizations/{id}`: 200 the authorization; 404 unknown
/// (or not a UUID).
async fn authorization(
    AxumState(state): AxumState<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AuthorizationResponse>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let authorization = store::authorization(&state.authorizer.db, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(authorization.into()))
}

/// The context of the events a request causes: the order's flow, the caller's trace.
fn context_of(order_id: Uuid, headers: &HeaderMap) -> Context {
    let context = Context::new(order_id.to_string());
    match headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .filter(|value| value.len() <= 128)
    {
        Some(traceparent) => context.with_traceparent(traceparent),
        None => context,
    }
}

/// `POST /internal/payment/authorizations/{id}/refund`: gives the money back — refunds
/// it if captured, voids the hold if not (the caller only needs the money back,
/// whatever the state). See [`give_back`].
async fn refund(
    state: AxumState<AppState>,
    path: Path<String>,
    headers: HeaderMap,
    body: Json<GiveBackBody>,
) -> Result<Json<GivenBackResponse>, ApiError> {
    give_back(state, path, headers, body).await
}

/// `POST /internal/payment/authorizations/{id}/void`: releases the hold — or refunds
/// it if it was captured meanwhile. See [`give_back`].
async fn void(
    state: AxumState<AppState>,
    path: Path<String>,
    headers: HeaderMap,
    body: Json<GiveBackBody>,
) -> Result<Json<GivenBackResponse>, ApiError> {
    give_back(state, path, headers, body).await
}

/// Both compensations: 200 `{authorization_id, status: "refunded", refund_id}` or
/// `{authorization_id, status: "voided"}` — the same answer for every repetition, with
/// one provider call and one event (`PaymentRefunded`, `AuthorizationVoided`) in all;
/// 404 unknown authorization (or not a UUID); 422 invalid body, or `order_id` not the
/// authorization's; 502 the provider refused; 503 the provider gave no answer
/// (retry); 504 the caller's budget was spent.
async fn give_back(
    AxumState(state): AxumState<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<GiveBackBody>,
) -> Result<Json<GivenBackResponse>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let reason = match body.reason {
        Some(reason) if reason.len() > GiveBack::MAX_REASON => {
            return Err(ApiError::Invalid(vec![FieldError::new(
                "reason",
                "is too long (at most 200 bytes)",
            )]));
        }
        Some(reason) if reason.chars().any(char::is_control) => {
            return Err(ApiError::Invalid(vec![FieldError::new(
                "reason",
                "must not contain control characters",
            )]));
        }
        reason => reason.filter(|r| !r.trim().is_empty()),
    };
    let request = GiveBack {
        order_id: body.order_id,
        reason,
    };
    let context = context_of(body.order_id, &headers);
    let given = state.settler.give_back(id, &request, &context).await?;
    Ok(Json(match given {
        GivenBack::Refunded { refund_id } => GivenBackResponse {
            authorization_id: id,
            status: "refunded",
            refund_id: Some(refund_id),
        },
        GivenBack::Voided => GivenBackResponse {
            authorization_id: id,
            status: "voided",
            refund_id: None,
        },
    }))
}
