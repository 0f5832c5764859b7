//! Approval requests and their state machine: `pending → approved | rejected | expired |
//! cancelled`; terminal states never change. The store applies each transition as one
//! compare-and-set.
use chrono::{DateTime, Duration, Utc};
use countersign_proto::ApprovalStatus;
use countersign_proto::ciba::AuthorizeRequest;
use serde_json::Value;

use crate::audit::Actor;
use crate::{Error, Result, canonical, ids, secret, validate};

/// Bounds on what an agent may ask for.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    pub default_expiry_secs: i64,
    pub min_expiry_secs: i64,
    pub max_expiry_secs: i64,
    pub max_context_bytes: usize,
    pub max_binding_message_chars: usize,
    pub max_scope_chars: usize,
    pub max_comment_chars: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            default_expiry_secs: 300,
            min_expiry_secs: 10,
            max_expiry_secs: 86_400,
            max_context_bytes: 16 * 1024,
            max_binding_message_chars: 1_000,
            max_scope_chars: 200,
            max_comment_chars: 2_000,
        }
    }
}

/// The face through which a request was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Ciba,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Ciba => "ciba",
        }
    }

    pub fn parse(s: &str) -> Option<RequestKind> {
        match s {
            "ciba" => Some(RequestKind::Ciba),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRequest {
    pub id: String,
    pub tenant_id: String,
    pub kind: RequestKind,
    pub agent_id: String,
    pub user_id: String,
    pub scope: String,
    pub binding_message: String,
    pub context: Value,
    pub context_sha256: String,
    pub status: ApprovalStatus,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decided_by: Option<String>,
    pub comment: Option<String>,
    pub token_issued_at: Option<DateTime<Utc>>,
}

impl ApprovalRequest {
    /// The status as callers must see it: a pending request past its expiry is expired even
    /// before the sweeper has recorded it.
    pub fn status_at(&self, now: DateTime<Utc>) -> ApprovalStatus {
        if self.status == ApprovalStatus::Pending && now >= self.expires_at {
            ApprovalStatus::Expired
        } else {
            self.status
        }
    }

    /// Seconds left before expiry, never negative.
    pub fn expires_in(&self, now: DateTime<Utc>) -> i64 {
        (self.expires_at - now).num_seconds().max(0)
    }
}

/// A new request and the secret that names it; only the secret's hash is stored.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub request: ApprovalRequest,
    pub auth_req_id: String,
    pub auth_req_hash: String,
}

/// Validates a seed-API authorize call and builds the pending request.
pub fn new_ciba_request(
    tenant_id: &str,
    agent_id: &str,
    input: &AuthorizeRequest,
    limits: &RequestLimits,
    now: DateTime<Utc>,
) -> Result<NewRequest> {
    validate::text("scope", &input.scope, limits.max_scope_chars)?;
    validate::text(
        "bindingMessage",
        &input.binding_message,
        limits.max_binding_message_chars,
    )?;
    let expiry = input.requested_expiry.unwrap_or(limits.default_expiry_secs);
    if expiry < limits.min_expiry_secs || expiry > limits.max_expiry_secs {
        return Err(Error::invalid(format!(
            "`requestedExpiry` must be between {} and {} seconds; got {expiry}",
            limits.min_expiry_secs, limits.max_expiry_secs
        )));
    }
    let context = match &input.context {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(Value::Object(map)) => Value::Object(map.clone()),
        Some(_) => return Err(Error::invalid("`context` must be a JSON object")),
    };
    let canonical = canonical::canonical_json(&context)?;
    if canonical.len() > limits.max_context_bytes {
        return Err(Error::invalid(format!(
            "`context` is {} bytes as canonical JSON; at most {} are allowed",
            canonical.len(),
            limits.max_context_bytes
        )));
    }
    let auth_req_id = secret::random_token();
    let auth_req_hash = secret::hash_secret(&auth_req_id);
    Ok(NewRequest {
        request: ApprovalRequest {
            id: ids::new_id(ids::APPROVAL),
            tenant_id: tenant_id.to_string(),
            kind: RequestKind::Ciba,
            agent_id: agent_id.to_string(),
            user_id: input.user_id.clone(),
            scope: input.scope.clone(),
            binding_message: input.binding_message.clone(),
            context_sha256: canonical::sha256_hex(canonical.as_bytes()),
            context,
            status: ApprovalStatus::Pending,
            created_at: now,
            expires_at: now + Duration::seconds(expiry),
            decided_at: None,
            decided_by: None,
            comment: None,
            token_issued_at: None,
        },
        auth_req_id,
        auth_req_hash,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Reject,
}

impl Verdict {
    pub fn status(self) -> ApprovalStatus {
        match self {
            Verdict::Approve => ApprovalStatus::Approved,
            Verdict::Reject => ApprovalStatus::Rejected,
        }
    }
}

/// The reviewer surface a decision was made through; recorded in the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Api,
    Dashboard,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Api => "api",
            Channel::Dashboard => "dashboard",
        }
    }
}

/// A reviewer's decision, validated and ready for the compare-and-set.
#[derive(Debug, Clone)]
pub struct Decision {
    pub verdict: Verdict,
    pub actor: Actor,
    pub comment: Option<String>,
    pub at: DateTime<Utc>,
    pub channel: Channel,
}

impl Decision {
    pub fn new(
        verdict: Verdict,
        actor: Actor,
        comment: Option<String>,
        at: DateTime<Utc>,
        limits: &RequestLimits,
    ) -> Result<Decision> {
        let comment = comment.filter(|c| !c.trim().is_empty());
        if let Some(c) = &comment {
            let field = match verdict {
                Verdict::Approve => "comment",
                Verdict::Reject => "reason",
            };
            validate::multiline_text(field, c, limits.max_comment_chars)?;
        }
        Ok(Decision {
            verdict,
            actor,
            comment,
            at,
            channel: Channel::Api,
        })
    }

    /// The same decision, made through `channel`.
    pub fn via(self, channel: Channel) -> Decision {
        Decision { channel, ..self }
    }
}

/// How a request is named in a decide call: its secret handle or its public id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestRef {
    AuthReqHash(String),
    PublicId(String),
}

impl RequestRef {
    /// Accepts an `authReqId`, an `apr_…` id, or both when they agree on form.
    pub fn from_parts(auth_req_id: Option<&str>, approval_id: Option<&str>) -> Result<RequestRef> {
        let raw = match (auth_req_id, approval_id) {
            (Some(a), None) | (None, Some(a)) => a,
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "give either `authReqId` or `approvalId`, not both",
                ));
            }
            (None, None) => {
                return Err(Error::invalid_with(
                    countersign_proto::ErrorCode::InvalidBody,
                    "missing field `authReqId`",
                ));
            }
        };
        RequestRef::parse(raw)
    }

    pub fn parse(raw: &str) -> Result<RequestRef> {
        if ids::is_id(raw, ids::APPROVAL) {
            Ok(RequestRef::PublicId(raw.to_string()))
        } else if secret::looks_like_token(raw) {
            Ok(RequestRef::AuthReqHash(secret::hash_secret(raw)))
        } else {
            Err(Error::NotFound("no such approval request".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(expiry: Option<i64>, context: Option<Value>) -> AuthorizeRequest {
        AuthorizeRequest {
            user_id: "usr_x".into(),
            scope: "approve:payment".into(),
            binding_message: "Approve payment of $500 to Acme Corp?".into(),
            requested_expiry: expiry,
            context,
        }
    }

    #[test]
    fn builds_a_pending_request_with_digest_and_secret() {
        let now = Utc::now();
        let r = new_ciba_request(
            "t",
            "agt_1",
            &input(None, Some(serde_json::json!({"amount": 500}))),
            &RequestLimits::default(),
            now,
        )
        .unwrap();
        assert_eq!(r.request.status, ApprovalStatus::Pending);
        assert_eq!(r.request.expires_at - now, Duration::seconds(300));
        assert_eq!(r.auth_req_hash, secret::hash_secret(&r.auth_req_id));
        assert_eq!(
            r.request.context_sha256,
            canonical::canonical_sha256(&serde_json::json!({"amount": 500})).unwrap()
        );
    }

    #[test]
    fn rejects_out_of_bounds_expiry_and_non_object_context() {
        let limits = RequestLimits::default();
        let now = Utc::now();
        assert!(new_ciba_request("t", "a", &input(Some(5), None), &limits, now).is_err());
        assert!(new_ciba_request("t", "a", &input(Some(86_401), None), &limits, now).is_err());
        assert!(
            new_ciba_request(
                "t",
                "a",
                &input(None, Some(serde_json::json!([1]))),
                &limits,
                now
            )
            .is_err()
        );
    }

    #[test]
    fn pending_past_expiry_reads_as_expired() {
        let now = Utc::now();
        let r = new_ciba_request(
            "t",
            "a",
            &input(Some(10), None),
            &RequestLimits::default(),
            now,
        )
        .unwrap()
        .request;
        assert_eq!(r.status_at(now), ApprovalStatus::Pending);
        assert_eq!(
            r.status_at(now + Duration::seconds(10)),
            ApprovalStatus::Expired
        );
    }

    #[test]
    fn request_refs() {
        assert!(matches!(
            RequestRef::parse(&ids::new_id(ids::APPROVAL)).unwrap(),
            RequestRef::PublicId(_)
        ));
        assert!(matches!(
            RequestRef::parse(&secret::random_token()).unwrap(),
            RequestRef::AuthReqHash(_)
        ));
        assert!(RequestRef::parse("nonsense").is_err());
    }
}
