//! What other services see: identity's tokens verify with `agora-auth` against the
//! JWKS identity serves, and its `PasswordChanged` event revokes the older ones.

use agora_auth::{Jwks, MemoryKeySource, Revocations, Verifier, VerifierConfig};
use agora_contracts::PasswordChanged;
use axum::http::{Method, StatusCode};

use crate::support::{Backend, access_token, call, change_password, sign_up, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_auth_verifies_identity_tokens_and_applies_its_revocations() {
    let Some((env, identity)) = start(Backend::Sqlite).await else {
        return;
    };
    let router = identity.router();
    let (_, _, jwks) = call(&router, Method::GET, "/api/identity/jwks", None, None).await;
    let jwks: Jwks = serde_json::from_value(jwks).unwrap();
    let verifier = Verifier::new(
        MemoryKeySource::new(jwks),
        Revocations::new(),
        VerifierConfig::default(),
    );

    sign_up(&router, "ada@example.org", "correct horse battery").await;
    let old = access_token(&router, "ada@example.org", "correct horse battery").await;
    let claims = verifier.verify(&old).await.expect("a valid token");
    let (status, _, _) = change_password(
        &router,
        Some(&old),
        "correct horse battery",
        "a brand new password",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let new = access_token(&router, "ada@example.org", "a brand new password").await;

    // As a service's PasswordChanged handler would.
    let events = env.events(5).await;
    let changed: PasswordChanged = events
        .iter()
        .find(|e| e.is::<PasswordChanged>())
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(changed.user_id, claims.sub);
    verifier
        .revocations()
        .record(changed.user_id, changed.changed_at);
    assert!(
        verifier.verify(&old).await.is_err(),
        "issued before the change"
    );
    assert!(
        verifier.verify(&new).await.is_ok(),
        "issued after the change"
    );
    identity.shutdown().await;
}
