//! Every audit record the store writes, with its action and details, built once for both
//! backends so the audit trail reads the same on either.
use chrono::{DateTime, Utc};
use countersign_core::approval::{ApprovalRequest, Decision};
use countersign_core::audit::{Actor, AuditRecord};
use countersign_core::dashboard::{LinkKind, LoginLink, PasskeyRecord, Session};
use countersign_core::directory::{Agent, ApiKey, Tenant, User};
use countersign_core::grant::EndedGrant;
use countersign_core::mcp::McpServerRecord;
use countersign_core::notify::{Preferences, PushSubscription, WebhookEndpoint};
use countersign_core::oidc::OidcClient;
use countersign_core::routing::EscalationStep;
use countersign_proto::ApprovalStatus;
use serde_json::{Value, json};

use crate::SigningKeyRecord;

/// A record whose details are empty.
fn bare(
    tenant_id: &str,
    at: DateTime<Utc>,
    actor: &Actor,
    action: &str,
    subject: &str,
) -> AuditRecord {
    AuditRecord::new(tenant_id, at, actor, action, subject, json!({}))
}

// ----- tenants, users, agents, keys -----

pub fn tenant_created(tenant: &Tenant, actor: &Actor) -> AuditRecord {
    AuditRecord::new(
        &tenant.id,
        tenant.created_at,
        actor,
        "tenant.created",
        &tenant.id,
        json!({"name": tenant.name}),
    )
}

pub fn user_created(user: &User, actor: &Actor) -> AuditRecord {
    AuditRecord::new(
        &user.tenant_id,
        user.created_at,
        actor,
        "user.created",
        &user.id,
        json!({"email": user.email, "name": user.name, "is_admin": user.is_admin}),
    )
}

pub fn agent_created(agent: &Agent, actor: &Actor) -> AuditRecord {
    AuditRecord::new(
        &agent.tenant_id,
        agent.created_at,
        actor,
        "agent.created",
        &agent.id,
        json!({"name": agent.name, "trust_level": agent.trust_level.as_str()}),
    )
}

/// A user (`table` is `users`) or an agent was disabled.
pub fn disabled(
    table: &str,
    tenant_id: &str,
    id: &str,
    actor: &Actor,
    at: DateTime<Utc>,
) -> AuditRecord {
    let action = if table == "users" {
        "user.disabled"
    } else {
        "agent.disabled"
    };
    bare(tenant_id, at, actor, action, id)
}

pub fn user_admin_changed(
    tenant_id: &str,
    id: &str,
    is_admin: bool,
    actor: &Actor,
    at: DateTime<Utc>,
) -> AuditRecord {
    AuditRecord::new(
        tenant_id,
        at,
        actor,
        "user.admin_changed",
        id,
        json!({"is_admin": is_admin}),
    )
}

pub fn user_code_set(
    tenant_id: &str,
    user_id: &str,
    actor: &Actor,
    at: DateTime<Utc>,
) -> AuditRecord {
    bare(tenant_id, at, actor, "user.user_code_set", user_id)
}

pub fn api_key_created(key: &ApiKey, actor: &Actor) -> AuditRecord {
    let mut details = json!({"role": key.role.as_str(), "user_id": key.user_id, "agent_id": key.agent_id, "prefix": key.prefix});
    if !key.audiences.is_empty() {
        details["audiences"] = json!(key.audiences);
    }
    AuditRecord::new(
        &key.tenant_id,
        key.created_at,
        actor,
        "api_key.created",
        &key.id,
        details,
    )
}

pub fn api_key_revoked(tenant_id: &str, id: &str, actor: &Actor, at: DateTime<Utc>) -> AuditRecord {
    bare(tenant_id, at, actor, "api_key.revoked", id)
}

pub fn signing_key_rotated(tenant_id: &str, key: &SigningKeyRecord, actor: &Actor) -> AuditRecord {
    AuditRecord::new(
        tenant_id,
        key.created_at,
        actor,
        "signing_key.rotated",
        &key.kid,
        json!({"alg": key.alg}),
    )
}

// ----- approval requests and grants -----

pub fn request_created(r: &ApprovalRequest, actor: &Actor) -> AuditRecord {
    AuditRecord::new(
        &r.tenant_id,
        r.created_at,
        actor,
        "approval.created",
        &r.id,
        creation_details(r),
    )
}

pub fn request_cancelled(
    tenant_id: &str,
    id: &str,
    actor: &Actor,
    at: DateTime<Utc>,
) -> AuditRecord {
    bare(tenant_id, at, actor, "approval.cancelled", id)
}

pub fn token_issued(
    tenant_id: &str,
    id: &str,
    jti: &str,
    actor: &Actor,
    at: DateTime<Utc>,
) -> AuditRecord {
    AuditRecord::new(
        tenant_id,
        at,
        actor,
        "token.issued",
        id,
        json!({"jti": jti}),
    )
}

pub fn grant_ended(ended: &EndedGrant, actor: &Actor) -> AuditRecord {
    AuditRecord::new(
        &ended.tenant_id,
        ended.at,
        actor,
        &format!("grant.{}", ended.end.as_str()),
        &ended.approval_id,
        json!({"jti": ended.jti, "audience": ended.audience}),
    )
}

// ----- dashboard accounts -----

pub fn login_link_created(l: &LoginLink, actor: &Actor) -> AuditRecord {
    AuditRecord::new(
        &l.tenant_id,
        l.created_at,
        actor,
        "login_link.created",
        &l.id,
        json!({"kind": l.kind.as_str(), "user_id": l.user_id, "expires_at_ms": l.expires_at.timestamp_millis()}),
    )
}

/// A one-time link of this kind was spent to open session `s`.
pub fn login_link_used(s: &Session, kind: LinkKind, actor: &Actor) -> AuditRecord {
    AuditRecord::new(
        &s.tenant_id,
        s.created_at,
        actor,
        "login_link.used",
        &s.user_id,
        json!({"kind": kind.as_str()}),
    )
}

pub fn login_link_revoked(
    tenant_id: &str,
    id: &str,
    actor: &Actor,
    at: DateTime<Utc>,
) -> AuditRecord {
    bare(tenant_id, at, actor, "login_link.revoked", id)
}

pub fn session_created(s: &Session, actor: &Actor) -> AuditRecord {
    AuditRecord::new(
        &s.tenant_id,
        s.created_at,
        actor,
        "session.created",
        &s.id,
        json!({"user_id": s.user_id, "method": s.method}),
    )
}

pub fn session_revoked(
    tenant_id: &str,
    id: &str,
    user_id: &str,
    actor: &Actor,
    at: DateTime<Utc>,
) -> AuditRecord {
    AuditRecord::new(
        tenant_id,
        at,
        actor,
        "session.revoked",
        id,
        json!({"user_id": user_id}),
    )
}

pub fn passkey_registered(p: &PasskeyRecord, actor: &Actor) -> AuditRecord {
    AuditRecord::new(
        &p.tenant_id,
        p.created_at,
        actor,
        "passkey.registered",
        &p.id,
        json!({"user_id": p.user_id, "name": p.name}),
    )
}

pub fn passkey_removed(
    tenant_id: &str,
    id: &str,
    user_id: &str,
    actor: &Actor,
    at: DateTime<Utc>,
) -> AuditRecord {
    AuditRecord::new(
        tenant_id,
        at,
        actor,
        "passkey.removed",
        id,
        json!({"user_id": user_id}),
    )
}

// ----- OpenID clients -----

pub fn oidc_client_created(client: &OidcClient, actor: &Actor) -> AuditRecord {
    AuditRecord::new(
        &client.tenant_id,
        client.created_at,
        actor,
        "oidc_client.created",
        &client.client_id,
        json!({
            "auth_method": client.auth_method.as_str(),
            "delivery_mode": client.delivery_mode.as_str(),
            "notification_endpoint": client.notification_endpoint,
        }),
    )
}

pub fn oidc_client_deleted(
    tenant_id: &str,
    client_id: &str,
    actor: &Actor,
    at: DateTime<Utc>,
) -> AuditRecord {
    bare(tenant_id, at, actor, "oidc_client.deleted", client_id)
}

// ----- notifications -----

pub fn push_subscription_created(sub: &PushSubscription, actor: &Actor) -> AuditRecord {
    AuditRecord::new(
        &sub.tenant_id,
        sub.created_at,
        actor,
        "push_subscription.created",
        &sub.id,
        json!({"user_id": sub.user_id}),
    )
}

// ----- request transitions, settings, channels, MCP servers -----

fn creation_details(r: &ApprovalRequest) -> Value {
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

pub fn decision(
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

pub fn timeout(request: &ApprovalRequest, now: DateTime<Utc>) -> AuditRecord {
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

pub fn escalation(
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

pub fn config(
    tenant_id: &str,
    at: DateTime<Utc>,
    actor: &Actor,
    action: &str,
    subject: &str,
    details: Value,
) -> AuditRecord {
    AuditRecord::new(tenant_id, at, actor, action, subject, details)
}

/// A tenant channel's settings changed; the settings hold secrets, so only the fact is kept.
pub fn channel(
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

pub fn preferences(prefs: &Preferences, actor: &Actor) -> AuditRecord {
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
pub fn webhook(endpoint: &WebhookEndpoint, action: &str, actor: &Actor) -> AuditRecord {
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

/// A registered MCP server changed: its URL and header names, never the header values.
pub fn mcp_server(server: &McpServerRecord, action: &str, actor: &Actor) -> AuditRecord {
    AuditRecord::new(
        &server.tenant_id,
        server.updated_at,
        actor,
        action,
        &server.id,
        json!({"url": server.url, "header_names": server.header_names()}),
    )
}
