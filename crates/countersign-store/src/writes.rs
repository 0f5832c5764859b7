//! Statements several aggregates run inside their own transactions, once for both backends.
use chrono::{DateTime, Utc};
use countersign_core::approval::{ApprovalRequest, NewRequest};
use countersign_core::audit::Actor;
use countersign_core::directory::ApiKey;
use countersign_core::idempotency::{self, StoredAnswer};
use countersign_core::notify::NOTIFY;
use countersign_core::routing::{Group, ReviewerPlan};
use countersign_core::{Error, Result};
use serde_json::{Value, json};

use crate::db::Tx;
use crate::{audit_records, rows, sql};

pub fn not_found(what: &str) -> Error {
    Error::NotFound(format!("no such {what}"))
}

/// A unique violation, said in the caller's words.
pub fn renamed_conflict(e: Error, message: &str) -> Error {
    match e {
        Error::AlreadyExists(_) => Error::AlreadyExists(message.into()),
        other => other,
    }
}

/// JSON text for a TEXT column.
pub fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(Error::internal)
}

/// An executor key's audiences as stored (JSON), `NULL` for the other keys.
pub fn audiences_json(audiences: &[String]) -> Option<String> {
    (!audiences.is_empty()).then(|| json!(audiences).to_string())
}

pub async fn insert_api_key(tx: &mut dyn Tx, key: &ApiKey) -> Result<()> {
    let audiences = audiences_json(&key.audiences);
    let values = args![
        &key.id,
        &key.tenant_id,
        &key.key_hash,
        &key.prefix,
        key.role.as_str(),
        &key.user_id,
        &key.agent_id,
        &key.name,
        key.created_at,
        &audiences,
    ];
    tx.exec(sql::INSERT_API_KEY, values).await?;
    Ok(())
}

pub async fn request_in(
    tx: &mut dyn Tx,
    tenant_id: &str,
    id: &str,
) -> Result<Option<ApprovalRequest>> {
    let sql = format!(
        "SELECT {} FROM approval_requests WHERE tenant_id = ?1 AND id = ?2",
        sql::REQUEST_COLUMNS
    );
    tx.one(&sql, args![tenant_id, id], rows::request).await
}

/// Inserts an approval request, its reviewers, its audit event and its "requested"
/// notification.
pub async fn insert_request_with_plan(
    tx: &mut dyn Tx,
    new: &NewRequest,
    reviewers: &ReviewerPlan,
    actor: &Actor,
) -> Result<()> {
    // The answer first: a key that is taken stops the request before it is written.
    if let Some(answer) = &new.idempotency {
        insert_answer(tx, answer).await?;
    }
    insert_request(tx, new).await?;
    let r = &new.request;
    for (user_id, since) in &reviewers.reviewers {
        tx.exec(sql::INSERT_REVIEWER, args![&r.id, user_id, *since])
            .await?;
    }
    tx.audit(audit_records::request_created(r, actor)).await?;
    enqueue_notification(tx, &r.id, "requested", None, r.created_at).await
}

async fn insert_request(tx: &mut dyn Tx, new: &NewRequest) -> Result<()> {
    let r = &new.request;
    let context = json_text(&r.context)?;
    let tool = r.tool.as_ref();
    let threats = tool.map(|t| json_text(&t.threats)).transpose()?;
    let channels = tool
        .map(|t| json_text(&t.notification_channels))
        .transpose()?;
    let plan = (!r.rules.escalation_plan.is_empty())
        .then(|| json_text(&r.rules.escalation_plan))
        .transpose()?;
    let annotations = tool
        .and_then(|t| t.annotations.as_ref())
        .map(json_text)
        .transpose()?;
    let mcp = tool.and_then(|t| t.mcp.as_ref());
    let values = args![
        &r.id,
        &r.tenant_id,
        r.kind.as_str(),
        &new.auth_req_hash,
        &r.agent_id,
        &r.user_id,
        &r.scope,
        &r.binding_message,
        &context,
        &r.context_sha256,
        r.status.as_str(),
        r.created_at,
        r.expires_at,
        tool.map(|t| &t.tool_name),
        tool.map(|t| &t.session_id),
        tool.and_then(|t| t.reason.as_ref()),
        tool.map(|t| t.risk_score),
        &threats,
        tool.and_then(|t| t.policy_id.as_ref()),
        tool.and_then(|t| t.policy_name.as_ref()),
        &channels,
        tool.and_then(|t| t.on_behalf_of.as_ref()),
        &r.rules.approval_group_id,
        r.rules.required_approvals,
        r.rules.allow_self_approval,
        r.rules.default_on_timeout.as_str(),
        r.rules.escalation_level,
        &plan,
        r.rules.next_escalation_at(),
        &annotations,
        mcp.map(|m| &m.server),
        mcp.and_then(|m| m.client.as_ref()),
    ];
    tx.exec(sql::INSERT_REQUEST, values)
        .await
        .map_err(|e| renamed_conflict(e, "an identical tool call is already pending"))?;
    Ok(())
}

/// Remembers an answer inside the caller's transaction. A key whose answer has expired is
/// taken over; a live one makes this fail with `idempotency_key_in_use`, which rolls back
/// whatever the transaction created.
pub async fn insert_answer(tx: &mut dyn Tx, a: &StoredAnswer) -> Result<()> {
    let values = args![
        &a.tenant_id,
        &a.owner,
        &a.key_hash,
        &a.fingerprint,
        a.status,
        &a.answer,
        a.created_at,
        a.expires_at,
    ];
    match tx.exec(&sql::insert_answer(), values).await? {
        1 => Ok(()),
        _ => Err(idempotency::key_in_use()),
    }
}

/// Queues the notification of a request's event for delivery after commit.
pub async fn enqueue_notification(
    tx: &mut dyn Tx,
    approval_id: &str,
    event: &str,
    payload: Option<&Value>,
    at: DateTime<Utc>,
) -> Result<()> {
    let payload = payload.map(Value::to_string);
    let values = args![approval_id, NOTIFY, event, &payload, at];
    tx.exec(sql::ENQUEUE_NOTIFICATION, values).await?;
    Ok(())
}

pub async fn group_in(tx: &mut dyn Tx, tenant_id: &str, id: &str) -> Result<Option<Group>> {
    let head = tx
        .one(sql::GROUP, args![tenant_id, id], |row| {
            Ok(Group {
                id: row.get(0)?,
                tenant_id: row.get(1)?,
                name: row.get(2)?,
                escalation_minutes: row.get(3)?,
                members: Vec::new(),
                created_at: row.time(4)?,
                updated_at: row.time(5)?,
            })
        })
        .await?;
    let Some(mut group) = head else {
        return Ok(None);
    };
    group.members = tx
        .all(sql::GROUP_MEMBERS, args![tenant_id, id], rows::member)
        .await?;
    Ok(Some(group))
}

/// Disables a user or an agent, recording it only when it was active.
pub async fn mark_disabled(
    tx: &mut dyn Tx,
    table: &str,
    tenant_id: &str,
    id: &str,
    actor: &Actor,
    at: DateTime<Utc>,
) -> Result<()> {
    let sql = format!(
        "UPDATE {table} SET disabled = TRUE WHERE tenant_id = ?1 AND id = ?2 AND NOT disabled"
    );
    if tx.exec(&sql, args![tenant_id, id]).await? == 1 {
        tx.audit(audit_records::disabled(table, tenant_id, id, actor, at))
            .await?;
        // Their keys stop working: replicas forget the keys they checked.
        tx.hint("a").await?;
    }
    Ok(())
}

/// Queues the request's event for each client subscribed to it (CIBA ping and push) and for
/// the reviewers' notification channels.
pub async fn enqueue_callbacks(
    tx: &mut dyn Tx,
    approval_id: &str,
    event: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    tx.exec(sql::ENQUEUE_CALLBACK, args![approval_id, event, at])
        .await?;
    enqueue_notification(tx, approval_id, event, None, at).await
}
