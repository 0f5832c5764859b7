//! Safe retries on the calls that create requests (`POST /ciba/authorize`,
//! `POST /v1/guard/{proxyId}/tool`, `POST /oidc/bc-authorize`).
//!
//! A call with an `Idempotency-Key` header looks for an answer remembered under that key for
//! the same caller: with the same body it gets that answer again (same status and body, with
//! `Idempotent-Replayed: true`); with another body, 422 `idempotency_key_reused`. Otherwise the
//! call runs, and an answer that names a request is stored in the transaction that creates the
//! request, so a request never exists without its key or the key without its request. Two
//! calls with the same key at once: the database lets one win and the other answers with the
//! winner's answer (it waits for it rather than failing with 409). Answers that create nothing
//! (`allow`, `block`, and errors) are not stored: a retry is evaluated again, under the
//! policies in force then.
//!
//! The key is stored only as its hash, and the answer (which may carry an `auth_req_id`) is
//! sealed with AES-256-GCM under a key derived from the idempotency key, so the database alone
//! does not reveal it.
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use countersign_core::idempotency::{self, IdempotencyKey, StoredAnswer};
use countersign_core::{Error, Principal, Result, canonical};
use countersign_proto::ErrorCode;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

pub const HEADER: &str = "idempotency-key";
/// Set on an answer that was replayed from an earlier call with the same key.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The key of a request's `Idempotency-Key` header, if it has one.
pub fn key_from(headers: &HeaderMap) -> Result<Option<IdempotencyKey>> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::coded(
            ErrorCode::InvalidIdempotencyKey,
            "send one `Idempotency-Key` header",
        ));
    }
    let text = value.to_str().map_err(|_| {
        Error::coded(
            ErrorCode::InvalidIdempotencyKey,
            "the `Idempotency-Key` header must be printable ASCII",
        )
    })?;
    IdempotencyKey::parse(text).map(Some)
}

/// The `Idempotency-Key` header of a JSON API call (a bad one is a 400).
pub struct KeyHeader(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for KeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(KeyHeader(key_from(&parts.headers)?))
    }
}

/// The canonical JSON of a call's (parsed) body.
pub fn canonical_body(body: &impl Serialize) -> Result<String> {
    canonical::canonical_json(&serde_json::to_value(body).map_err(Error::internal)?)
}

/// One call made under a key.
pub struct Retry {
    tenant_id: String,
    owner: String,
    key: IdempotencyKey,
    fingerprint: String,
}

/// An answer given again.
#[derive(Debug, Clone)]
pub struct Replay {
    pub status: u16,
    pub body: Value,
}

/// What a call answers: its own result, or the one remembered from an earlier try.
pub enum Answer<T> {
    Fresh(T),
    Replayed(Replay),
}

impl<T> Answer<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Answer<U> {
        match self {
            Answer::Fresh(t) => Answer::Fresh(f(t)),
            Answer::Replayed(r) => Answer::Replayed(r),
        }
    }
}

impl<T: Serialize> IntoResponse for Answer<T> {
    fn into_response(self) -> Response {
        match self {
            Answer::Fresh(body) => Json(body).into_response(),
            Answer::Replayed(replay) => replay.into_response(),
        }
    }
}

impl IntoResponse for Replay {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let mut response = (status, Json(self.body)).into_response();
        response.headers_mut().insert(
            HeaderName::from_static(REPLAYED_HEADER),
            HeaderValue::from_static("true"),
        );
        response
    }
}

impl Retry {
    /// `owner` names the credential (`agent:<id>`, `client:<id>`); `operation` the endpoint.
    pub fn new(
        key: IdempotencyKey,
        tenant_id: &str,
        owner: String,
        operation: &str,
        canonical_body: &str,
    ) -> Retry {
        Retry {
            tenant_id: tenant_id.to_string(),
            owner,
            fingerprint: idempotency::fingerprint(operation, canonical_body),
            key,
        }
    }

    /// The retry of an agent's call to `operation`, when it came with a key.
    pub fn for_agent(
        key: Option<IdempotencyKey>,
        caller: &Principal,
        agent_id: &str,
        operation: &str,
        input: &impl Serialize,
    ) -> Result<Option<Retry>> {
        let owner = format!("agent:{agent_id}");
        key.map(|key| {
            let body = canonical_body(input)?;
            Ok(Retry::new(key, &caller.tenant_id, owner, operation, &body))
        })
        .transpose()
    }

    /// The answer of an earlier call with this key, if there was one; a key used for another
    /// call is an error.
    pub async fn earlier(&self, state: &AppState) -> Result<Option<Replay>> {
        let now = state.clock.now();
        match state
            .store
            .idempotent_answer(&self.tenant_id, &self.owner, &self.key.hash(), now)
            .await?
        {
            Some(stored) => self.open(stored.replays(&self.fingerprint)?).map(Some),
            None => Ok(None),
        }
    }

    /// The stored form of this call's answer.
    pub fn remember(
        &self,
        status: u16,
        body: &impl Serialize,
        now: DateTime<Utc>,
    ) -> Result<StoredAnswer> {
        let plain = serde_json::to_vec(body).map_err(Error::internal)?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| Error::internal_msg("no randomness"))?;
        let mut sealed = plain;
        self.cipher()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.fingerprint.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| Error::internal_msg("sealing an answer failed"))?;
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&sealed);
        Ok(StoredAnswer {
            tenant_id: self.tenant_id.clone(),
            owner: self.owner.clone(),
            key_hash: self.key.hash(),
            fingerprint: self.fingerprint.clone(),
            status,
            answer: STANDARD.encode(stored),
            created_at: now,
            expires_at: now + idempotency::retention(),
        })
    }

    /// Remembers an answer that created nothing new (a call that found its request already
    /// pending); if another call with this key got there first, its answer.
    pub async fn remember_alone(
        &self,
        state: &AppState,
        status: u16,
        body: &impl Serialize,
    ) -> Result<Option<Replay>> {
        let answer = self.remember(status, body, state.clock.now())?;
        match state.store.remember_answer(answer).await {
            Ok(()) => Ok(None),
            Err(e) if is_key_in_use(&e) => self.after_conflict(state).await.map(Some),
            Err(e) => Err(e),
        }
    }

    /// The store refused this call's key because another call with it committed first:
    /// that call's answer (or 422 if it was a different call).
    pub async fn after_conflict(&self, state: &AppState) -> Result<Replay> {
        self.earlier(state)
            .await?
            .ok_or_else(idempotency::key_in_use)
    }

    fn open(&self, stored: StoredAnswer) -> Result<Replay> {
        let bytes = STANDARD
            .decode(&stored.answer)
            .map_err(|_| Error::internal_msg("a stored answer is not base64"))?;
        if bytes.len() < NONCE_LEN {
            return Err(Error::internal_msg("a stored answer is truncated"));
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| Error::internal_msg("a stored answer has a bad nonce"))?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .cipher()?
            .open_in_place(nonce, Aad::from(self.fingerprint.as_bytes()), &mut sealed)
            .map_err(|_| Error::internal_msg("a stored answer does not open"))?;
        let body = serde_json::from_slice(plain).map_err(Error::internal)?;
        Ok(Replay {
            status: stored.status,
            body,
        })
    }

    fn cipher(&self) -> Result<LessSafeKey> {
        let mut hasher = Sha256::new();
        for part in [
            "countersign idempotent answer",
            &self.tenant_id,
            &self.owner,
            self.key.as_str(),
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0u8]);
        }
        let key = hasher.finalize();
        UnboundKey::new(&AES_256_GCM, &key)
            .map(LessSafeKey::new)
            .map_err(|_| Error::internal_msg("bad answer key"))
    }
}

/// Whether the store refused a key another call holds.
pub fn is_key_in_use(e: &Error) -> bool {
    e.code() == ErrorCode::IdempotencyKeyInUse
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(key: &str, body: &str) -> Retry {
        Retry::new(
            IdempotencyKey::parse(key).unwrap(),
            "t",
            "agent:a".into(),
            "POST /x",
            body,
        )
    }

    #[test]
    fn sealed_answers_open_only_with_their_key_and_call() {
        let body = serde_json::json!({"authReqId": "secret-id", "expiresIn": 300});
        let stored = retry("k1", "{}").remember(200, &body, Utc::now()).unwrap();
        assert!(!stored.answer.contains("secret-id"));
        assert!(!stored.key_hash.contains("k1"));
        let replay = retry("k1", "{}").open(stored.clone()).unwrap();
        assert_eq!(replay.body, body);
        assert_eq!(replay.status, 200);
        assert!(retry("k2", "{}").open(stored.clone()).is_err());
        assert!(retry("k1", "{\"a\":1}").open(stored).is_err());
    }
}
