//! The values catalog accepts, parsed once at the edge: a handler that holds a
//! [`ProductName`], a [`Description`] or an [`ImageUrl`] holds a valid one.

use agora_httpkit::FieldError;

/// Why a value was refused: a sentence fragment for the client (`"is required"`),
/// never quoting the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

impl Invalid {
    pub fn on(self, field: &str) -> FieldError {
        FieldError::new(field, self.0)
    }
}

/// A product's name: 1 to 120 characters after trimming, on one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductName(String);

impl ProductName {
    pub const MAX_CHARS: usize = 120;

    pub fn parse(raw: &str) -> Result<ProductName, Invalid> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(Invalid("is required"));
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(Invalid("is too long (at most 120 characters)"));
        }
        if name.chars().any(char::is_control) {
            return Err(Invalid("contains control characters"));
        }
        Ok(ProductName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A product's description: trimmed, at most 2000 characters, possibly empty. Line
/// breaks and tabs are allowed; other control characters are not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    pub const MAX_CHARS: usize = 2000;

    pub fn parse(raw: &str) -> Result<Description, Invalid> {
        let description = raw.trim();
        if description.chars().count() > Self::MAX_CHARS {
            return Err(Invalid("is too long (at most 2000 characters)"));
        }
        if description
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(Invalid("contains control characters"));
        }
        Ok(Description(description.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a picture of the product is: an absolute `http(s)` URL of at most 2048
/// characters, without whitespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageUrl(String);

impl ImageUrl {
    pub const MAX_CHARS: usize = 2048;

    pub fn parse(raw: &str) -> Result<ImageUrl, Invalid> {
        let url = raw.trim();
        if url.chars().count() > Self::MAX_CHARS {
            return Err(Invalid("is too long (at most 2048 characters)"));
        }
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or(Invalid("is not an http(s) URL"))?;
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Invalid("is not an http(s) URL"));
        }
        Ok(ImageUrl(url.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_non_empty_and_bounded() {
        assert_eq!(ProductName::parse("  Mug ").unwrap().as_str(), "Mug");
        assert!(ProductName::parse("   ").is_err());
        assert!(ProductName::parse(&"n".repeat(120)).is_ok());
        assert!(ProductName::parse(&"n".repeat(121)).is_err());
        assert!(ProductName::parse(&"ä".repeat(120)).is_ok());
        assert!(ProductName::parse("two\nlines").is_err());
    }

    #[test]
    fn descriptions_may_be_empty_and_span_lines() {
        assert_eq!(Description::parse("  ").unwrap().as_str(), "");
        assert!(Description::parse("one\ntwo\tthree").is_ok());
        assert!(Description::parse(&"d".repeat(2000)).is_ok());
        assert!(Description::parse(&"d".repeat(2001)).is_err());
        assert!(Description::parse("bell\u{7}").is_err());
    }

    #[test]
    fn image_urls_are_absolute_http_urls() {
        assert!(ImageUrl::parse("https://img.example.org/mug.png").is_ok());
        assert!(ImageUrl::parse("http://localhost:8080/a.png").is_ok());
        for raw in [
            "",
            "ftp://x.org/a",
            "https://",
            "https:///a",
            "https://a b",
            "/a.png",
        ] {
            assert!(ImageUrl::parse(raw).is_err(), "{raw:?}");
        }
    }
}
