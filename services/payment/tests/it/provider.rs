//! The simulated provider, on paused time: its latency is exact and costs no real
//! time.

use std::time::Duration;

use agora_contracts::Money;
use agora_payment::{PaymentProvider, ProviderError, SimulatedProvider};
use tokio::time::Instant;

fn euros(cents: i64) -> Money {
    Money {
        amount_cents: cents,
        currency: "EUR".to_owned(),
    }
}

fn declined(reason: &str) -> ProviderError {
    ProviderError::Declined {
        reason: reason.to_owned(),
    }
}

#[tokio::test(start_paused = true)]
async fn each_call_takes_the_configured_latency() {
    let provider = SimulatedProvider {
        latency: Duration::from_millis(1_500),
        decline_rate: 0.0,
        ..SimulatedProvider::default()
    };
    let start = Instant::now();
    let hold = provider
        .authorize("tok_visa", &euros(100), "key")
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(1_500));
    assert!(hold.reference.starts_with("sim_auth_"));
    assert!(hold.expires_at.unwrap() > time::OffsetDateTime::now_utc());

    let start = Instant::now();
    let answer = provider.authorize("tok_declined", &euros(100), "key").await;
    assert_eq!(answer, Err(declined("card_declined")));
    assert_eq!(start.elapsed(), Duration::from_millis(1_500));

    let instant = SimulatedProvider::default();
    let start = Instant::now();
    assert!(
        instant
            .authorize("tok_visa", &euros(1), "key")
            .await
            .is_ok()
    );
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn tokens_decide_and_the_decline_rate_declines_good_cards() {
    let never = SimulatedProvider::default();
    let always = SimulatedProvider {
        latency: Duration::ZERO,
        decline_rate: 1.0,
        ..SimulatedProvider::default()
    };
    for _ in 0..20 {
        assert!(
            never
                .authorize("tok_visa", &euros(100), "key")
                .await
                .is_ok()
        );
        assert_eq!(
            always.authorize("tok_visa", &euros(100), "key").await,
            Err(declined("insufficient_funds"))
        );
    }
    assert_eq!(
        never.authorize("tok_declined", &euros(100), "key").await,
        Err(declined("card_declined"))
    );
    assert_eq!(
        never.authorize("tok_unknown", &euros(100), "key").await,
        Err(declined("unknown_token"))
    );
    // Out-of-range rates are clamped rather than trusted.
    let odd = SimulatedProvider {
        latency: Duration::ZERO,
        decline_rate: f64::NAN,
        ..SimulatedProvider::default()
    };
    assert!(odd.authorize("tok_visa", &euros(100), "key").await.is_ok());
    let negative = SimulatedProvider {
        latency: Duration::ZERO,
        decline_rate: -3.0,
        ..SimulatedProvider::default()
    };
    assert!(
        negative
            .authorize("tok_visa", &euros(100), "key")
            .await
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn captures_refunds_and_voids_take_the_latency_and_succeed() {
    let provider = SimulatedProvider {
        latency: Duration::from_millis(200),
        ..SimulatedProvider::default()
    };
    let hold = provider
        .authorize("tok_visa", &euros(100), "key")
        .await
        .unwrap();
    let start = Instant::now();
    let capture = provider
        .capture(&hold.reference, &euros(100), "capture-1")
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert!(capture.reference.starts_with("sim_capture_"));
    let start = Instant::now();
    let refund = provider
        .refund(&capture.reference, &euros(100), "refund-1")
        .await
        .unwrap();
    assert!(refund.reference.starts_with("sim_refund_"));
    provider.void(&hold.reference, "void-1").await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(400));
}

#[tokio::test]
async fn tok_capture_fails_authorizes_but_its_capture_is_declined() {
    let provider = SimulatedProvider::default();
    let hold = provider
        .authorize("tok_capture_fails", &euros(100), "key")
        .await
        .unwrap();
    assert!(hold.reference.starts_with("sim_auth_"));
    assert_eq!(
        provider.capture(&hold.reference, &euros(100), "k").await,
        Err(declined("capture_declined"))
    );
    // Still voidable.
    assert_eq!(provider.void(&hold.reference, "v").await, Ok(()));
}

#[tokio::test]
async fn the_capture_decline_rate_declines_captures_only() {
    let always = SimulatedProvider {
        capture_decline_rate: 1.0,
        ..SimulatedProvider::default()
    };
    for _ in 0..20 {
        let hold = always
            .authorize("tok_visa", &euros(100), "key")
            .await
            .unwrap();
        assert_eq!(
            always.capture(&hold.reference, &euros(100), "k").await,
            Err(declined("capture_declined"))
        );
    }
    let never = SimulatedProvider {
        capture_decline_rate: f64::NAN,
        ..SimulatedProvider::default()
    };
    let hold = never
        .authorize("tok_visa", &euros(100), "key")
        .await
        .unwrap();
    assert!(
        never
            .capture(&hold.reference, &euros(100), "k")
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_repeated_key_gets_the_first_answer_whatever_the_dice_say() {
    use agora_payment::Replaying;

    // Half the cards and half the captures declined at random: asked again with the
    // same key, the provider answers as it did the first time.
    let provider = Replaying::new(SimulatedProvider {
        decline_rate: 0.5,
        capture_decline_rate: 0.5,
        ..SimulatedProvider::default()
    });
    let mut outcomes = std::collections::HashSet::new();
    for n in 0..40 {
        let key = format!("request-{n}");
        let first = provider.authorize("tok_visa", &euros(100), &key).await;
        for _ in 0..5 {
            assert_eq!(
                provider.authorize("tok_visa", &euros(100), &key).await,
                first
            );
        }
        outcomes.insert(first.is_ok());
        let capture_key = format!("capture-{n}");
        let captured = provider
            .capture("sim_auth_x", &euros(100), &capture_key)
            .await;
        for _ in 0..5 {
            assert_eq!(
                provider
                    .capture("sim_auth_x", &euros(100), &capture_key)
                    .await,
                captured,
                "a retried capture never comes back different"
            );
        }
    }
    assert_eq!(
        outcomes.len(),
        2,
        "both answers were drawn, each kept for its key"
    );
}
