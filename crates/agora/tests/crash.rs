//! kill -9 under load: a child `agora up` is killed in the middle of 500 orders and
//! started again on the same data. Every accepted order is still there, every order
//! reaches a terminal state, and `agora audit` finds nothing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agora::child::Agora;
use serde_json::{Value, json};

const ADMIN_PASSWORD: &str = "crash-test-admin-password";
const PASSWORD: &str = "crash test password";
const ORDERS: usize = 500;
const CUSTOMERS: usize = 10;

fn start(data: &Path) -> Agora {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agora"));
    command
        .args(["up", "--port", "0", "--no-rate-limits", "--data-dir"])
        .arg(data)
        .env("AGORA_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null());
    Agora::start(command, Duration::from_secs(60)).expect("agora up gets ready")
}

async fn token(client: &reqwest::Client, url: &str, email: &str, password: &str) -> String {
    let body: Value = client
        .post(format!("{url}/api/identity/token"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().expect("a token").to_owned()
}

/// Signs up a customer with an address and a card, and waits until ordering knows both.
async fn customer(client: &reqwest::Client, url: &str, n: usize) -> (String, String) {
    let email = format!("crash-{n}@example.com");
    client
        .post(format!("{url}/api/identity/users"))
        .json(&json!({"email": email, "password": PASSWORD, "name": format!("Crash {n}")}))
        .send()
        .await
        .unwrap();
    let token = token(client, url, &email, PASSWORD).await;
    for (path, body) in [
        (
            "/api/customers/me/address",
            json!({"line1": "1 Crash Court", "city": "Leeds", "postal_code": "LS1 1AA", "country": "GB"}),
        ),
        (
            "/api/customers/me/payment-method",
            json!({"token": "tok_visa", "last4": "4242"}),
        ),
    ] {
        let answer = client
            .put(format!("{url}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let preview: Value = client
            .post(format!("{url}/api/ordering/checkout/preview"))
            .bearer_auth(&token)
            .json(&json!({"lines": [{"product_id": product(0), "quantity": 1}]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if preview["shipping_address"].is_object() && preview["payment_method"].is_object() {
            return (email, token);
        }
        assert!(Instant::now() < deadline, "replica never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn product(n: usize) -> String {
    format!("5eed0000-0000-4000-8000-0000000000{:02x}", n % 12 + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_nothing_and_the_audit_is_clean() {
    let data = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut shop = start(data.path());
    let mut customers = Vec::new();
    for n in 0..CUSTOMERS {
        customers.push(customer(&client, &shop.url, n).await);
    }

    // The load: 500 orders from 10 customers, 10 at a time; killed once 100 are in.
    let accepted = Arc::new(parking_lot::Mutex::new(Vec::<(usize, String)>::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..10 {
        let (client, url, customers) = (client.clone(), shop.url.clone(), customers.clone());
        let (accepted, next) = (accepted.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= ORDERS {
                    return;
                }
                let who = n % CUSTOMERS;
                let answer = client
                    .post(format!("{url}/api/ordering/orders"))
                    .bearer_auth(&customers[who].1)
                    .header("Idempotency-Key", format!("crash-order-{n}"))
                    .json(&json!({"lines": [{"product_id": product(n), "quantity": 1}]}))
                    .send()
                    .await;
                match answer {
                    Ok(answer) if answer.status() == 201 => {
                        let order: Value = answer.json().await.unwrap();
                        let id = order["id"].as_str().unwrap().to_owned();
                        accepted.lock().push((who, id));
                    }
                    // The shop is gone (or going): this order's outcome is unknown.
                    _ => return,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted.lock().len() < 100 {
        assert!(Instant::now() < deadline, "the load never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shop.process.kill().expect("kill -9");
    shop.process.wait().unwrap();
    for worker in workers {
        worker.await.unwrap();
    }
    let accepted = accepted.lock().clone();
    assert!(
        accepted.len() >= 100 && accepted.len() < ORDERS,
        "killed mid-load"
    );

    // Restarted on the same data: every accepted order is there, and every order ends.
    let shop = start(data.path());
    let mut tokens = Vec::new();
    for (email, _) in &customers {
        tokens.push(token(&client, &shop.url, email, PASSWORD).await);
    }
    for (who, id) in &accepted {
        let answer = client
            .get(format!("{}/api/ordering/orders/{id}", shop.url))
            .bearer_auth(&tokens[*who])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "accepted order {id} was lost");
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut open = Vec::new();
        for token in &tokens {
            let orders: Vec<Value> = client
                .get(format!("{}/api/ordering/orders", shop.url))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            open.extend(
                orders
                    .into_iter()
                    .filter(|o| o["status"] != "shipped" && o["status"] != "cancelled")
                    .map(|o| format!("{} {}", o["id"], o["status"])),
            );
        }
        if open.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "orders never ended: {open:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Quiet now; stop cleanly, then audit.
    let status = Command::new("kill")
        .args(["-INT", &shop.process.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut shop = shop;
    let exit = shop.process.wait().unwrap();
    assert!(exit.success(), "{exit}");
    let audit = Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(["audit", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stdout)
    );
}
