//! One order's trace, end to end: a shop whose tracer exports over OTLP (gRPC) to a
//! real receiver on 127.0.0.1 takes a checkout, and the receiver gets one trace
//! through gateway → ordering → payment, the outbox and the bus → inventory, payment's
//! capture, fulfilment → shipping → notification, each span linked to its parent.
//!
//! The same trace is then read back as the ops console draws it: from the spans the
//! process keeps in memory (`/api/ops/traces`).
//!
//! Its own test binary, because the tracer and the subscriber are process-wide (as the
//! metrics recorder is for `tests/metrics.rs`).

#[path = "e2e/support.rs"]
#[allow(dead_code)]
mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use agora_telemetry::trace::{ExportSettings, TraceConfig, Tracing};
use agora_testkit::otlp::{OtlpReceiver, Protocol, ReceivedSpan};
use reqwest::StatusCode;
use serde_json::Value;
use tracing_subscriber::layer::SubscriberExt as _;

use crate::support::{TestShop, lines};

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

/// The process's tracer exporting to `receiver`, keeping recent spans in memory as
/// `agora up` does, and a subscriber with its layer.
fn install(receiver: &OtlpReceiver) -> Tracing {
    let vars: HashMap<&str, String> = HashMap::from([
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            receiver.protocol().env_value().to_owned(),
        ),
    ]);
    let export = ExportSettings::from_lookup(|name| vars.get(name).cloned()).expect("settings");
    let tracing = agora_telemetry::trace::install(TraceConfig {
        service: None,
        keep_recent: Some(agora_telemetry::trace::recent::DEFAULT_CAPACITY),
        export,
    })
    .expect("a tracer");
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(agora_telemetry::trace::layer()),
    )
    .expect("the only subscriber of this binary");
    tracing
}

/// Flushes the tracer (from a blocking thread: it waits for the export, which runs on
/// this runtime).
async fn flush(tracing: Tracing) -> Tracing {
    tokio::task::spawn_blocking(move || {
        tracing.flush();
        tracing
    })
    .await
    .expect("flushed")
}

/// The spans of `trace_id` the receiver has.
fn trace_of(receiver: &OtlpReceiver, trace_id: &str) -> Vec<ReceivedSpan> {
    receiver
        .spans()
        .into_iter()
        .filter(|s| s.trace_id == trace_id)
        .collect()
}

/// Whether `spans` hold the whole flow: shipping's event handled by notification and
/// ordering, and every parent present.
fn complete(spans: &[ReceivedSpan]) -> bool {
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let handled = |service: &str, subject: &str| {
        spans.iter().any(|s| {
            s.kind == CONSUMER && s.service == service && s.name == format!("process {subject}")
        })
    };
    handled("notification", "shipping.ShipmentDispatched")
        && handled("ordering", "shipping.ShipmentDispatched")
        && spans
            .iter()
            .all(|s| s.parent_span_id.as_deref().is_none_or(|p| ids.contains(p)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_checkout_is_one_trace_across_the_services() {
    let receiver = OtlpReceiver::start(Protocol::Grpc).await;
    let mut tracing = install(&receiver);
    let shop = TestShop::start().await;
    let (_, token) = shop.shopper("1 Trace Row").await;
    let answer = shop.order(&token, "trace-1", &lines(1)).await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    let traceparent = answer.headers()["traceparent"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let trace_id = traceparent
        .split('-')
        .nth(1)
        .expect("a trace id")
        .to_owned();
    let order: Value = answer.json().await.unwrap();
    let order_id = order["id"].as_str().expect("an order id").to_owned();

    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        tracing = flush(tracing).await;
        let spans = trace_of(&receiver, &trace_id);
        if complete(&spans) || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let dump = || {
        spans
            .iter()
            .map(|s| {
                format!(
                    "{} {} {} <- {:?}",
                    s.service, s.name, s.span_id, s.parent_span_id
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(complete(&spans), "the trace is not complete:\n{}", dump());
    let by_id: HashMap<&str, &ReceivedSpan> =
        spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let parent = |span: &ReceivedSpan| {
        span.parent_span_id
            .as_deref()
            .map(|id| *by_id.get(id).expect("its parent is in the trace"))
    };
    let find = |service: &str, kind: i32, name: &str| -> &ReceivedSpan {
        spans
            .iter()
            .find(|s| s.service == service && s.kind == kind && s.name == name)
            .unwrap_or_else(|| panic!("no {service} span {name:?} in\n{}", dump()))
    };

    // One root: the gateway's request span, the answer's traceparent.
    let roots: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_none())
        .collect();
    assert_eq!(roots.len(), 1, "one root:\n{}", dump());
    let root = find("gateway", SERVER, "POST /api/ordering");
    assert_eq!(root.span_id, roots[0].span_id);
    assert_eq!(traceparent.split('-').nth(2), Some(root.span_id.as_str()));

    // HTTP: gateway → ordering → payment, each call a client span between two servers.
    let forward = find("gateway", CLIENT, "POST ordering");
    assert_eq!(parent(forward).map(|p| &p.span_id), Some(&root.span_id));
    let checkout = find("ordering", SERVER, "POST /api/ordering/orders");
    assert_eq!(parent(checkout).map(|p| &p.span_id), Some(&forward.span_id));
    let authorize_call = find("ordering", CLIENT, "POST payment");
    assert_eq!(
        parent(authorize_call).map(|p| &p.span_id),
        Some(&checkout.span_id)
    );
    let authorize = spans
        .iter()
        .find(|s| s.service == "payment" && s.kind == SERVER)
        .expect("payment's authorization span");
    assert_eq!(
        authorize.attribute("http.route"),
        Some("/internal/payment/authorizations")
    );
    assert_eq!(
        parent(authorize).map(|p| &p.span_id),
        Some(&authorize_call.span_id)
    );

    // The event written in the checkout's transaction carries the request's context:
    // its producer span is the checkout's child, relayed and handled as its children.
    let accepted = find("ordering", PRODUCER, "create ordering.OrderAccepted");
    assert_eq!(
        parent(accepted).map(|p| &p.span_id),
        Some(&checkout.span_id)
    );
    assert_eq!(
        accepted.attribute("agora.correlation_id"),
        Some(order_id.as_str())
    );
    let relayed = find("ordering", PRODUCER, "send ordering.OrderAccepted");
    assert_eq!(parent(relayed).map(|p| &p.span_id), Some(&accepted.span_id));
    for service in [
        "inventory",
        "payment",
        "fulfilment",
        "notification",
        "shipping",
    ] {
        let handled = find(service, CONSUMER, "process ordering.OrderAccepted");
        assert_eq!(
            parent(handled).map(|p| &p.span_id),
            Some(&accepted.span_id),
            "{service}'s delivery of OrderAccepted"
        );
    }

    // Further down: fulfilment's event is handled by shipping, shipping's by
    // notification, each consumer span the child of its producer's span, whose own
    // parent is the consumer span that wrote it.
    for (producer, subject, consumer) in [
        ("inventory", "inventory.StockReserved", "fulfilment"),
        ("payment", "payment.CustomerBilled", "fulfilment"),
        ("fulfilment", "fulfilment.OrderReadyForShipping", "shipping"),
        ("shipping", "shipping.ShipmentDispatched", "notification"),
    ] {
        let created = find(producer, PRODUCER, &format!("create {subject}"));
        let writer = parent(created).expect("written while handling a delivery");
        assert_eq!(
            (writer.service.as_str(), writer.kind),
            (producer, CONSUMER),
            "{subject}"
        );
        let handled = find(consumer, CONSUMER, &format!("process {subject}"));
        assert_eq!(
            parent(handled).map(|p| &p.span_id),
            Some(&created.span_id),
            "{subject}"
        );
    }

    // At least six services in the one trace, no token in any attribute.
    let services: HashSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    for service in [
        "gateway",
        "ordering",
        "payment",
        "inventory",
        "fulfilment",
        "shipping",
        "notification",
    ] {
        assert!(services.contains(service), "{service} in {services:?}");
    }
    for span in &spans {
        for (key, value) in &span.attributes {
            assert!(
                !value.contains(&token) && !value.to_lowercase().contains("bearer"),
                "{key} of {} holds a credential",
                span.name
            );
        }
    }

    // The same trace, as the ops console draws it from the spans `agora up` keeps:
    // found by the order (its id or its reference), every span there, offsets from
    // the trace's start.
    let admin = shop.admin_token().await;
    let reference = order["reference"].as_str().expect("a reference").to_owned();
    for about in [order_id.as_str(), reference.as_str()] {
        let answer = shop
            .client
            .get(shop.url(&format!("/api/ops/traces?correlation_id={about}")))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{about}");
        let traces: Value = answer.json().await.unwrap();
        assert_eq!(
            traces[0]["trace_id"],
            trace_id.as_str(),
            "{about}: {traces}"
        );
        assert_eq!(traces[0]["root"], "POST /api/ordering", "{traces}");
    }
    let answer = shop
        .client
        .get(shop.url(&format!("/api/ops/traces/{trace_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let waterfall: Value = answer.json().await.unwrap();
    let drawn = waterfall["spans"].as_array().expect("spans");
    for span in &spans {
        let shown = drawn
            .iter()
            .find(|s| s["span_id"] == span.span_id.as_str())
            .unwrap_or_else(|| panic!("{} {} is not in the waterfall", span.service, span.name));
        assert_eq!(shown["service"], span.service.as_str());
        assert_eq!(shown["name"], span.name.as_str());
        assert_eq!(
            shown["parent_span_id"].as_str(),
            span.parent_span_id.as_deref()
        );
    }
    assert_eq!(
        drawn[0]["span_id"],
        root.span_id.as_str(),
        "the root starts the trace"
    );
    assert_eq!(drawn[0]["start_offset_us"], 0);
    let total = waterfall["duration_us"].as_u64().expect("a duration");
    for span in drawn {
        let end = span["start_offset_us"].as_u64().unwrap() + span["duration_us"].as_u64().unwrap();
        assert!(end <= total, "{span} ends within the trace");
    }
    assert!(
        waterfall["services"].as_array().unwrap().len() >= 7,
        "{}",
        waterfall["services"]
    );
    // A consumer starts after the producer span it descends from ended: the bus hop.
    let accepted_end = drawn
        .iter()
        .find(|s| s["span_id"] == accepted.span_id.as_str())
        .map(|s| s["start_offset_us"].as_u64().unwrap() + s["duration_us"].as_u64().unwrap())
        .unwrap();
    let shipped = drawn
        .iter()
        .find(|s| s["service"] == "shipping" && s["kind"] == "consumer")
        .expect("shipping's delivery");
    assert!(shipped["start_offset_us"].as_u64().unwrap() >= accepted_end);

    shop.stop().await;
    tokio::task::spawn_blocking(move || tracing.shutdown())
        .await
        .expect("shut down");
}
