//! Given a PasswordChanged event, when it is applied, then the user's older tokens are
//! refused, by every verifier sharing the revocations. Given a UserSignedOut event, then
//! the token signed out with is refused, and only that one. (That every instance of a
//! service learns them, and a new one too: `instances.rs`.)

use std::time::Duration;

use agora_auth::{Claims, Error, Revocations};
use agora_contracts::{PasswordChanged, Role, UserSignedIn, UserSignedOut};
use agora_messaging::{Context, Envelope};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::support::{TestKey, now, verifier_with};

fn handle(revocations: &Revocations, envelope: &Envelope) {
    revocations.apply(envelope).expect("applied");
}

fn password_changed(user_id: Uuid, changed_at: OffsetDateTime) -> Envelope {
    let event = PasswordChanged {
        user_id,
        changed_at,
        version: 2,
    };
    Envelope::new(&event, &Context::new(user_id.to_string())).expect("envelope")
}

#[tokio::test]
async fn a_token_issued_before_a_password_change_is_refused_after_the_event() {
    let key = TestKey::generate("k1");
    let revocations = Revocations::new();
    let (verifier, _) = verifier_with(&[&key], revocations.clone()).await;
    let user = Uuid::now_v7();
    let before = key.sign(&Claims::new(
        user,
        vec![Role::Customer],
        now(),
        Duration::from_secs(300),
    ));
    verifier
        .verify(&before)
        .await
        .expect("accepted before the change");

    tokio::time::sleep(Duration::from_millis(5)).await;
    handle(
        &revocations,
        &password_changed(user, OffsetDateTime::now_utc()),
    );

    assert_eq!(verifier.verify(&before).await, Err(Error::Revoked));

    // A token issued after the change (the user signed in again) is accepted...
    tokio::time::sleep(Duration::from_millis(5)).await;
    let after = key.sign(&Claims::new(
        user,
        vec![Role::Customer],
        now(),
        Duration::from_secs(300),
    ));
    verifier
        .verify(&after)
        .await
        .expect("accepted after the change");

    // ...and so are other users' tokens.
    let other = key.sign(&Claims::new(
        Uuid::now_v7(),
        vec![Role::Customer],
        now(),
        Duration::from_secs(300),
    ));
    verifier.verify(&other).await.expect("another user");
}

#[tokio::test]
async fn a_redelivered_or_older_event_does_not_move_the_revocation_back() {
    let revocations = Revocations::new();
    let user = Uuid::now_v7();
    let later = OffsetDateTime::now_utc();
    let earlier = later - time::Duration::minutes(1);

    handle(&revocations, &password_changed(user, later));
    handle(&revocations, &password_changed(user, later));
    handle(&revocations, &password_changed(user, earlier));

    let expected = i64::try_from(later.unix_timestamp_nanos() / 1_000_000).expect("fits");
    assert_eq!(revocations.revoked_before_ms(user), Some(expected));
}

#[tokio::test]
async fn other_events_are_ignored() {
    let revocations = Revocations::new();
    let signed_in = UserSignedIn {
        user_id: Uuid::now_v7(),
        token_id: Uuid::now_v7(),
        signed_in_at: OffsetDateTime::now_utc(),
        expires_at: OffsetDateTime::now_utc() + time::Duration::minutes(15),
        version: 3,
    };
    let envelope = Envelope::new(&signed_in, &Context::new("c")).expect("envelope");

    handle(&revocations, &envelope);

    assert_eq!(revocations.revoked_before_ms(signed_in.user_id), None);
    assert!(!revocations.is_signed_out(signed_in.token_id));
}

#[tokio::test]
async fn a_revocation_in_the_same_second_as_the_token_is_precise_to_the_millisecond() {
    let user = Uuid::now_v7();
    let iat = now();
    let mut claims = Claims::new(user, vec![Role::Customer], iat, Duration::from_secs(300));
    let secs = u64::try_from(iat).expect("after 1970");
    claims.jti = Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        secs,
        250_000_000,
    ));
    let issued = claims.issued_at_ms();
    assert_eq!(issued, iat * 1000 + 250, "the v7 jti dates the token");

    let revocations = Revocations::new();
    revocations.record(user, from_ms(issued + 1));
    assert!(
        revocations.is_revoked(&claims),
        "issued 1 ms before the change"
    );

    let revocations = Revocations::new();
    revocations.record(user, from_ms(issued));
    assert!(!revocations.is_revoked(&claims), "issued at the change");

    // A jti that does not date the token: the start of iat's second counts.
    let mut undated = claims.clone();
    undated.jti = Uuid::nil();
    let revocations = Revocations::new();
    revocations.record(user, from_ms(undated.iat * 1000 + 1));
    assert!(revocations.is_revoked(&undated));
}

fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).expect("in range")
}

#[tokio::test]
async fn revocations_older_than_any_live_token_are_forgotten() {
    let user = Uuid::now_v7();
    let revocations = Revocations::new();

    revocations.record(user, OffsetDateTime::now_utc() - time::Duration::hours(1));
    assert_eq!(revocations.revoked_before_ms(user), None);

    revocations.record(
        user,
        OffsetDateTime::now_utc() - time::Duration::minutes(10),
    );
    assert!(
        revocations.revoked_before_ms(user).is_some(),
        "a 15-min token may live"
    );
}

fn signed_out(user_id: Uuid, token_id: Uuid, at: OffsetDateTime) -> Envelope {
    let event = UserSignedOut {
        user_id,
        token_id,
        signed_out_at: at,
        version: 4,
    };
    Envelope::new(&event, &Context::new(user_id.to_string())).expect("envelope")
}

fn token_claims(user: Uuid) -> Claims {
    Claims::new(user, vec![Role::Customer], now(), Duration::from_secs(300))
}

#[tokio::test]
async fn the_token_signed_out_with_is_refused_and_the_users_other_tokens_are_not() {
    let key = TestKey::generate("k1");
    let revocations = Revocations::new();
    let (verifier, _) = verifier_with(&[&key], revocations.clone()).await;
    let user = Uuid::now_v7();
    let first = token_claims(user);
    let second = token_claims(user);
    let (first_token, second_token) = (key.sign(&first), key.sign(&second));
    verifier
        .verify(&first_token)
        .await
        .expect("accepted before");

    let event = signed_out(user, first.jti, OffsetDateTime::now_utc());
    handle(&revocations, &event);
    // A redelivery changes nothing.
    handle(&revocations, &event);

    assert_eq!(verifier.verify(&first_token).await, Err(Error::Revoked));
    verifier
        .verify(&second_token)
        .await
        .expect("the user's other session goes on");
}

#[tokio::test]
async fn a_sign_out_too_old_to_matter_is_not_kept() {
    let revocations = Revocations::new();
    let token = Uuid::now_v7();
    let long_ago = OffsetDateTime::now_utc() - time::Duration::hours(1);

    handle(&revocations, &signed_out(Uuid::now_v7(), token, long_ago));

    assert!(!revocations.is_signed_out(token));
}

/// The race a version settles: a sign-in that checked the old password issues its token
/// (version 5) a moment *after* the change's clock was read, then the change commits
/// (version 6). By time the token would pass; by version it is refused. A token of a
/// sign-in after the change (version 7) passes even if its clock is behind.
#[tokio::test]
async fn a_version_decides_over_the_clock_when_both_the_token_and_the_change_carry_one() {
    let user = Uuid::now_v7();
    let changed_at = OffsetDateTime::now_utc() - time::Duration::seconds(2);
    let revocations = Revocations::new();
    revocations.record_password_change(&PasswordChanged {
        user_id: user,
        changed_at,
        version: 6,
    });

    let raced = token_claims(user).with_version(5);
    assert!(raced.issued_at_ms() > revocations.revoked_before_ms(user).expect("recorded"));
    assert!(
        revocations.is_revoked(&raced),
        "issued against the old password"
    );

    let mut after = token_claims(user).with_version(7);
    after.iat -= 60;
    after.nbf = after.iat;
    after.jti = Uuid::nil();
    assert!(!revocations.is_revoked(&after), "issued after the change");

    // Without a version (an older issuer), the time decides.
    let mut unversioned = token_claims(user);
    assert!(!revocations.is_revoked(&unversioned));
    unversioned.iat -= 60;
    unversioned.nbf = unversioned.iat;
    unversioned.jti = Uuid::nil();
    assert!(revocations.is_revoked(&unversioned));
}

/// A version is not moved back by an older event.
#[tokio::test]
async fn an_older_password_change_does_not_move_the_version_back() {
    let revocations = Revocations::new();
    let user = Uuid::now_v7();
    let now_ = OffsetDateTime::now_utc();
    for version in [6, 4] {
        let event = PasswordChanged {
            user_id: user,
            changed_at: now_,
            version,
        };
        handle(
            &revocations,
            &Envelope::new(&event, &Context::new(user.to_string())).expect("envelope"),
        );
    }
    assert!(revocations.is_revoked(&token_claims(user).with_version(5)));
    assert!(!revocations.is_revoked(&token_claims(user).with_version(7)));
}
