//! The ops levers from the command line, talking to a running `agora up` through its
//! public ops API as the admin: `agora chaos`, `agora bus`, `agora settings`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

/// Where the shop is and how to sign in as its admin.
#[derive(Debug, Args)]
pub struct Target {
    /// The shop's public URL.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8080",
        env = "AGORA_URL"
    )]
    url: String,
    /// The admin's password; read from `<data-dir>/admin-password` when not given.
    #[arg(
        long,
        global = true,
        env = "AGORA_ADMIN_PASSWORD",
        hide_env_values = true
    )]
    admin_password: Option<String>,
    /// Where the shop keeps its files (for the generated admin password).
    #[arg(long, global = true, default_value_os_t = crate::default_data_dir(), env = "AGORA_DATA_DIR")]
    data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ChaosMode {
    /// No fault.
    Ok,
    /// The service answers 503 (but to its levers) and its consumers stop.
    Down,
    /// Every request waits before it is handled.
    Slow {
        #[arg(long)]
        latency_ms: u64,
    },
    /// A share of requests fails with 503.
    Flaky {
        #[arg(long)]
        error_rate: f64,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BusSwitch {
    Pause,
    Resume,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CustomerData {
    Replica,
    Sync,
}

/// `agora chaos <service> <mode>`.
pub async fn chaos(target: Target, service: String, mode: ChaosMode) -> anyhow::Result<()> {
    let body = match mode {
        ChaosMode::Ok => json!({"mode": "ok"}),
        ChaosMode::Down => json!({"mode": "down"}),
        ChaosMode::Slow { latency_ms } => json!({"mode": "slow", "latency_ms": latency_ms}),
        ChaosMode::Flaky { error_rate } => json!({"mode": "flaky", "error_rate": error_rate}),
    };
    let answer = put(&target, &format!("/api/ops/chaos/{service}"), body).await?;
    println!("{service}: {answer}");
    Ok(())
}

/// `agora bus pause|resume`.
pub async fn bus(target: Target, switch: BusSwitch) -> anyhow::Result<()> {
    let paused = matches!(switch, BusSwitch::Pause);
    let answer = put(&target, "/api/ops/bus", json!({"paused": paused})).await?;
    println!("bus: {answer}");
    Ok(())
}

/// `agora settings customer-data replica|sync`.
pub async fn customer_data(target: Target, mode: CustomerData) -> anyhow::Result<()> {
    let mode = match mode {
        CustomerData::Replica => "replica",
        CustomerData::Sync => "sync",
    };
    let answer = put(&target, "/api/ops/settings", json!({"customer_data": mode})).await?;
    println!("settings: {answer}");
    Ok(())
}

async fn put(target: &Target, path: &str, body: Value) -> anyhow::Result<Value> {
    let client = reqwest::Client::new();
    let base = target.url.trim_end_matches('/');
    let password = match &target.admin_password {
        Some(password) => password.clone(),
        None => {
            let file = target.data_dir.join(agora_identity::ADMIN_PASSWORD_FILE);
            std::fs::read_to_string(&file)
                .with_context(|| {
                    format!(
                        "no admin password: set AGORA_ADMIN_PASSWORD or pass --data-dir \
                         (looked for {})",
                        file.display()
                    )
                })?
                .trim()
                .to_owned()
        }
    };
    let token: Value = client
        .post(format!("{base}/api/identity/token"))
        .json(&json!({"email": agora_identity::ADMIN_EMAIL, "password": password}))
        .send()
        .await
        .with_context(|| format!("reach the shop at {base}"))?
        .error_for_status()
        .context("sign in as the admin")?
        .json()
        .await?;
    let Some(token) = token["access_token"].as_str() else {
        bail!("the shop answered no token");
    };
    let answer = client
        .put(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let status = answer.status();
    let body: Value = answer.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "{path}: {status}: {}",
            body["detail"].as_str().unwrap_or("")
        );
    }
    Ok(body)
}
