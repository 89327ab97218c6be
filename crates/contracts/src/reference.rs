//! How a person names an order: `AG-7K3Q-9D2M`.
//!
//! The one place the reference is derived, used by ordering (its answers carry it and
//! its API accepts it where an order id goes), notification (mail subjects and bodies)
//! and, through ordering's answers, the web UI. It is a pure function of the id, so
//! nothing stores it and every service derives the same text.
//!
//! A UUIDv7 begins with its timestamp: orders placed minutes apart share a prefix. The
//! reference takes the id's last 40 bits instead, which are random, and writes them as
//! eight Crockford base-32 digits (no I, L, O or U: nothing to misread or misspeak).
//! Forty bits make a collision between one customer's orders vanishingly unlikely; a
//! lookup by reference is therefore scoped to the customer's own orders (an admin who
//! meets two orders with one reference is told to use the id).

use std::fmt;

use uuid::Uuid;

/// Crockford's base-32 alphabet.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// The bits of the id a reference keeps (its last ones).
const BITS: u32 = 40;
const PREFIX: &str = "AG";

/// An order's human reference: the last 40 bits of its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrderReference(u64);

impl OrderReference {
    /// The reference of the order with this id.
    pub fn of(id: Uuid) -> Self {
        Self((id.as_u128() & ((1u128 << BITS) - 1)) as u64)
    }

    /// Reads a reference as a person may type it: any case, with or without the
    /// dashes, Crockford's look-alikes (`O` for 0, `I`/`L` for 1). `None` for
    /// anything else, including an id.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.len() > 16 {
            return None;
        }
        let upper = text.to_ascii_uppercase();
        let rest = upper.strip_prefix(PREFIX)?;
        let mut value: u64 = 0;
        let mut digits = 0;
        for (i, byte) in rest.bytes().enumerate() {
            if byte == b'-' {
                // Dashes only where the canonical form has them.
                if i != 0 && i != 5 {
                    return None;
                }
                continue;
            }
            let byte = match byte {
                b'O' => b'0',
                b'I' | b'L' => b'1',
                other => other,
            };
            let digit = ALPHABET.iter().position(|&a| a == byte)? as u64;
            value = (value << 5) | digit;
            digits += 1;
            if digits > 8 {
                return None;
            }
        }
        (digits == 8).then_some(Self(value))
    }

    /// Whether the order with this id has this reference.
    pub fn matches(&self, id: Uuid) -> bool {
        Self::of(id) == *self
    }

    /// The last hex digits every id with this reference ends with (lower case, as
    /// an id is written): for a suffix match on stored ids.
    pub fn id_suffix(&self) -> String {
        format!("{:010x}", self.0)
    }
}

impl fmt::Display for OrderReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut digits = [0u8; 8];
        for (i, digit) in digits.iter_mut().enumerate() {
            let shift = 5 * (7 - i as u32);
            *digit = ALPHABET[((self.0 >> shift) & 31) as usize];
        }
        let text = std::str::from_utf8(&digits).map_err(|_| fmt::Error)?;
        write!(f, "{PREFIX}-{}-{}", &text[..4], &text[4..])
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn orders_made_together_read_apart() {
        let references: HashSet<String> = (0..1000)
            .map(|_| OrderReference::of(Uuid::now_v7()).to_string())
            .collect();
        assert_eq!(
            references.len(),
            1000,
            "made in the same milliseconds, yet apart"
        );
    }

    #[test]
    fn the_reference_is_the_ids_random_tail() {
        let id = Uuid::parse_str("01a24d0d-0000-7000-8000-00000000beef").unwrap();
        let reference = OrderReference::of(id);
        assert_eq!(reference.to_string(), "AG-0000-1FQF");
        assert_eq!(reference.id_suffix(), "000000beef");
        assert!(id.to_string().ends_with(&reference.id_suffix()));
        let id = Uuid::parse_str("01a24d0d-0000-7000-8000-ffffffffffff").unwrap();
        assert_eq!(OrderReference::of(id).to_string(), "AG-ZZZZ-ZZZZ");
    }

    #[test]
    fn a_reference_reads_back_as_people_type_it() {
        let id = Uuid::now_v7();
        let reference = OrderReference::of(id);
        let text = reference.to_string();
        for typed in [
            text.clone(),
            text.to_lowercase(),
            text.replace('-', ""),
            format!("  {text} "),
        ] {
            assert_eq!(OrderReference::parse(&typed), Some(reference), "{typed:?}");
            assert!(OrderReference::parse(&typed).unwrap().matches(id));
        }
        assert_eq!(
            OrderReference::parse("ag-oooo-1ili"),
            OrderReference::parse("AG-0000-1111")
        );
    }

    #[test]
    fn anything_else_is_not_a_reference() {
        for text in [
            "",
            "AG",
            "AG-",
            "AG-1234-567",
            "AG-1234-56789",
            "AG-1234-567U",
            "XX-1234-5678",
            "AG--1234-5678",
            "AG-12-345678",
            "01a24d0d-0000-7000-8000-00000000beef",
            "AG-1234-5678-AG-1234-5678",
        ] {
            assert_eq!(OrderReference::parse(text), None, "{text:?}");
        }
    }
}
