//! Row mapping between SQL and domain records.
pub use crate::sql::{AUDIT_COLUMNS, DECISION_COLUMNS, REQUEST_COLUMNS, USER_COLUMNS};
use chrono::{DateTime, Utc};
use countersign_core::approval::{
    ApprovalRequest, DecisionRecord, DecisionRules, RequestKind, ToolInfo, Verdict,
};
use countersign_core::audit::{AuditRecord, ChainedEvent};
use countersign_core::clock::from_millis;
use countersign_core::directory::{Agent, ApiKey, Tenant, User};
use countersign_core::policy::Policy;
use countersign_core::{Error, Principal, Role};
use countersign_proto::admin::KeyRole;
use countersign_proto::guard::{McpOrigin, PolicyAction, TimeoutOutcome};
use countersign_proto::{ApprovalStatus, TrustLevel};
use rusqlite::Row;

pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn time(row: &Row, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    Ok(from_millis(row.get(idx)?))
}

pub fn opt_time(row: &Row, idx: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    Ok(row.get::<_, Option<i64>>(idx)?.map(from_millis))
}

pub fn bad(idx: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        idx,
        rusqlite::types::Type::Text,
        format!("unexpected {what}").into(),
    )
}

fn json(row: &Row, idx: usize) -> rusqlite::Result<serde_json::Value> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub fn tenant(row: &Row) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        id: row.get(0)?,
        name: row.get(1)?,
        created_at: time(row, 2)?,
    })
}

pub fn user(row: &Row) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        email: row.get(2)?,
        name: row.get(3)?,
        disabled: row.get(4)?,
        created_at: time(row, 5)?,
        is_admin: row.get(6)?,
    })
}

pub fn agent(row: &Row) -> rusqlite::Result<Agent> {
    let trust: String = row.get(3)?;
    Ok(Agent {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        name: row.get(2)?,
        trust_level: TrustLevel::parse(&trust).ok_or_else(|| bad(3, "trust level"))?,
        disabled: row.get(4)?,
        created_at: time(row, 5)?,
    })
}

pub fn api_key(row: &Row) -> rusqlite::Result<ApiKey> {
    let role: String = row.get(4)?;
    Ok(ApiKey {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        key_hash: row.get(2)?,
        prefix: row.get(3)?,
        role: KeyRole::parse(&role).ok_or_else(|| bad(4, "role"))?,
        user_id: row.get(5)?,
        agent_id: row.get(6)?,
        name: row.get(7)?,
        created_at: time(row, 8)?,
        revoked_at: opt_time(row, 9)?,
        audiences: json_or(row, 10)?,
    })
}

/// Columns: id, tenant_id, role, user_id, agent_id, audiences.
pub fn principal(row: &Row) -> rusqlite::Result<Principal> {
    let role: String = row.get(2)?;
    let role = match KeyRole::parse(&role) {
        Some(KeyRole::Admin) => Role::Admin,
        Some(KeyRole::Reviewer) => Role::Reviewer {
            user_id: row
                .get::<_, Option<String>>(3)?
                .ok_or_else(|| bad(3, "null"))?,
        },
        Some(KeyRole::Agent) => Role::Agent {
            agent_id: row
                .get::<_, Option<String>>(4)?
                .ok_or_else(|| bad(4, "null"))?,
        },
        Some(KeyRole::Executor) => Role::Executor {
            audiences: json_or(row, 5)?,
        },
        None => return Err(bad(2, "role")),
    };
    Ok(Principal {
        key_id: row.get(0)?,
        tenant_id: row.get(1)?,
        role,
        user_id: row.get(3)?,
    })
}

fn json_or<T: serde::de::DeserializeOwned + Default>(row: &Row, idx: usize) -> rusqlite::Result<T> {
    match row.get::<_, Option<String>>(idx)? {
        None => Ok(T::default()),
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
        }),
    }
}

pub fn request(row: &Row) -> rusqlite::Result<ApprovalRequest> {
    let kind: String = row.get(2)?;
    let status: String = row.get(9)?;
    let kind = RequestKind::parse(&kind).ok_or_else(|| bad(2, "kind"))?;
    let tool = match row.get::<_, Option<String>>(16)? {
        Some(tool_name) => Some(ToolInfo {
            tool_name,
            session_id: row.get::<_, Option<String>>(17)?.unwrap_or_default(),
            reason: row.get(18)?,
            risk_score: row.get::<_, Option<f64>>(19)?.unwrap_or_default(),
            threats: json_or(row, 20)?,
            policy_id: row.get(21)?,
            policy_name: row.get(22)?,
            notification_channels: json_or(row, 23)?,
            on_behalf_of: row.get(24)?,
            annotations: json_or::<Option<_>>(row, 31)?,
            mcp: row
                .get::<_, Option<String>>(32)?
                .map(|server| -> rusqlite::Result<McpOrigin> {
                    Ok(McpOrigin {
                        server,
                        client: row.get(33)?,
                    })
                })
                .transpose()?,
        }),
        None => None,
    };
    let timeout: String = row.get(28)?;
    Ok(ApprovalRequest {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        kind,
        agent_id: row.get(3)?,
        user_id: row.get(4)?,
        scope: row.get(5)?,
        binding_message: row.get(6)?,
        context: json(row, 7)?,
        context_sha256: row.get(8)?,
        status: ApprovalStatus::parse(&status).ok_or_else(|| bad(9, "status"))?,
        created_at: time(row, 10)?,
        expires_at: time(row, 11)?,
        decided_at: opt_time(row, 12)?,
        decided_by: row.get(13)?,
        comment: row.get(14)?,
        token_issued_at: opt_time(row, 15)?,
        tool,
        rules: DecisionRules {
            approval_group_id: row.get(25)?,
            required_approvals: row.get(26)?,
            allow_self_approval: row.get(27)?,
            default_on_timeout: TimeoutOutcome::parse(&timeout)
                .ok_or_else(|| bad(28, "timeout outcome"))?,
            escalation_level: row.get(29)?,
            escalation_plan: json_or(row, 30)?,
        },
    })
}

pub fn decision(row: &Row) -> rusqlite::Result<DecisionRecord> {
    let verdict: String = row.get(2)?;
    Ok(DecisionRecord {
        reviewer_id: row.get(0)?,
        reviewer: row.get(1)?,
        verdict: match verdict.as_str() {
            "approve" => Verdict::Approve,
            "reject" => Verdict::Reject,
            _ => return Err(bad(2, "verdict")),
        },
        comment: row.get(3)?,
        channel: row.get(4)?,
        decided_at: time(row, 5)?,
    })
}

pub fn policy(row: &Row) -> rusqlite::Result<Policy> {
    let action: String = row.get(5)?;
    let config: String = row.get(9)?;
    Ok(Policy {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        name: row.get(2)?,
        description: row.get(3)?,
        tool_pattern: row.get(4)?,
        action: PolicyAction::parse(&action).ok_or_else(|| bad(5, "action"))?,
        priority: row.get(6)?,
        is_active: row.get(7)?,
        condition: row.get(8)?,
        approval: serde_json::from_str(&config).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(9, rusqlite::types::Type::Text, Box::new(e))
        })?,
        created_at: time(row, 10)?,
        updated_at: time(row, 11)?,
    })
}

pub fn audit_event(row: &Row) -> rusqlite::Result<ChainedEvent> {
    Ok(ChainedEvent {
        seq: row.get(1)?,
        record: AuditRecord {
            tenant_id: row.get(0)?,
            at: time(row, 2)?,
            actor_type: row.get(3)?,
            actor_id: row.get(4)?,
            action: row.get(5)?,
            subject: row.get(6)?,
            details: json(row, 7)?,
        },
        prev_hash: row.get(8)?,
        hash: row.get(9)?,
    })
}

/// Maps a database error into the one taxonomy: unique violations are conflicts, the rest is
/// internal.
pub fn db_error(e: rusqlite::Error) -> Error {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            Error::AlreadyExists("something with the same unique name already exists".into())
        }
        _ => Error::Internal(format!("database: {e}")),
    }
}
