//! The values identity accepts, parsed once at the edge: a handler that holds an
//! [`Email`], a [`Password`] or a [`Name`] holds a valid one.

use std::fmt;

use agora_httpkit::FieldError;

/// Why a value was refused: a sentence fragment for the client (`"is too short"`),
/// never quoting the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

impl Invalid {
    pub fn on(self, field: &str) -> FieldError {
        FieldError::new(field, self.0)
    }
}

/// An email address, trimmed and lower-cased: two spellings that differ only in case
/// are one account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// RFC 5321's limit on a forward path.
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Email, Invalid> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err(Invalid("is required"));
        }
        if email.len() > Self::MAX_LEN {
            return Err(Invalid("is too long (at most 254 characters)"));
        }
        let Some((local, domain)) = email.split_once('@') else {
            return Err(Invalid("is not an email address"));
        };
        let plausible = !local.is_empty()
            && local.len() <= 64
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && email.chars().all(|c| !c.is_whitespace() && !c.is_control());
        if !plausible {
            return Err(Invalid("is not an email address"));
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password a user chose: 10 to 1024 characters. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub const MIN_CHARS: usize = 10;
    /// Bounds the work of hashing one request.
    pub const MAX_CHARS: usize = 1024;

    pub fn parse(raw: &str) -> Result<Password, Invalid> {
        let chars = raw.chars().count();
        if chars < Self::MIN_CHARS {
            return Err(Invalid("is too short (at least 10 characters)"));
        }
        if chars > Self::MAX_CHARS {
            return Err(Invalid("is too long (at most 1024 characters)"));
        }
        Ok(Password(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A user's display name: 1 to 100 characters after trimming, no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Name, Invalid> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(Invalid("is required"));
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(Invalid("is too long (at most 100 characters)"));
        }
        if name.chars().any(char::is_control) {
            return Err(Invalid("contains control characters"));
        }
        Ok(Name(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            Email::parse("  Ada@Example.ORG ").unwrap().as_str(),
            "ada@example.org"
        );
    }

    #[test]
    fn implausible_emails_are_refused() {
        for raw in [
            "",
            "ada",
            "ada@",
            "@example.org",
            "ada@example",
            "a@b@c.d",
            "ada @x.org",
            "ada@x..org",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?}");
        }
        assert!(Email::parse(&format!("{}@x.org", "a".repeat(250))).is_err());
    }

    #[test]
    fn passwords_have_at_least_ten_characters() {
        assert!(Password::parse("123456789").is_err());
        assert!(Password::parse("1234567890").is_ok());
        assert!(Password::parse("ääääääääää").is_ok());
        assert!(Password::parse(&"x".repeat(1025)).is_err());
        assert_eq!(
            format!("{:?}", Password::parse("secret-secret").unwrap()),
            "Password(<redacted>)"
        );
    }

    #[test]
    fn names_are_non_empty_and_bounded() {
        assert!(Name::parse("  ").is_err());
        assert!(Name::parse(&"n".repeat(101)).is_err());
        assert!(Name::parse("a\u{7}b").is_err());
        assert_eq!(Name::parse(" Ada ").unwrap().as_str(), "Ada");
    }
}
