//! The distributed topology under faults: `agora run SERVICE` for every service — two
//! instances each of the gateway, ordering, payment, inventory and fulfilment, fifteen
//! processes — on a 3-node JetStream cluster and a PostgreSQL server of this test's
//! own (a database per service, shared by its instances), configured by the `AGORA_*`
//! variables alone. Under a steady stream of checkouts through both gateways: SIGKILL
//! one ordering and one payment instance, kill one NATS node, restart PostgreSQL the
//! hard way. Then every accepted order ends, nothing happened twice (one confirmation
//! per order, one shipping mail per shipped order), SIGTERM stops every process
//! cleanly (exit 0) within 10 s, and `agora audit` of the PostgreSQL stores is clean.

use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use agora::runtime::ServiceName;
use agora::topology::{Topology, TopologyConfig};
use agora_testkit::{NatsCluster, PgServer};
use serde_json::{Value, json};

const ADMIN_PASSWORD: &str = "distributed-admin-password";
/// The services with two instances.
const TWICE: [ServiceName; 5] = [
    ServiceName::Gateway,
    ServiceName::Ordering,
    ServiceName::Payment,
    ServiceName::Inventory,
    ServiceName::Fulfilment,
];

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

/// Signs up customer `n` with an address and a card; its token once ordering's
/// replica knows both.
async fn customer(client: &reqwest::Client, gateway: &str, n: usize) -> String {
    use reqwest::Method;
    let email = format!("topology-{n}@example.com");
    let (status, _) = call(
        client,
        Method::POST,
        format!("{gateway}/api/identity/users"),
        None,
        Some(json!({"email": email, "password": "topology test", "name": format!("Topology {n}")})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, token) = call(
        client,
        Method::POST,
        format!("{gateway}/api/identity/token"),
        None,
        Some(json!({"email": email, "password": "topology test"})),
    )
    .await;
    assert_eq!(status, 200);
    let token = token["access_token"].as_str().expect("a token").to_owned();
    for (path, body) in [
        (
            "/api/customers/me/address",
            json!({"line1": "15 Process Row", "city": "Leeds", "postal_code": "LS1 1AA", "country": "GB"}),
        ),
        (
            "/api/customers/me/payment-method",
            json!({"token": "tok_visa", "last4": "4242"}),
        ),
    ] {
        let (status, body) = call(
            client,
            Method::PUT,
            format!("{gateway}{path}"),
            Some(&token),
            Some(body),
        )
        .await;
        assert!((200..300).contains(&status), "{path}: {status} {body}");
    }
    eventually(
        "ordering's replica has the address, the card and the prices",
        Duration::from_secs(30),
        || async {
            let (status, preview) = call(
                client,
                Method::POST,
                format!("{gateway}/api/ordering/checkout/preview"),
                Some(&token),
                Some(lines(n)),
            )
            .await;
            (status == 200
                && preview["shipping_address"].is_object()
                && preview["payment_method"].is_object())
            .then_some(())
        },
    )
    .await;
    token
}

fn lines(n: usize) -> Value {
    let product = format!("5eed0000-0000-4000-8000-0000000000{:02x}", n % 12 + 1);
    json!({"lines": [{"product_id": product, "quantity": 1}]})
}

/// The ops API of either gateway moves the levers of every instance: customer taken
/// `down` (its instances answer 503 and leave the bus; checkout goes on from the
/// replica), the status showing it and each instance, then healed; the bus paused and
/// resumed everywhere.
async fn ops_levers_reach_every_instance(
    client: &reqwest::Client,
    gateways: &[String],
    customer_token: &str,
) {
    use reqwest::Method;
    let (status, admin) = call(
        client,
        Method::POST,
        format!("{}/api/identity/token", gateways[0]),
        None,
        Some(json!({"email": "admin@agora.local", "password": ADMIN_PASSWORD})),
    )
    .await;
    assert_eq!(status, 200, "{admin}");
    let admin = admin["access_token"].as_str().expect("a token").to_owned();
    let ops = async |method: Method, gateway: &str, path: &str, body: Option<Value>| {
        call(
            client,
            method,
            format!("{gateway}/api/ops/{path}"),
            Some(&admin),
            body,
        )
        .await
    };
    let service = |status: &Value, name: &str| {
        status["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name).cloned())
            .unwrap_or_else(|| panic!("{name} in {status}"))
    };

    let (code, body) = ops(
        Method::PUT,
        &gateways[0],
        "chaos/customer",
        Some(json!({"mode": "down"})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (_, status) = ops(Method::GET, &gateways[1], "status", None).await;
    let customer = service(&status, "customer");
    assert_eq!(customer["chaos"]["mode"], "down", "{customer}");
    assert_eq!(customer["healthy"], false, "{customer}");
    let ordering = service(&status, "ordering");
    assert_eq!(
        ordering["instances"].as_array().map(Vec::len),
        Some(2),
        "{ordering}"
    );
    let (code, body) = call(
        client,
        Method::GET,
        format!("{}/api/customers/me", gateways[1]),
        Some(customer_token),
        None,
    )
    .await;
    assert_eq!(code, 503, "customer is down: {body}");
    let answer = client
        .post(format!("{}/api/ordering/orders", gateways[1]))
        .bearer_auth(customer_token)
        .header("Idempotency-Key", "topology-while-customer-down")
        .json(&lines(0))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201, "checkout goes on from the replica");
    let (code, _) = ops(
        Method::PUT,
        &gateways[1],
        "chaos/customer",
        Some(json!({"mode": "ok"})),
    )
    .await;
    assert_eq!(code, 200);
    let (_, status) = ops(Method::GET, &gateways[0], "status", None).await;
    assert_eq!(service(&status, "customer")["healthy"], true);

    for paused in [true, false] {
        let (code, body) = ops(
            Method::PUT,
            &gateways[0],
            "bus",
            Some(json!({"paused": paused})),
        )
        .await;
        assert_eq!(
            (code, body["paused"].as_bool()),
            (200, Some(paused)),
            "{body}"
        );
        let (_, status) = ops(Method::GET, &gateways[1], "status", None).await;
        assert_eq!(status["bus"]["paused"], paused, "{status}");
    }
}

/// What the load saw.
#[derive(Debug, Default)]
struct Outcomes {
    /// `(customer, order id)` of every accepted checkout.
    accepted: Vec<(usize, String)>,
    /// Checkouts answered otherwise (503 while a fault lasts, typically).
    refused: Vec<String>,
    /// The phase of the run each checkout was sent in, and how long it took.
    latencies: Vec<(&'static str, Duration)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topology_survives_losing_instances_a_nats_node_and_postgresql() {
    use reqwest::Method;

    let Some(mut nats) = NatsCluster::start(3) else {
        return;
    };
    let Some(pg) = PgServer::start() else {
        return;
    };
    for name in ServiceName::ALL {
        pg.create_database(&format!("agora_{name}")).await;
    }
    let mut config = TopologyConfig::new(
        env!("CARGO_BIN_EXE_agora").into(),
        nats.urls(),
        pg.url("agora_{service}"),
    );
    config.instances = TWICE.iter().map(|&s| (s, 2)).collect();
    config.admin_password = ADMIN_PASSWORD.into();
    let mut topology = tokio::task::spawn_blocking(move || Topology::start(config))
        .await
        .unwrap()
        .unwrap_or_else(|error| panic!("the topology gets ready: {error:#}"));
    let gateways = topology.urls(ServiceName::Gateway);
    let gateway = gateways[0].clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (status, ready) = call(
        &client,
        Method::GET,
        format!("{gateway}/readyz"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{ready}");
    let mut tokens = Vec::new();
    for n in 0..3 {
        tokens.push(customer(&client, &gateway, n).await);
    }
    ops_levers_reach_every_instance(&client, &gateways, &tokens[0]).await;

    // The steady stream: a checkout every 50 ms, through both gateways in turn.
    let outcomes = Arc::new(parking_lot::Mutex::new(Outcomes::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(parking_lot::Mutex::new("before the faults"));
    let load = {
        let (client, gateways, tokens) = (client.clone(), gateways.clone(), tokens.clone());
        let (outcomes, stop, phase) = (outcomes.clone(), stop.clone(), phase.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let who = n % tokens.len();
                let (sent_in, started) = (*phase.lock(), Instant::now());
                let answer = client
                    .post(format!(
                        "{}/api/ordering/orders",
                        gateways[n % gateways.len()]
                    ))
                    .bearer_auth(&tokens[who])
                    .header("Idempotency-Key", format!("topology-{n}"))
                    .json(&lines(n))
                    .send()
                    .await;
                outcomes.lock().latencies.push((sent_in, started.elapsed()));
                match answer {
                    Ok(answer) if answer.status() == 201 => {
                        let order: Value = answer.json().await.unwrap_or_default();
                        let id = order["id"].as_str().expect("an order id").to_owned();
                        outcomes.lock().accepted.push((who, id));
                    }
                    Ok(answer) => outcomes.lock().refused.push(answer.status().to_string()),
                    Err(error) => outcomes.lock().refused.push(error.to_string()),
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let accepted_count = || outcomes.lock().accepted.len();
    let mut want = 10;
    let mut accepting = async |what: &str| {
        eventually(what, Duration::from_secs(60), || async {
            (accepted_count() >= want).then_some(())
        })
        .await;
        want += 10;
    };

    accepting("checkouts before the faults").await;
    *phase.lock() = "an ordering and a payment instance killed";
    for service in [ServiceName::Ordering, ServiceName::Payment] {
        topology.kill(service, 0).unwrap();
    }
    accepting("checkouts without an ordering and a payment instance").await;
    *phase.lock() = "a NATS node killed";
    nats.node(0).kill();
    accepting("checkouts without a NATS node").await;
    *phase.lock() = "PostgreSQL restarted";
    pg.restart();
    accepting("checkouts after PostgreSQL came back").await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();

    // Every accepted order ends.
    let Outcomes {
        accepted,
        refused,
        latencies,
    } = std::mem::take(&mut *outcomes.lock());
    // What each fault cost the checkouts sent while it happened (a figure, not a check:
    // this machine's load decides it).
    for name in [
        "before the faults",
        "an ordering and a payment instance killed",
        "a NATS node killed",
        "PostgreSQL restarted",
    ] {
        let mut times: Vec<Duration> = latencies
            .iter()
            .filter(|(phase, _)| *phase == name)
            .map(|(_, took)| *took)
            .collect();
        times.sort();
        eprintln!(
            "topology: {name}: {} checkouts, median {:?}, slowest {:?}",
            times.len(),
            times.get(times.len() / 2).copied().unwrap_or_default(),
            times.last().copied().unwrap_or_default()
        );
    }
    for (who, id) in &accepted {
        let status = eventually(
            "every accepted order ends",
            Duration::from_secs(60),
            || async {
                let (_, order) = call(
                    &client,
                    Method::GET,
                    format!("{gateway}/api/ordering/orders/{id}"),
                    Some(&tokens[*who]),
                    None,
                )
                .await;
                let status = order["status"].as_str().unwrap_or_default().to_owned();
                matches!(status.as_str(), "shipped" | "cancelled").then_some(status)
            },
        )
        .await;
        assert!(matches!(status.as_str(), "shipped" | "cancelled"));
    }
    // Nothing happened twice: one confirmation per accepted order, at most one
    // shipping mail per order, in each customer's mailbox.
    for (who, token) in tokens.iter().enumerate() {
        let mine: Vec<&String> = accepted
            .iter()
            .filter(|(w, _)| *w == who)
            .map(|(_, id)| id)
            .collect();
        let mails = eventually("the confirmations", Duration::from_secs(30), || async {
            let (_, mails) = call(
                &client,
                Method::GET,
                format!("{gateway}/api/notifications/me"),
                Some(token),
                None,
            )
            .await;
            let mails = mails.as_array().cloned().unwrap_or_default();
            let confirmed = mails
                .iter()
                .filter(|m| m["kind"] == "order_confirmation")
                .count();
            (confirmed >= mine.len()).then_some(mails)
        })
        .await;
        for id in &mine {
            for kind in ["order_confirmation", "order_shipped"] {
                let count = mails
                    .iter()
                    .filter(|m| m["kind"] == kind && m["order_id"] == id.as_str())
                    .count();
                assert!(count <= 1, "{count} × {kind} for order {id}");
            }
        }
    }
    eprintln!(
        "topology: {} checkouts accepted, {} refused during the faults",
        accepted.len(),
        refused.len()
    );

    // SIGTERM: each process stops cleanly, the gateways first.
    for (service, index, exit) in topology.terminate(Duration::from_secs(10)) {
        let exit = exit.unwrap_or_else(|error| panic!("{service} {index}: {error:#}"));
        assert!(exit.success(), "{service} {index} exited with {exit}");
    }

    // The stores agree: no money kept for an order that is over, no stock held, no
    // event left unpublished, nothing twice.
    let stores = agora::audit::Stores::Postgres(pg.url("agora_{service}"));
    let findings = agora::audit::audit_stores(&stores, agora_payment::DEFAULT_ORPHAN_HOLD)
        .await
        .expect("audit the PostgreSQL stores");
    assert!(findings.is_empty(), "{findings:#?}");
}
