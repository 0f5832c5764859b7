//! What both backends record for request transitions, so the audit trail reads the same on
//! either.
use chrono::{DateTime, Utc};
use countersign_core::Error;
use countersign_core::Result;
use countersign_core::approval::{ApprovalRequest, Decision};
use countersign_core::audit::{Actor, AuditRecord};
use countersign_core::routing::EscalationStep;
use countersign_proto::guard::{GuardSettings, RoutingRules};
use countersign_proto::{ApprovalStatus, ErrorCode};
use serde_json::{Value, json};

pub fn creation_details(r: &ApprovalRequest) -> Value {
    let mut details = json!({
        "kind": r.kind.as_str(),
        "agent_id": r.agent_id,
        "scope": r.scope,
        "context_sha256": r.context_sha256,
        "expires_at_ms": r.expires_at.timestamp_millis(),
    });
    if let Some(user) = &r.user_id {
        details["user_id"] = json!(user);
        details["binding_message"] = json!(r.binding_message);
    }
    if let Some(tool) = &r.tool {
        details["tool_name"] = json!(tool.tool_name);
        details["session_id"] = json!(tool.session_id);
        details["risk_score"] = json!(tool.risk_score);
        details["policy_id"] = json!(tool.policy_id);
        details["approval_group_id"] = json!(r.rules.approval_group_id);
        details["required_approvals"] = json!(r.rules.required_approvals);
        if let Some(origin) = &tool.mcp {
            details["mcp_server"] = json!(origin.server);
        }
    }
    details
}

/// A poll of a CIBA request the store does not hold.
pub fn no_ciba_request() -> Error {
    Error::NotFound("no such CIBA request".into())
}

pub fn already_voted() -> Error {
    Error::Invalid {
        code: ErrorCode::AlreadyVoted,
        message: "you already decided this request".into(),
    }
}

pub fn decision_audit(
    tenant_id: &str,
    id: &str,
    decision: &Decision,
    outcome: Option<ApprovalStatus>,
    approvals: u32,
    required: u32,
) -> AuditRecord {
    let action = match outcome {
        Some(ApprovalStatus::Approved) => "approval.approved",
        Some(_) => "approval.rejected",
        None => "approval.vote_recorded",
    };
    AuditRecord::new(
        tenant_id,
        decision.at,
        &decision.actor,
        action,
        id,
        json!({
            "verdict": decision.verdict.as_str(),
            "comment": decision.comment,
            "channel": decision.channel,
            "approvals": approvals,
            "required_approvals": required,
        }),
    )
}

pub fn timeout_audit(request: &ApprovalRequest, now: DateTime<Utc>) -> AuditRecord {
    let action = match request.status {
        ApprovalStatus::Approved => "approval.approved_by_timeout",
        _ => "approval.expired",
    };
    AuditRecord::new(
        &request.tenant_id,
        now,
        &Actor::system("timeout"),
        action,
        &request.id,
        json!({"expires_at_ms": request.expires_at.timestamp_millis()}),
    )
}

pub fn escalation_audit(
    request: &ApprovalRequest,
    level: u32,
    step: &EscalationStep,
    now: DateTime<Utc>,
) -> AuditRecord {
    AuditRecord::new(
        &request.tenant_id,
        now,
        &Actor::system("escalation"),
        "approval.escalated",
        &request.id,
        json!({"level": level, "kind": step.kind, "group_id": step.group_id, "due_at_ms": step.at_ms}),
    )
}

/// Stored guard settings, or the defaults.
pub fn parse_settings(stored: Option<(String, String)>) -> Result<(GuardSettings, RoutingRules)> {
    match stored {
        None => Ok((GuardSettings::default(), RoutingRules::default())),
        Some((guard, routing)) => Ok((
            serde_json::from_str(&guard).map_err(Error::internal)?,
            serde_json::from_str(&routing).map_err(Error::internal)?,
        )),
    }
}

pub fn config_audit(
    tenant_id: &str,
    at: DateTime<Utc>,
    actor: &Actor,
    action: &str,
    subject: &str,
    details: Value,
) -> AuditRecord {
    AuditRecord::new(tenant_id, at, actor, action, subject, details)
}

// ----- notifications -----

pub const DELIVERY_COLUMNS: &str = "id, tenant_id, approval_id, channel, target, recipient, event, state, \
     attempts, created_at, next_attempt_at, delivered_at, last_error, status_code, external_ref, payload";
pub const PREFERENCE_COLUMNS: &str =
    "tenant_id, user_id, email, slack, push, slack_user_id, updated_at";
pub const WEBHOOK_COLUMNS: &str = "id, tenant_id, url, events, secret, description, disabled_at, \
     disabled_reason, created_at, updated_at";
pub const PUSH_COLUMNS: &str =
    "id, tenant_id, user_id, endpoint, p256dh, auth, user_agent, created_at";

/// A tenant channel's settings changed; the settings hold secrets, so only the fact is kept.
pub fn channel_audit(
    tenant_id: &str,
    channel: &str,
    configured: bool,
    actor: &Actor,
    at: DateTime<Utc>,
) -> AuditRecord {
    let action = if configured {
        "notification_channel.updated"
    } else {
        "notification_channel.removed"
    };
    AuditRecord::new(tenant_id, at, actor, action, channel, json!({}))
}

pub fn preferences_audit(
    prefs: &countersign_core::notify::Preferences,
    actor: &Actor,
) -> AuditRecord {
    AuditRecord::new(
        &prefs.tenant_id,
        prefs.updated_at,
        actor,
        "notification_preferences.updated",
        &prefs.user_id,
        json!({
            "email": prefs.email,
            "slack": prefs.slack,
            "push": prefs.push,
            "slack_user_id": prefs.slack_user_id,
        }),
    )
}

/// A webhook endpoint changed (never with its secret).
pub fn webhook_audit(
    endpoint: &countersign_core::notify::WebhookEndpoint,
    action: &str,
    actor: &Actor,
) -> AuditRecord {
    AuditRecord::new(
        &endpoint.tenant_id,
        endpoint.updated_at,
        actor,
        action,
        &endpoint.id,
        json!({
            "url": endpoint.url,
            "events": endpoint.events,
            "disabled_reason": endpoint.disabled_reason,
        }),
    )
}

pub fn slack_id_taken() -> Error {
    Error::AlreadyExists("another user of this tenant already has this Slack user id".into())
}

// ----- MCP servers -----

pub const MCP_SERVER_COLUMNS: &str = "tenant_id, id, url, headers, created_at, updated_at";

/// The stored form of a server's headers: a JSON array of `[name, value]` pairs.
pub fn headers_json(headers: &[(String, String)]) -> Result<String, Error> {
    serde_json::to_string(headers).map_err(Error::internal)
}

pub fn headers_from_json(text: &str) -> Result<Vec<(String, String)>, Error> {
    serde_json::from_str(text).map_err(|_| Error::Internal("stored MCP server headers".into()))
}

/// A registered MCP server changed: its URL and header names, never the header values.
pub fn mcp_server_audit(
    server: &countersign_core::mcp::McpServerRecord,
    action: &str,
    actor: &Actor,
) -> AuditRecord {
    AuditRecord::new(
        &server.tenant_id,
        server.updated_at,
        actor,
        action,
        &server.id,
        json!({"url": server.url, "header_names": server.header_names()}),
    )
}
