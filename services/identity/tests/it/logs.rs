//! Identity logs what it does, never a password, a hash or a token.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;

use crate::support::{Backend, access_token, change_password, sign_up, start, token};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// The subscriber is global, not this thread's default: a thread-local one misses
// callsites whose interest another test thread cached first. It therefore also sees the
// logs of the other tests of this binary, which must hold no secret either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_hash_or_token_appears_in_the_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");

    let Some((_env, identity)) = start(Backend::Sqlite).await else {
        return;
    };
    let router = identity.router();
    let password = "correct horse battery";
    let new_password = "a brand new password";
    assert_eq!(
        sign_up(&router, "ada@example.org", password).await.0,
        StatusCode::CREATED
    );
    let issued = access_token(&router, "ada@example.org", password).await;
    assert_eq!(
        token(&router, "ada@example.org", "a wrong password")
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _, _) = change_password(&router, Some(&issued), password, new_password).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = change_password(&router, Some(&issued), new_password, password).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let hash: String =
        sqlx::query_scalar("SELECT password_hash FROM identity_users WHERE email = $1")
            .bind("ada@example.org")
            .fetch_one(identity.db().pool())
            .await
            .unwrap();
    identity.shutdown().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("user signed up"),
        "the logs were captured:\n{logs}"
    );
    assert!(logs.contains("password changed"), "{logs}");
    let signature = issued.rsplit('.').next().unwrap();
    for secret in [
        password,
        new_password,
        crate::support::ADMIN_PASSWORD,
        "a wrong password",
        issued.as_str(),
        signature,
        hash.as_str(),
        "$argon2",
    ] {
        assert!(!logs.contains(secret), "{secret:?} is in the logs");
    }
}
