//! The verifier accepts exactly the tokens identity issues, and nothing else.

use agora_auth::{AUDIENCE, Error, ISSUER};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::support::{TestKey, b64url, b64url_decode, customer, now, raw_token, verifier};

#[tokio::test]
async fn a_valid_token_is_accepted() {
    let key = TestKey::generate("k1");
    let (verifier, _) = verifier(&[&key]).await;
    let claims = customer();

    let verified = verifier.verify(&key.sign(&claims)).await.expect("accepted");

    assert_eq!(verified, claims);
}

#[tokio::test]
async fn alg_none_is_refused() {
    let key = TestKey::generate("k1");
    let (verifier, _) = verifier(&[&key]).await;
    let payload = serde_json::to_value(customer()).expect("json");

    for alg in ["none", "None", "NONE"] {
        let header = json!({"alg": alg, "typ": "JWT", "kid": "k1"});
        let unsigned = raw_token(&header, &payload, b"");
        assert!(verifier.verify(&unsigned).await.is_err(), "alg {alg}");
        // Without even the trailing dot.
        let unsigned = unsigned.trim_end_matches('.');
        assert!(verifier.verify(unsigned).await.is_err(), "alg {alg}");
    }
}

#[tokio::test]
async fn a_token_hmac_signed_with_the_public_key_is_refused() {
    let key = TestKey::generate("k1");
    let (verifier, _) = verifier(&[&key]).await;
    let claims = customer();

    // The classic confusion attack: the public key (raw, or as published in the
    // JWKS) used as an HMAC secret.
    for secret in [key.public_bytes(), key.jwk.x.clone().into_bytes()] {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut header = Header::new(alg);
            header.kid = Some("k1".to_owned());
            let forged = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret))
                .expect("signed");
            assert_eq!(
                verifier.verify(&forged).await,
                Err(Error::DisallowedAlgorithm),
                "{alg:?}"
            );
        }
    }
}

#[tokio::test]
async fn other_asymmetric_algorithms_are_refused() {
    let key = TestKey::generate("k1");
    let (verifier, _) = verifier(&[&key]).await;
    let good = key.sign(&customer());
    let mut parts = good.split('.');
    let (_, payload, signature) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());

    // The EdDSA signature relabelled: refused on the label alone.
    for alg in ["RS256", "ES256", "PS256", "ES384"] {
        let header = b64url(
            json!({"alg": alg, "typ": "JWT", "kid": "k1"})
                .to_string()
                .as_bytes(),
        );
        let token = format!("{header}.{payload}.{signature}");
        assert_eq!(
            verifier.verify(&token).await,
            Err(Error::DisallowedAlgorithm),
            "{alg}"
        );
    }
}

#[tokio::test]
async fn a_token_without_kid_is_refused() {
    let key = TestKey::generate("k1");
    let (verifier, _) = verifier(&[&key]).await;
    let token = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &customer(), &key.encoding)
        .expect("signed");

    assert_eq!(verifier.verify(&token).await, Err(Error::MissingKeyId));
}

#[tokio::test]
async fn a_token_signed_by_another_key_under_a_known_kid_is_refused() {
    let key = TestKey::generate("k1");
    let impostor = TestKey::generate("k1");
    let (verifier, _) = verifier(&[&key]).await;

    assert_eq!(
        verifier.verify(&impostor.sign(&customer())).await,
        Err(Error::InvalidSignature)
    );
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let key = TestKey::generate("k1");
    let (verifier, _) = verifier(&[&key]).await;
    let mut claims = customer();
    // Issued 10 minutes ago for 5 minutes: expired for longer than the leeway.
    claims.iat = now() - 600;
    claims.nbf = claims.iat;
    claims.exp = claims.iat + 300;

    assert_eq!(
        verifier.verify(&key.sign(&claims)).await,
        Err(Error::Expired)
    );
}

#[tokio::test]
async fn a_token_not_yet_valid_is_refused() {
    let key = TestKey::generate("k1");
    let (verifier, _) = verifier(&[&key]).await;
    let mut claims = customer();
    claims.nbf = now() + 300;
    claims.exp = claims.iat + 600;

    assert_eq!(
        verifier.verify(&key.sign(&claims)).await,
        Err(Error::NotYetValid)
    );
}

#[tokio::test]
async fn a_token_issued_in_the_future_is_refused() {
    let key = TestKey::generate("k1");
    let (verifier, _) = verifier(&[&key]).await;
    let mut claims = customer();
    claims.iat = now() + 300;
    claims.nbf = claims.iat;
    claims.exp = claims.iat + 300;

    assert_eq!(
        verifier.verify(&key.sign(&claims)).await,
        Err(Error::NotYetValid)
    );
}

#[tokio::test]
async fn a_small_clock_skew_is_tolerated() {
    let key = TestKey::generate("k1");
    let (verifier, _) = verifier(&[&key]).await;
    let mut claims = customer();
    // The issuer's clock is 5 s ahead of ours.
    claims.iat = now() + 5;
    claims.nbf = claims.iat;
    claims.exp = claims.iat + 300;

    assert!(verifier.verify(&key.sign(&claims)).await.is_ok());
}

#[tokio::test]
async fn a_token_living_longer_than_the_maximum_is_refused() {
    let key = TestKey::generate("k1");
    let (verifier, _) = verifier(&[&key]).await;
    let mut claims = customer();
    claims.exp = claims.iat + 24 * 3600;

    assert_eq!(
        verifier.verify(&key.sign(&claims)).await,
        Err(Error::InvalidClaims)
    );
}

#[tokio::test]
async fn a_wrong_issuer_is_refused() {
    let key = TestKey::generate("k1");
    let (verifier, _) = verifier(&[&key]).await;
    let mut claims = customer();
    claims.iss = format!("{ISSUER}-evil");

    assert_eq!(
        verifier.verify(&key.sign(&claims)).await,
        Err(Error::WrongIssuer)
    );
}

#[tokio::test]
async fn a_wrong_audience_is_refused() {
    let key = TestKey::generate("k1");
    let (verifier, _) = verifier(&[&key]).await;
    let mut claims = customer();
    claims.aud = format!("{AUDIENCE}-elsewhere");

    assert_eq!(
        verifier.verify(&key.sign(&claims)).await,
        Err(Error::WrongAudience)
    );
}

#[tokio::test]
async fn a_tampered_payload_is_refused() {
    let key = TestKey::generate("k1");
    let (verifier, _) = verifier(&[&key]).await;
    let token = key.sign(&customer());
    let parts: Vec<&str> = token.split('.').collect();

    // Promote the customer to admin, keeping the header and the signature.
    let mut payload: serde_json::Value =
        serde_json::from_slice(&b64url_decode(parts[1])).expect("json payload");
    payload["roles"] = json!(["admin"]);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64url(payload.to_string().as_bytes()),
        parts[2]
    );

    assert_eq!(
        verifier.verify(&tampered).await,
        Err(Error::InvalidSignature)
    );
}

#[tokio::test]
async fn a_tampered_signature_is_refused() {
    let key = TestKey::generate("k1");
    let (verifier, _) = verifier(&[&key]).await;
    let token = key.sign(&customer());
    let (rest, signature) = token.rsplit_once('.').expect("three parts");
    let mut signature = b64url_decode(signature);
    signature[0] ^= 1;
    let tampered = format!("{rest}.{}", b64url(&signature));

    assert_eq!(
        verifier.verify(&tampered).await,
        Err(Error::InvalidSignature)
    );
}

#[tokio::test]
async fn garbage_is_refused_as_malformed() {
    let key = TestKey::generate("k1");
    let (verifier, _) = verifier(&[&key]).await;

    for token in [
        "",
        "abc",
        "a.b.c",
        "....",
        "eyJhbGciOiJFZERTQSJ9",
        "eyJ9.e30.AA",
    ] {
        assert_eq!(
            verifier.verify(token).await,
            Err(Error::Malformed),
            "{token:?}"
        );
    }
}

#[tokio::test]
async fn claims_of_the_wrong_shape_are_refused() {
    let key = TestKey::generate("k1");
    let (verifier, _) = verifier(&[&key]).await;
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("k1".to_owned());
    let payload = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "not-a-uuid", "roles": [],
        "iat": now(), "nbf": now(), "exp": now() + 60, "jti": "x",
    });
    let token = jsonwebtoken::encode(&header, &payload, &key.encoding).expect("signed");

    assert_eq!(verifier.verify(&token).await, Err(Error::InvalidClaims));
}
