//! The values customer accepts, parsed once at the edge: a handler that holds an
//! [`Address`] or a [`PaymentMethod`] holds a valid one.

use agora_httpkit::FieldError;

pub use agora_domain::{Address, Invalid, RawAddress};

/// The address, or every invalid field as customer answers it.
pub fn parse_address(raw: RawAddress<'_>) -> Result<Address, Vec<FieldError>> {
    Address::parse(raw).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| FieldError::new(e.field, e.reason))
            .collect()
    })
}

/// How a customer pays: the payment provider's token and the card's last four digits.
/// Never a card number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentMethod {
    token: String,
    last4: String,
}

impl PaymentMethod {
    /// Characters after `tok_`.
    pub const MAX_TOKEN_SUFFIX: usize = 60;
    /// A run of this many digits looks like a card number (they have 12 to 19).
    const CARD_NUMBER_DIGITS: usize = 12;

    /// The method, or every invalid field. The token is `tok_` and 1 to 60 of
    /// `a-z`, `0-9`, `_`, and holds no card number; `last4` is four digits.
    pub fn parse(token: &str, last4: &str) -> Result<PaymentMethod, Vec<FieldError>> {
        let mut errors = Vec::new();
        let token = Self::token(token)
            .map_err(|e| errors.push(FieldError::new("token", e.0)))
            .ok();
        let last4 = last4.trim();
        let last4 = (last4.len() == 4 && last4.bytes().all(|b| b.is_ascii_digit()))
            .then(|| last4.to_owned());
        if last4.is_none() {
            errors.push(FieldError::new("last4", "must be exactly four digits"));
        }
        match (token, last4) {
            (Some(token), Some(last4)) => Ok(PaymentMethod { token, last4 }),
            _ => Err(errors),
        }
    }

    fn token(raw: &str) -> Result<String, Invalid> {
        let token = raw.trim();
        if token.is_empty() {
            return Err(Invalid("is required"));
        }
        let Some(suffix) = token.strip_prefix("tok_") else {
            return Err(Invalid("must start with \"tok_\""));
        };
        let well_formed = !suffix.is_empty()
            && suffix.len() <= Self::MAX_TOKEN_SUFFIX
            && suffix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !well_formed {
            return Err(Invalid(
                "must be \"tok_\" followed by 1 to 60 of a-z, 0-9 and _",
            ));
        }
        let longest_digit_run = suffix
            .split(|c: char| !c.is_ascii_digit())
            .map(str::len)
            .max()
            .unwrap_or(0);
        if longest_digit_run >= Self::CARD_NUMBER_DIGITS {
            return Err(Invalid("must not hold a card number"));
        }
        Ok(token.to_owned())
    }

    pub fn token_str(&self) -> &str {
        &self.token
    }

    pub fn last4(&self) -> &str {
        &self.last4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_tokens_follow_the_provider_format() {
        let method = PaymentMethod::parse(" tok_visa ", "4242").unwrap();
        assert_eq!(method.token_str(), "tok_visa");
        assert_eq!(method.last4(), "4242");
        assert!(PaymentMethod::parse(&format!("tok_{}", "a".repeat(60)), "0000").is_ok());
        for bad in [
            "",
            "tok_",
            "visa",
            "tok_Visa",
            "tok_vi-sa",
            "tok_visa ok",
            &format!("tok_{}", "a".repeat(61)),
        ] {
            let errors = PaymentMethod::parse(bad, "4242").unwrap_err();
            assert_eq!(errors[0].field, "token", "{bad:?}");
        }
    }

    #[test]
    fn a_card_number_is_never_a_token() {
        assert!(PaymentMethod::parse("tok_4111111111111111", "1111").is_err());
        assert!(PaymentMethod::parse("tok_12345678901", "1111").is_ok());
    }

    #[test]
    fn last4_is_four_digits() {
        for bad in ["", "424", "42424", "42a4", "٤٢٤٢"] {
            let errors = PaymentMethod::parse("tok_visa", bad).unwrap_err();
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].field, "last4", "{bad:?}");
        }
    }
}
