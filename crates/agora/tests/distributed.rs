//! The shop as fifteen processes: `agora run SERVICE` for every service — two
//! instances each of the gateway, ordering, payment, inventory and fulfilment — on a
//! JetStream server of this test's own and a fresh PostgreSQL database per service
//! (shared by a service's instances), configured by the `AGORA_*` variables alone.
//! A customer checks out through both gateways; one ordering and one payment instance
//! are killed with SIGKILL, and checkouts go on without a failure; every order is
//! shipped; then SIGTERM stops every process cleanly (exit 0) within 10 s.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agora_testkit::{NatsServer, PgDatabase};
use serde_json::{Value, json};

const ADMIN_PASSWORD: &str = "distributed-admin-password";
/// The services with two instances.
const TWICE: [&str; 5] = ["gateway", "ordering", "payment", "inventory", "fulfilment"];
const SERVICES: [&str; 10] = [
    "identity",
    "customer",
    "catalog",
    "inventory",
    "payment",
    "ordering",
    "fulfilment",
    "shipping",
    "notification",
    "gateway",
];

/// One `agora run` child, killed and reaped on drop whatever happens.
struct Service {
    name: &'static str,
    child: Child,
    url: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// Starts `agora run NAME` with `env` and waits for its `agora: ready on URL`.
    fn start(name: &'static str, env: &HashMap<String, String>) -> Service {
        let child = Command::new(env!("CARGO_BIN_EXE_agora"))
            .args(["run", name])
            .env_clear()
            .envs(env)
            .env("AGORA_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start agora run");
        let mut service = Service {
            name,
            child,
            url: String::new(),
        };
        let stdout = service.child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("agora run {name} gets ready"));
            if let Some(url) = line.strip_prefix("agora: ready on ") {
                service.url = url.trim().to_owned();
                return service;
            }
        }
    }

    /// SIGTERM, then the exit status, which must come within `within`.
    fn terminate(mut self, within: Duration) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running {within:?} after SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn secrets(dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(["secrets", "init"])
        .arg(dir)
        .env("AGORA_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .expect("agora secrets init");
    assert!(out.status.success(), "{out:?}");
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.expect("an answer");
    let status = answer.status().as_u16();
    let body = answer.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Polls `check` every 50 ms until it gives `Some`, for at most `within`.
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifteen_processes_lose_an_ordering_and_a_payment_instance_and_every_order_ships() {
    use reqwest::Method;

    let Some(nats) = NatsServer::start() else {
        return;
    };
    let mut databases = HashMap::new();
    for name in SERVICES {
        let Some(db) = PgDatabase::create().await else {
            return;
        };
        databases.insert(name, db);
    }
    let secret_dir = tempfile::tempdir().unwrap();
    secrets(&secret_dir.path().join("secrets"));

    let mut env: HashMap<String, String> = HashMap::from([
        ("AGORA_BUS".into(), nats.url()),
        (
            "AGORA_SECRET_DIR".into(),
            secret_dir.path().join("secrets").display().to_string(),
        ),
        ("AGORA_DEMO".into(), "true".into()),
        ("AGORA_NO_RATE_LIMITS".into(), "true".into()),
        ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
    ]);
    let mut running: Vec<Service> = Vec::new();
    for name in SERVICES {
        env.insert("AGORA_DB".into(), databases[name].url().to_owned());
        let instances = if TWICE.contains(&name) { 2 } else { 1 };
        let mut urls = Vec::new();
        for _ in 0..instances {
            let service = Service::start(name, &env);
            urls.push(service.url.clone());
            running.push(service);
        }
        env.insert(
            format!("AGORA_URL_{}", name.to_ascii_uppercase()),
            urls.join(","),
        );
    }
    let gateways: Vec<String> = running
        .iter()
        .filter(|s| s.name == "gateway")
        .map(|s| s.url.clone())
        .collect();
    let gateway = gateways[0].clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // Every service answers through the gateway.
    let (status, ready) = call(
        &client,
        Method::GET,
        format!("{gateway}/readyz"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{ready}");

    // A customer, from sign-up to a shipped order.
    let (status, _) = call(
        &client,
        Method::POST,
        format!("{gateway}/api/identity/users"),
        None,
        Some(json!({"email": "ten@example.com", "password": "ten processes", "name": "Ten"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, token) = call(
        &client,
        Method::POST,
        format!("{gateway}/api/identity/token"),
        None,
        Some(json!({"email": "ten@example.com", "password": "ten processes"})),
    )
    .await;
    assert_eq!(status, 200);
    let token = token["access_token"].as_str().expect("a token").to_owned();
    for (path, body) in [
        (
            "/api/customers/me/address",
            json!({"line1": "10 Process Row", "city": "Leeds", "postal_code": "LS1 1AA", "country": "GB"}),
        ),
        (
            "/api/customers/me/payment-method",
            json!({"token": "tok_visa", "last4": "4242"}),
        ),
    ] {
        let (status, body) = call(
            &client,
            Method::PUT,
            format!("{gateway}{path}"),
            Some(&token),
            Some(body),
        )
        .await;
        assert!((200..300).contains(&status), "{path}: {status} {body}");
    }
    let lines =
        json!({"lines": [{"product_id": "5eed0000-0000-4000-8000-000000000001", "quantity": 2}]});
    eventually(
        "ordering's replica has the address, the card and the price",
        Duration::from_secs(20),
        || async {
            let (status, preview) = call(
                &client,
                Method::POST,
                format!("{gateway}/api/ordering/checkout/preview"),
                Some(&token),
                Some(lines.clone()),
            )
            .await;
            (status == 200
                && preview["shipping_address"].is_object()
                && preview["payment_method"].is_object())
            .then_some(())
        },
    )
    .await;
    // Twelve orders through both gateways in turn; after the fourth, one ordering
    // and one payment instance are killed (between requests: nothing is in flight).
    let mut orders = Vec::new();
    for n in 0..12 {
        if n == 4 {
            for name in ["ordering", "payment"] {
                let at = running
                    .iter()
                    .position(|s| s.name == name)
                    .expect("running");
                let mut killed = running.remove(at);
                killed.child.kill().expect("SIGKILL");
                killed.child.wait().expect("reaped");
            }
        }
        let through = &gateways[n % gateways.len()];
        let answer = client
            .post(format!("{through}/api/ordering/orders"))
            .bearer_auth(&token)
            .header("Idempotency-Key", format!("fifteen-processes-{n}"))
            .json(&lines)
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let order: Value = answer.json().await.unwrap();
        assert_eq!(status, 201, "order {n}: {order}");
        orders.push(order["id"].as_str().expect("an order id").to_owned());
    }
    for id in &orders {
        let status = eventually("the order ends", Duration::from_secs(30), || async {
            let (_, order) = call(
                &client,
                Method::GET,
                format!("{gateway}/api/ordering/orders/{id}"),
                Some(&token),
                None,
            )
            .await;
            let status = order["status"].as_str().unwrap_or_default().to_owned();
            matches!(status.as_str(), "shipped" | "cancelled").then_some(status)
        })
        .await;
        assert_eq!(status, "shipped", "order {id}");
    }
    let last = orders.last().expect("orders").clone();
    eventually("the shipping mail", Duration::from_secs(20), || async {
        let (_, mails) = call(
            &client,
            Method::GET,
            format!("{gateway}/api/notifications/me"),
            Some(&token),
            None,
        )
        .await;
        mails
            .as_array()
            .is_some_and(|m| {
                m.iter().any(|mail| {
                    mail["kind"] == "order_shipped" && mail["order_id"] == last.as_str()
                })
            })
            .then_some(())
    })
    .await;

    // SIGTERM: each process stops cleanly, the gateway first.
    while let Some(service) = running.pop() {
        let name = service.name;
        let exit = service.terminate(Duration::from_secs(10));
        assert!(exit.success(), "{name} exited with {exit}");
    }
}
