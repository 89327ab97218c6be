//! Per-account throttling of sign-ins: after a few attempts without a success, the
//! address is blocked for a time that doubles with each further attempt.

use std::time::Duration;

/// How failed sign-ins for one address are slowed down. The state lives in identity's
/// store, keyed by the address as [`crate::Email`] normalises it, so that every
/// instance sees it and it survives a restart; addresses without an account are
/// throttled alike, so the answers do not tell whether one exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignInThrottle {
    /// Attempts checked without delay after the last success (or after a quiet
    /// [`SignInThrottle::forget_after`]).
    pub free_attempts: u32,
    /// The block after the last free attempt; it doubles with each further attempt.
    pub base_delay: Duration,
    /// The longest block.
    pub max_delay: Duration,
    /// Attempts are forgotten after this long without one.
    pub forget_after: Duration,
}

impl Default for SignInThrottle {
    /// 5 free attempts, then blocks of 1 s, 2 s, 4 s, … up to 15 minutes; forgotten
    /// after an hour without an attempt.
    fn default() -> Self {
        Self {
            free_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(60 * 60),
        }
    }
}

impl SignInThrottle {
    /// How long (in ms) the `n`-th attempt since the last success blocks the next ones:
    /// nothing before the last free attempt, then `base_delay · 2^(n - free_attempts)`,
    /// capped at `max_delay`.
    pub fn block_after_ms(&self, n: u32) -> i64 {
        if n < self.free_attempts.max(1) {
            return 0;
        }
        let doublings = (n - self.free_attempts.max(1)).min(40);
        let base = self.base_delay.as_millis();
        let delay = base
            .saturating_mul(1u128 << doublings)
            .min(self.max_delay.as_millis());
        i64::try_from(delay).unwrap_or(i64::MAX)
    }

    pub fn forget_after_ms(&self) -> i64 {
        i64::try_from(self.forget_after.as_millis()).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_free_attempts_then_doubling_blocks_up_to_fifteen_minutes() {
        let throttle = SignInThrottle::default();
        let blocks: Vec<i64> = (1..=16).map(|n| throttle.block_after_ms(n)).collect();
        assert_eq!(
            blocks,
            [
                0, 0, 0, 0, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000,
                512_000, 900_000, 900_000
            ]
        );
        assert_eq!(throttle.block_after_ms(u32::MAX), 900_000);
    }
}
