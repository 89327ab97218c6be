//! The events identity publishes, as the bus delivers them.

use agora_contracts::{PasswordChanged, Role, UserSignedIn, UserSignedUp};
use axum::http::StatusCode;
use uuid::Uuid;

use crate::support::{Backend, access_token, change_password, sign_up, start, verify_with_jwks};

crate::on_both_backends!(sign_up_sign_in_and_password_change_are_published_in_order);

async fn sign_up_sign_in_and_password_change_are_published_in_order(backend: Backend) {
    let Some((env, identity)) = start(backend).await else {
        return;
    };
    let router = identity.router();
    let (_, user) = sign_up(&router, "ada@example.org", "correct horse battery").await;
    let user_id = Uuid::parse_str(user["id"].as_str().unwrap()).unwrap();
    let token = access_token(&router, "ada@example.org", "correct horse battery").await;
    let claims = verify_with_jwks(&router, &token).await.unwrap();
    let (status, _, _) = change_password(
        &router,
        Some(&token),
        "correct horse battery",
        "a brand new password",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // The admin's sign-up, then Ada's three events.
    let events = env.events(4).await;
    assert_eq!(events.len(), 4);
    let admin: UserSignedUp = events[0].decode().unwrap();
    assert_eq!(admin.role, Role::Admin);
    assert_eq!(admin.email, "admin@agora.local");

    let ada: Vec<_> = events[1..].iter().collect();
    for envelope in &ada {
        assert_eq!(envelope.source, "identity");
        assert_eq!(envelope.subject, user_id.to_string());
        assert_eq!(envelope.correlation_id, user_id.to_string());
    }
    let signed_up: UserSignedUp = ada[0].decode().unwrap();
    assert_eq!(signed_up.user_id, user_id);
    assert_eq!(signed_up.email, "ada@example.org");
    assert_eq!(signed_up.name, "Ada Lovelace");
    assert_eq!(signed_up.role, Role::Customer);
    assert_eq!(signed_up.version, 1);

    let signed_in: UserSignedIn = ada[1].decode().unwrap();
    assert_eq!(signed_in.user_id, user_id);
    assert_eq!(signed_in.token_id, claims.jti);
    assert_eq!(signed_in.expires_at.unix_timestamp(), claims.exp);
    assert_eq!(signed_in.version, 2);

    let changed: PasswordChanged = ada[2].decode().unwrap();
    assert_eq!(changed.user_id, user_id);
    assert!(changed.changed_at.unix_timestamp() >= claims.iat);
    assert_eq!(changed.version, 3);

    // No event carries a secret.
    for envelope in &events {
        let payload = String::from_utf8(envelope.to_json().unwrap()).unwrap();
        for secret in [
            "correct horse battery",
            "a brand new password",
            &token,
            "$argon2",
        ] {
            assert!(!payload.contains(secret));
        }
    }
    identity.shutdown().await;
}
