//! The PostgreSQL backend, for several replicas on one database.
mod idempotency;
mod notify;
mod oidc;
mod rows;
mod tx;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::approval::{
    ApprovalRequest, Decision, DecisionRecord, NewRequest, RequestRef, TIMEOUT_DECIDER,
    quorum_outcome,
};
use countersign_core::audit::{self, Actor, AuditRecord, ChainedEvent, GENESIS_HASH};
use countersign_core::directory::ApiKey;
use countersign_core::grant::EndedGrant;
use countersign_core::routing::{Group, Member, ReviewerPlan};
use countersign_core::{Error, Result};
use countersign_proto::ApprovalStatus;
use countersign_proto::guard::MemberRole;
use rows::{AUDIT_COLUMNS, DECISION_COLUMNS, REQUEST_COLUMNS, ms, pg_error};
use serde_json::json;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Row};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::audit_records;
use crate::listing::Arg;
use crate::records::already_voted;
use crate::sql;
use crate::{Backend, Change, Expired, Page, RequestFilter, SameCall};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_guard.sql")),
    (3, include_str!("../../migrations/postgres/0003_oidc.sql")),
    (
        4,
        include_str!("../../migrations/postgres/0004_dashboard.sql"),
    ),
    (
        5,
        include_str!("../../migrations/postgres/0005_notifications.sql"),
    ),
    (6, include_str!("../../migrations/postgres/0006_grants.sql")),
    (
        7,
        include_str!("../../migrations/postgres/0007_idempotency.sql"),
    ),
    (
        8,
        include_str!("../../migrations/postgres/0008_pending_per_agent.sql"),
    ),
    (9, include_str!("../../migrations/postgres/0009_mcp.sql")),
];

/// The channel replicas tell each other about changes on.
const CHANNEL: &str = "countersign_changes";
/// Serialises migrations when several replicas start at once.
const MIGRATION_LOCK: i64 = 0x0063_6f75_6e74_6572;

pub fn migration_versions() -> Vec<i64> {
    MIGRATIONS.iter().map(|(v, _)| *v).collect()
}

#[derive(Debug, Clone)]
pub struct PostgresOptions {
    pub url: String,
    pub max_connections: u32,
}

impl PostgresOptions {
    pub fn new(url: impl Into<String>) -> PostgresOptions {
        PostgresOptions {
            url: url.into(),
            max_connections: 16,
        }
    }
}

#[derive(Debug)]
pub struct PgStore {
    pool: PgPool,
    changes: broadcast::Sender<Change>,
    listener: JoinHandle<()>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

async fn migrate(pool: &PgPool) -> Result<()> {
    let mut conn = pool.acquire().await.map_err(pg_error)?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
    let outcome = apply_migrations(&mut conn).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(pg_error);
    outcome.and(unlocked.map(|_| ()))
}

async fn apply_migrations(conn: &mut PgConnection) -> Result<()> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await
    .map_err(pg_error)?;
    for (version, sql) in MIGRATIONS {
        let applied: Option<i64> = sqlx::query_scalar(&sql::pg(sql::MIGRATION_APPLIED))
            .bind(version)
            .fetch_optional(&mut *conn)
            .await
            .map_err(pg_error)?;
        if applied.is_some() {
            continue;
        }
        sqlx::raw_sql("BEGIN")
            .execute(&mut *conn)
            .await
            .map_err(pg_error)?;
        let applied = async {
            sqlx::raw_sql(sql).execute(&mut *conn).await?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(Utc::now().timestamp_millis())
                .execute(&mut *conn)
                .await?;
            sqlx::raw_sql("COMMIT").execute(&mut *conn).await
        }
        .await;
        if let Err(e) = applied {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
            return Err(Error::Internal(format!("migration {version} failed: {e}")));
        }
        tracing::info!(version, "applied migration");
    }
    Ok(())
}

/// Forwards NOTIFY hints; after a lost connection it says `Resync`, because hints sent
/// meanwhile are gone and waiters must read the truth again.
async fn listen(pool: PgPool, changes: broadcast::Sender<Change>) {
    let mut reconnecting = false;
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "change listener cannot connect; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        if reconnecting {
            let _ = changes.send(Change::Resync);
        }
        reconnecting = true;
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    let change = match n.payload().split_once(':') {
                        Some(("r", id)) => Change::Request(id.to_string()),
                        Some(("g", tenant)) => Change::Guard(tenant.to_string()),
                        _ if n.payload() == "k" => Change::SigningKeys,
                        _ => Change::Resync,
                    };
                    let _ = changes.send(change);
                }
                // The connection was lost: reconnect and resync.
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "change listener lost its connection");
                    break;
                }
            }
        }
        let _ = changes.send(Change::Resync);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn notify(conn: &mut PgConnection, payload: &str) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(conn)
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// Appends an audit event at the end of its tenant's chain. The head row lock makes
/// concurrent appends (from any replica) wait for each other, so the chain stays linear.
async fn append_audit(conn: &mut PgConnection, record: AuditRecord) -> Result<ChainedEvent> {
    let head = sqlx::query("SELECT seq, hash FROM audit_heads WHERE tenant_id = $1 FOR UPDATE")
        .bind(&record.tenant_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(pg_error)?;
    let (seq, hash): (i64, String) = match head {
        Some(row) => (
            row.try_get(0).map_err(pg_error)?,
            row.try_get(1).map_err(pg_error)?,
        ),
        None => {
            sqlx::query("INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2) ON CONFLICT DO NOTHING")
                .bind(&record.tenant_id)
                .bind(GENESIS_HASH)
                .execute(&mut *conn)
                .await
                .map_err(pg_error)?;
            let row =
                sqlx::query("SELECT seq, hash FROM audit_heads WHERE tenant_id = $1 FOR UPDATE")
                    .bind(&record.tenant_id)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(pg_error)?;
            (
                row.try_get(0).map_err(pg_error)?,
                row.try_get(1).map_err(pg_error)?,
            )
        }
    };
    let previous = (seq > 0).then_some((seq, hash));
    let event = audit::chain(record, previous)?;
    let details = serde_json::to_string(&event.record.details).map_err(Error::internal)?;
    sqlx::query(&sql::pg(sql::INSERT_AUDIT_EVENT))
        .bind(&event.record.tenant_id)
        .bind(event.seq)
        .bind(ms(event.record.at))
        .bind(&event.record.actor_type)
        .bind(&event.record.actor_id)
        .bind(&event.record.action)
        .bind(&event.record.subject)
        .bind(details)
        .bind(&event.prev_hash)
        .bind(&event.hash)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
    sqlx::query("UPDATE audit_heads SET seq = $2, hash = $3 WHERE tenant_id = $1")
        .bind(&event.record.tenant_id)
        .bind(event.seq)
        .bind(&event.hash)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
    Ok(event)
}

async fn insert_api_key(conn: &mut PgConnection, key: &ApiKey) -> Result<()> {
    sqlx::query(&sql::pg(sql::INSERT_API_KEY))
        .bind(&key.id)
        .bind(&key.tenant_id)
        .bind(&key.key_hash)
        .bind(&key.prefix)
        .bind(key.role.as_str())
        .bind(&key.user_id)
        .bind(&key.agent_id)
        .bind(&key.name)
        .bind(ms(key.created_at))
        .bind(audiences_json(&key.audiences))
        .execute(conn)
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// An executor key's audiences as stored (JSON), `NULL` for the other keys.
fn audiences_json(audiences: &[String]) -> Option<String> {
    (!audiences.is_empty()).then(|| json!(audiences).to_string())
}

/// Inserts an approval request, its reviewers and its audit event, inside the caller's
/// transaction.
async fn insert_request(
    conn: &mut PgConnection,
    new: &NewRequest,
    reviewers: &ReviewerPlan,
    actor: &Actor,
) -> Result<()> {
    // The answer first: a key that is taken stops the request before it is written.
    if let Some(answer) = &new.idempotency {
        idempotency::insert_answer(&mut *conn, answer).await?;
    }
    let r = &new.request;
    let context = serde_json::to_string(&r.context).map_err(Error::internal)?;
    let tool = r.tool.as_ref();
    let threats = tool
        .map(|t| serde_json::to_string(&t.threats))
        .transpose()
        .map_err(Error::internal)?;
    let channels = tool
        .map(|t| serde_json::to_string(&t.notification_channels))
        .transpose()
        .map_err(Error::internal)?;
    let plan = (!r.rules.escalation_plan.is_empty())
        .then(|| serde_json::to_string(&r.rules.escalation_plan))
        .transpose()
        .map_err(Error::internal)?;
    let annotations = tool
        .and_then(|t| t.annotations.as_ref())
        .map(serde_json::to_string)
        .transpose()
        .map_err(Error::internal)?;
    sqlx::query(&sql::pg(sql::INSERT_REQUEST))
        .bind(&r.id)
        .bind(&r.tenant_id)
        .bind(r.kind.as_str())
        .bind(&new.auth_req_hash)
        .bind(&r.agent_id)
        .bind(&r.user_id)
        .bind(&r.scope)
        .bind(&r.binding_message)
        .bind(context)
        .bind(&r.context_sha256)
        .bind(r.status.as_str())
        .bind(ms(r.created_at))
        .bind(ms(r.expires_at))
        .bind(tool.map(|t| &t.tool_name))
        .bind(tool.map(|t| &t.session_id))
        .bind(tool.and_then(|t| t.reason.as_ref()))
        .bind(tool.map(|t| t.risk_score))
        .bind(threats)
        .bind(tool.and_then(|t| t.policy_id.as_ref()))
        .bind(tool.and_then(|t| t.policy_name.as_ref()))
        .bind(channels)
        .bind(tool.and_then(|t| t.on_behalf_of.as_ref()))
        .bind(&r.rules.approval_group_id)
        .bind(r.rules.required_approvals as i32)
        .bind(r.rules.allow_self_approval)
        .bind(r.rules.default_on_timeout.as_str())
        .bind(r.rules.escalation_level as i32)
        .bind(plan)
        .bind(r.rules.next_escalation_at().map(ms))
        .bind(annotations)
        .bind(tool.and_then(|t| t.mcp.as_ref()).map(|m| &m.server))
        .bind(
            tool.and_then(|t| t.mcp.as_ref())
                .and_then(|m| m.client.as_ref()),
        )
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            renamed_conflict(
                pg_error(e),
                "an identical tool call is already pending".into(),
            )
        })?;
    for (user_id, since) in &reviewers.reviewers {
        sqlx::query(&sql::pg(sql::INSERT_REVIEWER))
            .bind(&r.id)
            .bind(user_id)
            .bind(ms(*since))
            .execute(&mut *conn)
            .await
            .map_err(pg_error)?;
    }
    append_audit(&mut *conn, audit_records::request_created(r, actor)).await?;
    notify::enqueue_notification(&mut *conn, &r.id, "requested", None, r.created_at).await?;
    Ok(())
}

fn settings_changed(action: &str) -> bool {
    action == "guard.settings_updated"
}

async fn group_in(conn: &mut PgConnection, tenant_id: &str, id: &str) -> Result<Option<Group>> {
    let head = sqlx::query(&sql::pg(sql::GROUP))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(pg_error)?;
    let Some(row) = head else { return Ok(None) };
    let members = sqlx::query(&sql::pg(sql::GROUP_MEMBERS))
        .bind(tenant_id)
        .bind(id)
        .fetch_all(&mut *conn)
        .await
        .map_err(pg_error)?
        .iter()
        .map(|r| {
            let role: String = r.try_get(2).map_err(pg_error)?;
            Ok(Member {
                user_id: r.try_get(0).map_err(pg_error)?,
                email: r.try_get(1).map_err(pg_error)?,
                role: MemberRole::parse(&role).unwrap_or(MemberRole::Backup),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Group {
        id: row.try_get(0).map_err(pg_error)?,
        tenant_id: row.try_get(1).map_err(pg_error)?,
        name: row.try_get(2).map_err(pg_error)?,
        escalation_minutes: row
            .try_get::<Option<i32>, _>(3)
            .map_err(pg_error)?
            .map(|m| m as u32),
        members,
        created_at: countersign_core::clock::from_millis(row.try_get(4).map_err(pg_error)?),
        updated_at: countersign_core::clock::from_millis(row.try_get(5).map_err(pg_error)?),
    }))
}

/// Disables a user or an agent, recording it only when it was active.
async fn mark_disabled(
    conn: &mut PgConnection,
    table: &str,
    tenant_id: &str,
    id: &str,
    actor: &Actor,
    at: DateTime<Utc>,
) -> Result<()> {
    let changed = sqlx::query(&format!(
        "UPDATE {table} SET disabled = TRUE WHERE tenant_id = $1 AND id = $2 AND NOT disabled"
    ))
    .bind(tenant_id)
    .bind(id)
    .execute(&mut *conn)
    .await
    .map_err(pg_error)?
    .rows_affected();
    if changed == 1 {
        append_audit(
            conn,
            audit_records::disabled(table, tenant_id, id, actor, at),
        )
        .await?;
    }
    Ok(())
}

fn not_found(what: &str) -> Error {
    Error::NotFound(format!("no such {what}"))
}

fn renamed_conflict(e: Error, message: String) -> Error {
    match e {
        Error::AlreadyExists(_) => Error::AlreadyExists(message),
        other => other,
    }
}

impl PgStore {
    pub async fn open(options: PostgresOptions) -> Result<PgStore> {
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect(&options.url)
            .await
            .map_err(|e| Error::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        migrate(&pool).await?;
        let (changes, _) = broadcast::channel(4096);
        let listener = tokio::spawn(listen(pool.clone(), changes.clone()));
        Ok(PgStore {
            pool,
            changes,
            listener,
        })
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.pool.begin().await.map_err(pg_error)
    }

    async fn request_by_id(
        conn: &mut PgConnection,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<ApprovalRequest>> {
        sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(pg_error)?
        .map(|r| rows::request(&r))
        .transpose()
    }
}
