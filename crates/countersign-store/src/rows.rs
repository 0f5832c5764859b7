//! Reading rows into domain records, once for both backends. Each reader expects the columns
//! of its list in `sql.rs`, in that order.
use countersign_core::approval::{
    ApprovalRequest, DecisionRecord, DecisionRules, RequestKind, ToolInfo, Verdict,
};
use countersign_core::audit::{AuditRecord, ChainedEvent};
use countersign_core::directory::{Agent, ApiKey, Tenant, User};
use countersign_core::policy::Policy;
use countersign_core::routing::Member;
use countersign_core::{Principal, Result, Role};
use countersign_proto::admin::KeyRole;
use countersign_proto::guard::{McpOrigin, MemberRole, PolicyAction, TimeoutOutcome};
use countersign_proto::{ApprovalStatus, TrustLevel};

use countersign_core::dashboard::{LinkKind, LoginLink, PasskeyRecord, Session};
use countersign_core::idempotency::StoredAnswer;
use countersign_core::mcp::McpServerRecord;
use countersign_core::notify::{
    Delivery, Preferences, PushSubscription, ReviewToken, WebhookEndpoint,
};
use countersign_core::oidc::{AuthMethod, DeliveryMode, OidcClient, OidcRequestState, OutboxItem};

use crate::SigningKeyRecord;
use crate::db::{Row, bad};
use crate::records::headers_from_json;

pub fn tenant(row: &dyn Row) -> Result<Tenant> {
    Ok(Tenant {
        id: row.get(0)?,
        name: row.get(1)?,
        created_at: row.time(2)?,
    })
}

pub fn user(row: &dyn Row) -> Result<User> {
    Ok(User {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        email: row.get(2)?,
        name: row.get(3)?,
        disabled: row.get(4)?,
        created_at: row.time(5)?,
        is_admin: row.get(6)?,
    })
}

pub fn agent(row: &dyn Row) -> Result<Agent> {
    let trust: String = row.get(3)?;
    Ok(Agent {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        name: row.get(2)?,
        trust_level: TrustLevel::parse(&trust).ok_or_else(|| bad("trust level"))?,
        disabled: row.get(4)?,
        created_at: row.time(5)?,
    })
}

pub fn api_key(row: &dyn Row) -> Result<ApiKey> {
    let role: String = row.get(4)?;
    Ok(ApiKey {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        key_hash: row.get(2)?,
        prefix: row.get(3)?,
        role: KeyRole::parse(&role).ok_or_else(|| bad("role"))?,
        user_id: row.get(5)?,
        agent_id: row.get(6)?,
        name: row.get(7)?,
        created_at: row.time(8)?,
        revoked_at: row.opt_time(9)?,
        audiences: row.json_or(10)?,
    })
}

/// Columns: id, tenant_id, role, user_id, agent_id, audiences.
pub fn principal(row: &dyn Row) -> Result<Principal> {
    let role: String = row.get(2)?;
    let role = match KeyRole::parse(&role) {
        Some(KeyRole::Admin) => Role::Admin,
        Some(KeyRole::Reviewer) => Role::Reviewer {
            user_id: row
                .get::<Option<String>>(3)?
                .ok_or_else(|| bad("reviewer key"))?,
        },
        Some(KeyRole::Agent) => Role::Agent {
            agent_id: row
                .get::<Option<String>>(4)?
                .ok_or_else(|| bad("agent key"))?,
        },
        Some(KeyRole::Executor) => Role::Executor {
            audiences: row.json_or(5)?,
        },
        None => return Err(bad("role")),
    };
    Ok(Principal {
        key_id: row.get(0)?,
        tenant_id: row.get(1)?,
        role,
        user_id: row.get(3)?,
    })
}

pub fn request(row: &dyn Row) -> Result<ApprovalRequest> {
    let kind: String = row.get(2)?;
    let status: String = row.get(9)?;
    let tool = match row.get::<Option<String>>(16)? {
        Some(tool_name) => Some(ToolInfo {
            tool_name,
            session_id: row.get::<Option<String>>(17)?.unwrap_or_default(),
            reason: row.get(18)?,
            risk_score: row.get::<Option<f64>>(19)?.unwrap_or_default(),
            threats: row.json_or(20)?,
            policy_id: row.get(21)?,
            policy_name: row.get(22)?,
            notification_channels: row.json_or(23)?,
            on_behalf_of: row.get(24)?,
            annotations: row.json_or::<Option<_>>(31)?,
            mcp: match row.get::<Option<String>>(32)? {
                Some(server) => Some(McpOrigin {
                    server,
                    client: row.get(33)?,
                }),
                None => None,
            },
        }),
        None => None,
    };
    let timeout: String = row.get(28)?;
    Ok(ApprovalRequest {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        kind: RequestKind::parse(&kind).ok_or_else(|| bad("kind"))?,
        agent_id: row.get(3)?,
        user_id: row.get(4)?,
        scope: row.get(5)?,
        binding_message: row.get(6)?,
        context: row.json(7)?,
        context_sha256: row.get(8)?,
        status: ApprovalStatus::parse(&status).ok_or_else(|| bad("status"))?,
        created_at: row.time(10)?,
        expires_at: row.time(11)?,
        decided_at: row.opt_time(12)?,
        decided_by: row.get(13)?,
        comment: row.get(14)?,
        token_issued_at: row.opt_time(15)?,
        tool,
        rules: DecisionRules {
            approval_group_id: row.get(25)?,
            required_approvals: row.get(26)?,
            allow_self_approval: row.get(27)?,
            default_on_timeout: TimeoutOutcome::parse(&timeout)
                .ok_or_else(|| bad("timeout outcome"))?,
            escalation_level: row.get(29)?,
            escalation_plan: row.json_or(30)?,
        },
    })
}

pub fn decision(row: &dyn Row) -> Result<DecisionRecord> {
    let verdict: String = row.get(2)?;
    Ok(DecisionRecord {
        reviewer_id: row.get(0)?,
        reviewer: row.get(1)?,
        verdict: match verdict.as_str() {
            "approve" => Verdict::Approve,
            "reject" => Verdict::Reject,
            _ => return Err(bad("verdict")),
        },
        comment: row.get(3)?,
        channel: row.get(4)?,
        decided_at: row.time(5)?,
    })
}

pub fn policy(row: &dyn Row) -> Result<Policy> {
    let action: String = row.get(5)?;
    Ok(Policy {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        name: row.get(2)?,
        description: row.get(3)?,
        tool_pattern: row.get(4)?,
        action: PolicyAction::parse(&action).ok_or_else(|| bad("action"))?,
        priority: row.get(6)?,
        is_active: row.get(7)?,
        condition: row.get(8)?,
        approval: row.json(9)?,
        created_at: row.time(10)?,
        updated_at: row.time(11)?,
    })
}

pub fn audit_event(row: &dyn Row) -> Result<ChainedEvent> {
    Ok(ChainedEvent {
        seq: row.get(1)?,
        record: AuditRecord {
            tenant_id: row.get(0)?,
            at: row.time(2)?,
            actor_type: row.get(3)?,
            actor_id: row.get(4)?,
            action: row.get(5)?,
            subject: row.get(6)?,
            details: row.json(7)?,
        },
        prev_hash: row.get(8)?,
        hash: row.get(9)?,
    })
}

pub fn signing_key(row: &dyn Row) -> Result<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: row.get(0)?,
        alg: row.get(1)?,
        private_der: row.get(2)?,
        created_at: row.time(3)?,
        active: row.get(4)?,
    })
}

/// Columns: user_id, email, role.
pub fn member(row: &dyn Row) -> Result<Member> {
    let role: String = row.get(2)?;
    Ok(Member {
        user_id: row.get(0)?,
        email: row.get(1)?,
        role: MemberRole::parse(&role).unwrap_or(MemberRole::Backup),
    })
}

pub fn link(row: &dyn Row) -> Result<LoginLink> {
    let kind: String = row.get(3)?;
    Ok(LoginLink {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        user_id: row.get(2)?,
        kind: LinkKind::parse(&kind).ok_or_else(|| crate::db::bad("link kind"))?,
        created_at: row.time(4)?,
        expires_at: row.time(5)?,
        used_at: row.opt_time(6)?,
        revoked_at: row.opt_time(7)?,
    })
}

pub fn session(row: &dyn Row) -> Result<Session> {
    Ok(Session {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        user_id: row.get(2)?,
        method: row.get(3)?,
        user_agent: row.get(4)?,
        created_at: row.time(5)?,
        last_seen_at: row.time(6)?,
        expires_at: row.time(7)?,
        revoked_at: row.opt_time(8)?,
    })
}

pub fn passkey(row: &dyn Row) -> Result<PasskeyRecord> {
    Ok(PasskeyRecord {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        user_id: row.get(2)?,
        credential_id: row.get(3)?,
        name: row.get(4)?,
        credential: row.get(5)?,
        created_at: row.time(6)?,
        last_used_at: row.opt_time(7)?,
    })
}

pub fn server(row: &dyn Row) -> Result<McpServerRecord> {
    let headers: String = row.get(3)?;
    Ok(McpServerRecord {
        tenant_id: row.get(0)?,
        id: row.get(1)?,
        url: row.get(2)?,
        headers: headers_from_json(&headers)?,
        created_at: row.time(4)?,
        updated_at: row.time(5)?,
    })
}

pub fn delivery(row: &dyn Row) -> Result<Delivery> {
    Ok(Delivery {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        approval_id: row.get(2)?,
        channel: row.get(3)?,
        target: row.get(4)?,
        recipient: row.get(5)?,
        event: row.get(6)?,
        state: row.get(7)?,
        attempts: row.get(8)?,
        created_at: row.time(9)?,
        next_attempt_at: row.time(10)?,
        delivered_at: row.opt_time(11)?,
        last_error: row.get(12)?,
        status_code: row.get(13)?,
        external_ref: row.get(14)?,
        payload: row.opt_json(15)?,
    })
}

pub fn preferences(row: &dyn Row) -> Result<Preferences> {
    Ok(Preferences {
        tenant_id: row.get(0)?,
        user_id: row.get(1)?,
        email: row.get(2)?,
        slack: row.get(3)?,
        push: row.get(4)?,
        slack_user_id: row.get(5)?,
        updated_at: row.time(6)?,
    })
}

pub fn webhook(row: &dyn Row) -> Result<WebhookEndpoint> {
    let events: String = row.get(3)?;
    Ok(WebhookEndpoint {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        url: row.get(2)?,
        events: serde_json::from_str(&events).map_err(|_| bad("webhook events"))?,
        secret: row.get(4)?,
        description: row.get(5)?,
        disabled_at: row.opt_time(6)?,
        disabled_reason: row.get(7)?,
        created_at: row.time(8)?,
        updated_at: row.time(9)?,
    })
}

pub fn push(row: &dyn Row) -> Result<PushSubscription> {
    Ok(PushSubscription {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        user_id: row.get(2)?,
        endpoint: row.get(3)?,
        p256dh: row.get(4)?,
        auth: row.get(5)?,
        user_agent: row.get(6)?,
        created_at: row.time(7)?,
    })
}

pub fn review_token(row: &dyn Row) -> Result<ReviewToken> {
    Ok(ReviewToken {
        token_hash: row.get(0)?,
        tenant_id: row.get(1)?,
        approval_id: row.get(2)?,
        user_id: row.get(3)?,
        expires_at: row.time(4)?,
        created_at: row.time(5)?,
    })
}

pub fn client(row: &dyn Row) -> Result<OidcClient> {
    let method: String = row.get(2)?;
    let jwks: Option<String> = row.get(4)?;
    let mode: String = row.get(5)?;
    let grants: String = row.get(9)?;
    Ok(OidcClient {
        client_id: row.get(0)?,
        tenant_id: row.get(1)?,
        auth_method: AuthMethod::parse(&method).ok_or_else(|| bad("auth method"))?,
        secret_hash: row.get(3)?,
        jwks: jwks
            .map(|j| serde_json::from_str(&j))
            .transpose()
            .map_err(|_| bad("jwks"))?,
        delivery_mode: DeliveryMode::parse(&mode).ok_or_else(|| bad("delivery mode"))?,
        notification_endpoint: row.get(6)?,
        request_signing_alg: row.get(7)?,
        user_code_parameter: row.get(8)?,
        grant_types: serde_json::from_str(&grants).map_err(|_| bad("grant types"))?,
        created_at: row.time(10)?,
    })
}

pub fn state(row: &dyn Row) -> Result<OidcRequestState> {
    let mode: String = row.get(3)?;
    Ok(OidcRequestState {
        approval_id: row.get(0)?,
        tenant_id: row.get(1)?,
        client_id: row.get(2)?,
        delivery_mode: DeliveryMode::parse(&mode).ok_or_else(|| bad("delivery mode"))?,
        scope: row.get(4)?,
        acr: row.get(5)?,
        interval_secs: row.get(6)?,
        last_poll_at: row.opt_time(7)?,
    })
}

/// An outbox row as claimed, with its attempts as stored.
pub fn outbox_item(row: &dyn Row) -> Result<OutboxItem> {
    Ok(OutboxItem {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        approval_id: row.get(2)?,
        channel: row.get(3)?,
        target: row.get(4)?,
        secret: row.get(5)?,
        event: row.get(6)?,
        attempts: row.get(7)?,
        recipient: row.get(8)?,
        payload: row
            .get::<Option<String>>(9)?
            .and_then(|p| serde_json::from_str(&p).ok()),
    })
}

pub fn answer(row: &dyn Row) -> Result<StoredAnswer> {
    Ok(StoredAnswer {
        tenant_id: row.get(0)?,
        owner: row.get(1)?,
        key_hash: row.get(2)?,
        fingerprint: row.get(3)?,
        status: row.get(4)?,
        answer: row.get(5)?,
        created_at: row.time(6)?,
        expires_at: row.time(7)?,
    })
}
