//! Inventory's domain values, parsed from the wire at the edge.

use agora_httpkit::FieldError;

/// The most a product's `on_hand` may be set to.
pub const MAX_ON_HAND: u32 = 1_000_000;

/// Why an input was refused: the fields and what is wrong with them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid input")]
pub struct Invalid(pub Vec<FieldError>);

/// A quantity a product's stock on hand may be set to: 0 to [`MAX_ON_HAND`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnHand(u32);

impl OnHand {
    pub fn parse(value: i64) -> Result<OnHand, Invalid> {
        match u32::try_from(value) {
            Ok(n) if n <= MAX_ON_HAND => Ok(OnHand(n)),
            _ => Err(Invalid(vec![FieldError::new(
                "on_hand",
                format!("must be a whole number from 0 to {MAX_ON_HAND}"),
            )])),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_hand_is_bounded() {
        assert_eq!(OnHand::parse(0).unwrap().get(), 0);
        assert_eq!(OnHand::parse(1_000_000).unwrap().get(), 1_000_000);
        assert!(OnHand::parse(-1).is_err());
        assert!(OnHand::parse(1_000_001).is_err());
    }
}
