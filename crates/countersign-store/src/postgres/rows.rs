//! Row mapping between PostgreSQL and domain records.
pub use crate::sql::{AUDIT_COLUMNS, DECISION_COLUMNS, REQUEST_COLUMNS, USER_COLUMNS};
use chrono::{DateTime, Utc};
use countersign_core::approval::{
    ApprovalRequest, DecisionRecord, DecisionRules, RequestKind, ToolInfo, Verdict,
};
use countersign_core::audit::{AuditRecord, ChainedEvent};
use countersign_core::clock::from_millis;
use countersign_core::directory::{Agent, ApiKey, Tenant, User};
use countersign_core::policy::Policy;
use countersign_core::{Error, Principal, Result, Role};
use countersign_proto::admin::KeyRole;
use countersign_proto::guard::{McpOrigin, PolicyAction, TimeoutOutcome};
use countersign_proto::{ApprovalStatus, TrustLevel};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::SigningKeyRecord;

pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Maps a database error into the one taxonomy.
pub fn pg_error(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            Error::AlreadyExists("something with the same unique name already exists".into())
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            Error::Unavailable(format!("database unavailable: {e}"))
        }
        _ => Error::Internal(format!("database: {e}")),
    }
}

pub fn get<'r, T>(row: &'r PgRow, idx: usize) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(idx).map_err(pg_error)
}

pub fn time(row: &PgRow, idx: usize) -> Result<DateTime<Utc>> {
    Ok(from_millis(get(row, idx)?))
}

pub fn opt_time(row: &PgRow, idx: usize) -> Result<Option<DateTime<Utc>>> {
    Ok(get::<Option<i64>>(row, idx)?.map(from_millis))
}

fn json(row: &PgRow, idx: usize) -> Result<serde_json::Value> {
    let text: String = get(row, idx)?;
    serde_json::from_str(&text).map_err(Error::internal)
}

pub fn bad(what: &str) -> Error {
    Error::Internal(format!("unexpected {what} in the database"))
}

pub fn tenant(row: &PgRow) -> Result<Tenant> {
    Ok(Tenant {
        id: get(row, 0)?,
        name: get(row, 1)?,
        created_at: time(row, 2)?,
    })
}

pub fn user(row: &PgRow) -> Result<User> {
    Ok(User {
        id: get(row, 0)?,
        tenant_id: get(row, 1)?,
        email: get(row, 2)?,
        name: get(row, 3)?,
        disabled: get(row, 4)?,
        created_at: time(row, 5)?,
        is_admin: get(row, 6)?,
    })
}

pub fn agent(row: &PgRow) -> Result<Agent> {
    let trust: String = get(row, 3)?;
    Ok(Agent {
        id: get(row, 0)?,
        tenant_id: get(row, 1)?,
        name: get(row, 2)?,
        trust_level: TrustLevel::parse(&trust).ok_or_else(|| bad("trust level"))?,
        disabled: get(row, 4)?,
        created_at: time(row, 5)?,
    })
}

pub fn api_key(row: &PgRow) -> Result<ApiKey> {
    let role: String = get(row, 4)?;
    Ok(ApiKey {
        id: get(row, 0)?,
        tenant_id: get(row, 1)?,
        key_hash: get(row, 2)?,
        prefix: get(row, 3)?,
        role: KeyRole::parse(&role).ok_or_else(|| bad("role"))?,
        user_id: get(row, 5)?,
        agent_id: get(row, 6)?,
        name: get(row, 7)?,
        created_at: time(row, 8)?,
        revoked_at: opt_time(row, 9)?,
        audiences: json_or(row, 10)?,
    })
}

/// Columns: id, tenant_id, role, user_id, agent_id, audiences.
pub fn principal(row: &PgRow) -> Result<Principal> {
    let role: String = get(row, 2)?;
    let role = match KeyRole::parse(&role) {
        Some(KeyRole::Admin) => Role::Admin,
        Some(KeyRole::Reviewer) => Role::Reviewer {
            user_id: get::<Option<String>>(row, 3)?.ok_or_else(|| bad("reviewer key"))?,
        },
        Some(KeyRole::Agent) => Role::Agent {
            agent_id: get::<Option<String>>(row, 4)?.ok_or_else(|| bad("agent key"))?,
        },
        Some(KeyRole::Executor) => Role::Executor {
            audiences: json_or(row, 5)?,
        },
        None => return Err(bad("role")),
    };
    Ok(Principal {
        key_id: get(row, 0)?,
        tenant_id: get(row, 1)?,
        role,
        user_id: get(row, 3)?,
    })
}

fn json_or<T: serde::de::DeserializeOwned + Default>(row: &PgRow, idx: usize) -> Result<T> {
    match get::<Option<String>>(row, idx)? {
        None => Ok(T::default()),
        Some(text) => serde_json::from_str(&text).map_err(Error::internal),
    }
}

pub fn request(row: &PgRow) -> Result<ApprovalRequest> {
    let kind: String = get(row, 2)?;
    let status: String = get(row, 9)?;
    let tool = match get::<Option<String>>(row, 16)? {
        Some(tool_name) => Some(ToolInfo {
            tool_name,
            session_id: get::<Option<String>>(row, 17)?.unwrap_or_default(),
            reason: get(row, 18)?,
            risk_score: get::<Option<f64>>(row, 19)?.unwrap_or_default(),
            threats: json_or(row, 20)?,
            policy_id: get(row, 21)?,
            policy_name: get(row, 22)?,
            notification_channels: json_or(row, 23)?,
            on_behalf_of: get(row, 24)?,
            annotations: json_or::<Option<_>>(row, 31)?,
            mcp: get::<Option<String>>(row, 32)?
                .map(|server| -> Result<McpOrigin> {
                    Ok(McpOrigin {
                        server,
                        client: get(row, 33)?,
                    })
                })
                .transpose()?,
        }),
        None => None,
    };
    let timeout: String = get(row, 28)?;
    Ok(ApprovalRequest {
        id: get(row, 0)?,
        tenant_id: get(row, 1)?,
        kind: RequestKind::parse(&kind).ok_or_else(|| bad("kind"))?,
        agent_id: get(row, 3)?,
        user_id: get(row, 4)?,
        scope: get(row, 5)?,
        binding_message: get(row, 6)?,
        context: json(row, 7)?,
        context_sha256: get(row, 8)?,
        status: ApprovalStatus::parse(&status).ok_or_else(|| bad("status"))?,
        created_at: time(row, 10)?,
        expires_at: time(row, 11)?,
        decided_at: opt_time(row, 12)?,
        decided_by: get(row, 13)?,
        comment: get(row, 14)?,
        token_issued_at: opt_time(row, 15)?,
        tool,
        rules: DecisionRules {
            approval_group_id: get(row, 25)?,
            required_approvals: get::<i32>(row, 26)? as u32,
            allow_self_approval: get(row, 27)?,
            default_on_timeout: TimeoutOutcome::parse(&timeout)
                .ok_or_else(|| bad("timeout outcome"))?,
            escalation_level: get::<i32>(row, 29)? as u32,
            escalation_plan: json_or(row, 30)?,
        },
    })
}

pub fn decision(row: &PgRow) -> Result<DecisionRecord> {
    let verdict: String = get(row, 2)?;
    Ok(DecisionRecord {
        reviewer_id: get(row, 0)?,
        reviewer: get(row, 1)?,
        verdict: match verdict.as_str() {
            "approve" => Verdict::Approve,
            "reject" => Verdict::Reject,
            _ => return Err(bad("verdict")),
        },
        comment: get(row, 3)?,
        channel: get(row, 4)?,
        decided_at: time(row, 5)?,
    })
}

pub fn policy(row: &PgRow) -> Result<Policy> {
    let action: String = get(row, 5)?;
    let config: String = get(row, 9)?;
    Ok(Policy {
        id: get(row, 0)?,
        tenant_id: get(row, 1)?,
        name: get(row, 2)?,
        description: get(row, 3)?,
        tool_pattern: get(row, 4)?,
        action: PolicyAction::parse(&action).ok_or_else(|| bad("action"))?,
        priority: get(row, 6)?,
        is_active: get(row, 7)?,
        condition: get(row, 8)?,
        approval: serde_json::from_str(&config).map_err(Error::internal)?,
        created_at: time(row, 10)?,
        updated_at: time(row, 11)?,
    })
}

pub fn audit_event(row: &PgRow) -> Result<ChainedEvent> {
    Ok(ChainedEvent {
        seq: get(row, 1)?,
        record: AuditRecord {
            tenant_id: get(row, 0)?,
            at: time(row, 2)?,
            actor_type: get(row, 3)?,
            actor_id: get(row, 4)?,
            action: get(row, 5)?,
            subject: get(row, 6)?,
            details: json(row, 7)?,
        },
        prev_hash: get(row, 8)?,
        hash: get(row, 9)?,
    })
}

pub fn signing_key(row: &PgRow) -> Result<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: get(row, 0)?,
        alg: get(row, 1)?,
        private_der: get(row, 2)?,
        created_at: time(row, 3)?,
        active: get(row, 4)?,
    })
}
