//! The values payment accepts, parsed once at the edge: a handler that holds an
//! [`AuthorizationRequest`] holds a valid one.

use agora_contracts::Money;
use agora_httpkit::FieldError;
use uuid::Uuid;

/// Why a value was refused: a sentence fragment for the client, never quoting the
/// value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

impl Invalid {
    pub fn on(self, field: &str) -> FieldError {
        FieldError::new(field, self.0)
    }
}

/// An amount to authorize, in minor units: positive, at most 100 million units of the
/// currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AmountCents(i64);

impl AmountCents {
    pub const MAX: i64 = 10_000_000_000;

    pub fn parse(raw: i64) -> Result<AmountCents, Invalid> {
        if raw <= 0 {
            return Err(Invalid("must be positive"));
        }
        if raw > Self::MAX {
            return Err(Invalid("is too large (at most 10000000000)"));
        }
        Ok(AmountCents(raw))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// An ISO 4217-shaped currency code: three upper-case ASCII letters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Currency(String);

impl Currency {
    pub fn parse(raw: &str) -> Result<Currency, Invalid> {
        if raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Currency(raw.to_owned()))
        } else {
            Err(Invalid("is not a currency code (three upper-case letters)"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The provider's token of a payment method (`tok_visa`): 1 to 255 visible ASCII
/// characters. Never a card number; payment does not interpret it.
#[derive(Clone, PartialEq, Eq)]
pub struct PaymentToken(String);

impl PaymentToken {
    pub const MAX_LEN: usize = 255;

    pub fn parse(raw: &str) -> Result<PaymentToken, Invalid> {
        if raw.is_empty() {
            return Err(Invalid("is required"));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(Invalid("is too long (at most 255 characters)"));
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Invalid("is not a payment token"));
        }
        Ok(PaymentToken(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PaymentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PaymentToken(..)")
    }
}

/// A request to authorize an amount for an order, keyed by the caller's
/// `request_id`: the same id always means the same request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationRequest {
    pub request_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub amount: AmountCents,
    pub currency: Currency,
    pub token: PaymentToken,
}

impl AuthorizationRequest {
    pub fn money(&self) -> Money {
        Money {
            amount_cents: self.amount.get(),
            currency: self.currency.as_str().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_positive_and_bounded() {
        assert!(AmountCents::parse(0).is_err());
        assert!(AmountCents::parse(-1).is_err());
        assert_eq!(AmountCents::parse(1).unwrap().get(), 1);
        assert!(AmountCents::parse(AmountCents::MAX).is_ok());
        assert!(AmountCents::parse(AmountCents::MAX + 1).is_err());
    }

    #[test]
    fn currencies_are_three_upper_case_letters() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        for raw in ["eur", "EU", "EURO", "E1R", "", "ÄUR"] {
            assert!(Currency::parse(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn tokens_are_visible_ascii_and_never_shown() {
        assert!(PaymentToken::parse("tok_visa").is_ok());
        for raw in ["", "tok visa", "tok\n", "tök"] {
            assert!(PaymentToken::parse(raw).is_err(), "{raw:?}");
        }
        assert!(PaymentToken::parse(&"t".repeat(256)).is_err());
        let token = PaymentToken::parse("tok_secret").unwrap();
        assert!(!format!("{token:?}").contains("secret"));
    }
}
