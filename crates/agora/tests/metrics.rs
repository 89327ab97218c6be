//! The shop's metrics, end to end: after a checkout, the gateway's `/metrics` (the
//! whole shop's, as `agora up` serves it) has what `agora_telemetry::FAMILIES`
//! promises.
//!
//! Its own test binary, because the metrics recorder is process-wide: beside other
//! tests' shops in one process (`cargo test` runs a binary's tests as threads), the
//! counts would be theirs too.

#[path = "e2e/support.rs"]
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{TestShop, lines};

/// After a checkout has gone through fulfilment, the gateway's `/metrics` (the whole
/// shop's, `agora up`) has every family `agora_telemetry::FAMILIES` promises, the
/// checkout among the outcomes, and no raw order id in any label.
#[tokio::test]
async fn metrics_have_every_promised_family_after_a_checkout() {
    let shop = TestShop::start().await;
    let (_, token) = shop.shopper("1 Metrics Row").await;
    let answer = shop.order(&token, "metrics-1", &lines(1)).await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    let order: Value = answer.json().await.unwrap();
    let order_id = order["id"].as_str().expect("an order id").to_owned();
    // The same key and body again: the stored answer, counted as replayed, not as a
    // second accepted checkout.
    let again = shop.order(&token, "metrics-1", &lines(1)).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    let answer = shop
        .client
        .get(shop.url(&format!("/api/ordering/orders/{order_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);

    // Store gauges are sampled at each scrape, and the order ships on its own time.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (text, missing) = loop {
        let answer = shop.client.get(shop.url("/metrics")).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        let text = answer.text().await.unwrap();
        let missing: Vec<&str> = agora_telemetry::FAMILIES
            .iter()
            .map(|family| family.name)
            .filter(|name| !text.contains(&format!("# TYPE {name} ")))
            .collect();
        let complete = missing.is_empty()
            && text.contains(r#"agora_orders{status="shipped"} 1"#)
            && text.contains(
                r#"agora_checkout_outcomes_total{outcome="accepted",reason="created"} 1"#,
            );
        if complete || Instant::now() > deadline {
            break (text, missing);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        missing.is_empty(),
        "missing families {missing:?} in\n{text}"
    );
    assert!(
        text.contains(r#"agora_orders{status="shipped"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("agora_checkout_outcomes_total{outcome=\"accepted\",reason=\"created\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "agora_checkout_outcomes_total{outcome=\"replayed\",reason=\"stored_answer\"} 1\n"
        ),
        "{text}"
    );
    // The gateway's series of before the crate stay as they were.
    // (Both answers were a 201 through the gateway: the order, and its replay.)
    assert!(
        text.contains("agora_gateway_requests_total{service=\"ordering\",status=\"201\"} 2\n"),
        "{text}"
    );
    // Route templates, never paths.
    assert!(
        text.contains(r#"route="/api/ordering/orders/{id}""#),
        "{text}"
    );
    assert!(!text.contains(&order_id), "an order id in a label:\n{text}");
    // Every client names its service: identity's keys and the replicas' feeds too.
    assert!(
        !text.contains(r#"service="unknown""#),
        "a client without its caller:\n{text}"
    );
    for family in agora_telemetry::FAMILIES {
        let kind = match family.kind {
            agora_telemetry::Kind::Counter => "counter",
            agora_telemetry::Kind::Gauge => "gauge",
            agora_telemetry::Kind::Histogram => "histogram",
        };
        assert!(
            text.contains(&format!("# TYPE {} {kind}\n", family.name)),
            "{} is not a {kind}",
            family.name
        );
    }
    shop.stop().await;
}
