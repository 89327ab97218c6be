//! The internal plane and secrets at rest: every `/internal` route of every service,
//! called on the service's own listener, takes a service token for that service and
//! nothing else; the data directory and every file in it are the owner's only.

use agora::secrets::INTERNAL_KEY_FILE;
use agora_auth::InternalKey;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{TestShop, eventually};

/// Every internal route of the shop: `(service, method, path)`.
fn internal_routes(customer: Uuid, order: Uuid) -> Vec<(&'static str, Method, String)> {
    let authorization = Uuid::now_v7();
    let feeds = agora::runtime::ServiceName::ALL
        .into_iter()
        .filter(|&service| service != agora::runtime::ServiceName::Gateway)
        .map(|service| {
            (
                service.as_str(),
                Method::GET,
                format!("/internal/{service}/events?after=0"),
            )
        });
    let mut routes = vec![
        (
            "customer",
            Method::GET,
            format!("/internal/customers/{customer}"),
        ),
        (
            "ordering",
            Method::GET,
            "/internal/ordering/settings".into(),
        ),
        (
            "ordering",
            Method::PUT,
            "/internal/ordering/settings".into(),
        ),
        (
            "ordering",
            Method::GET,
            "/internal/ordering/breakers".into(),
        ),
        (
            "payment",
            Method::POST,
            "/internal/payment/authorizations".into(),
        ),
        (
            "payment",
            Method::GET,
            format!("/internal/payment/authorizations/{authorization}"),
        ),
        (
            "payment",
            Method::POST,
            format!("/internal/payment/authorizations/{authorization}/refund"),
        ),
        (
            "payment",
            Method::POST,
            format!("/internal/payment/authorizations/{authorization}/void"),
        ),
        (
            "fulfilment",
            Method::GET,
            format!("/internal/fulfilment/processes/{order}"),
        ),
        (
            "inventory",
            Method::GET,
            format!("/internal/inventory/stock?ids={order}"),
        ),
        (
            "inventory",
            Method::POST,
            format!("/internal/inventory/reservations/{order}/release"),
        ),
    ];
    routes.extend(feeds);
    routes
}

/// A body each route would take, so that only the token decides.
fn body_for(path: &str) -> Value {
    if path.ends_with("settings") {
        json!({"customer_data": "sync"})
    } else if path.ends_with("/authorizations") {
        json!({
            "request_id": Uuid::now_v7(), "order_id": Uuid::now_v7(),
            "customer_id": Uuid::now_v7(), "amount_cents": 100, "currency": "EUR",
            "payment_token": "tok_visa",
        })
    } else {
        json!({"order_id": Uuid::now_v7(), "reason": "timeout"})
    }
}

#[tokio::test]
async fn every_internal_route_takes_a_service_token_for_its_service_only() {
    let shop = TestShop::start().await;
    let plane = InternalKey::load(&shop.dir.path().join(INTERNAL_KEY_FILE)).expect("the key");
    let (customer, _, customer_token) = shop.customer().await;
    let admin = shop.admin_token().await;
    let stranger = InternalKey::generate();
    let order = Uuid::now_v7();

    for (service, method, path) in internal_routes(customer, order) {
        let url = format!("{}{path}", shop.shop.service_url(service).unwrap());
        let send = async |authorization: Option<String>| {
            let mut request = shop
                .client
                .request(method.clone(), &url)
                .json(&body_for(&path));
            if let Some(token) = authorization {
                request = request.bearer_auth(token);
            }
            let answer = request.send().await.unwrap();
            let status = answer.status();
            let content_type = answer
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, content_type)
        };
        let problem = Some("application/problem+json".to_owned());
        let other_service = if service == "payment" {
            "customer"
        } else {
            "payment"
        };
        let refused = [
            ("no token", None, StatusCode::UNAUTHORIZED),
            (
                "a customer's token",
                Some(customer_token.clone()),
                StatusCode::FORBIDDEN,
            ),
            (
                "an admin's token",
                Some(admin.clone()),
                StatusCode::FORBIDDEN,
            ),
            (
                "a token for another service",
                Some(plane.service("gateway").token_for(other_service).unwrap()),
                StatusCode::UNAUTHORIZED,
            ),
            (
                "another deployment's token",
                Some(stranger.service("gateway").token_for(service).unwrap()),
                StatusCode::UNAUTHORIZED,
            ),
        ];
        for (what, token, expected) in refused {
            assert_eq!(
                send(token).await,
                (expected, problem.clone()),
                "{method} {path} on {service} with {what}"
            );
        }
        let (status, _) = send(Some(plane.service("gateway").token_for(service).unwrap())).await;
        assert!(
            status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
            "{method} {path} on {service} with its service token: {status}"
        );
        if path.ends_with("settings") && method == Method::PUT {
            // The lever moved: put it back through the ops API, as an admin would.
            let answer = shop
                .client
                .put(shop.url("/api/ops/settings"))
                .bearer_auth(&admin)
                .json(&json!({"customer_data": "replica"}))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
        }
    }

    // The gateway's own internal calls carry its token: the storefront has stock and
    // the ops console sees ordering's setting and breakers.
    let products: Value = shop
        .client
        .get(shop.url("/api/shop/products"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(products[0]["available"].is_number(), "{products}");
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
    assert_eq!(status["settings"]["customer_data"], "replica", "{status}");
    let ordering = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ordering")
        .unwrap();
    assert!(
        !ordering["breakers"].as_array().unwrap().is_empty(),
        "{ordering}"
    );
    shop.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_and_every_file_in_it_are_the_owners_only() {
    use std::os::unix::fs::PermissionsExt;

    let shop = TestShop::start().await;
    // Some writes, so that every store has its WAL and shared-memory files.
    let (_, _, token) = shop.customer().await;
    let answer = shop
        .client
        .put(shop.url("/api/customers/me/address"))
        .bearer_auth(&token)
        .json(&json!({"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let dir = shop.dir.path().to_path_buf();
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    // This directory existed before the shop (the shop only warns about its mode);
    // the files in it are the shop's.
    let files = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect::<Vec<_>>()
    };
    let wal = eventually(std::time::Duration::from_secs(5), || async {
        files()
            .iter()
            .any(|p| p.to_string_lossy().ends_with("customer.db-wal"))
    })
    .await;
    assert!(wal.is_some(), "customer's WAL file exists");
    let files = files();
    for name in [
        "bus.db",
        "identity.db",
        "customer.db",
        "gateway.db",
        INTERNAL_KEY_FILE,
    ] {
        assert!(
            files.iter().any(|p| p.ends_with(name)),
            "{name} is in {files:?}"
        );
    }
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    shop.stop().await;

    // A shop whose data directory does not exist yet creates it 0700.
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = root.path().join("data");
    let mut config = agora::shop::ShopConfig::new(&data);
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.limits = agora_gateway::Limits::unlimited();
    let fresh = agora::shop::Shop::start(config).await.expect("starts");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(
        mode(&data.join(agora_identity::ADMIN_PASSWORD_FILE)),
        0o600,
        "the generated admin password"
    );
    fresh.shutdown().await;
}

/// A service's feed holds what it published: a sign-up is in customer's, in order.
#[tokio::test]
async fn a_service_serves_its_own_events_on_its_feed() {
    let shop = TestShop::start().await;
    let plane = InternalKey::load(&shop.dir.path().join(INTERNAL_KEY_FILE)).expect("the key");
    let (customer, _, _) = shop.customer().await;
    let url = format!(
        "{}/internal/customer/events",
        shop.shop.service_url("customer").unwrap()
    );
    let token = plane.service("ordering").token_for("customer").unwrap();
    let sign_up = async || -> Option<Value> {
        let page: Value = shop
            .client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event"]["data"]["customer_id"] == customer.to_string())
            .cloned()
    };
    eventually(std::time::Duration::from_secs(10), || async {
        sign_up().await.is_some()
    })
    .await;
    let found = sign_up().await;
    let event = found.expect("the sign-up in customer's feed");
    assert_eq!(event["event"]["type"], "CustomerRegistered", "{event}");
    assert!(event["position"].as_u64().unwrap() >= 1);
    // The public listener serves no feed of its own, whoever asks.
    let gateway_token = plane.service("ordering").token_for("gateway").unwrap();
    let public = shop
        .client
        .get(shop.url("/internal/gateway/events?after=0"))
        .bearer_auth(gateway_token)
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    shop.stop().await;
}
