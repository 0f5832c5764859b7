//! Checks on text that callers send.
use countersign_proto::ErrorCode;

use crate::{Error, Result};

/// Whether a character would be invisible to a reviewer or change how the text around it is
/// shown: C0/C1 controls, line and paragraph separators, and the Unicode format characters
/// (category `Cf`: bidirectional overrides, embeddings, isolates and marks, zero-width
/// characters, the byte-order mark, invisible operators, tag characters, …).
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08E2}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0001}'
                | '\u{E0020}'..='\u{E007F}'
        )
}

/// Refuses text holding a hidden character (see [`is_hidden`]) other than those in `allowed`,
/// naming the field and the character.
pub fn visible_text(field: &str, value: &str, allowed: &[char]) -> Result<()> {
    match value
        .chars()
        .enumerate()
        .find(|(_, c)| is_hidden(*c) && !allowed.contains(c))
    {
        None => Ok(()),
        Some((at, c)) => Err(Error::coded(
            ErrorCode::InvalidText,
            format!(
                "`{field}` must not contain control, bidirectional or invisible formatting characters (found U+{:04X} at character {})",
                c as u32,
                at + 1
            ),
        )),
    }
}

/// A single-line human text: not empty after trimming, at most `max` characters, no control
/// or invisible formatting characters.
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
    visible_text(field, value, &[])
}

/// Like [`text`], but line breaks and tabs are allowed (comments and reasons).
pub fn multiline_text(field: &str, value: &str, max: usize) -> Result<()> {
    let chars = value.chars().count();
    if chars > max {
        return Err(Error::invalid(format!(
            "`{field}` is {chars} characters long; at most {max} are allowed"
        )));
    }
    visible_text(field, value, &['\n', '\r', '\t'])
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
        for hidden in [
            '\u{202E}',
            '\u{2066}',
            '\u{200B}',
            '\u{FEFF}',
            '\u{061C}',
            '\u{85}',
            '\u{E0041}',
        ] {
            let e = text("f", &format!("a{hidden}b"), 10).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidText);
            assert!(e.to_string().contains(&format!("U+{:04X}", hidden as u32)));
            assert!(multiline_text("f", &format!("a{hidden}b"), 10).is_err());
        }
        assert!(text("f", "שלום עולם", 10).is_ok());
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
