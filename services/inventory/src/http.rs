//! The HTTP API of inventory: the public stock paths, the internal ones (the gateway's
//! batch read and fulfilment's release), their OpenAPI document, and the one table
//! that maps errors to problems.

use agora_auth::{Caller, InternalAuth, Verifier};
use agora_contracts::{CancelReason, Role, StockLine, StockReleased};
use agora_httpkit::{BearerSecurity, FieldError, Json, Problem, responses};
use agora_messaging::{Context, Db, Envelope, Outbox};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRef, Path, Query, State as AxumState};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{Invalid, OnHand};
use crate::store::{self, Release, SetOnHand, Stock};

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct State {
    pub db: Db,
    pub outbox: Outbox,
    pub verifier: Verifier,
}

impl FromRef<State> for Verifier {
    fn from_ref(state: &State) -> Verifier {
        state.verifier.clone()
    }
}

/// The most products one batch read may name.
const MAX_BATCH: usize = 1000;

/// The public routes, and the internal ones behind `internal`'s guard: a service
/// token for inventory, nothing else.
pub fn router(state: State, internal: &InternalAuth) -> Router {
    let internal = Router::new()
        .route("/internal/inventory/stock", get(get_stocks))
        .route(
            "/internal/inventory/reservations/{order_id}/release",
            post(release),
        )
        .route_layer(internal.guard());
    Router::new()
        .route(
            "/api/inventory/stock/{product_id}",
            get(get_stock).put(put_stock),
        )
        .merge(internal)
        .layer(DefaultBodyLimit::max(agora_httpkit::BODY_LIMIT))
        .with_state(state)
}

/// Why a request failed. [`ApiError::problem`] is the one place these become answers.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("not authenticated: {0}")]
    Unauthenticated(agora_auth::Error),
    #[error("not an admin")]
    Forbidden,
    #[error("no stock of this product")]
    NotFound,
    #[error(transparent)]
    Internal(#[from] crate::Error),
}

impl ApiError {
    fn problem(&self) -> Problem {
        match self {
            ApiError::Invalid(errors) => Problem::unprocessable(errors.clone()),
            ApiError::BadRequest(detail) => Problem::bad_request(*detail),
            ApiError::Unauthenticated(error) => error.into(),
            ApiError::Forbidden => Problem::forbidden().with_detail("This needs the admin role."),
            ApiError::NotFound => {
                Problem::not_found().with_detail("Inventory has never stocked this product.")
            }
            ApiError::Internal(error) => agora_service::internal_problem("inventory", error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        ApiError::Invalid(invalid.0)
    }
}

agora_httpkit::internal_from!(ApiError: agora_messaging::Error, sqlx::Error);

// Wire types.

/// A product's stock.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = InventoryStock)]
pub struct StockBody {
    product_id: Uuid,
    /// What the warehouse holds.
    #[schema(minimum = 0, maximum = 1_000_000)]
    on_hand: u32,
    /// What accepted orders hold of it.
    #[schema(minimum = 0, maximum = 1_000_000)]
    reserved: u32,
    /// `on_hand - reserved`: what may still be ordered.
    #[schema(minimum = 0, maximum = 1_000_000)]
    available: u32,
}

impl From<Stock> for StockBody {
    fn from(stock: Stock) -> Self {
        StockBody {
            product_id: stock.product_id,
            on_hand: stock.on_hand,
            reserved: stock.reserved,
            available: stock.available(),
        }
    }
}

/// A product's new stock on hand: 0 to 1,000,000, never below what is reserved.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = InventoryStockRequest)]
pub struct StockRequest {
    #[schema(minimum = 0, maximum = 1_000_000, example = 25)]
    on_hand: i64,
}

#[derive(Debug, Deserialize)]
struct BatchQuery {
    ids: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ReleaseRequest {
    #[serde(default)]
    reason: Option<String>,
}

/// The answer to a release: the reservation's status afterwards and what went back to
/// stock by this call (empty when nothing did).
#[derive(Debug, Serialize)]
struct ReleaseBody {
    order_id: Uuid,
    status: &'static str,
    released: Vec<StockLine>,
}

/// A path id that is not a UUID names nothing inventory stocks.
fn product_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::NotFound)
}

/// A product's stock.
///
/// Public. A product inventory never stocked (or an id that is not a UUID) is 404;
/// a product whose stock was set to 0 is 200 with zeros.
#[utoipa::path(
    get,
    path = "/api/inventory/stock/{product_id}",
    tag = "inventory",
    operation_id = "inventory_get_stock",
    params(("product_id" = String, Path, description = "The catalog product id (UUID).")),
    responses(
        (status = 200, description = "The product's stock.", body = StockBody),
        (status = 404, description = "Inventory has never stocked this product.",
            body = Problem, content_type = "application/problem+json"),
        responses::InternalError,
    )
)]
async fn get_stock(
    AxumState(state): AxumState<State>,
    Path(id): Path<String>,
) -> Result<Json<StockBody>, ApiError> {
    let id = product_id(&id)?;
    let stock = store::stock(&state.db, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(stock.into()))
}

/// Sets a product's stock on hand (admin).
///
/// Creates the product's stock if inventory did not hold it. Refused (422, field
/// `on_hand`) below what accepted orders hold.
#[utoipa::path(
    put,
    path = "/api/inventory/stock/{product_id}",
    tag = "inventory",
    operation_id = "inventory_set_stock",
    security(("bearer" = [])),
    params(("product_id" = String, Path, description = "The catalog product id (UUID).")),
    request_body = StockRequest,
    responses(
        (status = 200, description = "The product's stock, as set.", body = StockBody),
        (status = 404, description = "The product id is not a UUID.", body = Problem,
            content_type = "application/problem+json"),
        (status = 422, description = "`on_hand` is out of range or below what is \
            reserved; `errors` names it.", body = Problem,
            content_type = "application/problem+json"),
        responses::JsonBodyProblems, responses::AdminProblems, responses::InternalError,
    )
)]
async fn put_stock(
    AxumState(state): AxumState<State>,
    caller: Result<Caller, agora_auth::Error>,
    Path(id): Path<String>,
    body: Result<Json<StockRequest>, Problem>,
) -> Result<Json<StockBody>, Response> {
    let caller = caller
        .map_err(ApiError::Unauthenticated)
        .map_err(IntoResponse::into_response)?;
    if !caller.has_role(&Role::Admin) {
        return Err(ApiError::Forbidden.into_response());
    }
    let id = product_id(&id).map_err(IntoResponse::into_response)?;
    let Json(body) = body.map_err(IntoResponse::into_response)?;
    set_stock(&state, id, body.on_hand)
        .await
        .map_err(IntoResponse::into_response)
}

async fn set_stock(state: &State, id: Uuid, on_hand: i64) -> Result<Json<StockBody>, ApiError> {
    let on_hand = OnHand::parse(on_hand)?;
    match store::set_on_hand(&state.db, id, on_hand).await? {
        SetOnHand::Set(stock) => {
            tracing::info!(product_id = %id, on_hand = stock.on_hand, "stock set");
            Ok(Json(stock.into()))
        }
        SetOnHand::BelowReserved(stock) => Err(ApiError::Invalid(vec![FieldError::new(
            "on_hand",
            format!(
                "must be at least {}, the quantity accepted orders hold",
                stock.reserved
            ),
        )])),
    }
}

/// `GET /internal/inventory/stock?ids=a,b,c`: the stock of each product, in the order
/// asked, zeros for products never stocked; 400 for an id that is not a UUID or more
/// than 1000 ids. Unauthenticated: internal only.
async fn get_stocks(
    AxumState(state): AxumState<State>,
    Query(query): Query<BatchQuery>,
) -> Result<Json<Vec<StockBody>>, ApiError> {
    let ids: Vec<Uuid> = query
        .ids
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Uuid::parse_str)
        .collect::<Result<_, _>>()
        .map_err(|_| ApiError::BadRequest("`ids` must be comma-separated UUIDs."))?;
    if ids.len() > MAX_BATCH {
        return Err(ApiError::BadRequest("At most 1000 ids at once."));
    }
    let stocks = store::stocks(&state.db, &ids).await?;
    Ok(Json(stocks.into_iter().map(StockBody::from).collect()))
}

/// `POST /internal/inventory/reservations/{order_id}/release`, body `{reason?}` (or
/// none): gives the order's reservation back to stock and publishes `StockReleased`,
/// once. Always 200 for a valid order id, with the status afterwards: `released`
/// (also when nothing was reserved yet: a later `OrderAccepted` then reserves
/// nothing), `failed` or `shipped` (nothing released). Unauthenticated: internal only.
async fn release(
    AxumState(state): AxumState<State>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ReleaseBody>, Response> {
    let order_id = Uuid::parse_str(&order_id)
        .map_err(|_| Problem::not_found().with_detail("The order id is not a UUID."))
        .map_err(IntoResponse::into_response)?;
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        ReleaseRequest::default()
    } else {
        Json::<ReleaseRequest>::from_bytes(&body)
            .map_err(IntoResponse::into_response)?
            .0
    };
    release_order(&state, order_id, request, &headers)
        .await
        .map_err(IntoResponse::into_response)
}

async fn release_order(
    state: &State,
    order_id: Uuid,
    request: ReleaseRequest,
    headers: &HeaderMap,
) -> Result<Json<ReleaseBody>, ApiError> {
    let at = store::now();
    let mut tx = state.db.begin().await?;
    match store::release(&mut tx, order_id, at).await? {
        Release::Released { lines, version } => {
            let event = StockReleased {
                order_id,
                lines: lines.clone(),
                reason: request.reason.map(CancelReason::from),
                released_at: at,
                version,
            };
            Outbox::append(
                &mut tx,
                &Envelope::new(&event, &context(order_id, headers))?,
            )
            .await?;
            state.outbox.commit(tx).await?;
            tracing::info!(%order_id, "stock released");
            Ok(Json(ReleaseBody {
                order_id,
                status: store::Status::Released.as_str(),
                released: lines,
            }))
        }
        Release::Nothing(status) => {
            tx.commit().await?;
            Ok(Json(ReleaseBody {
                order_id,
                status: status.as_str(),
                released: Vec::new(),
            }))
        }
    }
}

/// The context of an event caused by a request about order `id`.
fn context(id: Uuid, headers: &HeaderMap) -> Context {
    let context = Context::new(id.to_string());
    match headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() == 55 && v.is_ascii())
    {
        Some(traceparent) => context.with_traceparent(traceparent),
        None => context,
    }
}

/// The OpenAPI document of the public paths.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Agora inventory",
        description = "Stock on hand and reservations of accepted orders."
    ),
    paths(get_stock, put_stock),
    components(schemas(StockBody, StockRequest, Problem, FieldError)),
    modifiers(&BearerSecurity),
    tags((name = "inventory", description = "Stock of products."))
)]
pub struct ApiDoc;
