//! What both backends record for request transitions, so the audit trail reads the same on
//! either.
use chrono::{DateTime, Utc};
use countersign_core::Error;
use countersign_core::approval::{ApprovalRequest, Decision};
use countersign_core::audit::{Actor, AuditRecord};
use countersign_core::routing::EscalationStep;
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
    }
    details
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
