//! After checkout: every order ends somewhere — ready for shipping (then shipped), or
//! cancelled with its payment given back and its stock released.

use std::time::Duration;

use agora::audit::{Stores, audit_stores};
use agora::runtime::ServiceName;
use agora_payment::DEFAULT_ORPHAN_HOLD;
use agora_testkit::PgDatabases;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::support::{TestShop, eventually};

const PRODUCT: &str = "5eed0000-0000-4000-8000-000000000003";

impl TestShop {
    async fn order_status(&self, token: &str, id: &str) -> Value {
        self.client
            .get(self.url(&format!("/api/ordering/orders/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until the order is in one of `statuses`; returns it.
    async fn order_reaches(&self, token: &str, id: &str, statuses: &[&str]) -> Value {
        let reached = eventually(Duration::from_secs(10), || async {
            let order = self.order_status(token, id).await;
            statuses.iter().any(|s| order["status"] == *s)
        })
        .await;
        let order = self.order_status(token, id).await;
        assert!(reached.is_some(), "order stuck: {order}");
        order
    }

    async fn stock(&self, product: &str) -> Value {
        self.client
            .get(self.url(&format!("/api/inventory/stock/{product}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The ops timeline of `correlation_id`, as the gateway lists it.
    async fn timeline(&self, correlation_id: &str) -> Vec<Value> {
        let admin = self.admin_token().await;
        self.client
            .get(self.url(&format!("/api/ops/events?correlation_id={correlation_id}")))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn timeline_types(&self, correlation_id: &str) -> Vec<String> {
        self.timeline(correlation_id)
            .await
            .iter()
            .filter_map(|e| e["type"].as_str().map(str::to_owned))
            .collect()
    }

    async fn buyer(&self, card: &str) -> String {
        let (_, _, token) = self.customer().await;
        for (path, body) in [
            (
                "/api/customers/me/address",
                json!({"line1": "1 Dock Road", "city": "Hull", "postal_code": "HU1 1AA", "country": "GB"}),
            ),
            (
                "/api/customers/me/payment-method",
                json!({"token": card, "last4": "4242"}),
            ),
        ] {
            let answer = self
                .client
                .put(self.url(path))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
        }
        token
    }

    /// Places an order (retrying while ordering's replica catches up); its id.
    async fn place(&self, token: &str, quantity: u32) -> String {
        let body = json!({"lines": [{"product_id": PRODUCT, "quantity": quantity}]});
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let answer = self
                .client
                .post(self.url("/api/ordering/orders"))
                .bearer_auth(token)
                .header("Idempotency-Key", format!("order-of-{quantity}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            if answer.status() == StatusCode::CREATED {
                let order: Value = answer.json().await.unwrap();
                return order["id"].as_str().unwrap().to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never accepted: {}",
                answer.text().await.unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn mailbox(&self, token: &str) -> Vec<Value> {
        self.client
            .get(self.url("/api/notifications/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn set_stock(&self, product: &str, on_hand: u32) {
        let admin = self.admin_token().await;
        let answer = self
            .client
            .put(self.url(&format!("/api/inventory/stock/{product}")))
            .bearer_auth(admin)
            .json(&json!({"on_hand": on_hand}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_paid_and_reserved_order_is_shipped() {
    let shop = TestShop::start().await;
    let before = shop.stock(PRODUCT).await;
    let token = shop.buyer("tok_visa").await;
    let id = shop.place(&token, 2).await;
    let order = shop.order_reaches(&token, &id, &["shipped"]).await;
    let history: Vec<&str> = order["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["status"].as_str())
        .collect();
    assert_eq!(
        history,
        ["accepted", "paid", "ready_for_shipping", "shipped"]
    );
    let shipments: Vec<Value> = shop
        .client
        .get(shop.url(&format!("/api/shipping/shipments?order_id={id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shipments.len(), 1, "{shipments:?}");
    assert_eq!(shipments[0]["address"]["line1"], "1 Dock Road");
    // The timeline: every event of the flow, each once. Checkout's sync call to
    // payment and its acceptance, then the effects of `OrderAccepted`: payment
    // captures, inventory reserves, fulfilment (after the last of the three) declares
    // it ready, shipping dispatches, ordering marks it shipped.
    let mut expected = [
        "PaymentAuthorized",
        "OrderAccepted",
        "CustomerBilled",
        "StockReserved",
        "OrderReadyForShipping",
        "ShipmentDispatched",
        "OrderShipped",
    ];
    expected.sort_unstable();
    let complete = eventually(Duration::from_secs(10), || async {
        let mut types = shop.timeline_types(&id).await;
        types.sort_unstable();
        types == expected
    })
    .await;
    let events = shop.timeline(&id).await;
    assert!(complete.is_some(), "{expected:?} in {events:#?}");
    // Oldest first.
    let times: Vec<time::OffsetDateTime> = events
        .iter()
        .map(|e| {
            let time = e["time"].as_str().unwrap();
            time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
                .unwrap()
        })
        .collect();
    assert!(times.is_sorted(), "oldest first: {events:#?}");
    // Causation links: each event caused by another points at one listed before it.
    // PaymentAuthorized and OrderAccepted have none: both come from the checkout
    // request (payment authorizes during the sync call, then ordering accepts), not
    // from an event; every other event is emitted while handling one of this flow.
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    for (at, event) in events.iter().enumerate() {
        let kind = event["type"].as_str().unwrap();
        match event["causation_id"].as_str() {
            Some(cause) => {
                let caused_by = ids.iter().position(|id| *id == cause);
                assert!(
                    caused_by.is_some_and(|c| c < at),
                    "{kind} is caused by an earlier event of the timeline: {events:#?}"
                );
            }
            None => assert!(
                kind == "PaymentAuthorized" || kind == "OrderAccepted",
                "{kind} has a cause: {events:#?}"
            ),
        }
    }
    // The mailbox: a confirmation and a shipped message, both naming the product.
    let mailbox = eventually(Duration::from_secs(10), || async {
        let messages = shop.mailbox(&token).await;
        let of = |kind: &str| {
            messages
                .iter()
                .any(|m| m["kind"] == kind && m["order_id"] == id.as_str())
        };
        of("order_confirmation") && of("order_shipped")
    })
    .await;
    let messages = shop.mailbox(&token).await;
    assert!(mailbox.is_some(), "{messages:?}");
    let name = product_name(&shop).await;
    for kind in ["order_confirmation", "order_shipped"] {
        let message = messages.iter().find(|m| m["kind"] == kind).unwrap();
        assert!(
            message["body"].as_str().unwrap().contains(&name),
            "{message} names {name}"
        );
    }
    let after = shop.stock(PRODUCT).await;
    assert_eq!(
        before["available"].as_i64().unwrap() - 2,
        after["available"].as_i64().unwrap()
    );
    shop.stop().await;
}

#[tokio::test]
async fn out_of_stock_cancels_and_gives_the_money_back() {
    let shop = TestShop::start().await;
    shop.set_stock(PRODUCT, 1).await;
    let token = shop.buyer("tok_visa").await;
    let id = shop.place(&token, 3).await;
    let order = shop.order_reaches(&token, &id, &["cancelled"]).await;
    let last = order["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["reason"], "out_of_stock");
    let told = eventually(Duration::from_secs(10), || async {
        shop.mailbox(&token)
            .await
            .iter()
            .any(|m| m["kind"] == "order_cancelled" && m["order_id"] == id.as_str())
    })
    .await;
    assert!(told.is_some(), "a cancellation message");
    let settled = eventually(Duration::from_secs(10), || async {
        let types = shop.timeline_types(&id).await;
        types
            .iter()
            .any(|t| t == "PaymentRefunded" || t == "AuthorizationVoided")
            && types.iter().any(|t| t == "FulfilmentFailed")
    })
    .await;
    assert!(settled.is_some(), "{:?}", shop.timeline_types(&id).await);
    let stock = shop.stock(PRODUCT).await;
    assert_eq!(stock["reserved"], 0, "no stock leaked: {stock}");
    assert_eq!(stock["available"], 1);
    shop.stop().await;
}

#[tokio::test]
async fn a_declined_capture_cancels_and_releases_the_stock() {
    let shop = TestShop::start().await;
    let before = shop.stock(PRODUCT).await;
    let token = shop.buyer("tok_capture_fails").await;
    let id = shop.place(&token, 1).await;
    let order = shop.order_reaches(&token, &id, &["cancelled"]).await;
    let last = order["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["reason"], "payment_failed");
    let released = eventually(Duration::from_secs(10), || async {
        shop.stock(PRODUCT).await["available"] == before["available"]
    })
    .await;
    assert!(released.is_some(), "{}", shop.stock(PRODUCT).await);
    shop.stop().await;
}

#[tokio::test]
async fn the_audit_finds_nothing_after_a_quiet_run_and_names_what_is_broken() {
    let shop = TestShop::start().await;
    shop.set_stock(PRODUCT, 2).await;
    let token = shop.buyer("tok_visa").await;
    let short = shop.place(&token, 3).await;
    let declined_buyer = shop.buyer("tok_capture_fails").await;
    let declined = shop.place(&declined_buyer, 1).await;
    let shipped_buyer = shop.buyer("tok_visa").await;
    let shipped = shop.place(&shipped_buyer, 1).await;
    shop.order_reaches(&shipped_buyer, &shipped, &["shipped"])
        .await;
    shop.order_reaches(&token, &short, &["cancelled"]).await;
    shop.order_reaches(&declined_buyer, &declined, &["cancelled"])
        .await;
    // Quiet: the compensations are done and every outbox is drained.
    let quiet = eventually(Duration::from_secs(10), || async {
        let short = shop.timeline_types(&short).await;
        let declined = shop.timeline_types(&declined).await;
        short
            .iter()
            .any(|t| t == "AuthorizationVoided" || t == "PaymentRefunded")
            && short.iter().any(|t| t == "OrderCancelled")
            && declined.iter().any(|t| t == "StockReleased")
            && declined.iter().any(|t| t == "OrderCancelled")
    })
    .await;
    assert!(quiet.is_some());
    let dir = shop.stop_keeping_data().await;

    let findings = agora::audit::audit(dir.path()).await.unwrap();
    assert!(findings.is_empty(), "{findings:?}");

    // Break two things behind the services' backs: the audit names both.
    let ordering = rusqlite::Connection::open(dir.path().join("ordering.db")).unwrap();
    ordering
        .execute(
            "UPDATE ordering_orders SET status = 'paid' WHERE id = ?1",
            [&short],
        )
        .unwrap();
    ordering
        .execute(
            "UPDATE messaging_outbox SET published_at_ms = NULL
             WHERE position = (SELECT MAX(position) FROM messaging_outbox)",
            [],
        )
        .unwrap();
    drop(ordering);
    let findings = agora::audit::audit(dir.path()).await.unwrap();
    let text: Vec<String> = findings.iter().map(ToString::to_string).collect();
    assert_eq!(findings.len(), 2, "{text:?}");
    assert!(
        text.iter()
            .any(|f| f.contains(&short) && f.contains("terminal")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|f| f.contains("never published")),
        "{text:?}"
    );
}

/// The same audit of a shop whose services each keep their store in a PostgreSQL
/// database of their own (`--db-template`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_of_a_shop_on_postgresql_finds_nothing_after_a_shipped_order_and_names_what_is_broken()
 {
    let services = ServiceName::ALL.map(ServiceName::as_str);
    let Some(databases) = PgDatabases::create(&services).await else {
        return;
    };
    let template = databases.template().to_owned();
    let shop = TestShop::start_tuned(|config| config.db_template = Some(template.clone())).await;
    let token = shop.buyer("tok_visa").await;
    let order = shop.place(&token, 1).await;
    shop.order_reaches(&token, &order, &["shipped"]).await;
    // Quiet: inventory shipped the reservation, notification sent the last message.
    let quiet = eventually(Duration::from_secs(10), || async {
        let shipped_mail = shop
            .mailbox(&token)
            .await
            .iter()
            .any(|m| m["kind"] == "order_shipped" && m["order_id"] == order.as_str());
        shipped_mail && shop.stock(PRODUCT).await["reserved"] == 0
    })
    .await;
    assert!(quiet.is_some(), "{}", shop.stock(PRODUCT).await);
    shop.stop().await;

    let stores = Stores::Postgres(template.clone());
    let findings = audit_stores(&stores, DEFAULT_ORPHAN_HOLD).await.unwrap();
    assert!(findings.is_empty(), "{findings:?}");

    // Two things broken behind the services' backs, the money held again and an event
    // of ordering's outbox unpublished: the audit names those, and only those.
    let mut payment = sqlx::PgConnection::connect(&template.replace("{service}", "payment"))
        .await
        .unwrap();
    let authorization: String = sqlx::query_scalar(
        "UPDATE payment_authorizations SET status = 'authorized' WHERE order_id = $1
         RETURNING id",
    )
    .bind(&order)
    .fetch_one(&mut payment)
    .await
    .unwrap();
    payment.close().await.unwrap();
    let mut ordering = sqlx::PgConnection::connect(&template.replace("{service}", "ordering"))
        .await
        .unwrap();
    sqlx::query(
        "UPDATE messaging_outbox SET published_at_ms = NULL
         WHERE position = (SELECT MAX(position) FROM messaging_outbox)",
    )
    .execute(&mut ordering)
    .await
    .unwrap();
    ordering.close().await.unwrap();
    let mut findings: Vec<String> = audit_stores(&stores, DEFAULT_ORPHAN_HOLD)
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    findings.sort();
    assert_eq!(
        findings,
        [
            "ordering: 1 event(s) in the outbox were never published".to_owned(),
            format!(
                "payment: authorization {authorization} still holds money for order {order}, which is shipped"
            ),
            format!("payment: order {order} was shipped but its payment was never captured"),
        ]
    );

    // The command line finds them too, and exits non-zero.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(["audit", "--db-template", &template])
        .output()
        .await
        .expect("run agora audit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for finding in &findings {
        assert!(stdout.contains(finding), "{stdout}");
    }

    // Databases that do not exist: named, their URL without user or password.
    let missing = Stores::Postgres(template.replace("agora_test_", "agora_missing_"));
    let error = audit_stores(&missing, DEFAULT_ORPHAN_HOLD)
        .await
        .expect_err("no such databases");
    let message = format!("{error:#}");
    assert!(
        message.contains("open the catalog store at postgres://")
            && message.contains("does not exist"),
        "{message}"
    );
    assert!(!message.contains('@'), "{message}");
}

/// The catalog's name of [`PRODUCT`].
async fn product_name(shop: &TestShop) -> String {
    let product: Value = shop
        .client
        .get(shop.url(&format!("/api/catalog/products/{PRODUCT}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    product["name"].as_str().unwrap().to_owned()
}
