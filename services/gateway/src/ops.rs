//! The admin's view of the running shop (`/api/ops/...`) and readiness.

use std::time::Duration;

use agora_auth::Caller;
use agora_contracts::Role;
use agora_httpkit::Json as HttpJson;
use agora_httpkit::{Problem, responses};
use agora_resilience::BreakerState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::control::{Chaos, ControlError};
use crate::timeline::TimelineEvent;
use crate::{State, Upstream};

/// How long a health probe of one service may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// `GET /api/ops/status`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Status {
    pub services: Vec<ServiceStatus>,
    pub subscriptions: Vec<SubscriptionStatus>,
    pub settings: Settings,
    pub bus: BusState,
    /// Users signed in with an unexpired token (the sign-in projection).
    pub online_users: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ServiceStatus {
    pub name: String,
    /// The `/healthz` of some instance answered 200 within 300 ms.
    pub healthy: bool,
    pub chaos: Chaos,
    pub breakers: Vec<BreakerStatus>,
    /// Each instance of the service, with its own health.
    #[serde(default)]
    pub instances: Vec<InstanceStatus>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InstanceStatus {
    /// Where the gateway reaches it.
    pub url: String,
    /// Its `/healthz` answered 200 within 300 ms.
    pub healthy: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BreakerStatus {
    pub target: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionStatus {
    pub service: String,
    pub consumer: String,
    pub pending: u64,
    pub redelivered: u64,
    pub dead_letters: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Settings {
    /// `replica` or `sync`; null when ordering cannot be asked.
    pub customer_data: Option<String>,
}

/// The shop at a glance: service health, subscriptions, settings, online users.
#[utoipa::path(get, path = "/api/ops/status", tag = "ops",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The status", body = Status),
        responses::AdminProblems,
    ))]
pub(crate) async fn status(AxumState(state): AxumState<State>, caller: Caller) -> Response {
    if let Err(error) = caller.require(Role::Admin) {
        return error.into_response();
    }
    let client = state.proxy.client();
    let shared = &state;
    let probes = state.proxy.upstreams().map(|upstream| async move {
        let (instances, breakers, chaos) = tokio::join!(
            instances(client, upstream),
            breakers(shared, upstream),
            shared.control.chaos(&upstream.name)
        );
        ServiceStatus {
            name: upstream.name.clone(),
            healthy: instances.iter().any(|i| i.healthy),
            chaos: chaos.unwrap_or_default(),
            breakers,
            instances,
        }
    });
    let mut services: Vec<ServiceStatus> = futures::future::join_all(probes).await;
    services.push(ServiceStatus {
        name: crate::SOURCE.into(),
        healthy: true,
        chaos: Chaos::OK,
        breakers: state
            .proxy
            .routes()
            .iter()
            .flat_map(|route| route.client.breakers())
            .map(|breaker| BreakerStatus {
                target: breaker.name().to_owned(),
                state: breaker_state(breaker.state()).into(),
            })
            .collect(),
        // This instance: it is answering.
        instances: Vec::new(),
    });
    services.sort_by(|a, b| a.name.cmp(&b.name));
    let online_users = match state.online.count().await {
        Ok(n) => n,
        Err(error) => {
            tracing::error!(%error, "online users unknown");
            return Problem::internal().into_response();
        }
    };
    let customer_data = customer_data(&state).await;
    let subscriptions = match state.bus.consumers().await {
        Ok(consumers) => consumers
            .into_iter()
            .map(|c| SubscriptionStatus {
                // Consumers are named `<service>-<what>`.
                service: c.name.split('-').next().unwrap_or_default().to_owned(),
                consumer: c.name,
                pending: c.pending,
                redelivered: c.redelivered,
                dead_letters: c.dead_letters,
            })
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "subscriptions unknown");
            Vec::new()
        }
    };
    Json(Status {
        services,
        subscriptions,
        settings: Settings { customer_data },
        bus: BusState {
            paused: state.control.bus_paused().await,
        },
        online_users,
    })
    .into_response()
}

/// Ready to serve: every service it forwards to answers its health check.
#[utoipa::path(get, path = "/readyz", tag = "gateway",
    responses(
        (status = 200, description = "Every service answers", body = String),
        (status = 503, description = "Some service does not answer", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn readyz(AxumState(state): AxumState<State>) -> Response {
    let down = state.ready.down(&state).await;
    if down.is_empty() {
        "ready".into_response()
    } else {
        Problem::service_unavailable(Duration::from_secs(1))
            .with_detail(format!("Not answering: {}.", down.join(", ")))
            .into_response()
    }
}

/// How long one readiness probe of every service answers `/readyz`.
const READY_FOR: Duration = Duration::from_secs(1);

/// The last readiness probe: `/readyz` fans out to every service at most once a
/// second, however often it is called; callers that arrive during a probe wait for it
/// and share its result.
#[derive(Debug, Default)]
pub(crate) struct ReadyCache {
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, Vec<String>)>>,
}

impl ReadyCache {
    /// The services not answering, as of a probe at most [`READY_FOR`] old.
    async fn down(&self, state: &State) -> Vec<String> {
        self.down_with(|| probe_all(state)).await
    }

    async fn down_with<F, Fut>(&self, probe: F) -> Vec<String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Vec<String>>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, down)) = last.as_ref()
            && at.elapsed() < READY_FOR
        {
            return down.clone();
        }
        let down = probe().await;
        *last = Some((tokio::time::Instant::now(), down.clone()));
        down
    }
}

/// Probes every service's `/healthz` at once; the names of those that do not answer.
async fn probe_all(state: &State) -> Vec<String> {
    let client = state.proxy.client();
    let probes = state
        .proxy
        .upstreams()
        .map(|upstream| async move { (upstream.name.clone(), healthy(client, upstream).await) });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .filter(|(_, healthy)| !healthy)
        .map(|(name, _)| name)
        .collect()
}

/// The breakers of a service's own outgoing calls, from its
/// `/internal/<service>/breakers` when it has one.
async fn breakers(state: &State, upstream: &Upstream) -> Vec<BreakerStatus> {
    let Some(authorization) = state.service_token(&upstream.name) else {
        return Vec::new();
    };
    upstream
        .first_json(|url| {
            state
                .proxy
                .client()
                .get(format!("{url}/internal/{}/breakers", upstream.name))
                .header(header::AUTHORIZATION, authorization.clone())
                .timeout(PROBE_TIMEOUT)
        })
        .await
        .unwrap_or_default()
}

/// Whether some instance of `upstream` answers its `/healthz`.
async fn healthy(client: &reqwest::Client, upstream: &Upstream) -> bool {
    instances(client, upstream).await.iter().any(|i| i.healthy)
}

/// Each instance of `upstream`, probed at once.
async fn instances(client: &reqwest::Client, upstream: &Upstream) -> Vec<InstanceStatus> {
    let probes = upstream.urls.iter().map(|url| async move {
        let probe = client
            .get(format!("{url}/healthz"))
            .timeout(PROBE_TIMEOUT)
            .send()
            .await;
        InstanceStatus {
            url: url.clone(),
            healthy: matches!(probe, Ok(answer) if answer.status().is_success()),
        }
    });
    futures::future::join_all(probes).await
}

/// Ordering's `customer_data` setting, when ordering runs and answers.
async fn customer_data(state: &State) -> Option<String> {
    #[derive(Deserialize)]
    struct OrderingSettings {
        customer_data: String,
    }
    let ordering = state.proxy.upstreams().find(|u| u.name == "ordering")?;
    let authorization = state.service_token("ordering")?;
    // Ordering keeps its settings in its store: any instance tells.
    let settings: OrderingSettings = ordering
        .first_json(|url| {
            state
                .proxy
                .client()
                .get(format!("{url}/internal/ordering/settings"))
                .header(header::AUTHORIZATION, authorization.clone())
                .timeout(PROBE_TIMEOUT)
        })
        .await?;
    Some(settings.customer_data)
}

pub(crate) fn breaker_state(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
    }
}

/// `PUT /api/ops/chaos/{service}`: the answer, the setting now in force.
#[utoipa::path(put, path = "/api/ops/chaos/{service}", tag = "ops",
    security(("bearer" = [])),
    params(("service" = String, Path, description = "A service name, e.g. `customer`")),
    request_body = Chaos,
    responses(
        (status = 200, description = "Applied", body = Chaos),
        (status = 404, description = "No such service", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid setting", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Some instance did not take the change", body = Problem, content_type = "application/problem+json"),
        responses::NotJson, responses::NotJsonMediaType, responses::NotAdmin,
    ))]
pub(crate) async fn set_chaos(
    AxumState(state): AxumState<State>,
    caller: Caller,
    Path(service): Path<String>,
    HttpJson(chaos): HttpJson<Chaos>,
) -> Response {
    if let Err(error) = caller.require(Role::Admin) {
        return error.into_response();
    }
    let control = &state.control;
    let chaos = match chaos.validate() {
        Ok(chaos) => chaos,
        Err(error) => return Problem::unprocessable(vec![error]).into_response(),
    };
    match control.set_chaos(&service, chaos).await {
        Ok(()) => {
            tracing::warn!(%service, mode = ?chaos.mode, "chaos set");
            Json(chaos).into_response()
        }
        Err(ControlError::Unsupported(why)) => {
            Problem::unprocessable(vec![agora_httpkit::FieldError::new("mode", why)])
                .into_response()
        }
        Err(ControlError::UnknownService(_)) => Problem::not_found()
            .with_detail(format!("No service named {service:?} can be controlled."))
            .into_response(),
        Err(error) => not_applied(&error),
    }
}

/// `PUT /api/ops/bus` and what it answers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BusState {
    /// Paused: nothing is delivered and relays cannot publish; outboxes keep what is
    /// written.
    pub paused: bool,
}

/// Pauses or resumes the bus.
#[utoipa::path(put, path = "/api/ops/bus", tag = "ops",
    security(("bearer" = [])),
    request_body = BusState,
    responses(
        (status = 200, description = "Applied", body = BusState),
        (status = 503, description = "Some instance did not take the change", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
        responses::NotJson, responses::NotJsonMediaType, responses::NotAdmin,
    ))]
pub(crate) async fn set_bus(
    AxumState(state): AxumState<State>,
    caller: Caller,
    HttpJson(body): HttpJson<BusState>,
) -> Response {
    if let Err(error) = caller.require(Role::Admin) {
        return error.into_response();
    }
    if let Err(error) = state.control.set_bus_paused(body.paused).await {
        return not_applied(&error);
    }
    tracing::warn!(paused = body.paused, "bus switched");
    Json(BusState {
        paused: state.control.bus_paused().await,
    })
    .into_response()
}

/// A lever that could not be moved everywhere (an instance that does not answer):
/// 503, try again.
fn not_applied(error: &ControlError) -> Response {
    tracing::error!(%error, "not applied");
    Problem::service_unavailable(Duration::from_secs(1))
        .with_detail("Not every instance took the change; try again shortly.")
        .into_response()
}

/// `PUT /api/ops/settings`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SettingsChange {
    /// `replica` (ordering uses its copy of the customer's data) or `sync` (ordering
    /// calls the customer service live).
    #[schema(pattern = "^(replica|sync)$")]
    pub customer_data: String,
}

/// Changes the shop's runtime settings (ordering's `customer_data`).
#[utoipa::path(put, path = "/api/ops/settings", tag = "ops",
    security(("bearer" = [])),
    request_body = SettingsChange,
    responses(
        (status = 200, description = "Applied", body = Settings),
        (status = 422, description = "Invalid setting", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Ordering cannot be reached", body = Problem, content_type = "application/problem+json"),
        responses::NotJson, responses::NotJsonMediaType, responses::NotAdmin,
    ))]
pub(crate) async fn set_settings(
    AxumState(state): AxumState<State>,
    caller: Caller,
    HttpJson(body): HttpJson<SettingsChange>,
) -> Response {
    if let Err(error) = caller.require(Role::Admin) {
        return error.into_response();
    }
    if !matches!(body.customer_data.as_str(), "replica" | "sync") {
        return Problem::unprocessable(vec![agora_httpkit::FieldError::new(
            "customer_data",
            "must be replica or sync",
        )])
        .into_response();
    }
    let unavailable = || {
        Problem::service_unavailable(Duration::from_secs(1))
            .with_detail("Ordering cannot be reached; try again shortly.")
            .into_response()
    };
    let Some(ordering) = state.proxy.upstreams().find(|u| u.name == "ordering") else {
        return unavailable();
    };
    let Some(authorization) = state.service_token("ordering") else {
        return Problem::internal().into_response();
    };
    // Ordering keeps its settings in its store: the first instance that answers sets
    // them for all.
    let mut answer = None;
    for url in &ordering.urls {
        let sent = state
            .proxy
            .client()
            .put(format!("{url}/internal/ordering/settings"))
            .header(header::AUTHORIZATION, authorization.clone())
            .json(&body)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if sent.is_ok() {
            answer = Some(sent);
            break;
        }
        answer = Some(sent);
    }
    let Some(answer) = answer else {
        return unavailable();
    };
    match answer {
        Ok(answer) if answer.status().is_success() => {
            tracing::warn!(customer_data = %body.customer_data, "settings changed");
            Json(Settings {
                customer_data: Some(body.customer_data),
            })
            .into_response()
        }
        Ok(answer) => {
            tracing::error!(status = %answer.status(), "ordering refused the settings");
            Problem::internal().into_response()
        }
        Err(_) => unavailable(),
    }
}

/// One dead letter, as the ops console lists it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterView {
    pub id: u64,
    pub consumer: String,
    /// The event type (its `ce-type`), when the message is an event.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub subject: String,
    pub reason: String,
    pub deliveries: u32,
    /// RFC 3339.
    pub time: String,
}

/// The messages that could not be handled, with why.
#[utoipa::path(get, path = "/api/ops/dead-letters", tag = "ops",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The dead letters, oldest first", body = [DeadLetterView]),
        (status = 503, description = "The bus cannot be reached", body = Problem, content_type = "application/problem+json"),
        responses::NotAdmin,
    ))]
pub(crate) async fn dead_letters(AxumState(state): AxumState<State>, caller: Caller) -> Response {
    if let Err(error) = caller.require(Role::Admin) {
        return error.into_response();
    }
    match state.bus.dead_letters().await {
        Ok(letters) => Json(
            letters
                .into_iter()
                .map(|letter| DeadLetterView {
                    id: letter.id,
                    consumer: letter.consumer,
                    event_type: letter.headers.get("ce-type").cloned().or_else(|| {
                        serde_json::from_slice::<serde_json::Value>(&letter.payload)
                            .ok()
                            .and_then(|v| v["type"].as_str().map(str::to_owned))
                    }),
                    subject: letter.subject,
                    reason: letter.reason,
                    deliveries: letter.deliveries,
                    time: time::OffsetDateTime::from(letter.time)
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(error) => {
            tracing::warn!(%error, "dead letters unavailable");
            Problem::service_unavailable(Duration::from_secs(1)).into_response()
        }
    }
}

/// Publishes a dead letter again, for its consumer to try once more.
#[utoipa::path(post, path = "/api/ops/dead-letters/{id}/redrive", tag = "ops",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The dead letter's id")),
    responses(
        (status = 202, description = "Published again"),
        (status = 400, description = "Not a dead letter id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dead letter", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The bus cannot be reached", body = Problem, content_type = "application/problem+json"),
        responses::NotAdmin,
    ))]
pub(crate) async fn redrive(
    AxumState(state): AxumState<State>,
    caller: Caller,
    Path(id): Path<String>,
) -> Response {
    if let Err(error) = caller.require(Role::Admin) {
        return error.into_response();
    }
    let Ok(id) = id.parse::<u64>() else {
        return Problem::bad_request("A dead letter id is a number.").into_response();
    };
    match state.bus.redrive(id).await {
        Ok(_) => axum::http::StatusCode::ACCEPTED.into_response(),
        Err(agora_bus::BusError::DeadLetterNotFound(_)) => Problem::not_found().into_response(),
        Err(error) => {
            tracing::warn!(%error, "redrive failed");
            Problem::service_unavailable(Duration::from_secs(1)).into_response()
        }
    }
}

/// `GET /api/ops/events` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// The order or user the flow is about (an order also by its reference,
    /// `AG-XXXX-XXXX`); without it, the most recent events of the whole shop (the
    /// console's live stream).
    pub correlation_id: Option<String>,
    /// At most this many events (1..=1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// The timeline of one flow: every event about it, oldest first. Without a
/// correlation id: the shop's most recent events, oldest first.
#[utoipa::path(get, path = "/api/ops/events", tag = "ops",
    security(("bearer" = [])),
    params(EventsQuery),
    responses(
        (status = 200, description = "The events, oldest first", body = [TimelineEvent]),
        (status = 400, description = "A malformed query", body = Problem, content_type = "application/problem+json"),
        responses::NotAdmin,
    ))]
pub(crate) async fn events(
    AxumState(state): AxumState<State>,
    caller: Caller,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Response {
    if let Err(error) = caller.require(Role::Admin) {
        return error.into_response();
    }
    let valid = query.ok().and_then(|Query(query)| {
        let limit = query.limit.unwrap_or(100);
        (1..=1000).contains(&limit).then_some((query, limit))
    });
    let Some((query, limit)) = valid else {
        return Problem::bad_request(
            "Give an optional correlation_id and an optional limit of 1 to 1000.",
        )
        .into_response();
    };
    let events = match &query.correlation_id {
        Some(correlation_id) => match agora_contracts::OrderReference::parse(correlation_id) {
            Some(reference) => state.timeline.events_of_reference(reference, limit).await,
            None => state.timeline.events(correlation_id, limit).await,
        },
        None => state.timeline.recent(limit).await,
    };
    match events {
        Ok(events) => Json(events).into_response(),
        Err(error) => {
            tracing::error!(%error, "timeline unavailable");
            Problem::internal().into_response()
        }
    }
}

#[cfg(test)]
mod ready_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn readiness_is_probed_at_most_once_a_second_and_shared() {
        let cache = Arc::new(ReadyCache::default());
        let probes = Arc::new(AtomicU32::new(0));
        let probe = |probes: Arc<AtomicU32>| async move {
            probes.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            vec!["payment".to_owned()]
        };
        let callers = (0..50).map(|_| {
            let cache = cache.clone();
            let probes = probes.clone();
            async move { cache.down_with(|| probe(probes)).await }
        });
        let answers = futures::future::join_all(callers).await;
        assert!(answers.iter().all(|down| down == &["payment".to_owned()]));
        assert_eq!(probes.load(Ordering::SeqCst), 1, "50 callers, one probe");

        tokio::time::advance(Duration::from_millis(500)).await;
        cache.down_with(|| probe(probes.clone())).await;
        assert_eq!(probes.load(Ordering::SeqCst), 1, "still fresh");

        tokio::time::advance(Duration::from_secs(1)).await;
        cache.down_with(|| probe(probes.clone())).await;
        assert_eq!(probes.load(Ordering::SeqCst), 2, "stale after a second");
    }
}
