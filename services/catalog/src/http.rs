//! The HTTP API of catalog (`/api/catalog/...`), its OpenAPI description, and the one
//! table that maps its errors to problems.

use agora_auth::{Caller, Verifier};
use agora_contracts::Role;
use agora_httpkit::{BearerSecurity, FieldError, Json, Problem, responses};
use agora_messaging::{Context, Db, Outbox};
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, Path, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{Description, ImageUrl, ProductName};
use crate::store::{self, Product, ProductData, Updated};

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

const PRODUCTS: &str = "/api/catalog/products";

pub fn router(state: State) -> Router {
    Router::new()
        .route(PRODUCTS, get(list_products).post(add_product))
        .route(
            "/api/catalog/products/{id}",
            get(get_product).put(update_product).delete(delete_product),
        )
        .layer(DefaultBodyLimit::max(agora_httpkit::BODY_LIMIT))
        .with_state(state)
}

/// Why a request failed. [`ApiError::problem`] is the one place these become answers.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("no such product")]
    NotFound,
    #[error(transparent)]
    Auth(#[from] agora_auth::Error),
    #[error(transparent)]
    Internal(#[from] crate::Error),
}

impl ApiError {
    fn problem(&self) -> Problem {
        match self {
            ApiError::Invalid(errors) => Problem::unprocessable(errors.clone()),
            ApiError::NotFound => Problem::not_found().with_detail("There is no such product."),
            ApiError::Auth(error) if error.status() == StatusCode::FORBIDDEN => {
                Problem::forbidden().with_detail("Only an admin may change the catalog.")
            }
            ApiError::Auth(error) => error.into(),
            ApiError::Internal(error) => agora_service::internal_problem("catalog", error),
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

/// A product's master data, as an admin writes it. `PUT` replaces all of it: an
/// `image_url` left out is removed.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ProductRequest {
    /// 1 to 120 characters after trimming, on one line.
    #[schema(min_length = 1, max_length = 120)]
    name: String,
    /// At most 2000 characters after trimming; may be empty.
    #[schema(max_length = 2000)]
    description: String,
    /// An absolute http(s) URL of a picture of the product.
    #[serde(default)]
    #[schema(max_length = 2048)]
    image_url: Option<String>,
}

/// A product of the catalog.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProductResponse {
    id: Uuid,
    name: String,
    description: String,
    /// Present when the product has a picture.
    #[serde(skip_serializing_if = "Option::is_none")]
    image_url: Option<String>,
    /// Bumped by every change; the version of the latest event about the product.
    #[schema(minimum = 1)]
    version: u64,
}

impl From<Product> for ProductResponse {
    fn from(product: Product) -> Self {
        Self {
            id: product.id,
            name: product.name,
            description: product.description,
            image_url: product.image_url,
            version: product.version,
        }
    }
}

/// The request's body, parsed into domain values, or every invalid field.
struct Parsed {
    name: ProductName,
    description: Description,
    image_url: Option<ImageUrl>,
}

impl Parsed {
    fn of(body: &ProductRequest) -> Result<Parsed, ApiError> {
        let mut errors = Vec::new();
        let name = ProductName::parse(&body.name)
            .map_err(|e| errors.push(e.on("name")))
            .ok();
        let description = Description::parse(&body.description)
            .map_err(|e| errors.push(e.on("description")))
            .ok();
        let image_url = match body.image_url.as_deref() {
            None => Some(None),
            Some(raw) => ImageUrl::parse(raw)
                .map(Some)
                .map_err(|e| errors.push(e.on("image_url")))
                .ok(),
        };
        match (name, description, image_url) {
            (Some(name), Some(description), Some(image_url)) => Ok(Parsed {
                name,
                description,
                image_url,
            }),
            _ => Err(ApiError::Invalid(errors)),
        }
    }

    fn data(&self) -> ProductData<'_> {
        ProductData {
            name: self.name.as_str(),
            description: self.description.as_str(),
            image_url: self.image_url.as_ref().map(ImageUrl::as_str),
        }
    }
}

/// A product id from the path; one that is not a UUID names no product (404).
fn product_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound)
}

/// The context of the event a request causes: about the product, in the caller's
/// trace.
fn context(product_id: Uuid, headers: &HeaderMap) -> Context {
    let context = Context::new(product_id.to_string());
    match headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
    {
        Some(traceparent) if traceparent.len() <= 128 => context.with_traceparent(traceparent),
        _ => context,
    }
}

/// List the products (deleted ones are left out), oldest first.
#[utoipa::path(
    get,
    path = "/api/catalog/products",
    tag = "catalog",
    operation_id = "catalog_list_products",
    responses(
        (status = 200, description = "The products, oldest first", body = [ProductResponse]),
    )
)]
async fn list_products(
    AxumState(state): AxumState<State>,
) -> Result<Json<Vec<ProductResponse>>, ApiError> {
    let products = store::list(&state.db).await?;
    Ok(Json(products.into_iter().map(Into::into).collect()))
}

/// One product.
#[utoipa::path(
    get,
    path = "/api/catalog/products/{id}",
    tag = "catalog",
    operation_id = "catalog_get_product",
    params(("id" = String, Path, description = "The product's id (a UUID; anything else is not found)")),
    responses(
        (status = 200, description = "The product", body = ProductResponse),
        (status = 404, description = "No such product, or it was deleted",
            body = agora_httpkit::Problem, content_type = "application/problem+json"),
    )
)]
async fn get_product(
    AxumState(state): AxumState<State>,
    Path(id): Path<String>,
) -> Result<Json<ProductResponse>, ApiError> {
    let id = product_id(&id)?;
    let product = store::get(&state.db, id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(product.into()))
}

/// Add a product (admin). Publishes `ProductAdded` (version 1).
#[utoipa::path(
    post,
    path = "/api/catalog/products",
    tag = "catalog",
    operation_id = "catalog_add_product",
    security(("bearer" = [])),
    request_body = ProductRequest,
    responses(
        (status = 201, description = "The new product", body = ProductResponse,
            headers(("Location" = String, description = "The product's address"))),
        responses::JsonBodyProblems, responses::AdminProblems, responses::InvalidFields,
    )
)]
async fn add_product(
    caller: Caller,
    AxumState(state): AxumState<State>,
    headers: HeaderMap,
    Json(body): Json<ProductRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let parsed = Parsed::of(&body)?;
    let id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    let product = store::add(
        &mut tx,
        id,
        parsed.data(),
        OffsetDateTime::now_utc(),
        &context(id, &headers),
    )
    .await?
    .ok_or(crate::Error::Corrupt("a fresh product id is taken"))?;
    state.outbox.commit(tx).await?;
    tracing::info!(product_id = %id, admin = %caller.user_id, "product added");
    let location = HeaderValue::try_from(format!("{PRODUCTS}/{id}"))
        .map_err(|_| crate::Error::Corrupt("product location"))?;
    let mut response = (StatusCode::CREATED, Json(ProductResponse::from(product))).into_response();
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// Replace a product's master data (admin). Publishes `ProductUpdated` with the next
/// version, unless the data is unchanged (then nothing is published and the version
/// stays).
#[utoipa::path(
    put,
    path = "/api/catalog/products/{id}",
    tag = "catalog",
    operation_id = "catalog_update_product",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The product's id (a UUID; anything else is not found)")),
    request_body = ProductRequest,
    responses(
        (status = 200, description = "The product as it is now", body = ProductResponse),
        (status = 404, description = "No such product, or it was deleted",
            body = agora_httpkit::Problem, content_type = "application/problem+json"),
        responses::JsonBodyProblems, responses::AdminProblems, responses::InvalidFields,
    )
)]
async fn update_product(
    caller: Caller,
    AxumState(state): AxumState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<ProductRequest>,
) -> Result<Json<ProductResponse>, ApiError> {
    caller.require(Role::Admin)?;
    let parsed = Parsed::of(&body)?;
    let id = product_id(&id)?;
    let mut tx = state.db.begin().await?;
    let updated = store::update(
        &mut tx,
        id,
        parsed.data(),
        OffsetDateTime::now_utc(),
        &context(id, &headers),
    )
    .await?;
    let product = match updated {
        Updated::Changed(product) => {
            state.outbox.commit(tx).await?;
            tracing::info!(product_id = %id, version = product.version, "product updated");
            product
        }
        Updated::Unchanged(product) => {
            tx.rollback().await?;
            product
        }
        Updated::NotFound => {
            tx.rollback().await?;
            return Err(ApiError::NotFound);
        }
    };
    Ok(Json(product.into()))
}

/// Delete a product (admin). Publishes `ProductDeleted` with the next version; the
/// product is then unknown (a second delete is a 404).
#[utoipa::path(
    delete,
    path = "/api/catalog/products/{id}",
    tag = "catalog",
    operation_id = "catalog_delete_product",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The product's id (a UUID; anything else is not found)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such product, or it was deleted already",
            body = agora_httpkit::Problem, content_type = "application/problem+json"),
        responses::AdminProblems,
    )
)]
async fn delete_product(
    caller: Caller,
    AxumState(state): AxumState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let id = product_id(&id)?;
    let mut tx = state.db.begin().await?;
    if !store::delete(
        &mut tx,
        id,
        OffsetDateTime::now_utc(),
        &context(id, &headers),
    )
    .await?
    {
        tx.rollback().await?;
        return Err(ApiError::NotFound);
    }
    state.outbox.commit(tx).await?;
    tracing::info!(product_id = %id, admin = %caller.user_id, "product deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The OpenAPI description of the routes above.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Agora catalog", description = "Product master data: name, description, image."),
    paths(list_products, get_product, add_product, update_product, delete_product),
    components(schemas(ProductRequest, ProductResponse, agora_httpkit::Problem, agora_httpkit::FieldError)),
    modifiers(&BearerSecurity),
    tags((name = "catalog", description = "Product master data"))
)]
pub struct ApiDoc;
