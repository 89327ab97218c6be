//! No token, password, password hash or private key ever reaches the logs: the whole
//! shop runs with every log line at debug level captured, through sign-up, sign-in,
//! authenticated calls, refused calls and a password change.
//!
//! Its own test binary, because it installs the process-wide log subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex};

use agora::shop::{Shop, ShopConfig};
use serde_json::{Value, json};
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn no_secret_reaches_the_logs() {
    let captured = Captured::default();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(captured.clone())
        .with_ansi(false)
        .init();

    let dir = tempfile::tempdir().unwrap();
    let admin_password = "the admin's secret password";
    let mut config = ShopConfig::new(dir.path());
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.admin_password = Some(admin_password.into());
    let shop = Shop::start(config).await.unwrap();
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", shop.url());

    let password = "my very secret password";
    let new_password = "my even more secret password";
    let email = "secretive@example.com";
    let answer = client
        .post(url("/api/identity/users"))
        .json(&json!({"email": email, "password": password, "name": "Secretive"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let mut tokens = Vec::new();
    for (who, secret) in [(email, password), ("admin@agora.local", admin_password)] {
        let body: Value = client
            .post(url("/api/identity/token"))
            .json(&json!({"email": who, "password": secret}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens.push(body["access_token"].as_str().unwrap().to_owned());
    }
    // Wrong password, refused token, authenticated calls, a password change.
    let wrong = client
        .post(url("/api/identity/token"))
        .json(&json!({"email": email, "password": "a wrong guess at it"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let tampered = format!("{}x", tokens[0]);
    for token in [&tokens[0], &tokens[1], &tampered] {
        client
            .get(url("/api/ops/status"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
    }
    let changed = client
        .put(url("/api/identity/users/me/password"))
        .bearer_auth(&tokens[0])
        .json(&json!({"current_password": password, "new_password": new_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 204);
    let refused = client
        .get(url("/api/ops/status"))
        .bearer_auth(&tokens[0])
        .send()
        .await
        .unwrap();
    assert!(refused.status() == 401 || refused.status() == 403);
    shop.shutdown().await;

    let db = rusqlite::Connection::open(dir.path().join("identity.db")).unwrap();
    let seed: String = db
        .query_row("SELECT private_key FROM identity_signing_keys", [], |r| {
            r.get(0)
        })
        .unwrap();
    let hashes: Vec<String> = db
        .prepare("SELECT password_hash FROM identity_users")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("token issued"), "the capture works");
    assert!(logs.contains("password changed"), "the capture works");
    let signatures: Vec<&str> = tokens
        .iter()
        .map(|t| t.rsplit('.').next().unwrap())
        .collect();
    let mut secrets: Vec<&str> = vec![password, new_password, admin_password, &seed, "$argon2"];
    secrets.extend(tokens.iter().map(String::as_str));
    secrets.extend(signatures);
    secrets.extend(hashes.iter().map(String::as_str));
    for secret in secrets {
        assert!(
            !logs.contains(secret),
            "a secret is in the logs: {}…",
            &secret[..6]
        );
    }
}
