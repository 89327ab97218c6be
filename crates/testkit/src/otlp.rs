//! An OTLP trace receiver on 127.0.0.1 for tests of trace export: it takes
//! `ExportTraceServiceRequest`s over gRPC (tonic) or http/protobuf (`POST /v1/traces`),
//! decodes them with `opentelemetry-proto` and keeps every span with the
//! `service.name` of its resource. Stopped when dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use tokio::task::JoinHandle;

/// How the receiver takes spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    /// The value of `OTEL_EXPORTER_OTLP_PROTOCOL` for it.
    pub fn env_value(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// One span received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSpan {
    /// Its resource's `service.name`.
    pub service: String,
    /// Lower-case hex.
    pub trace_id: String,
    pub span_id: String,
    /// `None` for a root span.
    pub parent_span_id: Option<String>,
    pub name: String,
    /// The OTLP `SpanKind` number (2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i32,
    pub attributes: Vec<(String, String)>,
}

impl ReceivedSpan {
    /// The value of the attribute `key`, as text.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

type Spans = Arc<Mutex<Vec<ReceivedSpan>>>;

/// The running receiver.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    protocol: Protocol,
    spans: Spans,
    requests: Arc<Mutex<u64>>,
    task: JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OtlpReceiver {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start(protocol: Protocol) -> OtlpReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let addr = listener.local_addr().expect("its address");
        let spans: Spans = Arc::default();
        let requests: Arc<Mutex<u64>> = Arc::default();
        let sink = Sink {
            spans: spans.clone(),
            requests: requests.clone(),
        };
        let task = match protocol {
            Protocol::Grpc => tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(sink))
                    .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                    .await;
            }),
            Protocol::HttpProtobuf => tokio::spawn(async move {
                let app = axum::Router::new().route(
                    "/v1/traces",
                    axum::routing::post(move |body: axum::body::Bytes| {
                        let sink = sink.clone();
                        async move {
                            match ExportTraceServiceRequest::decode(body) {
                                Ok(request) => {
                                    sink.take(request);
                                    let answer = ExportTraceServiceResponse::default();
                                    (
                                        [("content-type", "application/x-protobuf")],
                                        answer.encode_to_vec(),
                                    )
                                        .into_response_parts()
                                }
                                Err(_) => (
                                    [("content-type", "text/plain")],
                                    b"not an ExportTraceServiceRequest".to_vec(),
                                )
                                    .into_bad_request(),
                            }
                        }
                    }),
                );
                let _ = axum::serve(listener, app).await;
            }),
        };
        OtlpReceiver {
            addr,
            protocol,
            spans,
            requests,
            task,
        }
    }

    /// The value of `OTEL_EXPORTER_OTLP_ENDPOINT` for it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("not poisoned").clone()
    }

    /// How many export requests arrived.
    pub fn requests(&self) -> u64 {
        *self.requests.lock().expect("not poisoned")
    }
}

#[derive(Debug, Clone)]
struct Sink {
    spans: Spans,
    requests: Arc<Mutex<u64>>,
}

impl Sink {
    fn take(&self, request: ExportTraceServiceRequest) {
        *self.requests.lock().expect("not poisoned") += 1;
        let mut received = Vec::new();
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| text(v.value.as_ref()))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push(ReceivedSpan {
                        service: service.clone(),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: (!span.parent_span_id.is_empty())
                            .then(|| hex(&span.parent_span_id)),
                        name: span.name,
                        kind: span.kind,
                        attributes: span
                            .attributes
                            .iter()
                            .map(|kv| {
                                (
                                    kv.key.clone(),
                                    text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                                )
                            })
                            .collect(),
                    });
                }
            }
        }
        self.spans.lock().expect("not poisoned").extend(received);
    }
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Answers of the http/protobuf route.
trait Answer {
    fn into_response_parts(self) -> axum::response::Response;
    fn into_bad_request(self) -> axum::response::Response;
}

impl Answer for ([(&'static str, &'static str); 1], Vec<u8>) {
    fn into_response_parts(self) -> axum::response::Response {
        axum::response::IntoResponse::into_response(self)
    }

    fn into_bad_request(self) -> axum::response::Response {
        let mut response = axum::response::IntoResponse::into_response(self);
        *response.status_mut() = axum::http::StatusCode::BAD_REQUEST;
        response
    }
}
