//! The process's tracer: where finished spans go. In memory ([`super::recent`]) when
//! asked (`agora up`), over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, in both, or nowhere (then a span
//! costs its bookkeeping only).
//!
//! The standard variables are honoured: `OTEL_EXPORTER_OTLP_PROTOCOL` (or
//! `…_TRACES_PROTOCOL`) `grpc` or `http/protobuf` (the default), the endpoint,
//! `…_HEADERS`, `…_TIMEOUT`, `…_COMPRESSION` (read by `opentelemetry-otlp`),
//! `OTEL_BSP_*` (the batch processor), `OTEL_TRACES_SAMPLER`(`_ARG`),
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME`, `OTEL_SDK_DISABLED` and
//! `OTEL_TRACES_EXPORTER=none` (no export).
//!
//! Service names: every span carries the service it belongs to
//! ([`super::SERVICE_ATTRIBUTE`]), and the exporter sends each service's spans with a
//! resource of their own, `service.name` = that service, `service.namespace` =
//! `OTEL_SERVICE_NAME` or `agora`. So `agora up`, ten services in one process, shows
//! as ten services in a tracing backend. A process of one service (`agora run
//! SERVICE`) sends all its spans as `OTEL_SERVICE_NAME`, or the service's name.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use parking_lot::Mutex;

use super::SERVICE_ATTRIBUTE;

/// How the OTLP exporter sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// What the `OTEL_*` variables ask for, read once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSettings {
    /// `None`: no OTLP export.
    pub protocol: Option<Protocol>,
    /// Where to: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it is, or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (with `/v1/traces` appended for http/protobuf).
    pub endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME`, if set.
    pub service_name: Option<String>,
}

impl ExportSettings {
    /// From the process's environment. An unsupported protocol is an error (better
    /// refused at start than silently not exported).
    pub fn from_env() -> Result<ExportSettings, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// From `lookup` (the environment, or a test's map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<ExportSettings, String> {
        let var = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let service_name = var("OTEL_SERVICE_NAME");
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let traces_endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let base_endpoint = var("OTEL_EXPORTER_OTLP_ENDPOINT");
        if disabled || (traces_endpoint.is_none() && base_endpoint.is_none()) {
            return Ok(ExportSettings {
                protocol: None,
                endpoint: None,
                service_name,
            });
        }
        let (variable, value) = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
            Some(value) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", Some(value)),
            None => (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                var("OTEL_EXPORTER_OTLP_PROTOCOL"),
            ),
        };
        let protocol = match value.as_deref() {
            None | Some("http/protobuf") => Protocol::HttpProtobuf,
            Some("grpc") => Protocol::Grpc,
            Some(other) => {
                return Err(format!(
                    "{variable} is {other:?}: Agora exports traces with `grpc` or `http/protobuf`"
                ));
            }
        };
        let endpoint = traces_endpoint.or_else(|| {
            base_endpoint.map(|base| match protocol {
                Protocol::Grpc => base,
                Protocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
            })
        });
        Ok(ExportSettings {
            protocol: Some(protocol),
            endpoint,
            service_name,
        })
    }
}

/// What [`install`] sets up.
#[derive(Debug, Clone)]
pub struct TraceConfig {
    /// The one service of this process (`agora run`), or `None` when spans name their
    /// own (`agora up`).
    pub service: Option<String>,
    /// Keep this many recent spans in memory ([`super::recent`]); `None`: keep none.
    pub keep_recent: Option<usize>,
    pub export: ExportSettings,
}

/// The longest a stopping process waits for its last spans to be exported: it has
/// already spent up to 8 s stopping, of the 10 s an orchestrator gives before SIGKILL.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// The installed tracer: flush it with [`Tracing::shutdown`] before the process exits.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    exporting: bool,
}

impl Tracing {
    /// The tracer spans are made with.
    pub fn tracer(&self) -> opentelemetry_sdk::trace::SdkTracer {
        self.provider.tracer("agora")
    }

    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.exporting
    }

    /// Exports what is still buffered (waiting at most [`SHUTDOWN_WAIT`]) and stops.
    /// Blocks: call it from a blocking thread (`spawn_blocking`) while the runtime that
    /// built the exporter still runs.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown_with_timeout(SHUTDOWN_WAIT) {
            tracing::warn!(%error, "traces not all exported at shutdown");
        }
    }

    /// Exports what is buffered now (blocking, like [`Tracing::shutdown`]).
    pub fn flush(&self) {
        if let Err(error) = self.provider.force_flush() {
            tracing::warn!(%error, "traces not all exported");
        }
    }
}

/// Builds the process's tracer (call it once, inside the Tokio runtime when exporting:
/// the exporters run on it) and makes [`super::layer`] use it.
pub fn install(config: TraceConfig) -> Result<Tracing, String> {
    let tracing = build(config)?;
    super::set_tracer(tracing.tracer());
    Ok(tracing)
}

/// A tracer as [`install`] makes it, without making it the process's (tests of the
/// export use [`Tracing::tracer`] directly).
pub fn build(config: TraceConfig) -> Result<Tracing, String> {
    let mut builder = SdkTracerProvider::builder();
    if let Some(capacity) = config.keep_recent {
        builder = builder.with_span_processor(super::recent::processor(capacity));
    }
    let namespace = config
        .export
        .service_name
        .clone()
        .filter(|_| config.service.is_none())
        .unwrap_or_else(|| "agora".to_owned());
    let fixed = config.service.as_ref().map(|service| {
        config
            .export
            .service_name
            .clone()
            .unwrap_or_else(|| service.clone())
    });
    let exporting = config.export.protocol.is_some();
    if let Some(protocol) = config.export.protocol {
        let endpoint = config.export.endpoint.clone().unwrap_or_default();
        let exporter = match protocol {
            Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build(),
            Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(endpoint)
                .with_http_client(RuntimeClient::new()?)
                .build(),
        }
        .map_err(|error| format!("the OTLP exporter: {error}"))?;
        builder = builder.with_batch_exporter(PerService {
            inner: tokio::sync::Mutex::new(exporter),
            namespace,
            fixed,
            resources: Mutex::new(HashMap::new()),
        });
    }
    let provider = builder.build();
    Ok(Tracing {
        provider,
        exporting,
    })
}

/// Sends each service's spans with its own resource, and without the `trace_id` and
/// `span_id` attributes the spans record for the logs (the span's own ids).
#[derive(Debug)]
struct PerService<E> {
    inner: tokio::sync::Mutex<E>,
    /// `service.namespace`.
    namespace: String,
    /// Every span's `service.name`, for a process of one service.
    fixed: Option<String>,
    resources: Mutex<HashMap<String, Resource>>,
}

impl<E> PerService<E> {
    fn resource(&self, service: &str) -> Resource {
        self.resources
            .lock()
            .entry(service.to_owned())
            .or_insert_with(|| {
                Resource::builder()
                    .with_service_name(service.to_owned())
                    .with_attribute(KeyValue::new("service.namespace", self.namespace.clone()))
                    .build()
            })
            .clone()
    }
}

impl<E: SpanExporter> SpanExporter for PerService<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut groups: Vec<(String, Vec<SpanData>)> = Vec::new();
        for mut span in batch {
            let mut service = None;
            span.attributes.retain(|kv| match kv.key.as_str() {
                "trace_id" | "span_id" => false,
                SERVICE_ATTRIBUTE => {
                    service = Some(kv.value.as_str().into_owned());
                    true
                }
                _ => true,
            });
            let service = self
                .fixed
                .clone()
                .or(service)
                .unwrap_or_else(|| "agora".to_owned());
            match groups.iter_mut().find(|(name, _)| *name == service) {
                Some((_, spans)) => spans.push(span),
                None => groups.push((service, vec![span])),
            }
        }
        let mut inner = self.inner.lock().await;
        let mut outcome = Ok(());
        for (service, spans) in groups {
            inner.set_resource(&self.resource(&service));
            if let Err(error) = inner.export(spans).await {
                outcome = Err(error);
            }
        }
        outcome
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        match self.inner.try_lock() {
            Ok(inner) => inner.shutdown_with_timeout(timeout),
            Err(_) => Err(OTelSdkError::InternalFailure("an export is running".into())),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        match self.inner.try_lock() {
            Ok(inner) => inner.force_flush(),
            Err(_) => Ok(()),
        }
    }
}

/// The http/protobuf exporter's client: the batch processor exports from a thread of
/// its own, and this client runs each request on the runtime it was made in (the
/// workspace's reqwest, no second HTTP stack).
#[derive(Debug)]
struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl RuntimeClient {
    fn new() -> Result<Self, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the OTLP exporter must be built inside the Tokio runtime".to_owned())?;
        let timeout = std::env::var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_TIMEOUT"))
            .ok()
            .and_then(|ms| ms.trim().parse::<u64>().ok())
            .map_or(Duration::from_secs(10), Duration::from_millis);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|error| format!("the OTLP HTTP client: {error}"))?;
        Ok(Self { client, runtime })
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for RuntimeClient {
    async fn send_bytes(
        &self,
        request: axum::http::Request<bytes::Bytes>,
    ) -> Result<axum::http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            let mut answer = axum::http::Response::new(body);
            *answer.status_mut() = status;
            *answer.headers_mut() = headers;
            Ok::<_, reqwest::Error>(answer)
        });
        Ok(sent.await??)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<ExportSettings, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ExportSettings::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn export_only_with_an_endpoint_and_a_known_protocol() {
        assert_eq!(settings(&[]).unwrap().protocol, None);
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        let http = settings(&[endpoint]).unwrap();
        assert_eq!(http.protocol, Some(Protocol::HttpProtobuf));
        assert_eq!(
            http.endpoint.as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])
                .unwrap()
                .protocol,
            Some(Protocol::Grpc)
        );
        assert_eq!(
            settings(&[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://127.0.0.1:4317"
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ])
            .unwrap()
            .protocol,
            Some(Protocol::Grpc)
        );
        let refused =
            settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap_err();
        assert!(refused.contains("http/json"), "{refused}");
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(settings(&[endpoint, off]).unwrap().protocol, None);
        }
        assert_eq!(
            settings(&[("OTEL_SERVICE_NAME", "shop")])
                .unwrap()
                .service_name
                .as_deref(),
            Some("shop")
        );
    }
}
