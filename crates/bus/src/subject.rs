//! NATS-style subjects: tokens separated by `.`; in patterns `*` matches one token and a
//! final `>` matches one or more.

use crate::BusError;

fn invalid(subject: &str, why: &'static str) -> BusError {
    BusError::InvalidSubject {
        subject: subject.to_owned(),
        why,
    }
}

fn check_tokens(subject: &str) -> Result<(), BusError> {
    if subject.is_empty() || subject.len() > 256 {
        return Err(invalid(subject, "must be 1 to 256 bytes"));
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return Err(invalid(subject, "has an empty token"));
        }
        if token.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(invalid(subject, "may hold only visible ASCII"));
        }
    }
    Ok(())
}

/// A concrete subject, as published: no wildcards.
pub fn validate_subject(subject: &str) -> Result<(), BusError> {
    check_tokens(subject)?;
    if subject.split('.').any(|t| t == "*" || t == ">") {
        return Err(invalid(subject, "a published subject has no wildcards"));
    }
    Ok(())
}

/// A subject pattern, as a stream or a consumer filter names it.
pub fn validate_subject_pattern(pattern: &str) -> Result<(), BusError> {
    check_tokens(pattern)?;
    let tokens: Vec<&str> = pattern.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if *token == ">" && i + 1 != tokens.len() {
            return Err(invalid(pattern, "'>' must be the last token"));
        }
        if token.len() > 1 && (token.contains('*') || token.contains('>')) {
            return Err(invalid(pattern, "a wildcard must be a whole token"));
        }
    }
    Ok(())
}

/// Whether `subject` matches `pattern`.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for token in pattern.split('.') {
        match token {
            ">" => return subject_tokens.next().is_some(),
            "*" => {
                if subject_tokens.next().is_none() {
                    return false;
                }
            }
            literal => {
                if subject_tokens.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_nats() {
        assert!(subject_matches("orders.*", "orders.accepted"));
        assert!(!subject_matches("orders.*", "orders.accepted.v1"));
        assert!(!subject_matches("orders.*", "orders"));
        assert!(subject_matches("orders.>", "orders.accepted.v1"));
        assert!(!subject_matches("orders.>", "orders"));
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(!subject_matches("a.*.c", "a.b.d"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
    }

    #[test]
    fn bad_subjects_are_refused() {
        assert!(validate_subject("a..b").is_err());
        assert!(validate_subject("a.*").is_err());
        assert!(validate_subject("a b").is_err());
        assert!(validate_subject("").is_err());
        assert!(validate_subject_pattern("a.>.b").is_err());
        assert!(validate_subject_pattern("a.b*").is_err());
        assert!(validate_subject_pattern("a.*.>").is_ok());
    }
}
