//! The admin user of the first start.

use agora_contracts::Role;
use axum::http::{Method, StatusCode};

use crate::support::{
    ADMIN_PASSWORD, Backend, Env, access_token, call, file_mode, token, verify_with_jwks,
};

crate::on_both_backends!(
    a_generated_admin_password_is_written_0600_and_works,
    a_second_start_keeps_the_admin_and_the_key,
);

async fn a_generated_admin_password_is_written_0600_and_works(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let identity = agora_identity::build(env.config(None)).await.unwrap();
    let file = env.data_dir().join(agora_identity::ADMIN_PASSWORD_FILE);
    assert_eq!(file_mode(&file), 0o600);
    let password = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert!(password.len() >= 20, "a strong password");

    let router = identity.router();
    let token = access_token(&router, agora_identity::ADMIN_EMAIL, &password).await;
    let claims = verify_with_jwks(&router, &token).await.unwrap();
    assert_eq!(claims.roles, [Role::Admin]);
    identity.shutdown().await;
}

async fn a_second_start_keeps_the_admin_and_the_key(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let first = env.start().await;
    let router = first.router();
    let first_token = access_token(&router, agora_identity::ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let first_admin = verify_with_jwks(&router, &first_token).await.unwrap();
    let (_, _, first_jwks) = call(&router, Method::GET, "/api/identity/jwks", None, None).await;
    // A password given in the configuration is not written anywhere.
    assert!(
        !env.data_dir()
            .join(agora_identity::ADMIN_PASSWORD_FILE)
            .exists()
    );
    first.shutdown().await;

    // Restarted without a configured password: nothing is generated, nothing changes.
    let second = agora_identity::build(env.config(None)).await.unwrap();
    let router = second.router();
    assert!(
        !env.data_dir()
            .join(agora_identity::ADMIN_PASSWORD_FILE)
            .exists()
    );
    let (_, _, second_jwks) = call(&router, Method::GET, "/api/identity/jwks", None, None).await;
    assert_eq!(first_jwks, second_jwks, "the same signing key");
    // Tokens of the first start still verify.
    assert_eq!(
        verify_with_jwks(&router, &first_token).await.unwrap(),
        first_admin
    );
    let second_token = access_token(&router, agora_identity::ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let second_admin = verify_with_jwks(&router, &second_token).await.unwrap();
    assert_eq!(second_admin.sub, first_admin.sub, "the same admin");
    assert_eq!(
        token(&router, agora_identity::ADMIN_EMAIL, "a generated one?")
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    // Only one admin sign-up was ever published.
    let events = env.events(3).await;
    let sign_ups = events
        .iter()
        .filter(|e| e.event_type == "UserSignedUp")
        .count();
    assert_eq!(sign_ups, 1);
    second.shutdown().await;
}
