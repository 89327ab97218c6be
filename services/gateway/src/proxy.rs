//! Forwarding to the service that owns a path, over HTTP.

use std::time::Duration;

use agora_httpkit::Problem;
use axum::body::{Body, Bytes};
use axum::http::uri::{Authority, PathAndQuery, Scheme};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use agora_resilience::{BUDGET_HEADER, CallError, ClientConfig, Deadline, ResilientClient};

use crate::Upstream;

/// Headers that describe one connection, not the message: never forwarded.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::HOST,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::CONTENT_LENGTH,
];

/// How long a down service is given before the client is told to come back.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// One upstream and the resilient client (breaker, bulkhead, retries of idempotent
/// requests, deadline) every call to it goes through.
#[derive(Debug)]
pub(crate) struct Route {
    pub upstream: Upstream,
    pub client: ResilientClient,
    /// Where the upstream listens, parsed once: forwarded URLs are built from these
    /// and the request's checked path, never by re-parsing a string.
    scheme: Scheme,
    authority: Authority,
}

impl Route {
    /// The upstream URL of a request for `path` (checked by [`crate::path::check`])
    /// with `query` as the client sent it.
    pub fn target(&self, path: &str, query: Option<&str>) -> Option<Uri> {
        let path_and_query = match query {
            Some(query) => PathAndQuery::try_from(format!("{path}?{query}")),
            None => PathAndQuery::try_from(path),
        }
        .ok()?;
        // The parts must be read back exactly as given, or some reader could route
        // the request elsewhere than the gateway decided.
        if path_and_query.path() != path || path_and_query.query() != query {
            return None;
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .ok()
    }
}

#[derive(Debug)]
pub(crate) struct Proxy {
    /// Longest prefix first, so that `/api/identity` wins over `/api`.
    routes: Vec<Route>,
    /// For health probes and ops reads, outside the breakers.
    plain: reqwest::Client,
}

impl Proxy {
    pub fn new(upstreams: Vec<Upstream>, timeout: Duration) -> Result<Self, crate::Error> {
        let mut routes = upstreams
            .into_iter()
            .map(|upstream| {
                // The gateway passes a service's answers on as they are: its own 5xx
                // (e.g. 503 because *its* dependency is down) neither trips the
                // gateway's breaker nor is retried here; the client decides, with the
                // Retry-After it was given. Unreachable and timed-out services count.
                let mut config = ClientConfig {
                    timeout,
                    caller: crate::SOURCE,
                    ..ClientConfig::default()
                };
                config.breaker.count_server_errors = false;
                config.retry.retry_server_errors = false;
                // Several instances: the client balances them, aiming each attempt
                // at one by host and port.
                let client =
                    agora_resilience::client(&upstream.name, &upstream.urls.join(","), config)
                        .map_err(|e| {
                            crate::Error::Upstream(upstream.name.clone(), e.to_string())
                        })?;
                let mut bases = Vec::with_capacity(upstream.urls.len());
                for url in &upstream.urls {
                    let invalid = || {
                        crate::Error::Upstream(
                            upstream.name.clone(),
                            format!("{url} is not an http://host:port URL"),
                        )
                    };
                    let base: Uri = url.parse().map_err(|_| invalid())?;
                    let (Some(scheme), Some(authority)) =
                        (base.scheme().cloned(), base.authority().cloned())
                    else {
                        return Err(invalid());
                    };
                    if !matches!(base.path(), "" | "/") || base.query().is_some() {
                        return Err(invalid());
                    }
                    bases.push((scheme, authority));
                }
                let Some((scheme, authority)) = bases.into_iter().next() else {
                    return Err(crate::Error::Upstream(
                        upstream.name.clone(),
                        "no URL".into(),
                    ));
                };
                Ok(Route {
                    upstream,
                    client,
                    scheme,
                    authority,
                })
            })
            .collect::<Result<Vec<_>, crate::Error>>()?;
        routes.sort_by_key(|r| std::cmp::Reverse(r.upstream.prefix.as_ref().map(String::len)));
        let plain = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(250))
            // Let idle connections go before the services' listeners close them (5 s),
            // so that a probe never races a close and reads as "down".
            .pool_idle_timeout(Duration::from_secs(4))
            .build()?;
        Ok(Self { routes, plain })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn upstreams(&self) -> impl Iterator<Item = &Upstream> {
        self.routes.iter().map(|r| &r.upstream)
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.plain
    }

    /// The route owning `path`: its prefix is the path or a whole-segment prefix.
    pub fn route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| {
            r.upstream.prefix.as_deref().is_some_and(|prefix| {
                path.strip_prefix(prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
        })
    }

    /// Sends the request on within `deadline` and returns the service's answer as it
    /// is. A service that cannot be reached (or whose breaker is open) is a 503
    /// problem with `Retry-After`; one that does not answer in time a 504.
    pub async fn forward(
        &self,
        route: &Route,
        method: Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
        deadline: Duration,
    ) -> Response {
        let Some(target) = route.target(uri.path(), uri.query()) else {
            return Problem::not_found().into_response();
        };
        let mut request = axum::http::Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = target;
        for (name, value) in headers {
            // The budget is the gateway's to set, never the public's.
            if !HOP_BY_HOP.contains(name) && name != BUDGET_HEADER {
                request.headers_mut().append(name.clone(), value.clone());
            }
        }
        let name = &route.upstream.name;
        let answer = Deadline::after(deadline)
            .scope(route.client.send(request))
            .await;
        match answer {
            Ok(answer) => {
                let (mut parts, body) = answer.into_parts();
                for hop in HOP_BY_HOP {
                    parts.headers.remove(hop);
                }
                Response::from_parts(parts, Body::from(body))
            }
            Err(CallError::Timeout | CallError::DeadlineExceeded) => {
                tracing::warn!(service = %name, "service did not answer in time");
                Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    "Gateway timeout",
                    format!("The {name} service did not answer in time."),
                )
                .into_response()
            }
            Err(CallError::Transport(error)) => {
                tracing::warn!(service = %name, %error, "service answer broke off");
                Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "bad-gateway",
                    "Bad gateway",
                    format!("The {name} service's answer broke off."),
                )
                .into_response()
            }
            Err(error) => {
                tracing::warn!(service = %name, %error, "service unavailable");
                let retry_after = route
                    .client
                    .open_remaining()
                    .unwrap_or(RETRY_AFTER)
                    .max(Duration::from_secs(1));
                Problem::service_unavailable(retry_after)
                    .with_detail(format!(
                        "The {name} service cannot be reached; try again shortly."
                    ))
                    .into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_whole_segment_prefix() {
        let proxy = Proxy::new(
            vec![
                Upstream::new("identity", "/api/identity", "http://127.0.0.1:1"),
                Upstream::new("customer", "/api/customers", "http://127.0.0.1:2"),
                Upstream::internal("payment", "http://127.0.0.1:3"),
            ],
            Duration::from_secs(1),
        )
        .expect("client");
        assert_eq!(
            proxy
                .route("/api/identity/token")
                .map(|r| r.upstream.name.as_str()),
            Some("identity")
        );
        assert_eq!(
            proxy
                .route("/api/customers/me")
                .map(|r| r.upstream.name.as_str()),
            Some("customer")
        );
        assert_eq!(
            proxy
                .route("/api/customers")
                .map(|r| r.upstream.name.as_str()),
            Some("customer")
        );
        assert!(proxy.route("/api/identityx/token").is_none());
        assert!(proxy.route("/api/unknown").is_none());
        assert!(proxy.route("/internal/payment/authorizations").is_none());
        assert!(proxy.route("/api/payment").is_none());
        assert!(proxy.route("/internal/customers/x").is_none());
        assert!(proxy.route("/").is_none());
    }

    #[test]
    fn the_forwarded_url_is_the_checked_path_and_the_query_as_sent() {
        let proxy = Proxy::new(
            vec![Upstream::new(
                "ordering",
                "/api/ordering",
                "http://127.0.0.1:4000",
            )],
            Duration::from_secs(1),
        )
        .expect("client");
        let route = proxy.route("/api/ordering/orders").expect("a route");
        assert_eq!(
            route
                .target("/api/ordering/orders", Some("limit=5&cursor=a%2F..%2F"))
                .map(|u| u.to_string()),
            Some("http://127.0.0.1:4000/api/ordering/orders?limit=5&cursor=a%2F..%2F".to_owned())
        );
        assert_eq!(
            route
                .target("/api/ordering/orders", None)
                .map(|u| u.to_string()),
            Some("http://127.0.0.1:4000/api/ordering/orders".to_owned())
        );
        assert!(
            route.target("/api/ordering/orders?x", Some("y")).is_none(),
            "a path cannot smuggle a query"
        );
        assert!(
            Proxy::new(
                vec![Upstream::new("x", "/api/x", "http://127.0.0.1:4000/base")],
                Duration::from_secs(1)
            )
            .is_err()
        );
    }
}
