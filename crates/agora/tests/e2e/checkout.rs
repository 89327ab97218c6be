//! The checkout of seeds 000 and 002, end to end: replicas keep it working when the
//! customer service is down; sync mode fails fast instead; a stale replica is visible
//! and can be overridden; payment is authorized once per idempotency key.

use std::time::{Duration, Instant};

use agora_gateway::ChaosMode;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{PRODUCT, TestShop, address, eventually, lines};

impl TestShop {
    async fn set_price(&self, product: &str, cents: i64) {
        let admin = self.admin_token().await;
        let answer = self
            .client
            .put(self.url(&format!("/api/ordering/prices/{product}")))
            .bearer_auth(admin)
            .json(&json!({"amount_cents": cents, "currency": "EUR"}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    }

    async fn settings(&self, customer_data: &str) {
        let admin = self.admin_token().await;
        let answer = self
            .put(
                &admin,
                "/api/ops/settings",
                json!({"customer_data": customer_data}),
            )
            .await;
        assert_eq!(answer.status(), StatusCode::OK);
    }

    async fn bus_paused(&self, paused: bool) {
        let admin = self.admin_token().await;
        let answer = self
            .put(&admin, "/api/ops/bus", json!({"paused": paused}))
            .await;
        assert_eq!(answer.status(), StatusCode::OK);
    }

    async fn my_orders(&self, token: &str) -> Vec<Value> {
        let answer = self
            .client
            .get(self.url("/api/ordering/orders"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        answer.json().await.unwrap()
    }
}

#[tokio::test]
async fn happy_path_from_sign_up_to_an_accepted_order() {
    let shop = TestShop::start().await;
    shop.set_price(PRODUCT, 1_290).await;
    let (customer_id, token) = shop.shopper("12 Analytical Row").await;

    let preview = shop.preview(&token).await;
    assert_eq!(preview["total_cents"], 2_580);
    assert_eq!(preview["lines"][0]["name"], "Espresso Cup");
    assert_eq!(preview["address_source"], "replica");
    assert!(preview["address_as_of"].is_string());

    let answer = shop.order(&token, "happy-1", &lines(2)).await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    let order: Value = answer.json().await.unwrap();
    assert_eq!(order["status"], "accepted");
    assert_eq!(order["address_source"], "replica");
    assert_eq!(order["customer_id"], customer_id.to_string());
    assert_eq!(order["total_cents"], 2_580);
    assert_eq!(order["shipping_address"]["line1"], "12 Analytical Row");
    assert_eq!(shop.my_orders(&token).await.len(), 1);

    // The ops console's timeline of the order: its events, oldest first.
    let admin = shop.admin_token().await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    let timeline = eventually(Duration::from_secs(5), || async {
        let events: Vec<Value> = shop
            .client
            .get(shop.url(&format!("/api/ops/events?correlation_id={order_id}")))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        types.contains(&"PaymentAuthorized") && types.contains(&"OrderAccepted")
    })
    .await;
    assert!(timeline.is_some(), "the order's events are in the timeline");
    // The same timeline by the order's reference, as a person quotes it.
    let events_of = |correlation: String| {
        let (shop, admin) = (&shop, &admin);
        async move {
            let events: Vec<Value> = shop
                .client
                .get(shop.url(&format!("/api/ops/events?correlation_id={correlation}")))
                .bearer_auth(admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            events.iter().map(|e| e["id"].clone()).collect::<Vec<_>>()
        }
    };
    let reference = order["reference"].as_str().unwrap().to_owned();
    // (Events keep coming while the order moves on: the two reads agree once they
    // see the same moment.)
    let same = eventually(Duration::from_secs(5), || async {
        let by_reference = events_of(reference.clone()).await;
        !by_reference.is_empty() && by_reference == events_of(order_id.clone()).await
    })
    .await;
    assert!(same.is_some(), "by reference as by id");

    // Without a correlation id: the shop's most recent events, oldest first (the
    // console's live stream).
    let recent = |limit: u32| {
        let (shop, admin) = (&shop, &admin);
        async move {
            let events: Vec<Value> = shop
                .client
                .get(shop.url(&format!("/api/ops/events?limit={limit}")))
                .bearer_auth(admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            events
        }
    };
    let all = recent(1000).await;
    assert!(
        all.iter()
            .any(|e| e["type"] == "OrderAccepted" && e["correlation_id"] == order_id.as_str()),
        "the order's acceptance is among the recent events"
    );
    let time = |e: &Value| {
        time::OffsetDateTime::parse(
            e["time"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let times: Vec<_> = all.iter().map(time).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    // Later events only push the most recent ones later in time.
    let last_two = recent(2).await;
    assert_eq!(last_two.len(), 2);
    assert!(time(&last_two[0]) <= time(&last_two[1]));
    assert!(time(&last_two[0]) >= times[times.len() - 2]);
    // A limit outside 1..=1000 is refused, not silently clamped.
    for limit in ["0", "1001", "2147483648", "many"] {
        let refused = shop
            .client
            .get(shop.url(&format!("/api/ops/events?limit={limit}")))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "limit={limit}");
    }
    shop.stop().await;
}

#[tokio::test]
async fn with_customer_down_replica_mode_sells_and_sync_mode_fails_fast() {
    let shop = TestShop::start().await;
    shop.set_price(PRODUCT, 1_290).await;
    let (_, token) = shop.shopper("1 Replica Road").await;
    shop.set_chaos("customer", ChaosMode::Down).await;
    let me = shop
        .client
        .get(shop.url("/api/customers/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        me.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "customer is really down"
    );

    let answer = shop.order(&token, "replica-1", &lines(1)).await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    let order: Value = answer.json().await.unwrap();
    assert_eq!(order["address_source"], "replica");
    assert_eq!(order["shipping_address"]["line1"], "1 Replica Road");

    shop.settings("sync").await;
    let started = Instant::now();
    let answer = shop.order(&token, "sync-1", &lines(1)).await;
    let took = started.elapsed();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers().contains_key("retry-after"));
    assert!(
        answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/problem+json")
    );
    assert!(took < Duration::from_millis(300), "failed in {took:?}");
    assert_eq!(shop.my_orders(&token).await.len(), 1, "no order kept");

    // The ops console shows ordering's breakers on its two sync targets.
    let admin = shop.admin_token().await;
    let status: Value = shop
        .client
        .get(shop.url("/api/ops/status"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ordering = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ordering")
        .unwrap();
    let targets: Vec<&str> = ordering["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["target"].as_str())
        .collect();
    assert!(
        targets.contains(&"customer") && targets.contains(&"payment"),
        "{ordering}"
    );
    let customer = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "customer")
        .unwrap();
    assert_eq!(customer["chaos"]["mode"], "down");
    assert_eq!(customer["healthy"], false);

    // Back up, sync mode reads the customer service live.
    shop.set_chaos("customer", ChaosMode::Ok).await;
    let answer = shop.order(&token, "sync-2", &lines(1)).await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    let order: Value = answer.json().await.unwrap();
    assert_eq!(order["address_source"], "customer_service");
    shop.stop().await;
}

#[tokio::test]
async fn a_stale_replica_shows_its_age_can_be_overridden_and_converges_after_resume() {
    let shop = TestShop::start().await;
    shop.set_price(PRODUCT, 1_290).await;
    let (_, token) = shop.shopper("Old Street 1").await;
    let before = shop.preview(&token).await;

    shop.bus_paused(true).await;
    let changed_at = time::OffsetDateTime::now_utc();
    let answer = shop
        .put(&token, "/api/customers/me/address", address("New Street 2"))
        .await;
    assert_eq!(
        answer.status(),
        StatusCode::OK,
        "the customer service takes the change"
    );

    let stale = shop.preview(&token).await;
    assert_eq!(stale["shipping_address"]["line1"], "Old Street 1");
    assert_eq!(stale["address_as_of"], before["address_as_of"]);
    let as_of = time::OffsetDateTime::parse(
        stale["address_as_of"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        as_of < changed_at,
        "the preview says how old its address is"
    );

    let mut body = lines(1);
    body["shipping_address"] = address("New Street 2");
    let answer = shop.order(&token, "override-1", &body).await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    let order: Value = answer.json().await.unwrap();
    assert_eq!(order["address_source"], "override");
    assert_eq!(order["shipping_address"]["line1"], "New Street 2");

    shop.bus_paused(false).await;
    let resumed = Instant::now();
    let converged = eventually(Duration::from_secs(1), || async {
        shop.preview(&token).await["shipping_address"]["line1"] == "New Street 2"
    })
    .await;
    assert!(
        converged.is_some(),
        "not converged {:?} after resume",
        resumed.elapsed()
    );
    shop.stop().await;
}

#[tokio::test]
async fn one_idempotency_key_makes_one_order_and_one_authorization() {
    let shop = TestShop::start().await;
    shop.set_price(PRODUCT, 1_290).await;
    let (_, token) = shop.shopper("Once Lane 1").await;

    let body = lines(3);
    let attempts = (0..20).map(|_| shop.order(&token, "same-key", &body));
    let answers = futures::future::join_all(attempts).await;
    let mut ids = Vec::new();
    for answer in answers {
        let status = answer.status();
        if status == StatusCode::CREATED {
            let order: Value = answer.json().await.unwrap();
            ids.push(order["id"].as_str().unwrap().to_owned());
        } else {
            // A duplicate that waited too long for the first answer is told to retry.
            assert_eq!(status, StatusCode::CONFLICT, "{status}");
        }
    }
    assert!(!ids.is_empty());
    assert!(ids.iter().all(|id| *id == ids[0]), "one order id: {ids:?}");
    let again = shop.order(&token, "same-key", &lines(3)).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], ids[0].as_str());
    assert_eq!(shop.my_orders(&token).await.len(), 1);

    let payment = rusqlite::Connection::open(shop.dir.path().join("payment.db")).unwrap();
    let authorizations: i64 = payment
        .query_row("SELECT COUNT(*) FROM payment_authorizations", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(authorizations, 1);

    let different = shop.order(&token, "same-key", &lines(4)).await;
    assert_eq!(different.status(), StatusCode::UNPROCESSABLE_ENTITY);
    shop.stop().await;
}

#[tokio::test]
async fn payment_unreachable_means_503_within_the_deadline_and_no_order() {
    // The shop's payment deadline (`shop.rs`), and slack for the answer's own work
    // (the idempotency record, the way back) on a machine running the whole suite.
    const DEADLINE: Duration = Duration::from_millis(900);
    const SLACK: Duration = Duration::from_millis(500);
    let shop = TestShop::start().await;
    shop.set_price(PRODUCT, 1_290).await;
    let (_, token) = shop.shopper("Cashless Close 3").await;
    // Both ways payment can be unreachable: refusing connections, and hanging.
    for (key, chaos) in [
        ("payment-down", json!({"mode": "down"})),
        (
            "payment-hangs",
            json!({"mode": "slow", "latency_ms": 5_000}),
        ),
    ] {
        shop.chaos("payment", chaos).await;
        let started = Instant::now();
        let answer = shop.order(&token, key, &lines(1)).await;
        let took = started.elapsed();
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE, "{key}");
        assert!(answer.headers().contains_key("retry-after"), "{key}");
        assert!(
            took < DEADLINE + SLACK,
            "{key}: answered after {took:?}, past the payment deadline"
        );
        assert!(shop.my_orders(&token).await.is_empty(), "{key}: no order");
    }
    shop.stop().await;
}

#[tokio::test]
async fn orders_are_private_and_bad_checkouts_are_refused() {
    let shop = TestShop::start().await;
    shop.set_price(PRODUCT, 1_290).await;
    let (_, alice) = shop.shopper("Alice Avenue 1").await;
    let (_, bob) = shop.shopper("Bob Boulevard 2").await;
    let answer = shop.order(&alice, "alice-1", &lines(1)).await;
    let order: Value = answer.json().await.unwrap();
    let id = order["id"].as_str().unwrap();

    let peek = shop
        .client
        .get(shop.url(&format!("/api/ordering/orders/{id}")))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(
        peek.status(),
        StatusCode::NOT_FOUND,
        "another customer's order"
    );
    let own = shop
        .client
        .get(shop.url(&format!("/api/ordering/orders/{id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::OK);

    let no_key = shop
        .client
        .post(shop.url("/api/ordering/orders"))
        .bearer_auth(&bob)
        .json(&lines(1))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), StatusCode::BAD_REQUEST);
    let admin = shop.admin_token().await;
    let new_product: Value = shop
        .client
        .post(shop.url("/api/catalog/products"))
        .bearer_auth(&admin)
        .json(&json!({"name": "Unpriced Mug", "description": "Not for sale yet."}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let unpriced = json!({"lines": [{"product_id": new_product["id"], "quantity": 1}]});
    for (case, body) in [
        (
            "unknown product",
            json!({"lines": [{"product_id": Uuid::now_v7(), "quantity": 1}]}),
        ),
        ("product without a price", unpriced),
        ("quantity 0", lines(0)),
        ("quantity 101", lines(101)),
        ("no lines", json!({"lines": []})),
    ] {
        let answer = shop.order(&bob, &format!("bad-{case}"), &body).await;
        assert_eq!(answer.status(), StatusCode::UNPROCESSABLE_ENTITY, "{case}");
    }

    let (_, _, carol) = shop.customer().await;
    let answer = shop.order(&carol, "no-address", &lines(1)).await;
    assert_eq!(
        answer.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "no address known"
    );

    let declined = json!({"token": "tok_declined", "last4": "0002"});
    let answer = shop
        .put(&bob, "/api/customers/me/payment-method", declined)
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let switched = eventually(Duration::from_secs(5), || async {
        shop.preview(&bob).await["payment_method"]["last4"] == "0002"
    })
    .await;
    assert!(switched.is_some());
    let answer = shop.order(&bob, "declined-1", &lines(1)).await;
    assert_eq!(answer.status(), StatusCode::PAYMENT_REQUIRED);
    assert!(shop.my_orders(&bob).await.is_empty(), "no order is kept");
    shop.stop().await;
}

#[tokio::test]
async fn the_storefront_is_composed_and_degrades_per_part() {
    let shop = TestShop::start().await;
    shop.set_price(PRODUCT, 1_290).await;
    let answer = shop
        .client
        .get(shop.url("/api/shop/products"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let degraded = answer
        .headers()
        .get("agora-degraded")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(!degraded.contains("ordering"), "{degraded}");
    let products: Vec<Value> = answer.json().await.unwrap();
    assert!(products.len() >= 12, "the demo products");
    let cup = products.iter().find(|p| p["id"] == PRODUCT).unwrap();
    assert_eq!(cup["name"], "Espresso Cup");
    assert_eq!(cup["price"]["amount_cents"], 1_290);

    shop.set_chaos("ordering", ChaosMode::Down).await;
    let answer = shop
        .client
        .get(shop.url("/api/shop/products"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status(),
        StatusCode::OK,
        "a missing part is not an error"
    );
    let degraded = answer.headers()["agora-degraded"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(degraded.contains("ordering"), "{degraded}");
    let products: Vec<Value> = answer.json().await.unwrap();
    let cup = products.iter().find(|p| p["id"] == PRODUCT).unwrap();
    assert!(cup["price"].is_null());
    assert_eq!(cup["name"], "Espresso Cup", "catalog's part is still there");
    shop.stop().await;
}

#[tokio::test]
async fn a_lost_ordering_store_gets_its_replicas_back_from_the_bus() {
    let shop = TestShop::start().await;
    let (_, email, _) = shop.customer().await;
    let token = shop.token(&email, crate::support::PASSWORD).await;
    let answer = shop
        .put(
            &token,
            "/api/customers/me/address",
            address("Durable Drive 7"),
        )
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let live = eventually(Duration::from_secs(5), || async {
        shop.preview(&token).await["shipping_address"]["line1"] == "Durable Drive 7"
    })
    .await;
    assert!(live.is_some());
    let before = shop.preview(&token).await;
    let dir = shop.stop_keeping_data().await;

    // Ordering's store is gone (its prices with it); the bus still has every event.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("ordering.db{suffix}")));
    }
    let shop = TestShop::start_in(dir, agora_gateway::Limits::unlimited()).await;
    let token = shop.token(&email, crate::support::PASSWORD).await;
    let rebuilt = eventually(Duration::from_secs(5), || async {
        let preview = shop.preview(&token).await;
        preview["shipping_address"] == before["shipping_address"]
            && preview["address_as_of"] == before["address_as_of"]
            && preview["lines"][0]["name"] == before["lines"][0]["name"]
    })
    .await;
    assert!(rebuilt.is_some(), "the replica equals the one built live");
    shop.stop().await;
}
