//! The values more than one service accepts, and their one validation: a service that
//! holds an [`Address`] holds a valid one, by the same rules wherever it was given
//! (customer's saved address, ordering's address given at checkout).
//!
//! Plain Rust, no I/O: errors name the field and say why in a sentence fragment for
//! the client; each service renders them in its own problem responses.

/// Why a value was refused: a sentence fragment for the client (`"is too long"`),
/// never quoting the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

/// An invalid field of a value with several, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldInvalid {
    pub field: &'static str,
    pub reason: &'static str,
}

impl Invalid {
    pub fn on(self, field: &'static str) -> FieldInvalid {
        FieldInvalid {
            field,
            reason: self.0,
        }
    }
}

/// Trimmed, non-empty, at most `max` characters, no control characters.
pub fn text(raw: &str, max: usize, too_long: &'static str) -> Result<String, Invalid> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(Invalid("is required"));
    }
    if text.chars().count() > max {
        return Err(Invalid(too_long));
    }
    if text.chars().any(char::is_control) {
        return Err(Invalid("contains control characters"));
    }
    Ok(text.to_owned())
}

/// An ISO 3166-1 alpha-2 code of an assigned country, in upper case: `de` is read
/// as `DE`, `XX` is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountryCode(String);

/// Every officially assigned ISO 3166-1 alpha-2 code.
const COUNTRIES: &str = "\
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ \
BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ \
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ \
DE DJ DK DM DO DZ \
EC EE EG EH ER ES ET \
FI FJ FK FM FO FR \
GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY \
HK HM HN HR HT HU \
ID IE IL IM IN IO IQ IR IS IT \
JE JM JO JP \
KE KG KH KI KM KN KP KR KW KY KZ \
LA LB LC LI LK LR LS LT LU LV LY \
MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ \
NA NC NE NF NG NI NL NO NP NR NU NZ \
OM \
PA PE PF PG PH PK PL PM PN PR PS PT PW PY \
QA \
RE RO RS RU RW \
SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ \
TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ \
UA UG UM US UY UZ \
VA VC VE VG VI VN VU \
WF WS \
YE YT \
ZA ZM ZW";

impl CountryCode {
    pub fn parse(raw: &str) -> Result<CountryCode, Invalid> {
        let code = raw.trim().to_ascii_uppercase();
        if code.is_empty() {
            return Err(Invalid("is required"));
        }
        let well_formed = code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase());
        if !well_formed || !COUNTRIES.split(' ').any(|known| known == code) {
            return Err(Invalid(
                "is not an ISO 3166-1 alpha-2 country code (e.g. \"DE\")",
            ));
        }
        Ok(CountryCode(code))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A shipping address: every part trimmed, without control characters and bounded;
/// `line2` is optional (blank counts as absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    line1: String,
    line2: Option<String>,
    city: String,
    postal_code: String,
    country: CountryCode,
}

/// What a client sends for an [`Address`], before parsing.
#[derive(Clone, Copy, Debug)]
pub struct RawAddress<'a> {
    pub line1: &'a str,
    pub line2: Option<&'a str>,
    pub city: &'a str,
    pub postal_code: &'a str,
    pub country: &'a str,
}

impl Address {
    pub const MAX_LINE_CHARS: usize = 200;
    pub const MAX_CITY_CHARS: usize = 100;
    pub const MAX_POSTAL_CODE_CHARS: usize = 16;

    /// The address, or every invalid field.
    pub fn parse(raw: RawAddress<'_>) -> Result<Address, Vec<FieldInvalid>> {
        let mut errors = Vec::new();
        let line_too_long = "is too long (at most 200 characters)";
        let line1 = check(
            &mut errors,
            "line1",
            text(raw.line1, Self::MAX_LINE_CHARS, line_too_long),
        );
        let line2 = match raw.line2.map(str::trim).filter(|l| !l.is_empty()) {
            None => Some(None),
            Some(line2) => check(
                &mut errors,
                "line2",
                text(line2, Self::MAX_LINE_CHARS, line_too_long).map(Some),
            ),
        };
        let city = check(
            &mut errors,
            "city",
            text(
                raw.city,
                Self::MAX_CITY_CHARS,
                "is too long (at most 100 characters)",
            ),
        );
        let postal_code = check(&mut errors, "postal_code", postal_code(raw.postal_code));
        let country = check(&mut errors, "country", CountryCode::parse(raw.country));
        match (line1, line2, city, postal_code, country) {
            (Some(line1), Some(line2), Some(city), Some(postal_code), Some(country)) => {
                Ok(Address {
                    line1,
                    line2,
                    city,
                    postal_code,
                    country,
                })
            }
            _ => Err(errors),
        }
    }

    pub fn line1(&self) -> &str {
        &self.line1
    }

    pub fn line2(&self) -> Option<&str> {
        self.line2.as_deref()
    }

    pub fn city(&self) -> &str {
        &self.city
    }

    pub fn postal_code(&self) -> &str {
        &self.postal_code
    }

    pub fn country(&self) -> &CountryCode {
        &self.country
    }
}

/// The value, or `None` after noting why `field` is invalid.
fn check<T>(
    errors: &mut Vec<FieldInvalid>,
    field: &'static str,
    parsed: Result<T, Invalid>,
) -> Option<T> {
    parsed.map_err(|e| errors.push(e.on(field))).ok()
}

/// Letters, digits, spaces and hyphens, as postal codes around the world are written.
fn postal_code(raw: &str) -> Result<String, Invalid> {
    let code = text(
        raw,
        Address::MAX_POSTAL_CODE_CHARS,
        "is too long (at most 16 characters)",
    )?;
    if !code
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-')
    {
        return Err(Invalid("may hold only letters, digits, spaces and hyphens"));
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw<'a>(country: &'a str) -> RawAddress<'a> {
        RawAddress {
            line1: " Unter den Linden 1 ",
            line2: Some("  "),
            city: "Berlin",
            postal_code: "10117",
            country,
        }
    }

    #[test]
    fn the_country_list_holds_every_assigned_code() {
        let codes: Vec<&str> = COUNTRIES.split(' ').collect();
        assert_eq!(codes.len(), 249);
        assert!(codes.iter().all(|c| c.len() == 2));
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, codes, "sorted and unique");
    }

    #[test]
    fn countries_are_upper_cased_and_must_be_assigned() {
        assert_eq!(CountryCode::parse(" de ").unwrap().as_str(), "DE");
        assert_eq!(CountryCode::parse("GB").unwrap().as_str(), "GB");
        for bad in ["", "D", "DEU", "XX", "UK", "1A", "ÄÖ"] {
            assert!(CountryCode::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn addresses_are_trimmed_and_a_blank_line2_is_absent() {
        let address = Address::parse(raw("de")).unwrap();
        assert_eq!(address.line1(), "Unter den Linden 1");
        assert_eq!(address.line2(), None);
        assert_eq!(address.country().as_str(), "DE");
    }

    #[test]
    fn every_invalid_address_field_is_named() {
        let errors = Address::parse(RawAddress {
            line1: " ",
            line2: Some(&"x".repeat(201)),
            city: "a\u{7}b",
            postal_code: "10117!",
            country: "XX",
        })
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["line1", "line2", "city", "postal_code", "country"]);
    }

    #[test]
    fn bounds_are_inclusive() {
        let long_line = "x".repeat(200);
        let address = Address::parse(RawAddress {
            line1: &long_line,
            line2: None,
            city: &"c".repeat(100),
            postal_code: &"1".repeat(16),
            country: "FR",
        });
        assert!(address.is_ok());
        assert!(
            Address::parse(RawAddress {
                postal_code: &"1".repeat(17),
                ..raw("FR")
            })
            .is_err()
        );
    }
}
