//! HTTP RED metrics: the server side (a middleware labelling by axum's
//! [`MatchedPath`], the route template, never the raw path: ids in paths would make a
//! series per order), the gateway's own two families, and the client side
//! ([`ClientMetrics`], one per resilient client).
//!
//! Handles are looked up once per label set and kept: the server's in a map per
//! thread (no lock, no allocation once a route has been seen on a thread), a client's
//! in its own cells.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Counter, Histogram, SharedString};
use tracing::Instrument as _;

use crate::names;

/// A request counter and a latency histogram.
#[derive(Clone)]
struct Red {
    requests: Counter,
    duration: Histogram,
}

/// (family, service, method, status) → label of the free-form part (route, or the
/// gateway's upstream) → handles.
type Cache = HashMap<(Family, &'static str, &'static str, &'static str), HashMap<Box<str>, Red>>;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Family {
    Server,
    Gateway,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(HashMap::new());
}

fn with_red(
    key: (Family, &'static str, &'static str, &'static str),
    free: &str,
    make: impl FnOnce() -> Red,
    elapsed: Duration,
) {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let routes = cache.entry(key).or_default();
        let red = match routes.get(free) {
            Some(red) => red,
            None => routes.entry(free.into()).or_insert_with(make),
        };
        red.requests.increment(1);
        red.duration.record(elapsed.as_secs_f64());
    });
}

/// Records one answered request of `service` on `route` (a template such as
/// `/api/ordering/orders/{id}`).
pub fn record_server(
    service: &'static str,
    route: &str,
    method: &'static str,
    status: u16,
    elapsed: Duration,
) {
    let status = crate::status_label(status);
    with_red(
        (Family::Server, service, method, status),
        route,
        || {
            let route = SharedString::from(Arc::<str>::from(route));
            Red {
                requests: metrics::counter!(names::HTTP_SERVER_REQUESTS,
                    "service" => service, "route" => route.clone(), "method" => method, "status" => status),
                duration: metrics::histogram!(names::HTTP_SERVER_DURATION,
                    "service" => service, "route" => route, "method" => method),
            }
        },
        elapsed,
    );
}

/// The route label of a request nothing matched (a 404 or a fallback): one series,
/// whatever the path.
pub const UNMATCHED: &str = "unmatched";

/// Middleware recording [`names::HTTP_SERVER_REQUESTS`] and
/// [`names::HTTP_SERVER_DURATION`] for `service`. Add it with `Router::layer` after
/// the routes (`axum::middleware::from_fn_with_state(service, http::server)`), so
/// that each route's template is known.
///
/// It also handles the request in its trace span ([`crate::trace::server_span`]): the
/// caller's `traceparent` is its parent, and the span is current while the service
/// works (its calls and the events it writes are its children).
pub async fn server(State(service): State<&'static str>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = crate::method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    let span = crate::trace::server_span(
        service,
        method,
        route,
        request.headers().get(crate::trace::TRACEPARENT),
    );
    let response = next.run(request).instrument(span.clone()).await;
    crate::trace::record_status(&span, response.status().as_u16());
    record_server(
        service,
        route,
        method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Records one request the gateway answered, for `upstream` (the service the path
/// belongs to, or `gateway`): [`names::GATEWAY_REQUESTS`] and
/// [`names::GATEWAY_DURATION`].
pub fn record_gateway(upstream: &str, status: u16, elapsed: Duration) {
    let status = crate::status_label(status);
    with_red(
        (Family::Gateway, "", "", status),
        upstream,
        || {
            let upstream = SharedString::from(Arc::<str>::from(upstream));
            Red {
                requests: metrics::counter!(names::GATEWAY_REQUESTS,
                    "service" => upstream.clone(), "status" => status),
                duration: metrics::histogram!(names::GATEWAY_DURATION, "service" => upstream),
            }
        },
        elapsed,
    );
}

/// How a client call ended, as [`names::HTTP_CLIENT_REQUESTS`]'s `outcome`.
pub const CLIENT_OUTCOMES: [&str; 11] = [
    "1xx",
    "2xx",
    "3xx",
    "4xx",
    "5xx",
    "timeout",
    "connect",
    "circuit_open",
    "bulkhead_full",
    "deadline",
    "error",
];

const CLIENT_METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other",
];

/// The route label of a call whose caller named no route template: never the raw
/// path (a path may hold ids, or, for the gateway's forwarding, anything a client sent).
pub const OTHER_ROUTE: &str = "other";

/// Route templates one client records apart; calls on further routes count under
/// [`OTHER_ROUTE`]. A client calls a handful of routes of its target.
const CLIENT_ROUTES: usize = 8;

/// The handles of one route of one client.
struct RouteCells {
    route: &'static str,
    duration: Histogram,
    requests: [[OnceLock<Counter>; CLIENT_OUTCOMES.len()]; CLIENT_METHODS.len()],
}

/// The metrics of one resilient client: `service` calling `target`, by route template.
/// Each handle is registered the first time its (route, method, outcome) occurs, then
/// kept: no lock and no allocation on a call after that.
pub struct ClientMetrics {
    service: SharedString,
    target: SharedString,
    routes: [OnceLock<RouteCells>; CLIENT_ROUTES],
    other: OnceLock<RouteCells>,
}

impl std::fmt::Debug for ClientMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientMetrics")
            .field("service", &&*self.service)
            .field("target", &&*self.target)
            .finish_non_exhaustive()
    }
}

impl ClientMetrics {
    pub fn new(service: &str, target: &str) -> Self {
        Self {
            service: SharedString::from(Arc::<str>::from(service)),
            target: SharedString::from(Arc::<str>::from(target)),
            routes: Default::default(),
            other: OnceLock::new(),
        }
    }

    fn cells(&self, route: &'static str) -> &RouteCells {
        let make = |route: &'static str| RouteCells {
            route,
            duration: metrics::histogram!(names::HTTP_CLIENT_DURATION,
                "service" => self.service.clone(), "target" => self.target.clone(),
                "route" => route),
            requests: Default::default(),
        };
        for slot in &self.routes {
            let cells = slot.get_or_init(|| make(route));
            if cells.route == route {
                return cells;
            }
        }
        self.other.get_or_init(|| make(OTHER_ROUTE))
    }

    /// Records a call on `route` (a template such as `/internal/customers/{id}`, or
    /// [`OTHER_ROUTE`]): `method` from [`crate::method_label`], `outcome` one of
    /// [`CLIENT_OUTCOMES`].
    pub fn record(
        &self,
        route: &'static str,
        method: &'static str,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        let cells = self.cells(route);
        cells.duration.record(elapsed.as_secs_f64());
        let m = CLIENT_METHODS
            .iter()
            .position(|&known| known == method)
            .unwrap_or(CLIENT_METHODS.len() - 1);
        let o = CLIENT_OUTCOMES
            .iter()
            .position(|&known| known == outcome)
            .unwrap_or(CLIENT_OUTCOMES.len() - 1);
        cells.requests[m][o]
            .get_or_init(|| {
                metrics::counter!(names::HTTP_CLIENT_REQUESTS,
                    "service" => self.service.clone(), "target" => self.target.clone(),
                    "route" => cells.route,
                    "method" => CLIENT_METHODS[m], "outcome" => CLIENT_OUTCOMES[o])
            })
            .increment(1);
    }

    /// A counter of this client's (`service`, `target`) in `family`.
    pub fn counter(&self, family: &'static str) -> Counter {
        metrics::counter!(family, "service" => self.service.clone(), "target" => self.target.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::get;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tower::ServiceExt;

    /// Route templates, not paths: two orders' ids make one series. (A local recorder:
    /// this test's handles are not cached on the thread, which is the test's own.)
    #[tokio::test(flavor = "current_thread")]
    async fn the_server_middleware_labels_by_route_template() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let app = Router::new()
            .route("/api/orders/{id}", get(|| async { "order" }))
            .layer(axum::middleware::from_fn_with_state("ordering", server));
        let text = {
            let _local = metrics::set_default_local_recorder(&recorder);
            for path in ["/api/orders/1", "/api/orders/2", "/nothing/here"] {
                let request = Request::builder().uri(path).body(axum::body::Body::empty());
                app.clone().oneshot(request.unwrap()).await.unwrap();
            }
            CACHE.with(|cache| cache.borrow_mut().clear());
            handle.render()
        };
        assert!(
            text.contains(
                r#"agora_http_server_requests_total{service="ordering",route="/api/orders/{id}",method="GET",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(!text.contains("/api/orders/1"), "{text}");
        assert!(!text.contains("/nothing/here"), "{text}");
    }

    /// A client's calls by route template: two routes apart, a ninth route and after
    /// under `route="other"`, never a raw path.
    #[test]
    fn a_client_labels_by_the_route_its_caller_names() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let text = {
            let _local = metrics::set_default_local_recorder(&recorder);
            let client = ClientMetrics::new("ordering", "customer");
            let elapsed = Duration::from_millis(3);
            client.record("/internal/customers/{id}", "GET", "2xx", elapsed);
            client.record("/internal/customers/{id}", "GET", "2xx", elapsed);
            client.record("/internal/payment/authorizations", "POST", "5xx", elapsed);
            let many = ["/a", "/b", "/c", "/d", "/e", "/f", "/g", "/h"];
            for route in many {
                client.record(route, "GET", "2xx", elapsed);
            }
            handle.render()
        };
        let customers = r#"agora_http_client_requests_total{service="ordering",target="customer",route="/internal/customers/{id}",method="GET",outcome="2xx"} 2"#;
        assert!(text.contains(customers), "{text}");
        assert!(
            text.contains(
                r#"route="/internal/payment/authorizations",method="POST",outcome="5xx"} 1"#
            ),
            "{text}"
        );
        // Eight routes fit: the two above and the first six of `many`; the last two
        // are "other".
        assert!(text.contains(r#"route="/f",method="GET""#), "{text}");
        assert!(!text.contains(r#"route="/g""#), "{text}");
        assert!(
            text.contains(r#"route="other",method="GET",outcome="2xx"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"agora_http_client_request_duration_seconds_count{service="ordering",target="customer",route="/internal/customers/{id}"} 2"#),
            "{text}"
        );
    }
}
