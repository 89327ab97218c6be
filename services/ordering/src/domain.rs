//! The values ordering accepts, parsed once at the edge: a handler that holds a
//! [`Lines`], a [`Price`] or an [`IdempotencyKey`] holds a valid one.

use std::fmt;

use agora_contracts::Address;
use agora_httpkit::FieldError;
use uuid::Uuid;

/// Why a value was refused: a sentence fragment for the client, never quoting the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

impl Invalid {
    pub fn on(self, field: impl Into<String>) -> FieldError {
        FieldError::new(field, self.0)
    }
}

/// How many units of one product a line orders: 1 to 100.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: u32 = 100;

    pub fn parse(raw: i64) -> Result<Quantity, Invalid> {
        match u32::try_from(raw) {
            Ok(q) if (1..=Self::MAX).contains(&q) => Ok(Quantity(q)),
            _ => Err(Invalid("must be between 1 and 100")),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// One requested line: a product and how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line {
    pub product_id: Uuid,
    pub quantity: Quantity,
}

/// The lines of a checkout: 1 to 50, each product at most once (a repeated product is
/// refused rather than merged, so that the order shows what was asked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lines(Vec<Line>);

impl Lines {
    pub const MAX: usize = 50;

    /// `raw`: `(product_id, quantity)` as sent; every problem is reported, by field path.
    pub fn parse(raw: &[(String, i64)]) -> Result<Lines, Vec<FieldError>> {
        if raw.is_empty() {
            return Err(vec![FieldError::new(
                "lines",
                "must hold at least one line",
            )]);
        }
        if raw.len() > Self::MAX {
            return Err(vec![FieldError::new("lines", "must hold at most 50 lines")]);
        }
        let mut errors = Vec::new();
        let mut lines: Vec<Line> = Vec::with_capacity(raw.len());
        for (index, (product_id, quantity)) in raw.iter().enumerate() {
            let product_id = Uuid::parse_str(product_id)
                .map_err(|_| {
                    errors.push(FieldError::new(
                        format!("lines[{index}].product_id"),
                        "is not a UUID",
                    ))
                })
                .ok();
            let quantity = Quantity::parse(*quantity)
                .map_err(|e| errors.push(e.on(format!("lines[{index}].quantity"))))
                .ok();
            if let Some(id) = product_id
                && lines.iter().any(|l| l.product_id == id)
            {
                errors.push(FieldError::new(
                    format!("lines[{index}].product_id"),
                    "appears in more than one line",
                ));
                continue;
            }
            if let (Some(product_id), Some(quantity)) = (product_id, quantity) {
                lines.push(Line {
                    product_id,
                    quantity,
                });
            }
        }
        if errors.is_empty() {
            Ok(Lines(lines))
        } else {
            Err(errors)
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Line> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// An ISO 4217 code: three upper-case ASCII letters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Currency(String);

impl Currency {
    pub fn parse(raw: &str) -> Result<Currency, Invalid> {
        if raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Currency(raw.to_owned()))
        } else {
            Err(Invalid("must be an ISO 4217 code such as EUR"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A unit price an admin sets: 1 cent to 10,000,000.00 in minor units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Price {
    pub amount_cents: i64,
    pub currency: Currency,
}

impl Price {
    pub const MAX_CENTS: i64 = 1_000_000_000;

    pub fn parse(amount_cents: i64, currency: &str) -> Result<Price, Vec<FieldError>> {
        let mut errors = Vec::new();
        if !(1..=Self::MAX_CENTS).contains(&amount_cents) {
            errors.push(FieldError::new(
                "amount_cents",
                "must be between 1 and 1000000000",
            ));
        }
        let currency = Currency::parse(currency)
            .map_err(|e| errors.push(e.on("currency")))
            .ok();
        match currency {
            Some(currency) if errors.is_empty() => Ok(Price {
                amount_cents,
                currency,
            }),
            _ => Err(errors),
        }
    }
}

/// The client's `Idempotency-Key`: 1 to 200 printable ASCII characters.
#[derive(Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 200;

    pub fn parse(raw: &str) -> Result<IdempotencyKey, Invalid> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(Invalid("must be 1 to 200 characters"));
        }
        if !raw.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(Invalid("must be printable ASCII"));
        }
        Ok(IdempotencyKey(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({:?})", self.0)
    }
}

/// Validates a shipping address given at checkout, by the rules customer applies to a
/// saved one ([`agora_domain::Address`]): trimmed, bounded, a known country (upper
/// case), a postal code of letters, digits, spaces and hyphens; `line2` is dropped
/// when blank. Errors name `field.part`.
pub fn parse_address(raw: &Address, field: &str) -> Result<Address, Vec<FieldError>> {
    let parsed = agora_domain::Address::parse(agora_domain::RawAddress {
        line1: &raw.line1,
        line2: raw.line2.as_deref(),
        city: &raw.city,
        postal_code: &raw.postal_code,
        country: &raw.country,
    })
    .map_err(|errors| {
        errors
            .into_iter()
            .map(|e| FieldError::new(format!("{field}.{}", e.field), e.reason))
            .collect::<Vec<_>>()
    })?;
    Ok(Address {
        line1: parsed.line1().to_owned(),
        line2: parsed.line2().map(str::to_owned),
        city: parsed.city().to_owned(),
        postal_code: parsed.postal_code().to_owned(),
        country: parsed.country().as_str().to_owned(),
    })
}

/// The namespace of ordering's name-based UUIDs.
const NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_7269_6e67_a000_0000_0000_0001);

/// The payment request id of a checkout: derived from the customer and the idempotency
/// key only, so a retried checkout asks payment for the same authorization and payment
/// answers it once.
pub fn payment_request_id(customer_id: Uuid, key: &IdempotencyKey) -> Uuid {
    Uuid::new_v5(
        &NAMESPACE,
        format!("payment-request/{customer_id}/{}", key.as_str()).as_bytes(),
    )
}

/// A fingerprint of a checkout request in its parsed, canonical form: two requests
/// with the same lines (in the same order) and the same address override have the same
/// fingerprint, whatever their JSON spelling.
pub fn request_fingerprint(lines: &Lines, shipping_address: Option<&Address>) -> String {
    let canonical = serde_json::json!({
        "lines": lines.iter().map(|l| (l.product_id, l.quantity.get())).collect::<Vec<_>>(),
        "shipping_address": shipping_address,
    });
    Uuid::new_v5(&NAMESPACE, canonical.to_string().as_bytes()).to_string()
}

/// An order's status, stored as its text (`as_str`/`parse`: the one mapping).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderStatus {
    Accepted,
    Paid,
    ReadyForShipping,
    Shipped,
    Cancelled,
}

impl OrderStatus {
    /// The forward path, in order.
    pub(crate) const PATH: [OrderStatus; 4] = [
        OrderStatus::Accepted,
        OrderStatus::Paid,
        OrderStatus::ReadyForShipping,
        OrderStatus::Shipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Accepted => "accepted",
            OrderStatus::Paid => "paid",
            OrderStatus::ReadyForShipping => "ready_for_shipping",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<OrderStatus> {
        [Self::PATH.as_slice(), &[OrderStatus::Cancelled]]
            .concat()
            .into_iter()
            .find(|s| s.as_str() == raw)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, OrderStatus::Shipped | OrderStatus::Cancelled)
    }

    /// The position on the forward path (`None` for `cancelled`).
    pub(crate) fn rank(self) -> Option<usize> {
        Self::PATH.iter().position(|s| *s == self)
    }
}

#[cfg(test)]
mod tests {
    use super::OrderStatus;

    /// The one mapping between a status and its stored text goes both ways, and text
    /// that names no status is refused.
    #[test]
    fn a_status_is_stored_as_its_name_and_read_back() {
        let all = [
            OrderStatus::Accepted,
            OrderStatus::Paid,
            OrderStatus::ReadyForShipping,
            OrderStatus::Shipped,
            OrderStatus::Cancelled,
        ];
        for status in all {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
        let names: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "accepted",
                "paid",
                "ready_for_shipping",
                "shipped",
                "cancelled"
            ]
        );
        for raw in ["", "Shipped", "shipped ", "refunded"] {
            assert_eq!(OrderStatus::parse(raw), None, "{raw:?}");
        }
        let terminal: Vec<_> = all.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [OrderStatus::Shipped, OrderStatus::Cancelled]);
    }

    use super::*;

    fn raw(n: usize, quantity: i64) -> Vec<(String, i64)> {
        (0..n)
            .map(|_| (Uuid::now_v7().to_string(), quantity))
            .collect()
    }

    #[test]
    fn lines_are_one_to_fifty_with_quantities_one_to_a_hundred() {
        assert!(Lines::parse(&[]).is_err());
        assert_eq!(Lines::parse(&raw(50, 100)).unwrap().len(), 50);
        assert!(Lines::parse(&raw(51, 1)).is_err());
        for bad in [0, -1, 101, i64::MAX] {
            let errors = Lines::parse(&raw(1, bad)).unwrap_err();
            assert_eq!(errors[0].field, "lines[0].quantity");
        }
        let errors = Lines::parse(&[("nope".into(), 1)]).unwrap_err();
        assert_eq!(errors[0].field, "lines[0].product_id");
        let id = Uuid::now_v7().to_string();
        assert!(Lines::parse(&[(id.clone(), 1), (id, 2)]).is_err());
    }

    #[test]
    fn idempotency_keys_are_short_printable_ascii() {
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(201)).is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(200)).is_ok());
        assert!(IdempotencyKey::parse("tab\there").is_err());
        assert!(IdempotencyKey::parse("ключ").is_err());
        assert!(IdempotencyKey::parse("order 1 ~!").is_ok());
    }

    #[test]
    fn prices_are_positive_and_bounded_with_an_iso_currency() {
        assert!(Price::parse(1, "EUR").is_ok());
        assert_eq!(Price::parse(0, "eur").unwrap_err().len(), 2);
        assert!(Price::parse(Price::MAX_CENTS + 1, "EUR").is_err());
    }

    #[test]
    fn payment_request_ids_depend_on_customer_and_key_only() {
        let customer = Uuid::now_v7();
        let key = IdempotencyKey::parse("k1").unwrap();
        assert_eq!(
            payment_request_id(customer, &key),
            payment_request_id(customer, &key)
        );
        assert_ne!(
            payment_request_id(customer, &key),
            payment_request_id(Uuid::now_v7(), &key)
        );
    }

    #[test]
    fn addresses_need_the_required_fields_and_a_country_code() {
        let address = Address {
            line1: " Main St 1 ".into(),
            line2: Some(" ".into()),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        };
        let parsed = parse_address(&address, "shipping_address").unwrap();
        assert_eq!(parsed.line1, "Main St 1");
        assert_eq!(parsed.line2, None);
        let bad = Address {
            country: "Germany".into(),
            city: String::new(),
            ..address
        };
        assert_eq!(
            parse_address(&bad, "shipping_address").unwrap_err().len(),
            2
        );
    }

    /// One rule for an address, wherever it is given: what customer refuses for a
    /// saved address, checkout refuses too (it used to pass a postal code with `!`,
    /// an unassigned country, 20-character postal codes), and what customer accepts
    /// (a country in lower case) checkout takes the same way.
    #[test]
    fn the_address_rules_are_customers() {
        let address = Address {
            line1: "Main St 1".into(),
            line2: None,
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: " de ".into(),
        };
        assert_eq!(
            parse_address(&address, "shipping_address").unwrap().country,
            "DE"
        );
        for (postal_code, country) in [("10115!", "DE"), ("10115", "XX"), (&*"1".repeat(17), "DE")]
        {
            let bad = Address {
                postal_code: postal_code.into(),
                country: country.into(),
                ..address.clone()
            };
            let errors = parse_address(&bad, "shipping_address").unwrap_err();
            let customer = agora_domain::Address::parse(agora_domain::RawAddress {
                line1: &bad.line1,
                line2: None,
                city: &bad.city,
                postal_code: &bad.postal_code,
                country: &bad.country,
            })
            .unwrap_err();
            assert_eq!(errors.len(), customer.len(), "{postal_code:?} {country:?}");
            assert!(errors[0].field.starts_with("shipping_address."));
        }
    }
}
