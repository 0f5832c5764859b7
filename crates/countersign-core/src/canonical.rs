//! RFC 8785 (JSON Canonicalization Scheme) and the digests built on it.
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The canonical JSON text of a value.
pub fn canonical_json(value: &serde_json::Value) -> Result<String> {
    serde_json_canonicalizer::to_string(value).map_err(Error::internal)
}

/// Hex SHA-256 of the canonical JSON of a value.
pub fn canonical_sha256(value: &serde_json::Value) -> Result<String> {
    Ok(sha256_hex(canonical_json(value)?.as_bytes()))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_and_whitespace_do_not_change_the_digest() {
        let a = json!({"b": 1, "a": [1, 2, {"y": true, "x": null}]});
        let b: serde_json::Value =
            serde_json::from_str(r#"{ "a" : [1,2,{"x":null,"y":true}], "b":1 }"#).unwrap();
        assert_eq!(canonical_sha256(&a).unwrap(), canonical_sha256(&b).unwrap());
        assert_eq!(
            canonical_json(&a).unwrap(),
            r#"{"a":[1,2,{"x":null,"y":true}],"b":1}"#
        );
    }

    #[test]
    fn numbers_follow_the_es6_form() {
        let v: serde_json::Value = serde_json::from_str("[1.0, 1e21, 0.000001, 1e-7]").unwrap();
        assert_eq!(canonical_json(&v).unwrap(), "[1,1e+21,0.000001,1e-7]");
    }

    #[test]
    fn different_values_have_different_digests() {
        assert_ne!(
            canonical_sha256(&json!({"amount": 500})).unwrap(),
            canonical_sha256(&json!({"amount": 501})).unwrap()
        );
    }
}
