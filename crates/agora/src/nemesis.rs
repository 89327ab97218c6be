//! `agora nemesis`: a seeded schedule of faults under a steady stream of checkouts,
//! then heal, wait for quiet and check that nothing was lost, stuck, doubled or held.
//!
//! The shop runs as a child `agora up` on a fixed port and its own data directory, so
//! that the whole process can be killed with SIGKILL and started again on the same
//! data. The faults, one at a time with calm between them, each for a few seconds:
//! every service `down`, `slow` or `flaky` in turn, the payment provider down, the bus
//! paused, and the process killed and restarted. The same seed gives the same
//! schedule. After the last fault: every order the shop accepted must reach a terminal
//! state, and `agora audit` must find nothing (no order left open, no capture for an
//! order that ended, no hold for an order that is over or unknown once the orphan hold
//! time passed, no shipped order without a capture, no reservation left open, no
//! message sent twice, no event left in an outbox).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const ADMIN_PASSWORD: &str = "nemesis-admin-password";
const PASSWORD: &str = "nemesis customer password";
/// Orphan holds are voided after this: short, so that the check can wait for it, and
/// longer than any fault of the schedule delays an accepted order's event.
const ORPHAN_HOLD: Duration = Duration::from_secs(15);
const SERVICES: [&str; 9] = [
    "identity",
    "customer",
    "catalog",
    "inventory",
    "payment",
    "ordering",
    "fulfilment",
    "shipping",
    "notification",
];

#[derive(Debug, Args)]
pub struct NemesisArgs {
    /// The seed of the fault schedule and the load: the same seed, the same schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of faults under load.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Checkouts per second offered throughout.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Keep the shop's data here (a temporary directory, removed after, otherwise).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// The child `agora up`.
struct Shop(agora::child::Agora);

impl Shop {
    fn start(data: &Path, port: u16) -> anyhow::Result<Shop> {
        let mut command = Command::new(std::env::current_exe().context("this program's path")?);
        command
            .args([
                "up",
                "--no-rate-limits",
                "--port",
                &port.to_string(),
                "--data-dir",
            ])
            .arg(data)
            .env("AGORA_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("AGORA_ORPHAN_HOLD_SECS", ORPHAN_HOLD.as_secs().to_string())
            .env("RUST_LOG", "error")
            .stderr(Stdio::null());
        Ok(Shop(agora::child::Agora::start(
            command,
            Duration::from_secs(60),
        )?))
    }

    /// SIGKILL, and waits until it is gone.
    fn kill(mut self) {
        self.0.kill();
    }

    /// SIGINT (a clean stop), waiting up to `within`; then SIGKILL (on drop).
    fn stop(mut self, within: Duration) -> anyhow::Result<()> {
        self.0.signal("INT", within).map(drop)
    }
}

/// One fault of the schedule.
#[derive(Debug, Clone)]
enum Fault {
    Chaos { service: &'static str, body: Value },
    ProviderDown,
    BusPaused,
    Kill,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Chaos { service, body } => write!(f, "{service} {body}"),
            Fault::ProviderDown => f.write_str("payment provider down"),
            Fault::BusPaused => f.write_str("bus paused"),
            Fault::Kill => f.write_str("kill -9 and restart"),
        }
    }
}

fn pick(rng: &mut StdRng) -> Fault {
    match rng.gen_range(0..10) {
        0 => Fault::ProviderDown,
        1 => Fault::BusPaused,
        2 => Fault::Kill,
        _ => {
            let service = SERVICES[rng.gen_range(0..SERVICES.len())];
            let body = match rng.gen_range(0..3) {
                0 => json!({"mode": "down"}),
                1 => json!({"mode": "slow", "latency_ms": rng.gen_range(200..1500)}),
                _ => json!({"mode": "flaky", "error_rate": 0.3}),
            };
            Fault::Chaos { service, body }
        }
    }
}

/// What the load saw.
#[derive(Debug, Default)]
struct Load {
    offered: u64,
    /// Accepted orders: `(customer index, order id)`.
    accepted: Vec<(usize, String)>,
    refused: u64,
}

pub async fn run(args: NemesisArgs) -> anyhow::Result<()> {
    let temp;
    let data = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().join("shop")
        }
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    println!(
        "agora nemesis: seed {}, {} s of faults, {} checkouts/s, data in {}",
        args.seed,
        args.duration,
        args.rate,
        data.display()
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut shop = Some(Shop::start(&data, port)?);
    let admin = sign_in(&client, &url, "admin@agora.local", ADMIN_PASSWORD).await?;
    let mut customers = Vec::new();
    for n in 0..8 {
        customers.push(customer(&client, &url, args.seed, n).await?);
    }

    // The load: a checkout every 1/rate s, whatever happens, each with its own key.
    let load = Arc::new(Mutex::new(Load::default()));
    let stop_load = Arc::new(tokio::sync::Notify::new());
    let load_task = {
        let (client, url, customers) = (client.clone(), url.clone(), customers.clone());
        let (load, stop_load) = (load.clone(), stop_load.clone());
        let seed = args.seed;
        let every = Duration::from_secs_f64(1.0 / args.rate.clamp(0.1, 1_000.0));
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
            let mut tick = tokio::time::interval(every);
            let mut inflight = tokio::task::JoinSet::new();
            for n in 0u64.. {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop_load.notified() => break,
                }
                let who = rng.gen_range(0..customers.len());
                let product = format!(
                    "5eed0000-0000-4000-8000-0000000000{:02x}",
                    rng.gen_range(1..=12)
                );
                let (client, url, token, load) = (
                    client.clone(),
                    url.clone(),
                    customers[who].clone(),
                    load.clone(),
                );
                inflight.spawn(async move {
                    let answer = client
                        .post(format!("{url}/api/ordering/orders"))
                        .bearer_auth(&token)
                        .header("Idempotency-Key", format!("nemesis-{seed}-{n}"))
                        .json(&json!({"lines": [{"product_id": product, "quantity": 1}]}))
                        .send()
                        .await;
                    let id = match answer {
                        Ok(answer) if answer.status() == 201 => answer
                            .json::<Value>()
                            .await
                            .ok()
                            .and_then(|order| order["id"].as_str().map(str::to_owned)),
                        _ => None,
                    };
                    let mut load = load.lock();
                    load.offered += 1;
                    match id {
                        Some(id) => load.accepted.push((who, id)),
                        None => load.refused += 1,
                    }
                });
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
        })
    };

    // The faults.
    let mut rng = StdRng::seed_from_u64(args.seed);
    let started = Instant::now();
    let mut schedule = Vec::new();
    while started.elapsed() < Duration::from_secs(args.duration) {
        let calm = Duration::from_millis(rng.gen_range(500..2_000));
        tokio::time::sleep(calm).await;
        let fault = pick(&mut rng);
        let lasts = Duration::from_millis(rng.gen_range(1_000..4_000));
        let at = started.elapsed();
        println!(
            "{:>7.1} s  {fault} for {:.1} s",
            at.as_secs_f64(),
            lasts.as_secs_f64()
        );
        match &fault {
            Fault::Kill => {
                if let Some(running) = shop.take() {
                    running.kill();
                }
                tokio::time::sleep(lasts).await;
                shop = Some(Shop::start(&data, port)?);
            }
            Fault::Chaos { service, body } => {
                ops(
                    &client,
                    &url,
                    &admin,
                    &format!("/api/ops/chaos/{service}"),
                    body,
                )
                .await?;
                tokio::time::sleep(lasts).await;
                let ok = json!({"mode": "ok"});
                ops(
                    &client,
                    &url,
                    &admin,
                    &format!("/api/ops/chaos/{service}"),
                    &ok,
                )
                .await?;
            }
            Fault::ProviderDown => {
                let path = "/api/ops/chaos/payment-provider";
                ops(&client, &url, &admin, path, &json!({"mode": "down"})).await?;
                tokio::time::sleep(lasts).await;
                ops(&client, &url, &admin, path, &json!({"mode": "ok"})).await?;
            }
            Fault::BusPaused => {
                ops(
                    &client,
                    &url,
                    &admin,
                    "/api/ops/bus",
                    &json!({"paused": true}),
                )
                .await?;
                tokio::time::sleep(lasts).await;
                ops(
                    &client,
                    &url,
                    &admin,
                    "/api/ops/bus",
                    &json!({"paused": false}),
                )
                .await?;
            }
        }
        schedule.push((at, fault, lasts));
    }
    stop_load.notify_one();
    load_task.await?;
    let load = std::mem::take(&mut *load.lock());
    println!(
        "load: {} checkouts offered, {} accepted, {} refused (503s, timeouts, the process gone)",
        load.offered,
        load.accepted.len(),
        load.refused
    );

    // Quiet: every accepted order ends.
    let mut violations = Vec::new();
    let quiet = Instant::now();
    let mut shipped = 0;
    let mut cancelled = 0;
    for (who, id) in &load.accepted {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status = order_status(&client, &url, &customers[*who], id).await;
            match status.as_deref() {
                Some("shipped") => {
                    shipped += 1;
                    break;
                }
                Some("cancelled") => {
                    cancelled += 1;
                    break;
                }
                _ if Instant::now() > deadline => {
                    violations.push(format!(
                        "order {id} is {} two minutes after the last fault",
                        status.as_deref().unwrap_or("unknown to the shop")
                    ));
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    println!(
        "quiet after {:.1} s: {shipped} shipped, {cancelled} cancelled",
        quiet.elapsed().as_secs_f64()
    );
    // Orphan holds (checkouts cut off between authorization and order) are voided
    // after the hold time: give the sweep its time, then stop the shop cleanly.
    tokio::time::sleep(ORPHAN_HOLD + Duration::from_secs(3)).await;
    if let Some(running) = shop.take() {
        running.stop(Duration::from_secs(30))?;
    }
    for finding in crate_audit(&data).await? {
        violations.push(format!("audit: {finding}"));
    }

    if violations.is_empty() {
        println!(
            "agora nemesis: seed {}: {} faults, {} orders, nothing lost, stuck, doubled or held",
            args.seed,
            schedule.len(),
            load.accepted.len()
        );
        Ok(())
    } else {
        for violation in &violations {
            println!("VIOLATION {violation}");
        }
        bail!(
            "seed {}: {} violation(s); rerun with --seed {} --data-dir DIR to keep the data",
            args.seed,
            violations.len(),
            args.seed
        )
    }
}

async fn crate_audit(data: &Path) -> anyhow::Result<Vec<agora::audit::Finding>> {
    agora::audit::audit_with(data, ORPHAN_HOLD).await
}

async fn ops(
    client: &reqwest::Client,
    url: &str,
    admin: &str,
    path: &str,
    body: &Value,
) -> anyhow::Result<()> {
    // The admin's token outlives identity's faults; a request cut off by one is
    // tried again.
    for _ in 0..50 {
        let sent = client
            .put(format!("{url}{path}"))
            .bearer_auth(admin)
            .json(body)
            .send()
            .await;
        if matches!(&sent, Ok(answer) if answer.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("PUT {path} {body} never went through")
}

async fn sign_in(
    client: &reqwest::Client,
    url: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let body: Value = client
        .post(format!("{url}/api/identity/token"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("a token")
}

/// A customer with an address and a card that ordering knows; their token.
async fn customer(
    client: &reqwest::Client,
    url: &str,
    seed: u64,
    n: usize,
) -> anyhow::Result<String> {
    let email = format!("nemesis-{seed}-{n}@example.com");
    client
        .post(format!("{url}/api/identity/users"))
        .json(&json!({"email": email, "password": PASSWORD, "name": format!("Nemesis {n}")}))
        .send()
        .await?
        .error_for_status()?;
    let token = sign_in(client, url, &email, PASSWORD).await?;
    for (path, body) in [
        (
            "/api/customers/me/address",
            json!({"line1": "1 Chaos Row", "city": "Leeds", "postal_code": "LS1 1AA", "country": "GB"}),
        ),
        (
            "/api/customers/me/payment-method",
            json!({"token": "tok_visa", "last4": "4242"}),
        ),
    ] {
        client
            .put(format!("{url}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let preview: Value = client
            .post(format!("{url}/api/ordering/checkout/preview"))
            .bearer_auth(&token)
            .json(&json!({"lines": [{"product_id": "5eed0000-0000-4000-8000-000000000001", "quantity": 1}]}))
            .send()
            .await?
            .json()
            .await?;
        if preview["shipping_address"].is_object() && preview["payment_method"].is_object() {
            return Ok(token);
        }
        if Instant::now() > deadline {
            bail!("ordering never learnt customer {n}'s address and card");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn order_status(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    id: &str,
) -> Option<String> {
    let answer = client
        .get(format!("{url}/api/ordering/orders/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    let order: Value = answer.json().await.ok()?;
    order["status"].as_str().map(str::to_owned)
}
