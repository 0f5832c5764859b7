//! Domain records as wire types.
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use countersign_core::approval::ApprovalRequest;
use countersign_core::audit::ChainedEvent;
use countersign_core::dashboard::LoginLink;
use countersign_core::directory::{Agent, ApiKey, Tenant, User};
use countersign_core::notify::Delivery;
use countersign_proto::admin::{AgentView, ApiKeyView, LoginLinkView, TenantView, UserView};
use countersign_proto::approvals::ApprovalView;
use countersign_proto::audit::AuditEventView;
use countersign_proto::notify::DeliveryView;

pub fn user(u: User) -> UserView {
    UserView {
        id: u.id,
        email: u.email,
        name: u.name,
        disabled: u.disabled,
        is_admin: u.is_admin,
        created_at: u.created_at,
    }
}

pub fn agent(a: Agent) -> AgentView {
    AgentView {
        id: a.id,
        name: a.name,
        trust_level: a.trust_level,
        disabled: a.disabled,
        created_at: a.created_at,
    }
}

pub fn api_key(k: ApiKey) -> ApiKeyView {
    ApiKeyView {
        id: k.id,
        role: k.role,
        agent_id: k.agent_id,
        user_id: k.user_id,
        name: k.name,
        audiences: k.audiences,
        prefix: k.prefix,
        created_at: k.created_at,
        revoked_at: k.revoked_at,
    }
}

pub fn tenant(t: Tenant) -> TenantView {
    TenantView {
        id: t.id,
        name: t.name,
        created_at: t.created_at,
    }
}

pub fn approval(
    r: ApprovalRequest,
    agent_names: &HashMap<String, String>,
    now: DateTime<Utc>,
) -> ApprovalView {
    let tool = r.tool.clone();
    ApprovalView {
        tool_name: tool.as_ref().map(|t| t.tool_name.clone()),
        session_id: tool.as_ref().map(|t| t.session_id.clone()),
        risk_score: tool.as_ref().map(|t| t.risk_score),
        threats_detected: tool.as_ref().map(|t| t.threats.clone()).unwrap_or_default(),
        policy_matched: tool.as_ref().and_then(|t| t.policy_name.clone()),
        annotations: tool.as_ref().and_then(|t| t.annotations),
        mcp: tool.as_ref().and_then(|t| t.mcp.clone()),
        approval_group: r.rules.approval_group_id.clone(),
        escalation_level: r.rules.level_at(now),
        required_approvals: r.rules.required_approvals,
        status: r.status_at(now),
        kind: r.kind.as_str().to_string(),
        agent_name: agent_names.get(&r.agent_id).cloned().unwrap_or_default(),
        id: r.id,
        scope: r.scope,
        binding_message: r.binding_message,
        context: r.context,
        context_sha256: r.context_sha256,
        agent_id: r.agent_id,
        user_id: r.user_id,
        created_at: r.created_at,
        expires_at: r.expires_at,
        decided_at: r.decided_at,
        decided_by: r.decided_by,
        comment: r.comment,
    }
}

pub fn audit_event(e: ChainedEvent) -> AuditEventView {
    AuditEventView {
        seq: e.seq,
        at: e.record.at,
        actor_type: e.record.actor_type,
        actor_id: e.record.actor_id,
        action: e.record.action,
        subject: e.record.subject,
        details: e.record.details,
        prev_hash: e.prev_hash,
        hash: e.hash,
    }
}

pub fn login_link(l: LoginLink, now: DateTime<Utc>) -> LoginLinkView {
    LoginLinkView {
        state: l.state(now).to_string(),
        kind: l.kind.as_str().to_string(),
        id: l.id,
        user_id: l.user_id,
        created_at: l.created_at,
        expires_at: l.expires_at,
    }
}

/// A notification delivery as the delivery logs show it.
pub fn delivery(d: Delivery) -> DeliveryView {
    DeliveryView {
        next_attempt_at: d.is_pending().then_some(d.next_attempt_at),
        id: d.id,
        approval_id: d.approval_id,
        channel: d.channel,
        target: d.target,
        recipient: d.recipient,
        event: d.event,
        state: d.state,
        attempts: d.attempts,
        status_code: d.status_code,
        last_error: d.last_error,
        created_at: d.created_at,
        delivered_at: d.delivered_at,
    }
}
