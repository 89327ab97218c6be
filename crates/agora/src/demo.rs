//! Demo data on first start: the catalog adds its demo products itself and inventory
//! stocks them itself; their prices (ordering's) are set here through ordering's admin
//! API, as an admin would, so that no service writes another's data.

use std::time::Duration;

use agora_catalog::{DEMO_CURRENCY, demo_products};
use anyhow::{Context, bail};
use serde_json::json;

/// Where the demo data goes.
#[derive(Debug)]
pub struct DemoTargets<'a> {
    pub identity: &'a str,
    pub ordering: &'a str,
}

/// Unless ordering already has prices: signs in as the admin and sets every demo
/// product's price. (Checked on every start, so that a first start cut short
/// is completed by the next.)
pub async fn seed(targets: DemoTargets<'_>, admin_password: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let prices: Vec<serde_json::Value> = client
        .get(format!("{}/api/ordering/prices", targets.ordering))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if !prices.is_empty() {
        return Ok(());
    }
    let token: serde_json::Value = client
        .post(format!("{}/api/identity/token", targets.identity))
        .json(&json!({"email": agora_identity::ADMIN_EMAIL, "password": admin_password}))
        .send()
        .await?
        .error_for_status()
        .context("sign in as the admin")?
        .json()
        .await?;
    let Some(token) = token["access_token"].as_str() else {
        bail!("identity answered no token");
    };
    for product in demo_products() {
        client
            .put(format!(
                "{}/api/ordering/prices/{}",
                targets.ordering, product.id
            ))
            .bearer_auth(token)
            .json(&json!({"amount_cents": product.price_cents, "currency": DEMO_CURRENCY}))
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("price of {}", product.name))?;
    }
    tracing::info!(products = demo_products().len(), "demo prices set");
    Ok(())
}
