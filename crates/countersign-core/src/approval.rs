//! Approval requests and their state machine: `pending → approved | rejected | expired |
//! cancelled`; terminal states never change. The store applies each transition as one
//! compare-and-set.
use chrono::{DateTime, Duration, Utc};
use countersign_proto::ApprovalStatus;
use countersign_proto::ciba::AuthorizeRequest;
use countersign_proto::guard::TimeoutOutcome;
use serde_json::Value;

use crate::audit::Actor;
use crate::routing::EscalationStep;
use crate::{Error, Result, canonical, ids, payload, secret, validate};

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
    /// The seed's `/ciba/authorize`: addressed to one user.
    Ciba,
    /// A guard tool call: routed to approval groups.
    Tool,
    /// OpenID Connect CIBA Core 1.0 (`/oidc/bc-authorize`).
    Oidc,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Ciba => "ciba",
            RequestKind::Tool => "tool",
            RequestKind::Oidc => "oidc",
        }
    }

    pub fn parse(s: &str) -> Option<RequestKind> {
        match s {
            "ciba" => Some(RequestKind::Ciba),
            "tool" => Some(RequestKind::Tool),
            "oidc" => Some(RequestKind::Oidc),
            _ => None,
        }
    }
}

/// The API face a caller acts through. A request is acted on only through the face it was
/// made through (or a reviewer face that shows every kind), so a grant, a token or a decision
/// of one face never stands for another's: `/ciba/token` never redeems an OpenID request,
/// guard routes act only on tool calls. Requests of another face do not exist for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    /// The seed's `/ciba/*`: seed CIBA requests.
    Ciba,
    /// `/v1/guard/{proxyId}/*`: tool calls.
    Guard,
    /// The reviewer faces that show every kind: `/v1/approvals`, the dashboard, review links,
    /// Slack and Teams.
    Review,
}

impl Face {
    pub fn admits(self, kind: RequestKind) -> bool {
        match self {
            Face::Ciba => kind == RequestKind::Ciba,
            Face::Guard => kind == RequestKind::Tool,
            Face::Review => true,
        }
    }

    /// The request, if this face may act on it; otherwise it is not found.
    pub fn check(self, request: ApprovalRequest) -> Result<ApprovalRequest> {
        if self.admits(request.kind) {
            Ok(request)
        } else {
            Err(Error::NotFound("no such approval request".into()))
        }
    }
}

/// What a guard tool-call request carries beyond the common fields. Its arguments are the
/// request's `context`, and their digest is `context_sha256`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolInfo {
    pub tool_name: String,
    pub session_id: String,
    /// The agent's own words about why.
    pub reason: Option<String>,
    pub risk_score: f64,
    pub threats: Vec<String>,
    pub policy_id: Option<String>,
    pub policy_name: Option<String>,
    pub notification_channels: Vec<String>,
    /// The user the agent acts for; they may not approve it unless allowed.
    pub on_behalf_of: Option<String>,
    /// The MCP tool's annotations as the gateway sent them, when the call came through MCP.
    pub annotations: Option<countersign_proto::guard::ToolAnnotations>,
    /// The MCP server (and client) the call came through.
    pub mcp: Option<countersign_proto::guard::McpOrigin>,
}

/// How a request is decided: by whom, how many, and what happens on timeout.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRules {
    pub approval_group_id: Option<String>,
    pub required_approvals: u32,
    pub allow_self_approval: bool,
    pub default_on_timeout: TimeoutOutcome,
    /// Steps applied so far (recorded by the escalation worker).
    pub escalation_level: u32,
    pub escalation_plan: Vec<EscalationStep>,
}

impl Default for DecisionRules {
    fn default() -> Self {
        DecisionRules {
            approval_group_id: None,
            required_approvals: 1,
            allow_self_approval: false,
            default_on_timeout: TimeoutOutcome::Reject,
            escalation_level: 0,
            escalation_plan: Vec::new(),
        }
    }
}

impl DecisionRules {
    /// The next escalation step not yet recorded.
    pub fn next_escalation_at(&self) -> Option<DateTime<Utc>> {
        self.escalation_plan
            .get(self.escalation_level as usize)
            .map(|s| crate::clock::from_millis(s.at_ms))
    }

    /// Steps due by `now`, whether or not the worker has recorded them yet.
    pub fn level_at(&self, now: DateTime<Utc>) -> u32 {
        let due = self
            .escalation_plan
            .iter()
            .filter(|s| s.at_ms <= now.timestamp_millis())
            .count() as u32;
        due.max(self.escalation_level)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRequest {
    pub id: String,
    pub tenant_id: String,
    pub kind: RequestKind,
    pub agent_id: String,
    /// The addressed reviewer (CIBA); tool calls are routed to groups instead.
    pub user_id: Option<String>,
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
    pub tool: Option<ToolInfo>,
    pub rules: DecisionRules,
}

/// Who decided a request that timed out.
pub const TIMEOUT_DECIDER: &str = "timeout";

impl ApprovalRequest {
    /// The status as callers must see it: a pending request past its expiry has timed out
    /// (expired, or approved when its policy says so) even before the sweeper records it.
    pub fn status_at(&self, now: DateTime<Utc>) -> ApprovalStatus {
        if self.status == ApprovalStatus::Pending && now >= self.expires_at {
            self.timeout_status()
        } else {
            self.status
        }
    }

    /// The status a timeout leads to.
    pub fn timeout_status(&self) -> ApprovalStatus {
        match self.rules.default_on_timeout {
            TimeoutOutcome::Approve => ApprovalStatus::Approved,
            TimeoutOutcome::Reject => ApprovalStatus::Expired,
        }
    }

    /// The tool name, or the scope for other kinds.
    pub fn action_name(&self) -> &str {
        self.tool
            .as_ref()
            .map(|t| t.tool_name.as_str())
            .unwrap_or(&self.scope)
    }

    /// What the action is done with, as reviewers see it: a tool call's arguments, a CIBA
    /// request's context, an OpenID request's authorization details.
    pub fn arguments(&self) -> &Value {
        match self.kind {
            RequestKind::Oidc => self
                .context
                .get("authorization_details")
                .unwrap_or(&self.context),
            RequestKind::Tool | RequestKind::Ciba => &self.context,
        }
    }

    /// Seconds left before expiry, never negative.
    pub fn expires_in(&self, now: DateTime<Utc>) -> i64 {
        (self.expires_at - now).num_seconds().max(0)
    }
}

/// A new request and, for CIBA, the secret that names it; only the secret's hash is stored.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub request: ApprovalRequest,
    pub auth_req_id: Option<String>,
    pub auth_req_hash: Option<String>,
    /// The answer to remember under the caller's `Idempotency-Key`, stored with the request.
    pub idempotency: Option<crate::idempotency::StoredAnswer>,
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
    payload::check("context", &context)?;
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
            user_id: Some(input.user_id.clone()),
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
            tool: None,
            rules: DecisionRules::default(),
        },
        auth_req_id: Some(auth_req_id),
        auth_req_hash: Some(auth_req_hash),
        idempotency: None,
    })
}

/// What a guard tool call that needs approval is made of.
#[derive(Debug, Clone)]
pub struct ToolCallApproval<'a> {
    pub call: &'a crate::toolcall::ToolCall,
    pub tool: ToolInfo,
    /// An action category; defaults to `tool:<name>`.
    pub scope: Option<&'a str>,
    pub rules: DecisionRules,
    pub timeout_minutes: u32,
}

/// A guard tool call that needs approval, ready to store.
pub fn new_tool_request(
    tenant_id: &str,
    agent_id: &str,
    spec: ToolCallApproval,
    now: DateTime<Utc>,
) -> NewRequest {
    let ToolCallApproval {
        call,
        tool,
        scope,
        rules,
        timeout_minutes,
    } = spec;
    NewRequest {
        request: ApprovalRequest {
            id: ids::new_id(ids::APPROVAL),
            tenant_id: tenant_id.to_string(),
            kind: RequestKind::Tool,
            agent_id: agent_id.to_string(),
            user_id: None,
            scope: scope
                .map(str::to_string)
                .unwrap_or_else(|| format!("tool:{}", call.name)),
            binding_message: tool.reason.clone().unwrap_or_default(),
            context: call.arguments.clone(),
            context_sha256: call.arguments_sha256.clone(),
            status: ApprovalStatus::Pending,
            created_at: now,
            expires_at: now + Duration::minutes(i64::from(timeout_minutes)),
            decided_at: None,
            decided_by: None,
            comment: None,
            token_issued_at: None,
            tool: Some(tool),
            rules,
        },
        auth_req_id: None,
        auth_req_hash: None,
        idempotency: None,
    }
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

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Reject => "reject",
        }
    }
}

/// A reviewer's decision, validated and ready for the compare-and-set.
#[derive(Debug, Clone)]
pub struct Decision {
    pub verdict: Verdict,
    pub actor: Actor,
    /// How the reviewer is shown (their email, or the admin key's id).
    pub reviewer: String,
    pub comment: Option<String>,
    /// api, cli, dashboard, email, slack or teams.
    pub channel: String,
    pub at: DateTime<Utc>,
}

/// A decision as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRecord {
    pub reviewer_id: String,
    pub reviewer: String,
    pub verdict: Verdict,
    pub comment: Option<String>,
    pub channel: String,
    pub decided_at: DateTime<Utc>,
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
            reviewer: actor.id.clone(),
            actor,
            comment,
            channel: "api".into(),
            at,
        })
    }

    pub fn with_reviewer(mut self, reviewer: impl Into<String>) -> Decision {
        self.reviewer = reviewer.into();
        self
    }

    pub fn with_channel(mut self, channel: impl Into<String>) -> Decision {
        self.channel = channel.into();
        self
    }
}

/// What one more decision does to a pending request: a rejection rejects; approvals approve
/// once `required_approvals` distinct reviewers approved (counting this one); otherwise it
/// stays pending.
pub fn quorum_outcome(
    request: &ApprovalRequest,
    verdict: Verdict,
    approvals: u32,
) -> Option<ApprovalStatus> {
    match verdict {
        Verdict::Reject => Some(ApprovalStatus::Rejected),
        Verdict::Approve if approvals >= request.rules.required_approvals.max(1) => {
            Some(ApprovalStatus::Approved)
        }
        Verdict::Approve => None,
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
                return Err(Error::coded(
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
        assert_eq!(
            r.auth_req_hash.unwrap(),
            secret::hash_secret(&r.auth_req_id.unwrap())
        );
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
