//! The key cache: fetched at start and on an unknown `kid`, rate-limited, and kept
//! when identity is down.

use std::sync::Arc;
use std::time::Duration;

use agora_auth::{
    Error, HttpKeySource, Jwk, Jwks, MemoryKeySource, Revocations, Verifier, VerifierConfig,
};
use axum::Json;
use axum::routing::get;

use crate::support::{TestKey, customer, jwks, verifier};

#[tokio::test]
async fn keys_are_fetched_once_for_many_verifications() {
    let key = TestKey::generate("k1");
    let (verifier, source) = verifier(&[&key]).await;

    for _ in 0..100 {
        verifier
            .verify(&key.sign(&customer()))
            .await
            .expect("accepted");
    }

    assert_eq!(source.fetches(), 1);
}

#[tokio::test]
async fn cached_keys_keep_working_when_the_source_fails() {
    let key = TestKey::generate("k1");
    let (verifier, source) = verifier(&[&key]).await;

    source.set_failing(true);
    // An unknown kid makes the verifier try the (failing) source...
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(5)).await;
    let stranger = TestKey::generate("k2");
    assert_eq!(
        verifier.verify(&stranger.sign(&customer())).await,
        Err(Error::UnknownKey)
    );

    // ...and the known key still verifies.
    for _ in 0..10 {
        verifier
            .verify(&key.sign(&customer()))
            .await
            .expect("accepted");
    }
    assert_eq!(source.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_kid_triggers_exactly_one_refetch_then_401() {
    let key = TestKey::generate("k1");
    let (verifier, source) = verifier(&[&key]).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    let stranger = TestKey::generate("k-unknown");

    for _ in 0..20 {
        assert_eq!(
            verifier.verify(&stranger.sign(&customer())).await,
            Err(Error::UnknownKey)
        );
    }

    assert_eq!(source.fetches(), 2, "one at start, one refetch");
}

#[tokio::test(start_paused = true)]
async fn refetches_are_rate_limited_and_back_off_on_failure() {
    let key = TestKey::generate("k1");
    let (verifier, source) = verifier(&[&key]).await;
    let stranger = TestKey::generate("k-unknown");
    let token = stranger.sign(&customer());

    // Within a second of the start fetch: no refetch.
    assert_eq!(verifier.verify(&token).await, Err(Error::UnknownKey));
    assert_eq!(source.fetches(), 1);

    // A second later: one refetch.
    tokio::time::advance(Duration::from_millis(1001)).await;
    assert_eq!(verifier.verify(&token).await, Err(Error::UnknownKey));
    assert_eq!(source.fetches(), 2);

    // Failing fetches double the interval: 2 s after the first failure, then 4 s.
    source.set_failing(true);
    tokio::time::advance(Duration::from_millis(1001)).await;
    assert_eq!(verifier.verify(&token).await, Err(Error::UnknownKey));
    assert_eq!(source.fetches(), 3);
    tokio::time::advance(Duration::from_millis(1500)).await;
    assert_eq!(verifier.verify(&token).await, Err(Error::UnknownKey));
    assert_eq!(source.fetches(), 3, "still backing off");
    tokio::time::advance(Duration::from_millis(600)).await;
    assert_eq!(verifier.verify(&token).await, Err(Error::UnknownKey));
    assert_eq!(source.fetches(), 4);
    tokio::time::advance(Duration::from_millis(3000)).await;
    assert_eq!(verifier.verify(&token).await, Err(Error::UnknownKey));
    assert_eq!(source.fetches(), 4, "4 s after the second failure");
}

#[tokio::test(start_paused = true)]
async fn a_rotated_key_is_picked_up_on_first_use() {
    let old = TestKey::generate("k1");
    let (verifier, source) = verifier(&[&old]).await;
    tokio::time::advance(Duration::from_secs(2)).await;

    let new = TestKey::generate("k2");
    source.set(jwks(&[&old, &new]));

    verifier
        .verify(&new.sign(&customer()))
        .await
        .expect("new key accepted");
    verifier
        .verify(&old.sign(&customer()))
        .await
        .expect("old key still accepted");
    assert_eq!(source.fetches(), 2);
}

#[tokio::test]
async fn a_verifier_started_while_identity_is_down_recovers() {
    let key = TestKey::generate("k1");
    let source = Arc::new(MemoryKeySource::new(jwks(&[&key])));
    source.set_failing(true);
    let verifier = Verifier::start(
        source.clone(),
        Revocations::new(),
        VerifierConfig::default(),
    )
    .await;
    let token = key.sign(&customer());
    assert_eq!(verifier.verify(&token).await, Err(Error::UnknownKey));

    source.set_failing(false);
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(3)).await;

    verifier
        .verify(&token)
        .await
        .expect("accepted once identity is back");
}

#[tokio::test]
async fn keys_that_are_not_ed25519_signing_keys_are_ignored() {
    let key = TestKey::generate("k1");
    let mut hmac = Jwk::ed25519("k-hmac", key.jwk.x.clone());
    hmac.kty = "oct".to_owned();
    let mut short = Jwk::ed25519("k-short", "AAAA");
    short.alg = None;
    let mut encryption = key.jwk.clone();
    encryption.kid = "k-enc".to_owned();
    encryption.use_ = Some("enc".to_owned());
    let source = MemoryKeySource::new(Jwks {
        keys: vec![hmac, short, encryption, key.jwk.clone()],
    });

    let verifier = Verifier::new(source, Revocations::new(), VerifierConfig::default());

    assert_eq!(verifier.refresh().await, Ok(1));
    verifier
        .verify(&key.sign(&customer()))
        .await
        .expect("accepted");
}

#[tokio::test]
async fn the_http_source_fetches_identity_jwks() {
    let key = TestKey::generate("k1");
    let served = jwks(&[&key]);
    let app = axum::Router::new().route(
        "/api/identity/jwks",
        get(move || {
            let served = served.clone();
            async move { Json(served) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("port");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let source = HttpKeySource::new(&format!("http://{address}/")).expect("client");
    let verifier = Verifier::start(source, Revocations::new(), VerifierConfig::default()).await;
    verifier
        .verify(&key.sign(&customer()))
        .await
        .expect("accepted");

    // Identity stops: the cached key still works.
    server.abort();
    let _ = server.await;
    verifier
        .verify(&key.sign(&customer()))
        .await
        .expect("accepted");
}

#[tokio::test]
async fn the_http_source_reports_an_unreachable_identity() {
    // A port nobody listens on (bound, then released).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let source = HttpKeySource::new(&format!("http://{address}")).expect("client");
    let verifier = Verifier::new(source, Revocations::new(), VerifierConfig::default());

    assert!(matches!(verifier.refresh().await, Err(Error::KeySource(_))));
}
