//! The edge under attack: every spelling of a path traversal towards every internal
//! route, slow clients holding connections open, and the per-address limits behind a
//! reverse proxy. Requests that must reach the gateway byte for byte are written on a
//! raw TCP stream (reqwest would normalise their URLs first).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use agora_gateway::{Limits, Rate};
use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::support::{PASSWORD, TestShop, raw};

/// Every public prefix the gateway forwards under.
const PREFIXES: &[&str] = &[
    "/api/identity",
    "/api/customers",
    "/api/catalog",
    "/api/inventory",
    "/api/ordering",
    "/api/shipping",
    "/api/notifications",
];

/// Ways to say "the parent segment" and "a separator" that some reader of a URL
/// takes for `..` and `/`.
const DOTS: &[&str] = &[
    "..",
    "%2e%2e",
    "%2E%2e",
    "%2E%2E",
    ".%2e",
    "%2e.",
    "%252e%252e",
    "%c0%ae%c0%ae",
];
const SEPARATORS: &[&str] = &["/", "%2f", "%2F", "%5c", "%5C", "\\", "%252f"];

/// Every spelling of "`prefix`, then up to the root, then `target`".
fn traversals(prefix: &str, target: &str) -> Vec<String> {
    let depth = prefix.matches('/').count();
    let mut spellings = Vec::new();
    for dot in DOTS {
        for separator in SEPARATORS {
            let up: String = (0..depth).map(|_| format!("{separator}{dot}")).collect();
            spellings.push(format!("{prefix}{up}{target}"));
        }
    }
    let ups = |segment: &str| -> String { (0..depth).map(|_| format!("/{segment}")).collect() };
    spellings.extend([
        format!("{prefix}/.{}{target}", ups("..")),
        format!("{prefix}/./x{}/..{target}", ups("..")),
        format!("{prefix}{}{target}", ups("..;")),
        format!("{prefix}/x;y{}{target}", ups("..")),
        format!("{prefix}/{}{target}", ups("..").replace('/', "//")),
        format!("{prefix}{}/{target}", ups("..")),
        format!("{prefix}/%2e%2e%2f..%5c%2E.{}{target}", ups("%2e%2e")),
        format!("{prefix}{}{target}", ups(".%2E").replace('/', "%2f")),
        format!("/.{target}"),
        format!("/api/..{target}"),
        format!("/api/%2e%2e{target}"),
        target.to_owned(),
    ]);
    spellings
}

#[tokio::test]
async fn no_spelling_of_a_path_reaches_an_internal_route() {
    let shop = TestShop::start().await;
    let addr = shop.shop.addr();
    let (customer_id, email, customer) = shop.customer().await;
    let admin = shop.admin_token().await;
    let order = Uuid::now_v7();
    let authorization = Uuid::now_v7();

    let targets: Vec<(&str, String, &str)> = vec![
        ("GET", format!("/internal/customers/{customer_id}"), ""),
        ("GET", "/internal/ordering/settings".to_owned(), ""),
        (
            "PUT",
            "/internal/ordering/settings".to_owned(),
            r#"{"customer_data":"sync"}"#,
        ),
        ("GET", "/internal/ordering/breakers".to_owned(), ""),
        (
            "POST",
            "/internal/payment/authorizations".to_owned(),
            r#"{"order_id":"0193a5b2-7c1e-7d3a-9f00-1234567890ab","customer_id":"0193a5b2-7c1e-7d3a-9f00-1234567890ab","amount_cents":100,"currency":"EUR","payment_token":"tok_visa"}"#,
        ),
        (
            "GET",
            format!("/internal/payment/authorizations/{authorization}"),
            "",
        ),
        (
            "POST",
            format!("/internal/payment/authorizations/{authorization}/refund"),
            "{}",
        ),
        (
            "POST",
            format!("/internal/payment/authorizations/{authorization}/void"),
            "{}",
        ),
        ("GET", format!("/internal/fulfilment/processes/{order}"), ""),
        ("GET", "/internal/inventory/stock".to_owned(), ""),
        (
            "POST",
            format!("/internal/inventory/reservations/{order}/release"),
            "{}",
        ),
    ];
    let tokens = [None, Some(customer.as_str()), Some(admin.as_str())];

    let mut attempts = Vec::new();
    for (method, target, body) in &targets {
        for prefix in PREFIXES {
            for path in traversals(prefix, target) {
                for token in tokens {
                    let auth = token
                        .map(|t| format!("\r\nAuthorization: Bearer {t}"))
                        .unwrap_or_default();
                    attempts.push((format!("{method} {path} HTTP/1.1{auth}"), *body));
                }
            }
        }
    }
    let total = attempts.len();
    let started = Instant::now();
    let answers: Vec<(String, u16, String)> = futures::stream::iter(attempts)
        .map(|(head, body)| async move {
            let (status, answer) = raw(addr, &head, body).await;
            (head, status, answer)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut refused = 0;
    for (head, status, body) in &answers {
        assert!(
            *status == 400 || *status == 404,
            "{head:?} answered {status}: {body}"
        );
        assert!(!body.contains(&email), "{head:?} leaked the customer");
        if *status == 400 {
            refused += 1;
        }
    }
    println!(
        "{total} traversal attempts: {refused} refused with 400, the rest 404, in {:?}",
        started.elapsed()
    );

    // The admin-only lever did not move, and what would have leaked is there to leak.
    let status: Value = shop
        .client
        .get(shop.url("/api/ops/status"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["settings"]["customer_data"], "replica");
    let me: Value = shop
        .client
        .get(shop.url("/api/customers/me"))
        .bearer_auth(&customer)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(me["email"], email.as_str());
    shop.stop().await;
}

#[tokio::test]
async fn bad_paths_are_refused_before_routing_and_good_ones_still_served() {
    let shop = TestShop::start().await;
    let addr = shop.shop.addr();
    let (_, email, customer) = shop.customer().await;

    // Sign-in through a traversal would escape the credential limiter: refused.
    let credentials = json!({"email": email, "password": PASSWORD}).to_string();
    for path in [
        "/api/identity/x/%2e%2e/token",
        "/api/identity/x/../token",
        "/api/identity/token/",
        "/api/identity//token",
        "/api/identity/token;x",
    ] {
        let (status, body) = raw(addr, &format!("POST {path} HTTP/1.1"), &credentials).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(!body.contains("access_token"), "{path} reached identity");
    }
    // One stable problem type, on the gateway's own routes and the UI as well.
    for path in [
        "/ui/../ui/app.js",
        "/api/ops/%2e%2e/status",
        "/.%2e/healthz",
    ] {
        let (status, body) = raw(addr, &format!("GET {path} HTTP/1.1"), "").await;
        assert_eq!(status, 400, "{path}");
        let problem: Value = serde_json::from_str(&body).expect("problem+json");
        assert_eq!(problem["type"], "urn:agora:problem:bad-path");
    }
    // Not under a public prefix: never forwarded.
    for path in ["/internal/ordering/settings", "/api/payment/authorizations"] {
        let (status, _) = raw(addr, &format!("GET {path} HTTP/1.1"), "").await;
        assert_eq!(status, 404, "{path}");
    }

    // The UI, the gateway's own routes and forwarded ones (with a query) still work.
    for path in [
        "/",
        "/ui/app.js",
        "/ui/style.css",
        "/ui/icon.svg",
        "/healthz",
        "/api/catalog/products",
        "/api/shop/products",
    ] {
        let (status, _) = raw(addr, &format!("GET {path} HTTP/1.1"), "").await;
        assert_eq!(status, 200, "{path}");
    }
    let (status, body) = raw(
        addr,
        &format!("GET /api/ordering/orders?limit=5&x=%2e%2e%2f HTTP/1.1\r\nAuthorization: Bearer {customer}"),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    shop.stop().await;
}

/// Opens a connection and sends half a request's headers; the time it was opened.
async fn half_request(addr: SocketAddr) -> (TcpStream, Instant) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let opened = Instant::now();
    stream
        .write_all(b"GET /api/catalog/products HTTP/1.1\r\nHost: agora\r\nX-Slow: ")
        .await
        .expect("write");
    (stream, opened)
}

/// How long after `opened` the server closed `stream` (EOF or reset), within `limit`.
async fn closed_after(mut stream: TcpStream, opened: Instant, limit: Duration) -> Option<Duration> {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return opened.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn slow_clients_are_cut_off_while_the_shop_answers() {
    const CONNECTIONS: usize = 2_000;
    let header_timeout = Duration::from_secs(2);
    let slack = Duration::from_secs(3);
    let shop = TestShop::start_tuned(|config| {
        config.serve.header_read_timeout = header_timeout;
        config.serve.max_connections_per_client = Some(4 * CONNECTIONS);
    })
    .await;
    let addr = shop.shop.addr();
    let started = Instant::now();

    // Each connection is watched from the moment it is open: when it closes is
    // measured, not guessed.
    let mut watchers = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let (stream, opened) = half_request(addr).await;
        watchers.push(tokio::spawn(closed_after(
            stream,
            opened,
            header_timeout + slack,
        )));
    }
    let opening = started.elapsed();

    // The shop answers meanwhile.
    let asked = Instant::now();
    for path in ["/healthz", "/api/shop/products", "/api/catalog/products"] {
        let answer = shop.client.get(shop.url(path)).send().await.expect(path);
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
    }
    let answered = asked.elapsed();

    let mut after = Vec::with_capacity(CONNECTIONS);
    for watcher in watchers {
        after.push(
            watcher
                .await
                .expect("watcher")
                .expect("closed within the header timeout + 3 s"),
        );
    }
    after.sort();
    let (first, median, last) = (after[0], after[after.len() / 2], after[after.len() - 1]);
    println!(
        "{CONNECTIONS} half-sent requests opened in {opening:?}; 3 requests answered meanwhile in {answered:?}; \
         closed {first:?} (first) / {median:?} (median) / {last:?} (last) after opening, header timeout {header_timeout:?}; \
         test took {:?}",
        started.elapsed()
    );
    // Not closed early for some other reason: it is the header timeout that does it.
    assert!(
        first >= header_timeout - Duration::from_millis(250),
        "a connection closed {first:?} after opening, before the header timeout"
    );

    // And the shop still answers afterwards.
    let answer = shop
        .client
        .get(shop.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(answer.status(), StatusCode::OK);
    shop.stop().await;
}

#[tokio::test]
async fn connections_over_the_per_address_cap_are_closed_at_once() {
    const CAP: usize = 50;
    const OVER: usize = 10;
    let shop = TestShop::start_tuned(|config| {
        config.serve.header_read_timeout = Duration::from_secs(10);
        config.serve.max_connections_per_client = Some(CAP);
    })
    .await;
    let addr = shop.shop.addr();
    let mut watchers = Vec::new();
    for _ in 0..CAP + OVER {
        let (stream, opened) = half_request(addr).await;
        watchers.push(tokio::spawn(closed_after(
            stream,
            opened,
            Duration::from_secs(2),
        )));
    }
    // Another address is served meanwhile (127.0.0.2 is loopback too on Linux).
    let other = reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let answer = other
        .get(shop.url("/healthz"))
        .send()
        .await
        .expect("healthz from 127.0.0.2");
    assert_eq!(answer.status(), StatusCode::OK);

    let mut closed = 0;
    for watcher in watchers {
        if let Some(after) = watcher.await.expect("watcher") {
            assert!(
                after < Duration::from_secs(1),
                "closed only after {after:?}"
            );
            closed += 1;
        }
    }
    // The ones over the cap were closed at once; the others are held (for 10 s).
    assert_eq!(closed, OVER, "{closed} of {} closed at once", CAP + OVER);
    shop.stop().await;
}

/// Signs in with a wrong password, claiming to be `claimed` in `X-Forwarded-For`.
async fn failed_sign_in(shop: &TestShop, claimed: &str) -> StatusCode {
    shop.client
        .post(shop.url("/api/identity/token"))
        .header("x-forwarded-for", claimed)
        .json(&json!({"email": "nobody@example.com", "password": "wrong password!"}))
        .send()
        .await
        .expect("sign in")
        .status()
}

#[tokio::test]
async fn forwarded_headers_count_only_from_a_trusted_proxy() {
    let limits = Limits {
        per_client: None,
        per_user: None,
        credentials: Some(Rate::new(2, 0.001)),
    };
    let direct = TestShop::start_tuned(|config| config.limits = limits).await;
    assert_eq!(
        failed_sign_in(&direct, "1.1.1.1").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        failed_sign_in(&direct, "1.1.1.1").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        failed_sign_in(&direct, "2.2.2.2").await,
        StatusCode::TOO_MANY_REQUESTS,
        "an untrusted peer chose its own limit key"
    );
    direct.stop().await;

    let proxied = TestShop::start_tuned(|config| {
        config.limits = limits;
        config.trusted_proxies = vec![IpAddr::from([127, 0, 0, 1])];
    })
    .await;
    assert_eq!(
        failed_sign_in(&proxied, "1.1.1.1").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        failed_sign_in(&proxied, "1.1.1.1").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        failed_sign_in(&proxied, "1.1.1.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        failed_sign_in(&proxied, "6.6.6.6, 2.2.2.2").await,
        StatusCode::UNAUTHORIZED,
        "the client the trusted proxy names has a bucket of its own"
    );
    assert_eq!(
        failed_sign_in(&proxied, "2.2.2.2, 1.1.1.1").await,
        StatusCode::TOO_MANY_REQUESTS,
        "what the client put on the left does not count"
    );
    proxied.stop().await;
}

#[tokio::test]
async fn honest_sign_ins_cost_little_and_password_changes_are_limited_per_user() {
    let shop = TestShop::start_tuned(|config| {
        config.limits = Limits {
            per_client: None,
            per_user: None,
            credentials: Some(Rate::new(4, 0.001)),
        };
    })
    .await;
    // A busy office behind one address: sign-up, then many successful sign-ins.
    let (_, email, token) = shop.customer().await;
    for _ in 0..20 {
        shop.token(&email, PASSWORD).await;
    }
    // Guessing the current password with a stolen token: limited per user.
    let change = |current: &'static str| {
        shop.client
            .put(shop.url("/api/identity/users/me/password"))
            .bearer_auth(&token)
            .json(&json!({"current_password": current, "new_password": "another long password"}))
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(change("a wrong guess!").await.expect("change").status());
    }
    assert!(
        statuses
            .iter()
            .take(4)
            .all(|s| *s != StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    shop.stop().await;
}

#[tokio::test]
async fn payment_tokens_never_show_in_the_ops_events() {
    let shop = TestShop::start().await;
    let (customer_id, _, customer) = shop.customer().await;
    let admin = shop.admin_token().await;
    let answer = shop
        .client
        .put(shop.url("/api/customers/me/payment-method"))
        .bearer_auth(&customer)
        .json(&json!({"token": "tok_visa", "last4": "4242"}))
        .send()
        .await
        .expect("payment method");
    assert_eq!(answer.status(), StatusCode::OK);

    let events = |query: String| {
        let (shop, admin) = (&shop, &admin);
        async move {
            shop.client
                .get(shop.url(&format!("/api/ops/events?{query}")))
                .bearer_auth(admin)
                .send()
                .await
                .expect("events")
                .text()
                .await
                .expect("text")
        }
    };
    let changed = crate::support::eventually(Duration::from_secs(5), || async {
        events(format!("correlation_id={customer_id}"))
            .await
            .contains("PaymentMethodChanged")
    })
    .await;
    assert!(changed.is_some(), "the change reached the timeline");
    for query in [
        format!("correlation_id={customer_id}"),
        "limit=1000".to_owned(),
    ] {
        let body = events(query).await;
        assert!(!body.contains("tok_visa"), "a payment token in {body}");
        assert!(body.contains("[redacted]"), "{body}");
    }
    shop.stop().await;
}
