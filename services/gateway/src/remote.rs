//! The ops levers of services that run as separate processes (`agora run`): each
//! instance's internal control API (`/internal/<service>/control…`), driven over the
//! internal plane with the gateway's service token. A change goes to every instance of
//! the service (or, for the bus pause, of every service); a read asks the first
//! instance that answers.

use std::time::Duration;

use agora_auth::InternalAuth;
use axum::http::header;

use crate::Upstream;
use crate::control::{Chaos, ChaosMode, ControlError, Levers, PAYMENT_PROVIDER};

/// How long one instance has to answer a control call.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub(crate) struct RemoteControl {
    client: reqwest::Client,
    internal: InternalAuth,
    /// Every service's instances.
    upstreams: Vec<Upstream>,
}

impl RemoteControl {
    pub fn new(client: reqwest::Client, internal: InternalAuth, upstreams: Vec<Upstream>) -> Self {
        Self {
            client,
            internal,
            upstreams,
        }
    }

    fn instances(&self, service: &str) -> Result<&Upstream, ControlError> {
        self.upstreams
            .iter()
            .find(|u| u.name == service)
            .ok_or_else(|| ControlError::UnknownService(service.to_owned()))
    }

    /// `PUT /internal/<service>/control/<lever>` on one instance.
    async fn put(
        &self,
        service: &str,
        url: &str,
        lever: &str,
        body: &serde_json::Value,
    ) -> Result<Levers, String> {
        let authorization = self
            .internal
            .authorization_for(service)
            .map_err(|e| e.to_string())?;
        let answer = self
            .client
            .put(format!("{url}/internal/{service}/control/{lever}"))
            .header(header::AUTHORIZATION, authorization)
            .json(body)
            .timeout(CONTROL_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("{url}: {}", e.without_url()))?;
        if !answer.status().is_success() {
            return Err(format!("{url} answered {}", answer.status()));
        }
        answer.json().await.map_err(|e| e.without_url().to_string())
    }

    /// Sets a lever on every instance of `service`; fails naming those that did not
    /// take it.
    async fn put_all(
        &self,
        upstream: &Upstream,
        lever: &str,
        body: serde_json::Value,
    ) -> Result<(), ControlError> {
        let calls = upstream
            .urls
            .iter()
            .map(|url| self.put(&upstream.name, url, lever, &body));
        let failed: Vec<String> = futures::future::join_all(calls)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(ControlError::Failed(format!(
                "{} of {} instances of {} did not take it: {}",
                failed.len(),
                upstream.urls.len(),
                upstream.name,
                failed.join("; ")
            )))
        }
    }

    /// The levers of the first instance of `upstream` that answers.
    async fn levers(&self, upstream: &Upstream) -> Option<Levers> {
        let authorization = self.internal.authorization_for(&upstream.name).ok()?;
        upstream
            .first_json(|url| {
                self.client
                    .get(format!("{url}/internal/{}/control", upstream.name))
                    .header(header::AUTHORIZATION, authorization.clone())
                    .timeout(CONTROL_TIMEOUT)
            })
            .await
    }
}

/// The levers of the whole shop.
impl RemoteControl {
    /// Applies `chaos` (already validated) to every instance of `service`.
    pub async fn set_chaos(&self, service: &str, chaos: Chaos) -> Result<(), ControlError> {
        if service == PAYMENT_PROVIDER {
            let down = match chaos.mode {
                ChaosMode::Ok => false,
                ChaosMode::Down => true,
                _ => {
                    return Err(ControlError::Unsupported(
                        "the payment provider can only be ok or down".into(),
                    ));
                }
            };
            let payment = self.instances("payment")?;
            return self
                .put_all(payment, "provider", serde_json::json!({ "down": down }))
                .await;
        }
        let upstream = self.instances(service)?;
        let body = serde_json::to_value(chaos).map_err(|e| ControlError::Failed(e.to_string()))?;
        self.put_all(upstream, "chaos", body).await
    }

    /// The setting of `service`'s first instance that answers; `None` when none does.
    pub async fn chaos(&self, service: &str) -> Option<Chaos> {
        if service == PAYMENT_PROVIDER {
            let levers = self.levers(self.instances("payment").ok()?).await?;
            let mode = match levers.provider_down? {
                true => ChaosMode::Down,
                false => ChaosMode::Ok,
            };
            return Some(Chaos { mode, ..Chaos::OK });
        }
        Some(self.levers(self.instances(service).ok()?).await?.chaos)
    }

    /// Pauses or resumes the bus for every instance of every service.
    pub async fn set_bus_paused(&self, paused: bool) -> Result<(), ControlError> {
        let body = serde_json::json!({ "paused": paused });
        let calls = self
            .upstreams
            .iter()
            .map(|upstream| self.put_all(upstream, "bus", body.clone()));
        let failed: Vec<String> = futures::future::join_all(calls)
            .await
            .into_iter()
            .filter_map(|r| r.err().map(|e| e.to_string()))
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(ControlError::Failed(failed.join("; ")))
        }
    }

    /// Whether any instance has the bus paused.
    pub async fn bus_paused(&self) -> bool {
        let reads = self.upstreams.iter().map(|upstream| self.levers(upstream));
        futures::future::join_all(reads)
            .await
            .into_iter()
            .flatten()
            .any(|levers| levers.bus_paused)
    }
}
