//! The HTTP API of customer: the public paths (`/api/customers/me...`), the internal
//! one (`/internal/customers/{id}`), their OpenAPI document, and the one table that
//! maps errors to problems.

use agora_auth::{Caller, InternalAuth, Verifier};
use agora_contracts::{CustomerAddressChanged, PaymentMethodChanged, Role};
use agora_httpkit::{BearerSecurity, FieldError, Json, Problem, responses};
use agora_messaging::{Context, Db, Envelope, Outbox};
use agora_resilience::{Deadline, ReceiveDeadlineLayer, deadline_exceeded_problem};
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, FromRequestParts, Path, State as AxumState};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{self, RawAddress};
use crate::store::{self, Change, Profile};

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

/// The public routes, and the internal one behind `internal`'s guard (a service
/// token for customer, nothing else).
pub fn router(state: State, internal: &InternalAuth) -> Router {
    let internal = Router::new()
        .route("/internal/customers/{id}", get(get_internal))
        .route_layer(internal.guard());
    Router::new()
        .route("/api/customers/me", get(get_me))
        .route("/api/customers/me/address", put(put_address))
        .route("/api/customers/me/payment-method", put(put_payment_method))
        .merge(internal)
        // The API's limit; the Json extractor answers 413 over it.
        .layer(DefaultBodyLimit::max(agora_httpkit::BODY_LIMIT))
        // The caller's budget (`Agora-Budget-Ms`): no work starts once it is spent (504).
        .layer(ReceiveDeadlineLayer::new())
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
    #[error("no such customer")]
    NotFound,
    #[error("the caller's deadline passed")]
    DeadlineExceeded,
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
            ApiError::NotFound => Problem::not_found().with_detail("There is no such customer."),
            ApiError::DeadlineExceeded => deadline_exceeded_problem(),
            ApiError::Internal(error) => agora_service::internal_problem("customer", error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

agora_httpkit::internal_from!(ApiError: agora_messaging::Error, sqlx::Error);

/// The caller, whose own profile a public route reads or changes: any verified user
/// with the customer or the admin role.
struct Me(Uuid);

impl FromRequestParts<State> for Me {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state)
            .await
            .map_err(ApiError::Unauthenticated)?;
        if caller.has_role(&Role::Customer) || caller.has_role(&Role::Admin) {
            Ok(Me(caller.user_id))
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

// Wire types: what clients send and receive, apart from the domain types.

/// A customer's profile. `name` and `email` are empty strings until the user's sign-up
/// has reached the customer service (usually within milliseconds of signing up); a
/// customer without any profile yet is answered with version 0.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Customer)]
pub struct CustomerBody {
    /// The customer's id: the identity user id.
    id: Uuid,
    /// Empty until the sign-up has reached the customer service.
    name: String,
    /// Empty until the sign-up has reached the customer service.
    email: String,
    /// `null` until the customer sets one.
    #[schema(required = true)]
    address: Option<AddressBody>,
    /// `null` until the customer sets one.
    #[schema(required = true)]
    payment_method: Option<PaymentMethodBody>,
    /// Bumped by every change of the profile; 0 when nothing is known yet.
    #[schema(minimum = 0)]
    version: u64,
}

/// A shipping address.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CustomerAddress)]
pub struct AddressBody {
    line1: String,
    /// `null` when the address has no second line.
    #[schema(required = true)]
    line2: Option<String>,
    city: String,
    postal_code: String,
    /// ISO 3166-1 alpha-2, upper case.
    #[schema(example = "DE")]
    country: String,
}

/// How the customer pays: the payment provider's token, never a card number.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CustomerPaymentMethod)]
pub struct PaymentMethodBody {
    #[schema(example = "tok_visa")]
    token: String,
    /// The card's last four digits, for display.
    #[schema(example = "4242")]
    last4: String,
}

impl From<&Profile> for CustomerBody {
    fn from(profile: &Profile) -> Self {
        CustomerBody {
            id: profile.id,
            name: profile.name.clone().unwrap_or_default(),
            email: profile.email.clone().unwrap_or_default(),
            address: profile.address.as_ref().map(|a| AddressBody {
                line1: a.line1.clone(),
                line2: a.line2.clone(),
                city: a.city.clone(),
                postal_code: a.postal_code.clone(),
                country: a.country.clone(),
            }),
            payment_method: profile.payment_method.as_ref().map(|p| PaymentMethodBody {
                token: p.token.clone(),
                last4: p.last4.clone(),
            }),
            version: profile.version,
        }
    }
}

/// A new shipping address. Every part is trimmed; `line1` and `line2` hold at most 200
/// characters, `city` 100, `postal_code` 16 (letters, digits, spaces and hyphens);
/// `country` is an assigned ISO 3166-1 alpha-2 code, upper-cased (`de` is `DE`).
/// A missing, `null` or blank `line2` means none.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = CustomerAddressRequest)]
pub struct AddressRequest {
    #[schema(example = "Unter den Linden 1")]
    line1: String,
    #[serde(default)]
    line2: Option<String>,
    #[schema(example = "Berlin")]
    city: String,
    #[schema(example = "10117")]
    postal_code: String,
    #[schema(example = "DE")]
    country: String,
}

/// A new payment method: the provider's token (`tok_` and 1 to 60 of `a-z`, `0-9`,
/// `_`, never a card number) and the card's last four digits. Demo tokens:
/// `tok_visa` (approves), `tok_declined` (declines).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = CustomerPaymentMethodRequest)]
pub struct PaymentMethodRequest {
    #[schema(example = "tok_visa")]
    token: String,
    #[schema(example = "4242")]
    last4: String,
}

/// The internal view of a profile, for ordering's `sync` mode.
#[derive(Debug, Serialize)]
struct InternalCustomerBody {
    #[serde(flatten)]
    customer: CustomerBody,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

/// The caller's customer profile.
///
/// Answers 200 for every customer: before the sign-up has reached the customer service,
/// `name` and `email` are empty strings, and with no profile at all the version is 0.
#[utoipa::path(
    get,
    path = "/api/customers/me",
    tag = "customer",
    operation_id = "get_my_customer_profile",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's profile (name and email empty until \
            the sign-up has reached the customer service).", body = CustomerBody),
        (status = 403, description = "Neither the customer nor the admin role.",
            body = Problem, content_type = "application/problem+json"),
        responses::NoValidToken, responses::InternalError, responses::BudgetSpent,
    )
)]
async fn get_me(
    AxumState(state): AxumState<State>,
    Me(id): Me,
) -> Result<Json<CustomerBody>, ApiError> {
    let profile = within_deadline(store::profile(&state.db, id))
        .await?
        .unwrap_or_else(|| Profile::unknown(id));
    Ok(Json(CustomerBody::from(&profile)))
}

/// Sets the caller's shipping address.
///
/// Works before the sign-up has reached the customer service (the profile is created).
/// Publishes `CustomerAddressChanged` with the new version, unless the address is the
/// one the profile holds already.
#[utoipa::path(
    put,
    path = "/api/customers/me/address",
    tag = "customer",
    operation_id = "put_my_address",
    security(("bearer" = [])),
    request_body = AddressRequest,
    responses(
        (status = 200, description = "The profile with its new address. Setting the \
            address it holds already changes nothing (same version).", body = CustomerBody),
        (status = 403, description = "Neither the customer nor the admin role.",
            body = Problem, content_type = "application/problem+json"),
        responses::JsonBodyProblems, responses::NoValidToken, responses::InvalidFields,
        responses::InternalError, responses::BudgetSpent,
    )
)]
async fn put_address(
    AxumState(state): AxumState<State>,
    Me(id): Me,
    headers: HeaderMap,
    Json(body): Json<AddressRequest>,
) -> Result<Json<CustomerBody>, ApiError> {
    let address = domain::parse_address(RawAddress {
        line1: &body.line1,
        line2: body.line2.as_deref(),
        city: &body.city,
        postal_code: &body.postal_code,
        country: &body.country,
    })
    .map_err(ApiError::Invalid)?;
    let now = store::now();
    let mut tx = state.db.begin().await?;
    let profile = match store::set_address(&mut tx, id, &address, now).await? {
        Change::Unchanged(profile) => {
            tx.rollback().await?;
            profile
        }
        Change::Changed(profile) => {
            let Some(address) = profile.address.clone() else {
                return Err(crate::Error::Corrupt("customer address").into());
            };
            let event = CustomerAddressChanged {
                customer_id: id,
                address,
                changed_at: now,
                version: profile.version,
            };
            Outbox::append(&mut tx, &Envelope::new(&event, &context(id, &headers))?).await?;
            state.outbox.commit(tx).await?;
            tracing::info!(customer_id = %id, version = profile.version, "address changed");
            profile
        }
    };
    Ok(Json(CustomerBody::from(&profile)))
}

/// Sets the caller's payment method.
///
/// Works before the sign-up has reached the customer service (the profile is created).
/// Publishes `PaymentMethodChanged` with the new version, unless the method is the one
/// the profile holds already.
#[utoipa::path(
    put,
    path = "/api/customers/me/payment-method",
    tag = "customer",
    operation_id = "put_my_payment_method",
    security(("bearer" = [])),
    request_body = PaymentMethodRequest,
    responses(
        (status = 200, description = "The profile with its new payment method. Setting \
            the method it holds already changes nothing (same version).", body = CustomerBody),
        (status = 403, description = "Neither the customer nor the admin role.",
            body = Problem, content_type = "application/problem+json"),
        responses::JsonBodyProblems, responses::NoValidToken, responses::InvalidFields,
        responses::InternalError, responses::BudgetSpent,
    )
)]
async fn put_payment_method(
    AxumState(state): AxumState<State>,
    Me(id): Me,
    headers: HeaderMap,
    Json(body): Json<PaymentMethodRequest>,
) -> Result<Json<CustomerBody>, ApiError> {
    let method =
        domain::PaymentMethod::parse(&body.token, &body.last4).map_err(ApiError::Invalid)?;
    let now = store::now();
    let mut tx = state.db.begin().await?;
    let profile = match store::set_payment_method(&mut tx, id, &method, now).await? {
        Change::Unchanged(profile) => {
            tx.rollback().await?;
            profile
        }
        Change::Changed(profile) => {
            let Some(payment_method) = profile.payment_method.clone() else {
                return Err(crate::Error::Corrupt("customer payment method").into());
            };
            let event = PaymentMethodChanged {
                customer_id: id,
                payment_method,
                changed_at: now,
                version: profile.version,
            };
            Outbox::append(&mut tx, &Envelope::new(&event, &context(id, &headers))?).await?;
            state.outbox.commit(tx).await?;
            tracing::info!(customer_id = %id, version = profile.version, "payment method changed");
            profile
        }
    };
    Ok(Json(CustomerBody::from(&profile)))
}

/// `GET /internal/customers/{id}`: the profile with `updated_at`; 404 when there is
/// none (also for an id that is not a UUID). A service token only.
async fn get_internal(
    AxumState(state): AxumState<State>,
    Path(id): Path<String>,
) -> Result<Json<InternalCustomerBody>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let profile = within_deadline(store::profile(&state.db, id))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(InternalCustomerBody {
        customer: CustomerBody::from(&profile),
        updated_at: profile.updated_at,
    }))
}

/// Runs a read under the caller's deadline, if the request carries one: nobody waits
/// for the answer past it. (Writes are not cut short: their outcome must be known.)
async fn within_deadline<T>(
    read: impl Future<Output = Result<T, crate::Error>>,
) -> Result<T, ApiError> {
    match Deadline::current() {
        Some(deadline) => tokio::time::timeout_at(deadline.0, read)
            .await
            .map_err(|_| ApiError::DeadlineExceeded)?
            .map_err(ApiError::from),
        None => Ok(read.await?),
    }
}

/// The context of an event caused by a request of customer `id`: the flow is about the
/// customer, and the request's trace goes on in the event.
fn context(id: Uuid, headers: &HeaderMap) -> Context {
    let context = Context::new(id.to_string());
    match headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_traceparent(v))
    {
        Some(traceparent) => context.with_traceparent(traceparent),
        None => context,
    }
}

/// A W3C `traceparent`: `version-traceid-parentid-flags`, lower-case hex of 2, 32, 16
/// and 2 digits.
fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() == 4
        && parts.iter().zip([2, 32, 16, 2]).all(|(part, len)| {
            part.len() == len
                && part
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// The OpenAPI document of the public paths.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Agora customer",
        description = "Customer profiles: name, email, shipping address and payment method \
            (a provider token, never a card number)."
    ),
    paths(get_me, put_address, put_payment_method),
    components(schemas(
        CustomerBody,
        AddressBody,
        PaymentMethodBody,
        AddressRequest,
        PaymentMethodRequest,
        Problem,
        FieldError
    )),
    modifiers(&BearerSecurity),
    tags((name = "customer", description = "The caller's customer profile."))
)]
pub struct ApiDoc;
