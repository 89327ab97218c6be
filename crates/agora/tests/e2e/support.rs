//! A running shop for one test, and what tests need to talk to it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use agora::shop::{Shop, ShopConfig};
use agora_gateway::{ChaosMode, Limits};
use jsonwebtoken::EncodingKey;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use uuid::Uuid;

pub const ADMIN_EMAIL: &str = "admin@agora.local";
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
pub const PASSWORD: &str = "correct horse battery";

pub struct TestShop {
    pub shop: Shop,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    admin: tokio::sync::OnceCell<String>,
}

impl TestShop {
    /// A shop without rate limits (tests that check them set their own).
    pub async fn start() -> Self {
        Self::start_with(Limits::unlimited()).await
    }

    pub async fn start_with(limits: Limits) -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir"), limits).await
    }

    /// A shop without rate limits, with `tune` applied to its config.
    pub async fn start_tuned(tune: impl FnOnce(&mut ShopConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = ShopConfig::new(dir.path());
        config.limits = Limits::unlimited();
        tune(&mut config);
        Self::start_config(dir, config).await
    }

    /// A shop on `dir`, which may hold an earlier shop's data.
    pub async fn start_in(dir: tempfile::TempDir, limits: Limits) -> Self {
        let mut config = ShopConfig::new(dir.path());
        config.limits = limits;
        Self::start_config(dir, config).await
    }

    async fn start_config(dir: tempfile::TempDir, mut config: ShopConfig) -> Self {
        config.addr = "127.0.0.1:0".parse().expect("an address");
        config.admin_password = Some(ADMIN_PASSWORD.to_owned());
        let shop = Shop::start(config).await.expect("the shop starts");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Self {
            shop,
            client,
            dir,
            admin: tokio::sync::OnceCell::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.shop.url())
    }

    /// Sets a service's chaos through the ops API, as an admin would.
    pub async fn set_chaos(&self, service: &str, mode: ChaosMode) {
        self.chaos(service, json!({"mode": mode})).await;
    }

    /// Sets a service's chaos from the body `PUT /api/ops/chaos/{service}` takes
    /// (`{"mode": "slow", "latency_ms": 2000}`).
    pub async fn chaos(&self, service: &str, body: Value) {
        let admin = self.admin_token().await;
        let answer = self
            .client
            .put(self.url(&format!("/api/ops/chaos/{service}")))
            .bearer_auth(admin)
            .json(&body)
            .send()
            .await
            .expect("set chaos");
        assert_eq!(answer.status(), StatusCode::OK, "chaos {body} on {service}");
    }

    pub async fn stop(self) {
        self.shop.shutdown().await;
    }

    /// Stops the shop and keeps its data directory.
    pub async fn stop_keeping_data(self) -> tempfile::TempDir {
        self.shop.shutdown().await;
        self.dir
    }

    /// Signs up a new customer with [`PASSWORD`]; returns its id and email.
    pub async fn sign_up(&self) -> (Uuid, String) {
        let email = format!("{}@example.com", Uuid::now_v7().simple());
        let answer = self
            .client
            .post(self.url("/api/identity/users"))
            .json(&json!({"email": email, "password": PASSWORD, "name": "Ada Lovelace"}))
            .send()
            .await
            .expect("sign up");
        assert_eq!(answer.status(), StatusCode::CREATED);
        let body: Value = answer.json().await.expect("json");
        let id = body["id"].as_str().expect("an id").parse().expect("a uuid");
        (id, email)
    }

    pub async fn token(&self, email: &str, password: &str) -> String {
        let answer = self
            .client
            .post(self.url("/api/identity/token"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .expect("sign in");
        assert_eq!(answer.status(), StatusCode::OK, "sign in as {email}");
        let body: Value = answer.json().await.expect("json");
        body["access_token"].as_str().expect("a token").to_owned()
    }

    /// A new customer's id, email and token.
    pub async fn customer(&self) -> (Uuid, String, String) {
        let (id, email) = self.sign_up().await;
        let token = self.token(&email, PASSWORD).await;
        (id, email, token)
    }

    /// The admin's token (signed in once per shop, so that it still works while
    /// identity is down).
    pub async fn admin_token(&self) -> String {
        self.admin
            .get_or_init(|| self.token(ADMIN_EMAIL, ADMIN_PASSWORD))
            .await
            .clone()
    }

    /// Identity's signing key, read from its store, to mint tokens with chosen claims.
    pub fn identity_key(&self) -> (String, EncodingKey) {
        let db = rusqlite::Connection::open(self.dir.path().join("identity.db")).expect("open");
        let (kid, seed): (String, String) = db
            .query_row(
                "SELECT kid, private_key FROM identity_signing_keys ORDER BY created_at_ms LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .expect("a signing key");
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend(
            (0..seed.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&seed[i..i + 2], 16).expect("hex")),
        );
        (kid, EncodingKey::from_ed_der(&der))
    }
}

/// Polls `check` until it returns true or `within` has passed; returns the time taken.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return Some(started.elapsed());
        }
        if started.elapsed() > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

pub fn b64url_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        _ => 63,
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        acc = acc << 6 | u32::from(value(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// The first demo product (seeded with its price, 12.90 EUR, on first start).
pub const PRODUCT: &str = "5eed0000-0000-4000-8000-000000000001";

/// A shipping address on `line1`.
pub fn address(line1: &str) -> Value {
    json!({"line1": line1, "city": "London", "postal_code": "N1 9GU", "country": "GB"})
}

/// A checkout body: `quantity` of the first demo product.
pub fn lines(quantity: u32) -> Value {
    json!({"lines": [{"product_id": PRODUCT, "quantity": quantity}]})
}

/// What the checkout tests and the metrics test do as a customer.
impl TestShop {
    pub async fn put(&self, token: &str, path: &str, body: Value) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn preview(&self, token: &str) -> Value {
        let answer = self
            .client
            .post(self.url("/api/ordering/checkout/preview"))
            .bearer_auth(token)
            .json(&lines(2))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        answer.json().await.unwrap()
    }

    pub async fn order(&self, token: &str, key: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/ordering/orders"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// A customer with an address and a card, once ordering's replica has both.
    pub async fn shopper(&self, line1: &str) -> (Uuid, String) {
        let (id, _, token) = self.customer().await;
        let answer = self
            .put(&token, "/api/customers/me/address", address(line1))
            .await;
        assert_eq!(answer.status(), StatusCode::OK);
        let card = json!({"token": "tok_visa", "last4": "4242"});
        let answer = self
            .put(&token, "/api/customers/me/payment-method", card)
            .await;
        assert_eq!(answer.status(), StatusCode::OK);
        let replicated = eventually(Duration::from_secs(5), || async {
            let preview = self.preview(&token).await;
            preview["shipping_address"]["line1"] == line1 && preview["payment_method"].is_object()
        })
        .await;
        assert!(replicated.is_some(), "ordering's replica caught up");
        (id, token)
    }
}

/// The status and body of a request sent exactly as `head` (request line and
/// headers, without the blank line) and `body`, on a connection of its own.
pub async fn raw(addr: SocketAddr, head: &str, body: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "{head}\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        // A reset after the answer is fine: what was read is the answer.
        let _ = stream.read_to_end(&mut answer).await;
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer to {head:?} in 10 s"));
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in the answer to {head:?}: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
