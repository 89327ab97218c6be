//! Nothing this crate logs contains a token, whatever happens to it.

use std::io::Write;
use std::sync::{Arc, Mutex};

use agora_auth::{Caller, Revocations};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use axum::routing::get;
use serde_json::json;
use tower::ServiceExt;
use tracing_subscriber::fmt::MakeWriter;

use crate::support::{TestKey, admin, customer, raw_token, verifier_with};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
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
async fn no_token_is_ever_logged() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let key = TestKey::generate("k1");
    let stranger = TestKey::generate("k2");
    let (verifier, source) = verifier_with(&[&key], Revocations::new()).await;
    source.set_failing(true);
    let mut expired = customer();
    expired.iat -= 1000;
    expired.exp = expired.iat + 60;
    let tokens = [
        key.sign(&customer()),
        key.sign(&expired),
        stranger.sign(&admin()),
        raw_token(&json!({"alg": "none", "kid": "k1"}), &json!(admin()), b""),
    ];
    let app = Router::new()
        .route(
            "/me",
            get(|caller: Caller| async move { caller.user_id.to_string() }),
        )
        .with_state(verifier);
    for token in &tokens {
        let request = Request::get("/me")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .expect("request");
        let _ = app.clone().oneshot(request).await.expect("infallible");
    }

    let logs = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(
        logs.contains("bearer token refused"),
        "the refusals are logged:\n{logs}"
    );
    for token in &tokens {
        for part in token.split('.').filter(|part| part.len() > 8) {
            assert!(!logs.contains(part), "a token part is in the logs:\n{logs}");
        }
    }
}
