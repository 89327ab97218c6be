//! The HTTP API of ordering (`/api/ordering/...`, and `/internal/ordering/settings` and
//! `/internal/ordering/breakers`, never routed by the gateway), its OpenAPI document, and the one table that maps its
//! errors to problems.

use std::sync::Arc;
use std::time::Duration;

use agora_auth::{Caller, InternalAuth, Verifier};
use agora_contracts::{Address, OrderReference, Role};
use agora_httpkit::{BearerSecurity, ErrorCode, FieldError, Json, Problem, responses};
use agora_messaging::{Db, Outbox};
use agora_resilience::{BreakerState, CircuitBreaker};
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRef, FromRequestParts, Path, Query, State as AxumState};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::checkout::{self, CheckoutRequest, Limits, Priced};
use crate::clients::{CustomerClient, PaymentClient};
use crate::domain::{IdempotencyKey, Lines, Price, parse_address};
use crate::store::{self, CustomerData};

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct State {
    pub db: Db,
    pub outbox: Outbox,
    pub verifier: Verifier,
    pub payment: Arc<dyn PaymentClient>,
    pub customer: Arc<dyn CustomerClient>,
    pub limits: Arc<Limits>,
    pub breakers: Vec<CircuitBreaker>,
}

impl FromRef<State> for Verifier {
    fn from_ref(state: &State) -> Verifier {
        state.verifier.clone()
    }
}

/// The `Retry-After` of 503 and 409 answers.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The public routes, and the internal ones (the ops levers) behind `internal`'s
/// guard: a service token for ordering, nothing else.
pub fn router(state: State, internal: &InternalAuth) -> Router {
    let internal = Router::new()
        .route(
            "/internal/ordering/settings",
            get(get_settings).put(put_settings),
        )
        .route("/internal/ordering/breakers", get(get_breakers))
        .route_layer(internal.guard());
    Router::new()
        .route("/api/ordering/prices", get(list_prices))
        .route("/api/ordering/prices/{product_id}", put(set_price))
        .route("/api/ordering/checkout/preview", post(preview))
        .route("/api/ordering/orders", post(place_order).get(my_orders))
        .route("/api/ordering/orders/{id}", get(get_order))
        .merge(internal)
        .layer(DefaultBodyLimit::max(agora_httpkit::BODY_LIMIT))
        .with_state(state)
}

/// Why a request failed. [`ApiError::problem`] is the one place these become answers.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("no Idempotency-Key")]
    MissingKey,
    #[error("bad Idempotency-Key")]
    BadKey(&'static str),
    #[error("Idempotency-Key used with another request")]
    KeyReused,
    #[error("payment declined")]
    Declined,
    #[error("{0} unavailable")]
    Unavailable(&'static str),
    #[error("a request with this Idempotency-Key is in progress")]
    InProgress,
    #[error("a concurrent change of the price won")]
    PriceChanged,
    #[error("not found")]
    NotFound,
    #[error("a reference that names more than one order")]
    AmbiguousReference,
    #[error("bad query: {0}")]
    BadQuery(&'static str),
    #[error(transparent)]
    Auth(#[from] agora_auth::Error),
    #[error(transparent)]
    Internal(#[from] crate::Error),
}

impl ApiError {
    pub fn problem(&self) -> Problem {
        match self {
            ApiError::Invalid(errors) => Problem::unprocessable(errors.clone()),
            ApiError::MissingKey => Problem::bad_request("The Idempotency-Key header is required."),
            ApiError::BadKey(why) => {
                Problem::bad_request(format!("The Idempotency-Key header {why}."))
            }
            ApiError::KeyReused => Problem::unprocessable(vec![FieldError::new(
                "Idempotency-Key",
                "was already used with another request body",
            )]),
            ApiError::Declined => Problem::of(
                ErrorCode::PaymentDeclined,
                "The payment method was declined; no order was placed.",
            ),
            ApiError::Unavailable(dependency) => Problem::service_unavailable(RETRY_AFTER)
                .with_detail(format!(
                    "The {dependency} service cannot answer right now; no order was placed. \
                     Try again later."
                )),
            ApiError::InProgress => {
                let mut problem = Problem::conflict(
                    "A request with this Idempotency-Key is in progress or ended without an \
                     answer; try again later.",
                );
                problem.retry_after = Some(RETRY_AFTER);
                problem
            }
            ApiError::PriceChanged => Problem::conflict(
                "Another change of this price was made at the same moment; read the price and \
                 set it again if it still needs changing.",
            ),
            ApiError::NotFound => Problem::not_found(),
            ApiError::AmbiguousReference => {
                Problem::conflict("More than one order has this reference; use the order's id.")
            }
            ApiError::BadQuery(what) => Problem::bad_request(*what),
            ApiError::Auth(error) => error.into(),
            ApiError::Internal(error) => agora_service::internal_problem("ordering", error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

agora_httpkit::internal_from!(ApiError: agora_messaging::Error, sqlx::Error);

// Wire types: what clients send and receive, apart from the domain types.

/// A price to set.
#[derive(Deserialize, ToSchema)]
pub struct PriceBody {
    pub amount_cents: i64,
    pub currency: String,
}

/// A product's price.
#[derive(Serialize, ToSchema)]
pub struct PriceView {
    pub product_id: Uuid,
    pub amount_cents: i64,
    pub currency: String,
    /// The price's version, as carried by `PriceChanged`.
    pub version: u64,
}

/// One requested line.
#[derive(Deserialize, ToSchema)]
pub struct LineRequest {
    pub product_id: String,
    pub quantity: i64,
}

#[derive(Deserialize, ToSchema)]
pub struct PreviewRequest {
    pub lines: Vec<LineRequest>,
}

#[derive(Deserialize, ToSchema)]
pub struct OrderRequest {
    pub lines: Vec<LineRequest>,
    /// Overrides the known address ("Change address"): `address_source` is `override`.
    #[serde(default)]
    pub shipping_address: Option<AddressBody>,
}

/// A postal address.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct AddressBody {
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, e.g. `DE`.
    pub country: String,
}

impl From<&AddressBody> for Address {
    fn from(body: &AddressBody) -> Address {
        Address {
            line1: body.line1.clone(),
            line2: body.line2.clone(),
            city: body.city.clone(),
            postal_code: body.postal_code.clone(),
            country: body.country.clone(),
        }
    }
}

impl From<&Address> for AddressBody {
    fn from(address: &Address) -> AddressBody {
        AddressBody {
            line1: address.line1.clone(),
            line2: address.line2.clone(),
            city: address.city.clone(),
            postal_code: address.postal_code.clone(),
            country: address.country.clone(),
        }
    }
}

/// A priced line. `name` is the catalog name as ordering's replica knows it, `null`
/// until the replica has it.
#[derive(Serialize, ToSchema)]
pub struct LineView {
    pub product_id: Uuid,
    pub name: Option<String>,
    pub quantity: u32,
    pub unit_price_cents: i64,
    pub line_total_cents: i64,
}

/// How the customer pays, for display: never the token.
#[derive(Serialize, ToSchema)]
pub struct PaymentMethodView {
    pub last4: String,
}

/// What an order would be.
#[derive(Serialize, ToSchema)]
pub struct PreviewView {
    pub lines: Vec<LineView>,
    pub total_cents: i64,
    pub currency: String,
    pub shipping_address: Option<AddressBody>,
    /// `replica` or `customer_service`; `null` when no address is known.
    pub address_source: Option<String>,
    /// When the address was last changed, as far as ordering knows (RFC 3339).
    pub address_as_of: Option<String>,
    pub payment_method: Option<PaymentMethodView>,
}

/// One step of an order's history.
#[derive(Serialize, ToSchema)]
pub struct HistoryView {
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An order.
#[derive(Serialize, ToSchema)]
pub struct OrderView {
    pub id: Uuid,
    /// How a person names the order, e.g. `AG-7K3Q-9D2M` (derived from the id's random
    /// bits); accepted wherever the API takes an order's id.
    #[schema(example = "AG-7K3Q-9D2M")]
    pub reference: String,
    pub customer_id: Uuid,
    /// `accepted`, `paid`, `ready_for_shipping`, `shipped` or `cancelled`.
    pub status: String,
    /// Whether the status is final (`shipped`, `cancelled`): it changes no more.
    pub settled: bool,
    pub lines: Vec<LineView>,
    pub total_cents: i64,
    pub currency: String,
    pub shipping_address: AddressBody,
    /// `replica`, `customer_service` or `override`.
    pub address_source: String,
    pub history: Vec<HistoryView>,
}

/// Ordering's runtime settings (internal).
#[derive(Deserialize, Serialize, ToSchema)]
pub struct SettingsBody {
    /// `replica` or `sync`.
    pub customer_data: String,
}

pub fn order_view(order: &store::Order) -> OrderView {
    OrderView {
        id: order.id,
        reference: OrderReference::of(order.id).to_string(),
        customer_id: order.customer_id,
        status: order.status.as_str().to_owned(),
        settled: order.status.is_terminal(),
        lines: order
            .lines
            .iter()
            .map(|l| LineView {
                product_id: l.product_id,
                name: l.name.clone(),
                quantity: l.quantity,
                unit_price_cents: l.unit_price_cents,
                line_total_cents: l.unit_price_cents.saturating_mul(i64::from(l.quantity)),
            })
            .collect(),
        total_cents: order.total_cents,
        currency: order.currency.clone(),
        shipping_address: AddressBody::from(&order.shipping_address),
        address_source: order.address_source.as_str().to_owned(),
        history: order
            .history
            .iter()
            .map(|h| HistoryView {
                status: h.status.as_str().to_owned(),
                at: store::time_of_ms(h.at_ms),
                reason: h.reason.clone(),
            })
            .collect(),
    }
}

fn line_views(priced: &Priced) -> Vec<LineView> {
    priced
        .lines
        .iter()
        .map(|l| LineView {
            product_id: l.product_id,
            name: l.name.clone(),
            quantity: l.quantity,
            unit_price_cents: l.unit_price_cents,
            line_total_cents: l.line_total_cents,
        })
        .collect()
}

fn parse_lines(lines: &[LineRequest]) -> Result<Lines, ApiError> {
    let raw: Vec<(String, i64)> = lines
        .iter()
        .map(|l| (l.product_id.clone(), l.quantity))
        .collect();
    Lines::parse(&raw).map_err(ApiError::Invalid)
}

/// The caller, who must be a customer.
fn customer(caller: &Caller) -> Result<Uuid, ApiError> {
    caller.require(Role::Customer)?;
    Ok(caller.user_id)
}

/// `GET /api/ordering/prices`: every price of a product on sale.
#[utoipa::path(
    get,
    path = "/api/ordering/prices",
    tag = "ordering",
    responses((status = 200, description = "The prices", body = [PriceView]))
)]
async fn list_prices(AxumState(state): AxumState<State>) -> Result<Json<Vec<PriceView>>, ApiError> {
    let prices = store::prices(&state.db).await?;
    Ok(Json(
        prices
            .into_iter()
            .map(|p| PriceView {
                product_id: p.product_id,
                amount_cents: p.amount_cents,
                currency: p.currency,
                version: p.version,
            })
            .collect(),
    ))
}

/// `PUT /api/ordering/prices/{product_id}` (admin): sets a price and publishes
/// `PriceChanged` (nothing when the price is unchanged).
#[utoipa::path(
    put,
    path = "/api/ordering/prices/{product_id}",
    tag = "ordering",
    params(("product_id" = String, Path, description = "The product's id (UUID)")),
    request_body = PriceBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The price as set", body = PriceView),
        (status = 409, description = "A concurrent change won", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid price", body = Problem, content_type = "application/problem+json"),
        responses::JsonBodyProblems, responses::AdminProblems,
    )
)]
async fn set_price(
    AxumState(state): AxumState<State>,
    caller: Caller,
    Path(product_id): Path<String>,
    Json(body): Json<PriceBody>,
) -> Result<Json<PriceView>, ApiError> {
    caller.require(Role::Admin)?;
    let mut errors = Vec::new();
    let product_id = Uuid::parse_str(&product_id)
        .map_err(|_| errors.push(FieldError::new("product_id", "is not a UUID")))
        .ok();
    let price = Price::parse(body.amount_cents, &body.currency)
        .map_err(|e| errors.extend(e))
        .ok();
    let (Some(product_id), Some(price)) = (product_id, price) else {
        return Err(ApiError::Invalid(errors));
    };
    let version = match crate::prices::set(&state.db, &state.outbox, product_id, &price).await {
        Ok(crate::prices::Set::Changed(version) | crate::prices::Set::Unchanged(version)) => {
            version
        }
        Err(crate::Error::Conflict) => return Err(ApiError::PriceChanged),
        Err(error) => return Err(error.into()),
    };
    Ok(Json(PriceView {
        product_id,
        amount_cents: price.amount_cents,
        currency: price.currency.as_str().to_owned(),
        version,
    }))
}

/// `POST /api/ordering/checkout/preview` (customer): what the order would be.
#[utoipa::path(
    post,
    path = "/api/ordering/checkout/preview",
    tag = "ordering",
    request_body = PreviewRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The preview", body = PreviewView),
        (status = 422, description = "Invalid lines or unknown product", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Customer unavailable (sync mode)", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))),
        responses::JsonBodyProblems, responses::CustomerProblems,
    )
)]
async fn preview(
    AxumState(state): AxumState<State>,
    caller: Caller,
    Json(body): Json<PreviewRequest>,
) -> Result<Json<PreviewView>, ApiError> {
    let customer_id = customer(&caller)?;
    let lines = parse_lines(&body.lines)?;
    let priced = checkout::price(&state, &lines).await?;
    let customer = checkout::customer_view(&state, customer_id).await?;
    Ok(Json(PreviewView {
        lines: line_views(&priced),
        total_cents: priced.total_cents,
        currency: priced.currency,
        shipping_address: customer.address.as_ref().map(AddressBody::from),
        address_source: customer.address_source.map(|s| s.as_str().to_owned()),
        address_as_of: customer.address_as_of,
        payment_method: customer
            .payment_method
            .map(|p| PaymentMethodView { last4: p.last4 }),
    }))
}

/// The `Idempotency-Key` header: 400 when missing or malformed.
struct IdempotencyKeyHeader(IdempotencyKey);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let mut values = parts.headers.get_all("idempotency-key").iter();
        let value = values.next().ok_or(ApiError::MissingKey)?;
        if values.next().is_some() {
            return Err(ApiError::BadKey("must be given once"));
        }
        let value = value
            .to_str()
            .map_err(|_| ApiError::BadKey("must be printable ASCII"))?;
        IdempotencyKey::parse(value)
            .map(IdempotencyKeyHeader)
            .map_err(|invalid| ApiError::BadKey(invalid.0))
    }
}

/// [`agora_telemetry::names::CHECKOUT_OUTCOMES`]: `accepted`, `refused` (the request
/// or the payment said no), `failed` (the shop could not do it now) or `replayed` (a
/// retry given its key's stored answer, counted once already), with the reason.
fn count_checkout(answer: &Result<checkout::Answer, ApiError>) {
    let (outcome, reason) = match answer {
        Ok(answer) if answer.replayed => ("replayed", "stored_answer"),
        Ok(answer) if answer.status == StatusCode::CREATED => ("accepted", "created"),
        Ok(answer) if answer.status == StatusCode::PAYMENT_REQUIRED => ("refused", "declined"),
        Ok(_) => ("failed", "other"),
        Err(ApiError::Declined) => ("refused", "declined"),
        Err(ApiError::Invalid(_)) => ("refused", "invalid"),
        Err(ApiError::KeyReused) => ("refused", "key_reused"),
        Err(ApiError::InProgress) => ("refused", "in_progress"),
        Err(ApiError::Unavailable("payment")) => ("failed", "payment_unavailable"),
        Err(ApiError::Unavailable("customer")) => ("failed", "customer_unavailable"),
        Err(ApiError::Unavailable(_)) => ("failed", "unavailable"),
        Err(ApiError::PriceChanged) => ("failed", "price_changed"),
        Err(_) => ("failed", "error"),
    };
    metrics::counter!(agora_telemetry::names::CHECKOUT_OUTCOMES,
        "outcome" => outcome, "reason" => reason)
    .increment(1);
}

/// `POST /api/ordering/orders` (customer): checkout.
#[utoipa::path(
    post,
    path = "/api/ordering/orders",
    tag = "ordering",
    params(("Idempotency-Key" = String, Header, description = "1 to 200 printable ASCII characters; the same key and body give the same answer")),
    request_body = OrderRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Order accepted", body = OrderView),
        (status = 400, description = "No or bad Idempotency-Key, or not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "Payment declined; no order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The same key is in progress", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))),
        (status = 422, description = "Invalid lines, unknown product, no address, no payment method, key reused", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Payment (or customer, sync mode) unavailable; no order", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))),
        responses::CustomerProblems, responses::BodyTooLarge, responses::NotJsonMediaType,
    )
)]
async fn place_order(
    AxumState(state): AxumState<State>,
    caller: Caller,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    Json(body): Json<OrderRequest>,
) -> Result<Response, ApiError> {
    let customer_id = customer(&caller)?;
    let lines = parse_lines(&body.lines);
    let address = body
        .shipping_address
        .as_ref()
        .map(|a| parse_address(&Address::from(a), "shipping_address"))
        .transpose();
    let (lines, shipping_address) = match (lines, address) {
        (Ok(lines), Ok(address)) => (lines, address),
        (lines, address) => {
            let mut errors = Vec::new();
            if let Err(ApiError::Invalid(e)) = lines {
                errors.extend(e);
            }
            if let Err(e) = address {
                errors.extend(e);
            }
            return Err(ApiError::Invalid(errors));
        }
    };
    let request = CheckoutRequest {
        lines,
        shipping_address,
    };
    let answer = checkout::place_order(&state, customer_id, &key, &request).await;
    count_checkout(&answer);
    let answer = answer?;
    let content_type = if answer.status.is_success() {
        "application/json"
    } else {
        agora_httpkit::PROBLEM_JSON
    };
    let mut response = (answer.status, answer.body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

/// `GET /api/ordering/orders` query: a page of my orders.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrdersQuery {
    /// At most this many orders (1..=100, default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Where the page starts: the `cursor` of the previous page's `Link: rel="next"`.
    pub cursor: Option<String>,
}

/// Orders per page when the query names no limit.
pub const DEFAULT_PAGE: u32 = 50;
/// The most orders one page may have.
pub const MAX_PAGE: u32 = 100;

/// `GET /api/ordering/orders` (customer): my orders, newest first, a page at a time;
/// `Link: <…?cursor=…>; rel="next"` when there are more.
#[utoipa::path(
    get,
    path = "/api/ordering/orders",
    tag = "ordering",
    params(OrdersQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "My orders, newest first", body = [OrderView],
            headers(("Link" = String, description = "The next page (RFC 8288 `rel=\"next\"`), when there is one"))),
        (status = 400, description = "A limit outside 1..=100 or a cursor this service did not give", body = Problem, content_type = "application/problem+json"),
        responses::CustomerProblems,
    )
)]
async fn my_orders(
    AxumState(state): AxumState<State>,
    caller: Caller,
    query: Result<Query<OrdersQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let customer_id = customer(&caller)?;
    let bad = || {
        ApiError::BadQuery(
            "Give an optional limit of 1 to 100 and an optional cursor from a Link header.",
        )
    };
    let Query(query) = query.map_err(|_| bad())?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(bad());
    }
    let cursor = match query.cursor.as_deref() {
        None => None,
        Some(text) => Some(store::OrderCursor::decode(text).ok_or_else(bad)?),
    };
    let (orders, next) = store::orders_of(&state.db, customer_id, limit, cursor).await?;
    let mut response = Json(orders.iter().map(order_view).collect::<Vec<_>>()).into_response();
    if let Some(next) = next {
        let link = format!(
            "</api/ordering/orders?limit={limit}&cursor={}>; rel=\"next\"",
            next.encode()
        );
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}

/// `GET /api/ordering/orders/{id}` (owner or admin); another customer's order is 404.
/// `{id}` is the order's id or its reference (`AG-7K3Q-9D2M`).
#[utoipa::path(
    get,
    path = "/api/ordering/orders/{id}",
    tag = "ordering",
    params(("id" = String, Path, description = "The order's id, or its reference (e.g. `AG-7K3Q-9D2M`)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 404, description = "No such order of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An admin's reference names more than one order: use the id", body = Problem, content_type = "application/problem+json"),
        responses::NoValidToken,
    )
)]
async fn get_order(
    AxumState(state): AxumState<State>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let admin = caller.has_role(&Role::Admin);
    if let Ok(id) = Uuid::parse_str(&id) {
        let order = store::order(&state.db, id)
            .await?
            .filter(|o| o.customer_id == caller.user_id || admin)
            .ok_or(ApiError::NotFound)?;
        return Ok(Json(order_view(&order)));
    }
    let reference = OrderReference::parse(&id).ok_or(ApiError::NotFound)?;
    // A customer's reference is looked up among their own orders only.
    let owner = (!admin).then_some(caller.user_id);
    let mut orders = store::orders_by_reference(&state.db, reference, owner).await?;
    match orders.len() {
        0 => Err(ApiError::NotFound),
        1 => Ok(Json(order_view(&orders.remove(0)))),
        _ => Err(ApiError::AmbiguousReference),
    }
}

/// `GET /internal/ordering/settings`.
async fn get_settings(AxumState(state): AxumState<State>) -> Result<Json<SettingsBody>, ApiError> {
    let mode = store::customer_data(&state.db).await?;
    Ok(Json(SettingsBody {
        customer_data: mode.as_str().to_owned(),
    }))
}

/// `PUT /internal/ordering/settings` `{customer_data: "replica"|"sync"}`.
async fn put_settings(
    AxumState(state): AxumState<State>,
    Json(body): Json<SettingsBody>,
) -> Result<Json<SettingsBody>, ApiError> {
    let mode = CustomerData::parse(&body.customer_data).ok_or_else(|| {
        ApiError::Invalid(vec![FieldError::new(
            "customer_data",
            "must be \"replica\" or \"sync\"",
        )])
    })?;
    store::set_customer_data(&state.db, mode).await?;
    tracing::info!(
        customer_data = mode.as_str(),
        "customer data setting changed"
    );
    Ok(Json(SettingsBody {
        customer_data: mode.as_str().to_owned(),
    }))
}

/// One breaker of ordering's clients (internal).
#[derive(Serialize)]
pub struct BreakerView {
    pub target: String,
    /// `closed`, `open` or `half_open`.
    pub state: BreakerState,
}

/// `GET /internal/ordering/breakers`: `[{target, state}]`, for the ops console.
async fn get_breakers(AxumState(state): AxumState<State>) -> Json<Vec<BreakerView>> {
    Json(
        state
            .breakers
            .iter()
            .map(|b| BreakerView {
                target: b.name().to_owned(),
                state: b.state(),
            })
            .collect(),
    )
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Agora ordering", description = "Prices, checkout and orders."),
    paths(list_prices, set_price, preview, place_order, my_orders, get_order),
    components(schemas(
        Problem,
        FieldError,
        PriceBody,
        PriceView,
        LineRequest,
        PreviewRequest,
        OrderRequest,
        AddressBody,
        LineView,
        PaymentMethodView,
        PreviewView,
        HistoryView,
        OrderView
    )),
    modifiers(&BearerSecurity),
    tags((name = "ordering", description = "Prices, checkout and orders"))
)]
struct ApiDoc;

/// The OpenAPI 3.1 document of ordering's public paths.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lost race on a price is a conflict about the price, not about an
    /// Idempotency-Key (which `PUT /prices` does not take).
    #[test]
    fn a_price_conflict_says_what_conflicted() {
        let problem = ApiError::PriceChanged.problem();
        assert_eq!(problem.status_code(), StatusCode::CONFLICT);
        assert!(problem.detail.contains("price"), "{}", problem.detail);
        assert!(
            !problem.detail.contains("Idempotency"),
            "{}",
            problem.detail
        );
        assert!(problem.retry_after.is_none());
    }
}
