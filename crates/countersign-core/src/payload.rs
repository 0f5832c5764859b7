//! What agents send for reviewers to look at: tool-call arguments, CIBA `context` and OpenID
//! `authorization_details`. An approval covers the SHA-256 of their RFC 8785 canonical JSON,
//! so each must mean exactly what the reviewer reads: every number keeps its value in canonical
//! JSON, and no key hides characters that change how the rest is shown.
use countersign_proto::ErrorCode;
use serde_json::{Number, Value};

use crate::{Error, Result, validate};

/// The largest integer magnitude that an IEEE double holds without sharing its value with a
/// neighbouring integer (I-JSON, RFC 7493): 2^53 − 1.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Checks a payload before it is stored, hashed and shown; `root` names it in messages
/// (`arguments`, `context`, `authorization_details`), and each error names the field's path,
/// e.g. `context.items[2].id`.
pub fn check(root: &str, value: &Value) -> Result<()> {
    let mut path = root.to_string();
    walk(&mut path, value)
}

fn walk(path: &mut String, value: &Value) -> Result<()> {
    match value {
        Value::Number(n) if !survives_canonical_json(n) => Err(Error::coded(
            ErrorCode::InvalidNumber,
            format!(
                "`{path}` is {n}, which canonical JSON (IEEE doubles) cannot keep exactly; \
                 integers must be within ±{MAX_SAFE_INTEGER}: send larger values as strings"
            ),
        )),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(path, item)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(map) => {
            for (key, item) in map {
                let len = path.len();
                push_key(path, key);
                validate::visible_text(&format!("{path} (a key)"), key, &[])?;
                walk(path, item)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `.name` for plain keys, `["…"]` (with hidden characters made visible) for the rest.
fn push_key(path: &mut String, key: &str) {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        path.push('.');
        path.push_str(key);
    } else {
        let quoted = serde_json::to_string(key).unwrap_or_default();
        path.push('[');
        path.push_str(&crate::display::visible(&quoted));
        path.push(']');
    }
}

/// Whether canonical JSON keeps this number's value: integers within ±(2^53 − 1), and any
/// finite double that is not an integer beyond that range (which may be the rounding of a
/// larger integer the agent wrote).
pub fn survives_canonical_json(n: &Number) -> bool {
    if let Some(u) = n.as_u64() {
        return u <= MAX_SAFE_INTEGER;
    }
    if let Some(i) = n.as_i64() {
        return i.unsigned_abs() <= MAX_SAFE_INTEGER;
    }
    match n.as_f64() {
        Some(f) if f.is_finite() => {
            let integral_beyond_safe = f.fract() == 0.0 && f.abs() > MAX_SAFE_INTEGER as f64;
            !integral_beyond_safe && canonical_value(n) == Some(f)
        }
        _ => false,
    }
}

/// The value the canonical form of a number reads back as.
fn canonical_value(n: &Number) -> Option<f64> {
    let text = serde_json_canonicalizer::to_string(&Value::Number(n.clone())).ok()?;
    text.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn integers_beyond_two_to_the_53_are_refused_with_their_path() {
        let e = check("arguments", &parsed(r#"{"account":1152921504606846976}"#)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidNumber);
        assert!(e.to_string().contains("`arguments.account`"), "{e}");
        let e = check(
            "context",
            &parsed(r#"{"items":[{"id":1},{"id":2},{"id":-9007199254740993}]}"#),
        )
        .unwrap_err();
        assert!(e.to_string().contains("`context.items[2].id`"), "{e}");
        let e = check("context", &parsed(r#"{"a b":[1e300]}"#)).unwrap_err();
        assert!(e.to_string().contains(r#"`context["a b"][0]`"#), "{e}");
    }

    #[test]
    fn safe_numbers_pass() {
        check(
            "arguments",
            &json!({"a": 9_007_199_254_740_991_u64, "b": -9_007_199_254_740_991_i64, "c": 0.1, "d": 1.5e-300, "e": [2.5, {"f": 1e15}]}),
        )
        .unwrap();
        assert!(check("arguments", &json!({"a": 9_007_199_254_740_992_u64})).is_err());
    }

    #[test]
    fn keys_with_hidden_characters_are_refused() {
        let e = check("arguments", &json!({"ok": {"to\u{202E}": 1}})).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidText);
        assert!(e.to_string().contains("U+202E"), "{e}");
        check("arguments", &json!({"שם": "ערך\u{202E}"})).unwrap();
    }
}
