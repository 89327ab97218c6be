//! The public router: the gateway's own routes, and everything else forwarded after
//! the edge checks (rate limits, token, body size, deadline).

use std::net::SocketAddr;
use std::time::Instant;

use agora_auth::Caller;
use agora_httpkit::{BODY_LIMIT, Problem};
use axum::Router;
use axum::body::to_bytes;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State as AxumState};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use crate::{State, compose, forwarded, ops, path, trace, traces, ui};

/// The public router. The path check wraps all of it, routing included: a path that
/// could be read two ways is refused before anything looks at it.
pub(crate) fn router(state: State) -> Router {
    let routed = routes(state);
    Router::new()
        .fallback_service(routed)
        .layer(from_fn(path::refuse_bad_paths))
        .layer(from_fn(trace::layer))
}

fn routes(state: State) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi_json))
        .route("/api/shop/products", get(compose::products))
        .route("/api/ops/status", get(ops::status))
        .route("/api/ops/chaos/{service}", put(ops::set_chaos))
        .route("/api/ops/bus", put(ops::set_bus))
        .route("/api/ops/events", get(ops::events))
        .route("/api/ops/settings", put(ops::set_settings))
        .route("/api/ops/dead-letters", get(ops::dead_letters))
        .route("/api/ops/dead-letters/{id}/redrive", post(ops::redrive))
        .route("/api/ops/traces", get(traces::traces))
        .route("/api/ops/traces/{trace_id}", get(traces::trace))
        .merge(ui::routes())
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .fallback(forward)
        .layer(from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Alive: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "gateway",
    responses((status = 200, description = "The gateway is alive", body = String)))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "gateway",
    responses((status = 200, description = "Prometheus text exposition", body = String,
        content_type = "text/plain")))]
pub(crate) async fn metrics(AxumState(state): AxumState<State>) -> Response {
    match state.online.count().await {
        Ok(online) => metrics::gauge!(agora_telemetry::names::ONLINE_USERS).set(online as f64),
        Err(error) => tracing::warn!(%error, "online users unknown"),
    }
    agora_telemetry::metrics_response().await
}

/// This document: every public path of Agora (OpenAPI 3.1).
#[utoipa::path(get, path = "/api/openapi.json", tag = "gateway",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub(crate) async fn openapi_json(AxumState(state): AxumState<State>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.as_str().to_owned(),
    )
        .into_response()
}

/// The client's key for the per-address limits (its address, or the one a trusted
/// proxy names), set by [`guard`] for the handlers after it.
#[derive(Debug, Clone)]
struct ClientKey(String);

/// Rate limits, the deadline and metrics, around every request.
async fn guard(AxumState(state): AxumState<State>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let method_label = agora_telemetry::method_label(request.method());
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(
            || "unknown".to_owned(),
            |c| forwarded::client_key(c.0.ip(), request.headers(), &state.trusted_proxies),
        );
    request.extensions_mut().insert(ClientKey(client.clone()));
    let service = state
        .proxy
        .route(request.uri().path())
        .map_or("gateway", |r| r.upstream.name.as_str())
        .to_owned();
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let response = match admit(&state, &client, &method, &path, declared).await {
        Err(problem) => problem.into_response(),
        Ok(()) => match tokio::time::timeout(state.request_timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "Gateway timeout",
                "The request took too long.",
            )
            .into_response(),
        },
    };
    let (status, elapsed) = (response.status().as_u16(), started.elapsed());
    agora_telemetry::http::record_gateway(&service, status, elapsed);
    // Forwarded requests are labelled by the prefix of the service they went to: the
    // service records its own route templates.
    let route = match &matched {
        Some(matched) => matched.as_str(),
        None => state
            .proxy
            .route(&path)
            .and_then(|r| r.upstream.prefix.as_deref())
            .unwrap_or(agora_telemetry::http::UNMATCHED),
    };
    agora_telemetry::http::record_server(crate::SOURCE, route, method_label, status, elapsed);
    response
}

/// The limits that need no token: per client, and on the credential routes.
async fn admit(
    state: &State,
    client: &str,
    method: &Method,
    path: &str,
    declared: Option<usize>,
) -> Result<(), Problem> {
    if let Some(limiter) = &state.limits.per_client {
        limiter
            .check(client)
            .await
            .map_err(Problem::too_many_requests)?;
    }
    if is_credentials(method, path)
        && let Some(limiter) = &state.limits.credentials
    {
        limiter.check(client).await.map_err(|wait| {
            Problem::too_many_requests(wait)
                .with_detail("Too many sign-in or sign-up attempts; try again later.")
        })?;
    }
    if declared.is_some_and(|length| length > BODY_LIMIT) {
        return Err(Problem::payload_too_large());
    }
    Ok(())
}

/// Everything that is not the gateway's own: to the owning service (only ever under
/// a public `/api/<service>` prefix; the path has passed [`path::check`]).
async fn forward(AxumState(state): AxumState<State>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let Some(route) = state.proxy.route(&path) else {
        return Problem::not_found().into_response();
    };
    let (mut parts, body) = request.into_parts();
    if !is_public(&parts.method, &path) {
        let caller = match Caller::from_request_parts(&mut parts, &state).await {
            Ok(caller) => caller,
            Err(error) => return error.into_response(),
        };
        if let Some(limiter) = &state.limits.per_user
            && let Err(wait) = limiter.check(&caller.user_id.to_string()).await
        {
            return Problem::too_many_requests(wait).into_response();
        }
        // Guessing the current password with a stolen token is as slow as guessing
        // it at sign-in.
        if is_password_change(&parts.method, &path)
            && let Some(limiter) = &state.limits.credentials
            && let Err(wait) = limiter.check(&format!("user:{}", caller.user_id)).await
        {
            return Problem::too_many_requests(wait)
                .with_detail("Too many password change attempts; try again later.")
                .into_response();
        }
    }
    let credentials = is_credentials(&parts.method, &path);
    let client = parts.extensions.get::<ClientKey>().cloned();
    let body = match to_bytes(body, BODY_LIMIT).await {
        Ok(body) => body,
        Err(_) => return Problem::payload_too_large().into_response(),
    };
    let response = state
        .proxy
        .forward(
            route,
            parts.method,
            &parts.uri,
            &parts.headers,
            body,
            state.request_timeout,
        )
        .await;
    // An honest sign-in or sign-up costs a fraction of a failed one.
    if credentials
        && response.status().is_success()
        && let (Some(limiter), Some(ClientKey(client))) = (&state.limits.credentials, client)
    {
        limiter.refund(&client, crate::limits::SUCCESS_REFUND).await;
    }
    response
}

/// Routes anyone may call without a token. Everything else under `/api` needs one at
/// the edge (and the service checks roles and ownership).
pub(crate) fn is_public(method: &Method, path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let read = method == Method::GET || method == Method::HEAD;
    match segments.as_slice() {
        ["api", "identity", "users" | "token"] => method == Method::POST,
        ["api", "identity", "jwks"]
        | ["api", "catalog", "products"]
        | ["api", "catalog", "products", _]
        | ["api", "ordering", "prices"]
        | ["api", "inventory", "stock", _]
        | ["api", "shop", "products"] => read,
        _ => false,
    }
}

/// Where passwords are tried: limited per client much more strictly. (The path has
/// passed [`path::check`]: no trailing slash or other spelling of these.)
fn is_credentials(method: &Method, path: &str) -> bool {
    method == Method::POST && matches!(path, "/api/identity/token" | "/api/identity/users")
}

/// Where a signed-in user tries their current password: limited per user as
/// strictly as sign-in is per client.
fn is_password_change(method: &Method, path: &str) -> bool {
    method == Method::PUT && path == "/api/identity/users/me/password"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_routes_are_the_documented_ones() {
        assert!(is_public(&Method::POST, "/api/identity/token"));
        assert!(is_public(&Method::POST, "/api/identity/users"));
        assert!(is_public(&Method::GET, "/api/identity/jwks"));
        assert!(is_public(&Method::GET, "/api/catalog/products/abc"));
        assert!(is_public(&Method::GET, "/api/ordering/prices"));
        assert!(!is_public(&Method::POST, "/api/catalog/products"));
        assert!(!is_public(&Method::PUT, "/api/ordering/prices/abc"));
        assert!(!is_public(&Method::GET, "/api/customers/me"));
        assert!(!is_public(&Method::PUT, "/api/identity/users/me/password"));
        assert!(!is_public(&Method::GET, "/api/ordering/orders"));
        assert!(!is_public(&Method::GET, "/api/catalog/products/a/b"));
    }
}
