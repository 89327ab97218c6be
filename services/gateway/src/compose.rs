//! `GET /api/shop/products`: the storefront's product list, composed by the gateway
//! from the masters of each part — names and descriptions from catalog, prices from
//! ordering, availability from inventory. A part whose owner does not answer in time
//! is `null`, and the answer names the missing owners in `Agora-Degraded`.

use std::collections::HashMap;
use std::time::Duration;

use agora_httpkit::Problem;
use agora_resilience::Deadline;
use axum::Json;
use axum::extract::State as AxumState;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::State;

/// The header naming the services whose part is missing from a composed answer.
pub const DEGRADED: HeaderName = HeaderName::from_static("agora-degraded");

/// How long each part may take.
const PART_BUDGET: Duration = Duration::from_millis(500);

/// One product of the storefront.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ShopProduct {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    /// Null when ordering (the owner of prices) does not answer, or the product has no
    /// price yet.
    pub price: Option<ShopPrice>,
    /// Units available; null when inventory does not answer or does not stock it.
    pub available: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ShopPrice {
    pub amount_cents: i64,
    pub currency: String,
}

#[derive(Deserialize)]
struct CatalogProduct {
    id: Uuid,
    name: String,
    description: String,
}

#[derive(Deserialize)]
struct Price {
    product_id: Uuid,
    amount_cents: i64,
    currency: String,
}

#[derive(Deserialize)]
struct Stock {
    product_id: Uuid,
    available: i64,
}

/// The product list of the shop, composed.
#[utoipa::path(get, path = "/api/shop/products", tag = "shop",
    responses(
        (status = 200, description = "The products; a part whose owner is down is null, and `Agora-Degraded` names the owner",
            body = [ShopProduct],
            headers(("Agora-Degraded" = String, description = "The services whose part is missing, comma-separated"))),
        (status = 503, description = "The catalog cannot be reached", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn products(AxumState(state): AxumState<State>) -> Response {
    let catalog =
        part::<Vec<CatalogProduct>>(&state, "catalog", "/api/catalog/products".to_owned()).await;
    let Some(catalog) = catalog else {
        return Problem::service_unavailable(Duration::from_secs(1))
            .with_detail("The catalog cannot be reached; try again shortly.")
            .into_response();
    };
    let ids: Vec<String> = catalog.iter().map(|p| p.id.to_string()).collect();
    let (prices, stock) = tokio::join!(
        part::<Vec<Price>>(&state, "ordering", "/api/ordering/prices".to_owned()),
        part::<Vec<Stock>>(
            &state,
            "inventory",
            format!("/internal/inventory/stock?ids={}", ids.join(","))
        ),
    );
    let mut degraded = Vec::new();
    if prices.is_none() {
        degraded.push("ordering");
    }
    if stock.is_none() {
        degraded.push("inventory");
    }
    let prices: HashMap<Uuid, Price> = prices
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.product_id, p))
        .collect();
    let stock: HashMap<Uuid, i64> = stock
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.product_id, s.available))
        .collect();
    let products: Vec<ShopProduct> = catalog
        .into_iter()
        .map(|p| ShopProduct {
            price: prices.get(&p.id).map(|price| ShopPrice {
                amount_cents: price.amount_cents,
                currency: price.currency.clone(),
            }),
            available: stock.get(&p.id).copied(),
            id: p.id,
            name: p.name,
            description: p.description,
        })
        .collect();
    let mut response = Json(products).into_response();
    if !degraded.is_empty() {
        let value = HeaderValue::from_str(&degraded.join(", ")).expect("service names are ASCII");
        response.headers_mut().insert(DEGRADED, value);
    }
    response
}

/// One part, from the service named `service`, or `None` if it is not there in time.
async fn part<T: serde::de::DeserializeOwned>(
    state: &State,
    service: &str,
    path: String,
) -> Option<T> {
    let route = state
        .proxy
        .routes()
        .iter()
        .find(|r| r.upstream.name == service)?;
    let mut call = route.client.request(Method::GET, &path);
    if path.starts_with("/internal/") {
        call = call.header(AUTHORIZATION, state.service_token(service)?);
    }
    let call = call.json::<T>();
    match Deadline::after(PART_BUDGET).scope(call).await {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(%service, %error, "part missing from the shop's product list");
            None
        }
    }
}
