//! Checks on text that callers send.
use crate::{Error, Result};

/// A single-line human text: not empty after trimming, at most `max` characters, no control
/// characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(format!("`{field}` must not be empty")));
    }
    let chars = value.chars().count();
    if chars > max {
        return Err(Error::invalid(format!(
            "`{field}` is {chars} characters long; at most {max} are allowed"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "`{field}` must not contain control characters"
        )));
    }
    Ok(())
}

/// Like [`text`], but line breaks and tabs are allowed (comments and reasons).
pub fn multiline_text(field: &str, value: &str, max: usize) -> Result<()> {
    let chars = value.chars().count();
    if chars > max {
        return Err(Error::invalid(format!(
            "`{field}` is {chars} characters long; at most {max} are allowed"
        )));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        return Err(Error::invalid(format!(
            "`{field}` must not contain control characters"
        )));
    }
    Ok(())
}

/// A plausible email address (at most 254 characters), trimmed and normalised to lowercase.
pub fn email(value: &str) -> Result<String> {
    let length_ok = value.chars().count() <= 254;
    let value = value.trim();
    let ok = length_ok
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && match value.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    if ok {
        Ok(value.to_lowercase())
    } else {
        Err(Error::invalid(format!(
            "`email` is not a valid address: {value:?}"
        )))
    }
}

/// A tenant id: lowercase letters, digits and `-`, 1 to 63 characters, not starting with `-`.
pub fn tenant_slug(value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && !value.starts_with('-')
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "`id` must be 1 to 63 lowercase letters, digits or '-', not starting with '-'",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rules() {
        assert!(text("f", "hello", 10).is_ok());
        assert!(text("f", "  ", 10).is_err());
        assert!(text("f", "a\u{7}", 10).is_err());
        assert!(text("f", "abcdefghijk", 10).is_err());
        assert!(multiline_text("f", "a\nb", 10).is_ok());
    }

    #[test]
    fn email_rules() {
        assert_eq!(email(" Alice@Example.com ").unwrap(), "alice@example.com");
        assert!(email("nobody").is_err());
        assert!(email("a@b@c").is_err());
        assert!(email("a b@c.d").is_err());
    }

    #[test]
    fn slug_rules() {
        assert!(tenant_slug("acme-1").is_ok());
        assert!(tenant_slug("Acme").is_err());
        assert!(tenant_slug("-x").is_err());
        assert!(tenant_slug("").is_err());
    }
}
