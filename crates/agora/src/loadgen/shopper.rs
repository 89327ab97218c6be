//! Simulated customers and an admin, through the public HTTP API only.

use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use futures::StreamExt;
use rand::Rng;
use rand::seq::SliceRandom;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::core::{Outcome, transport_error};

/// The public API of a shop at `base`.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

/// A signed-in customer with an address and a payment method.
#[derive(Debug, Clone)]
pub struct Customer {
    pub email: String,
    password: String,
    pub token: String,
    pub signed_in_at: SystemTime,
    /// The `line1` of the address last set, and when.
    pub address_line1: String,
    pub address_set_at: SystemTime,
}

/// A product that has a price.
#[derive(Debug, Clone, Deserialize)]
pub struct Product {
    pub id: Uuid,
}

/// What a placed order says about itself.
#[derive(Debug, Clone)]
pub struct Placed {
    pub id: Uuid,
    pub customer: usize,
    pub address_line1: String,
    pub at: SystemTime,
}

impl Api {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4096)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A token for `email`.
    pub async fn token(&self, email: &str, password: &str) -> anyhow::Result<String> {
        #[derive(Deserialize)]
        struct Token {
            access_token: String,
        }
        let response = self
            .http
            .post(self.url("/api/identity/token"))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("sign-in of {email}: {}", response.status());
        }
        Ok(response.json::<Token>().await?.access_token)
    }

    async fn put(&self, token: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .put(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("PUT {path}: {status}: {text}");
        }
        Ok(response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, token: Option<&str>, path: &str) -> anyhow::Result<Value> {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        if !status.is_success() {
            bail!("GET {path}: {status}");
        }
        Ok(response.json().await?)
    }

    /// The products that have a price.
    pub async fn products(&self) -> anyhow::Result<Vec<Product>> {
        #[derive(Deserialize)]
        struct ShopProduct {
            id: Uuid,
            price: Option<Value>,
        }
        let products: Vec<ShopProduct> =
            serde_json::from_value(self.get(None, "/api/shop/products").await?)?;
        let priced: Vec<Product> = products
            .into_iter()
            .filter(|p| p.price.is_some())
            .map(|p| Product { id: p.id })
            .collect();
        if priced.is_empty() {
            bail!("the shop has no product with a price");
        }
        Ok(priced)
    }

    /// Signs up customer `n` of run `run`, signs in, sets an address and a payment method.
    pub async fn new_customer(&self, run: &str, n: usize) -> anyhow::Result<Customer> {
        let email = format!("loadgen-{run}-{n}@example.com");
        let password = format!("loadgen-password-{run}");
        let response = self
            .http
            .post(self.url("/api/identity/users"))
            .json(&json!({ "email": email, "password": password, "name": format!("Shopper {n}") }))
            .send()
            .await?;
        if response.status() != StatusCode::CREATED && response.status() != StatusCode::CONFLICT {
            bail!("sign-up of {email}: {}", response.status());
        }
        let token = self.token(&email, &password).await?;
        let mut customer = Customer {
            email,
            password,
            token,
            signed_in_at: SystemTime::now(),
            address_line1: String::new(),
            address_set_at: SystemTime::now(),
        };
        self.set_address(&mut customer, &format!("{n} Load Street"))
            .await?;
        self.put(
            &customer.token,
            "/api/customers/me/payment-method",
            json!({ "token": "tok_visa", "last4": "4242" }),
        )
        .await?;
        Ok(customer)
    }

    /// Signs in again when the token is older than ten minutes (tokens live 15).
    pub async fn refresh(&self, customer: &mut Customer) -> anyhow::Result<()> {
        let age = customer.signed_in_at.elapsed().unwrap_or_default();
        if age > Duration::from_secs(600) {
            customer.token = self.token(&customer.email, &customer.password).await?;
            customer.signed_in_at = SystemTime::now();
        }
        Ok(())
    }

    /// Sets the customer's address, with `line1`; records when it was answered.
    pub async fn set_address(&self, customer: &mut Customer, line1: &str) -> anyhow::Result<()> {
        self.put(
            &customer.token,
            "/api/customers/me/address",
            json!({ "line1": line1, "city": "Leeds", "postal_code": "LS1 4AP", "country": "GB" }),
        )
        .await?;
        customer.address_line1 = line1.to_owned();
        customer.address_set_at = SystemTime::now();
        Ok(())
    }

    /// The `line1` of the address ordering's checkout preview shows, if any.
    pub async fn preview_line1(
        &self,
        token: &str,
        product: Uuid,
    ) -> anyhow::Result<Option<String>> {
        let response = self
            .http
            .post(self.url("/api/ordering/checkout/preview"))
            .bearer_auth(token)
            .json(&lines(product))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("preview: {}", response.status());
        }
        let body: Value = response.json().await?;
        Ok(body["shipping_address"]["line1"]
            .as_str()
            .map(str::to_owned))
    }

    /// Waits until ordering's preview shows the customer's current address.
    pub async fn await_replica(
        &self,
        customer: &Customer,
        product: Uuid,
        deadline: Duration,
    ) -> anyhow::Result<Duration> {
        let started = std::time::Instant::now();
        loop {
            let line1 = self.preview_line1(&customer.token, product).await?;
            if line1.as_deref() == Some(customer.address_line1.as_str()) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > deadline {
                bail!(
                    "ordering's replica did not show {}'s new address within {deadline:?}",
                    customer.email
                );
            }
            tokio::task::yield_now().await;
        }
    }

    /// `n` customers, `concurrency` at a time, each with an address that ordering's
    /// replica already knows.
    pub async fn customers(
        &self,
        run: &str,
        n: usize,
        concurrency: usize,
    ) -> anyhow::Result<Vec<Customer>> {
        let product = self.products().await?[0].id;
        let mut customers: Vec<Customer> = futures::stream::iter(0..n)
            .map(|i| {
                let (api, run) = (self.clone(), run.to_owned());
                async move {
                    let customer = api.new_customer(&run, i).await?;
                    api.await_replica(&customer, product, Duration::from_secs(30))
                        .await?;
                    anyhow::Ok(customer)
                }
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        customers.sort_by(|a, b| a.email.cmp(&b.email));
        Ok(customers)
    }

    // What a customer does, as one measured request each.

    pub async fn browse(&self) -> Outcome {
        let answer = self.http.get(self.url("/api/shop/products")).send().await;
        match answer {
            Ok(response) if response.status() == StatusCode::OK => match response.bytes().await {
                Ok(_) => Outcome::ok("browse", 200),
                Err(error) => Outcome::failed("browse", transport_error(&error)),
            },
            other => Outcome::of("browse", &other, 200),
        }
    }

    pub async fn preview(&self, token: &str, product: Uuid) -> Outcome {
        let answer = self
            .http
            .post(self.url("/api/ordering/checkout/preview"))
            .bearer_auth(token)
            .json(&lines(product))
            .send()
            .await;
        Outcome::of("preview", &answer, 200)
    }

    /// Places an order of one `product` with a fresh idempotency key; on success the
    /// order's id and the address it was given.
    pub async fn checkout(&self, token: &str, product: Uuid) -> (Outcome, Option<(Uuid, String)>) {
        let answer = self
            .http
            .post(self.url("/api/ordering/orders"))
            .bearer_auth(token)
            .header("idempotency-key", Uuid::now_v7().to_string())
            .json(&lines(product))
            .send()
            .await;
        match answer {
            Ok(response) if response.status() == StatusCode::CREATED => {
                match response.json::<Value>().await {
                    Ok(order) => {
                        let id = order["id"].as_str().and_then(|s| s.parse().ok());
                        let line1 = order["shipping_address"]["line1"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        match id {
                            Some(id) => (Outcome::ok("checkout", 201), Some((id, line1))),
                            None => (Outcome::failed("checkout", "no id"), None),
                        }
                    }
                    Err(error) => (Outcome::failed("checkout", transport_error(&error)), None),
                }
            }
            other => (Outcome::of("checkout", &other, 201), None),
        }
    }

    /// A customer's orders (newest first), as JSON.
    pub async fn orders(&self, token: &str) -> anyhow::Result<Vec<Value>> {
        Ok(serde_json::from_value(
            self.get(Some(token), "/api/ordering/orders").await?,
        )?)
    }
}

fn lines(product: Uuid) -> Value {
    json!({ "lines": [{ "product_id": product, "quantity": 1 }] })
}

/// A random product.
pub fn pick(products: &[Product]) -> Uuid {
    products
        .choose(&mut rand::thread_rng())
        .expect("at least one product")
        .id
}

/// A random index below `n`.
pub fn any(n: usize) -> usize {
    rand::thread_rng().gen_range(0..n)
}

/// The admin, through the Ops API.
#[derive(Debug, Clone)]
pub struct Admin {
    api: Api,
    token: String,
    password: String,
    signed_in_at: SystemTime,
}

impl Admin {
    pub async fn sign_in(api: &Api, password: &str) -> anyhow::Result<Self> {
        let token = api
            .token(agora_identity::ADMIN_EMAIL, password)
            .await
            .context("sign in as the admin")?;
        Ok(Self {
            api: api.clone(),
            token,
            password: password.to_owned(),
            signed_in_at: SystemTime::now(),
        })
    }

    async fn fresh_token(&mut self) -> anyhow::Result<&str> {
        if self.signed_in_at.elapsed().unwrap_or_default() > Duration::from_secs(600) {
            self.token = self
                .api
                .token(agora_identity::ADMIN_EMAIL, &self.password)
                .await?;
            self.signed_in_at = SystemTime::now();
        }
        Ok(&self.token)
    }

    async fn put(&mut self, path: &str, body: Value) -> anyhow::Result<Value> {
        let token = self.fresh_token().await?.to_owned();
        self.api.put(&token, path, body).await
    }

    /// `mode`: `{"mode":"down"}`, `{"mode":"slow","latency_ms":500}`, `{"mode":"ok"}`.
    pub async fn chaos(&mut self, service: &str, mode: Value) -> anyhow::Result<()> {
        self.put(&format!("/api/ops/chaos/{service}"), mode).await?;
        Ok(())
    }

    pub async fn bus_paused(&mut self, paused: bool) -> anyhow::Result<()> {
        self.put("/api/ops/bus", json!({ "paused": paused }))
            .await?;
        Ok(())
    }

    /// `replica` or `sync`.
    pub async fn customer_data(&mut self, mode: &str) -> anyhow::Result<()> {
        self.put("/api/ops/settings", json!({ "customer_data": mode }))
            .await?;
        Ok(())
    }

    pub async fn stock(&mut self, product: Uuid, on_hand: u64) -> anyhow::Result<()> {
        self.put(
            &format!("/api/inventory/stock/{product}"),
            json!({ "on_hand": on_hand }),
        )
        .await?;
        Ok(())
    }

    /// Messages not yet consumed, over every subscription.
    pub async fn pending(&mut self) -> anyhow::Result<u64> {
        let token = self.fresh_token().await?.to_owned();
        let status = self.api.get(Some(&token), "/api/ops/status").await?;
        Ok(status["subscriptions"]
            .as_array()
            .map(|subs| subs.iter().filter_map(|s| s["pending"].as_u64()).sum())
            .unwrap_or(0))
    }

    /// Waits until every subscription has consumed everything (or `deadline` passes);
    /// returns how long that took, or `None` on the deadline.
    pub async fn drain(&mut self, deadline: Duration) -> anyhow::Result<Option<Duration>> {
        let started = std::time::Instant::now();
        let mut wait = tokio::time::interval(Duration::from_millis(100));
        loop {
            wait.tick().await;
            if self.pending().await? == 0 {
                return Ok(Some(started.elapsed()));
            }
            if started.elapsed() > deadline {
                return Ok(None);
            }
        }
    }
}
