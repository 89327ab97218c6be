//! Trace export over OTLP to a real receiver on 127.0.0.1, for both protocols: the
//! spans arrive with their parent links, each service's under a resource of its own
//! (`service.name`), without the log-only `trace_id` / `span_id` attributes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agora_telemetry::trace::{ExportSettings, SERVICE_ATTRIBUTE, TraceConfig, build};
use agora_testkit::otlp::{OtlpReceiver, Protocol};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _};

async fn spans_arrive_with_their_links_and_services(protocol: Protocol) {
    let receiver = OtlpReceiver::start(protocol).await;
    let vars: HashMap<&str, String> = HashMap::from([
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            protocol.env_value().to_owned(),
        ),
    ]);
    let export = ExportSettings::from_lookup(|name| vars.get(name).cloned()).expect("settings");
    let tracing = build(TraceConfig {
        service: None,
        keep_recent: None,
        export,
    })
    .expect("a tracer");
    assert!(tracing.exporting());
    let tracer = tracing.tracer();
    let mut request = tracer
        .span_builder("POST /api/ordering/orders")
        .with_attributes([
            KeyValue::new(SERVICE_ATTRIBUTE, "ordering"),
            KeyValue::new("trace_id", "for the logs only"),
        ])
        .start(&tracer);
    let parent =
        opentelemetry::Context::new().with_remote_span_context(request.span_context().clone());
    let mut call = tracer
        .span_builder("POST payment")
        .with_attributes([KeyValue::new(SERVICE_ATTRIBUTE, "ordering")])
        .start_with_context(&tracer, &parent);
    let call_context =
        opentelemetry::Context::new().with_remote_span_context(call.span_context().clone());
    let mut authorize = tracer
        .span_builder("POST /internal/payment/authorizations")
        .with_attributes([KeyValue::new(SERVICE_ATTRIBUTE, "payment")])
        .start_with_context(&tracer, &call_context);
    authorize.end();
    call.end();
    request.end();
    let flushed = tokio::task::spawn_blocking(move || {
        tracing.flush();
        tracing
    })
    .await
    .expect("flushed");

    let deadline = Instant::now() + Duration::from_secs(10);
    let spans = loop {
        let spans = receiver.spans();
        if spans.len() >= 3 || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let by_name = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
    };
    let request = by_name("POST /api/ordering/orders");
    let call = by_name("POST payment");
    let authorize = by_name("POST /internal/payment/authorizations");
    assert_eq!(request.parent_span_id, None);
    assert_eq!(call.parent_span_id.as_ref(), Some(&request.span_id));
    assert_eq!(authorize.parent_span_id.as_ref(), Some(&call.span_id));
    assert!(spans.iter().all(|s| s.trace_id == request.trace_id));
    assert_eq!(request.service, "ordering");
    assert_eq!(call.service, "ordering");
    assert_eq!(authorize.service, "payment");
    assert_eq!(
        request.attribute("trace_id"),
        None,
        "log-only attributes are not sent"
    );
    tokio::task::spawn_blocking(move || flushed.shutdown())
        .await
        .expect("shut down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_arrive_over_grpc() {
    spans_arrive_with_their_links_and_services(Protocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_arrive_over_http_protobuf() {
    spans_arrive_with_their_links_and_services(Protocol::HttpProtobuf).await;
}
