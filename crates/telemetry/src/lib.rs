//! Agora's metrics: every service records through the [`metrics`] facade into one
//! Prometheus recorder per process ([`install`]), and `/metrics` renders it
//! ([`scrape`], [`routes`]). The families and their labels are listed once, in
//! [`names`].
//!
//! With several services in one process (`agora up`) the recorder is shared: every
//! family that two services could both record carries a `service` label. Gauges read
//! from a store (outbox backlog, consumer lag, orders by status, process instances,
//! overdue timers) are sampled when `/metrics` is scraped, by the [`Sampler`]s the
//! services of the process registered ([`register_sampler`]).
//!
//! What this crate must never do: allocate label strings or take a lock of its own per
//! request on the hot path (handles are cached per thread, see [`http`]); depend on
//! another Agora crate (every crate may record).

#![forbid(unsafe_code)]

pub mod http;
pub mod names;
pub mod trace;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use parking_lot::Mutex;

pub use names::{FAMILIES, Family, Kind};

/// Upper bounds of every latency histogram, in seconds (the gateway's since its first
/// `/metrics`).
pub const BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The content type of the text exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's Prometheus recorder (once; later calls return the same
/// handle). Call it before building services: metric handles taken before it record
/// nowhere. If another recorder was installed first, this one renders nothing of
/// what is recorded (a warning says so).
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .expect("the buckets are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        match metrics::set_global_recorder(recorder) {
            Ok(()) => describe(),
            Err(error) => tracing::warn!(%error, "another metrics recorder is installed"),
        }
        // Without upkeep, histogram samples recorded between scrapes are kept in
        // buffers that only a render drains: bound them even if nobody scrapes.
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
        handle
    })
}

fn describe() {
    for family in FAMILIES {
        let (name, help) = (family.name, family.help);
        match family.kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

/// Runs every registered sampler (each bounded to 2 s), then renders the exposition.
pub async fn scrape() -> String {
    let handle = install();
    let samplers: Vec<Sampler> = SAMPLERS
        .lock()
        .iter()
        .map(|(_, sampler)| sampler.clone())
        .collect();
    futures::future::join_all(samplers.iter().map(|sampler| async move {
        if tokio::time::timeout(Duration::from_secs(2), sampler())
            .await
            .is_err()
        {
            tracing::warn!("a metrics sampler took more than 2 s; its gauges are stale");
        }
    }))
    .await;
    handle.render()
}

/// The `/metrics` answer: [`scrape`] as Prometheus text.
pub async fn metrics_response() -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], scrape().await).into_response()
}

/// `GET /metrics` (for `agora run SERVICE`: each process serves its own).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/metrics", get(metrics_response))
}

/// Sets gauges from a store or the bus, at scrape time.
pub type Sampler = std::sync::Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

static SAMPLERS: Mutex<Vec<(u64, Sampler)>> = Mutex::new(Vec::new());
static NEXT_SAMPLER: AtomicU64 = AtomicU64::new(0);

/// Registers `sampler` until the guard is dropped (its service stopped).
pub fn register_sampler(sampler: Sampler) -> SamplerGuard {
    let id = NEXT_SAMPLER.fetch_add(1, Ordering::Relaxed);
    SAMPLERS.lock().push((id, sampler));
    SamplerGuard { id }
}

/// Keeps a sampler registered; see [`register_sampler`].
#[derive(Debug)]
pub struct SamplerGuard {
    id: u64,
}

impl Drop for SamplerGuard {
    fn drop(&mut self) {
        SAMPLERS.lock().retain(|(id, _)| *id != self.id);
    }
}

/// A status code as a label without allocating (the codes Agora answers; others by
/// class).
pub fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        301 => "301",
        302 => "302",
        303 => "303",
        304 => "304",
        307 => "307",
        308 => "308",
        400 => "400",
        401 => "401",
        402 => "402",
        403 => "403",
        404 => "404",
        405 => "405",
        406 => "406",
        408 => "408",
        409 => "409",
        410 => "410",
        412 => "412",
        413 => "413",
        415 => "415",
        422 => "422",
        428 => "428",
        429 => "429",
        431 => "431",
        500 => "500",
        501 => "501",
        502 => "502",
        503 => "503",
        504 => "504",
        other => status_class(other),
    }
}

/// A status code's class as a label: `2xx`, `4xx`, …
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// A method as a label without allocating (an unusual one is `other`).
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The service a consumer belongs to: consumers are named `<service>-<what>`.
pub fn service_of_consumer(consumer: &str) -> &str {
    consumer.split('-').next().unwrap_or(consumer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_named_once_and_like_prometheus_wants() {
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len(), "a family is listed twice");
        for family in FAMILIES {
            assert!(family.name.starts_with("agora_"), "{}", family.name);
            assert_eq!(
                family.kind == Kind::Counter,
                family.name.ends_with("_total"),
                "{}: counters, and only counters, end in _total",
                family.name
            );
        }
        assert!(names::family_of("agora_outbox_relay_latency_seconds_bucket").is_some());
        assert!(names::family_of("agora_outbox_backlog_bucket").is_none());
        assert!(names::family_of("agora_nothing").is_none());
    }

    /// Every `agora_…` name in `text`.
    fn metric_names(text: &str) -> Vec<&str> {
        let mut names = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("agora_") {
            let boundary = at == 0 || {
                let before = rest.as_bytes()[at - 1];
                !(before.is_ascii_alphanumeric() || before == b'_')
            };
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            if boundary {
                names.push(&tail[..end]);
            }
            rest = &tail[end..];
        }
        names
    }

    /// The dashboard and the alerts of `deploy/` query only series the shop exports.
    #[test]
    fn the_dashboard_and_the_alerts_use_only_exported_series() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");
        for file in [
            "grafana/agora.json",
            "prometheus/alerts.yml",
            "prometheus/alerts.test.yml",
        ] {
            let text = std::fs::read_to_string(format!("{root}/{file}")).expect(file);
            let names = metric_names(&text);
            assert!(!names.is_empty(), "{file} queries nothing");
            for name in names {
                assert!(
                    names::family_of(name).is_some(),
                    "{file} uses {name}, which the shop does not export"
                );
            }
        }
        assert_eq!(
            metric_names("rate(agora_x_total[1m]) / xagora_y + agora_z"),
            ["agora_x_total", "agora_z"]
        );
    }

    #[test]
    fn labels_cover_every_status_without_allocating() {
        assert_eq!(status_label(201), "201");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(599), "5xx");
        assert_eq!(status_class(302), "3xx");
        assert_eq!(service_of_consumer("ordering-customers"), "ordering");
    }
}
