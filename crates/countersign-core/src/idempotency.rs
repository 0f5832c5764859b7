//! Safe retries (the IETF `Idempotency-Key` header): a call that creates a request may carry a
//! key; a retry with the same key and the same body gets the first answer, a retry with the
//! same key and another body is refused. The answer is stored in the transaction that creates
//! the request it names, so a call whose answer was lost can always be retried to learn it.
use chrono::{DateTime, Duration, Utc};
use countersign_proto::ErrorCode;

use crate::{Error, Result, canonical};

/// Longest key accepted, in characters.
pub const MAX_KEY_CHARS: usize = 255;

/// How long an answer is remembered under its key.
pub fn retention() -> Duration {
    Duration::hours(24)
}

/// A key a caller chose for one logical call: 1 to 255 printable ASCII characters. The
/// header's structured-field form (a quoted string) is accepted too.
#[derive(Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl std::fmt::Debug for IdempotencyKey {
    // Keys seal stored answers; they stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdempotencyKey(..)")
    }
}

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<IdempotencyKey> {
        let unquoted = raw
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(raw);
        let printable = unquoted.bytes().all(|b| (0x20..=0x7e).contains(&b));
        if unquoted.is_empty() || unquoted.len() > MAX_KEY_CHARS || !printable {
            return Err(Error::coded(
                ErrorCode::InvalidIdempotencyKey,
                format!(
                    "the `Idempotency-Key` header must be 1 to {MAX_KEY_CHARS} printable ASCII characters"
                ),
            ));
        }
        Ok(IdempotencyKey(unquoted.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the store keeps instead of the key.
    pub fn hash(&self) -> String {
        canonical::sha256_hex(self.0.as_bytes())
    }
}

/// What a call is, for comparing a retry with the first try: the operation and its body in a
/// canonical form (RFC 8785 JSON, or sorted form parameters).
pub fn fingerprint(operation: &str, canonical_body: &str) -> String {
    canonical::sha256_hex(format!("{operation}\n{canonical_body}").as_bytes())
}

/// An answer remembered under a key. `answer` is sealed (the server encrypts it with a key
/// derived from the idempotency key, which is not stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub tenant_id: String,
    /// The credential that sent the call (`agent:<id>` or `client:<id>`): keys are per caller.
    pub owner: String,
    pub key_hash: String,
    pub fingerprint: String,
    pub status: u16,
    pub answer: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl StoredAnswer {
    /// The stored answer if it answers this very call; a key reused for another call is an
    /// error.
    pub fn replays(self, fingerprint: &str) -> Result<StoredAnswer> {
        if self.fingerprint == fingerprint {
            Ok(self)
        } else {
            Err(Error::coded(
                ErrorCode::IdempotencyKeyReused,
                "this `Idempotency-Key` was already used for a different request; use a new key for a new request",
            ))
        }
    }
}

/// The error a store reports when a key is taken by an answer it cannot see yet (another
/// call with the same key committed first).
pub fn key_in_use() -> Error {
    Error::coded(
        ErrorCode::IdempotencyKeyInUse,
        "another request with this `Idempotency-Key` is being processed; retry shortly",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_printable_ascii_up_to_255_characters() {
        assert!(IdempotencyKey::parse("8e03978e-40d5-43e8-bc93-6894a57f9324").is_ok());
        assert_eq!(
            IdempotencyKey::parse("\"abc\"")
                .map(|k| k.as_str().to_string())
                .ok(),
            Some("abc".to_string())
        );
        for bad in ["", "\"\"", "tab\there", "é", &"x".repeat(256)] {
            let err = IdempotencyKey::parse(bad).err().map(|e| e.code());
            assert_eq!(err, Some(ErrorCode::InvalidIdempotencyKey), "{bad:?}");
        }
        assert!(IdempotencyKey::parse(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn a_key_replays_only_the_call_it_was_first_used_for() {
        let first = fingerprint("POST /ciba/authorize", r#"{"a":1}"#);
        let stored = StoredAnswer {
            tenant_id: "t".into(),
            owner: "agent:a".into(),
            key_hash: IdempotencyKey::parse("k")
                .map(|k| k.hash())
                .unwrap_or_default(),
            fingerprint: first.clone(),
            status: 200,
            answer: "sealed".into(),
            created_at: Utc::now(),
            expires_at: Utc::now() + retention(),
        };
        assert!(stored.clone().replays(&first).is_ok());
        let other = fingerprint("POST /ciba/authorize", r#"{"a":2}"#);
        assert_eq!(
            stored.clone().replays(&other).err().map(|e| e.code()),
            Some(ErrorCode::IdempotencyKeyReused)
        );
        let elsewhere = fingerprint("POST /v1/guard/{proxyId}/tool", r#"{"a":1}"#);
        assert!(stored.replays(&elsewhere).is_err());
    }
}
