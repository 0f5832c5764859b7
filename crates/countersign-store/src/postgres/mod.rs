//! The PostgreSQL backend, for several replicas on one database.
mod accounts;
mod idempotency;
mod mcp;
mod notify;
mod oidc;
mod rows;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::approval::{
    ApprovalRequest, Decision, DecisionRecord, NewRequest, RequestRef, TIMEOUT_DECIDER,
    quorum_outcome,
};
use countersign_core::audit::{self, Actor, AuditRecord, ChainedEvent, GENESIS_HASH};
use countersign_core::directory::{Agent, ApiKey, MintedKey, Tenant, User};
use countersign_core::grant::EndedGrant;
use countersign_core::oidc::{
    NewOidcRequest, OidcClient, OidcRequestState, OutboxItem, OutboxOutcome, PollRecord,
};
use countersign_core::policy::Policy;
use countersign_core::routing::{Group, Member, ReviewerPlan};
use countersign_core::{Error, Principal, Result};
use countersign_proto::ApprovalStatus;
use countersign_proto::admin::KeyRole;
use countersign_proto::guard::{GuardSettings, MemberRole, RoutingRules};
use rows::{
    AGENT_COLUMNS, API_KEY_COLUMNS, AUDIT_COLUMNS, DECISION_COLUMNS, POLICY_COLUMNS,
    REQUEST_COLUMNS, USER_COLUMNS, ms, pg_error,
};
use serde_json::json;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Row};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::audit_records;
use crate::listing::Arg;
use crate::records::already_voted;
use crate::{Backend, Change, Expired, Page, RequestFilter, SameCall, SigningKeyRecord};

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
/// Serialises creation of the first signing key.
const SIGNING_KEY_LOCK: i64 = 0x0063_6f75_6e74_6b65;

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
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
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
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, seq, at, actor_type, actor_id, action, subject, details, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
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
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, key_hash, prefix, role, user_id, agent_id, name, created_at, revoked_at, audiences) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10)",
    )
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
    sqlx::query(
        "INSERT INTO approval_requests (id, tenant_id, kind, auth_req_hash, agent_id, user_id, scope, \
         binding_message, context, context_sha256, status, created_at, expires_at, tool_name, session_id, \
         reason, risk_score, threats, policy_id, policy_name, notification_channels, on_behalf_of, \
         approval_group_id, required_approvals, allow_self_approval, default_on_timeout, escalation_level, \
         escalation_plan, next_escalation_at, annotations, mcp_server, mcp_client) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, \
         $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32)",
    )
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
    .bind(tool.and_then(|t| t.mcp.as_ref()).and_then(|m| m.client.as_ref()))
    .execute(&mut *conn)
    .await
    .map_err(|e| renamed_conflict(pg_error(e), "an identical tool call is already pending".into()))?;
    for (user_id, since) in &reviewers.reviewers {
        sqlx::query(
            "INSERT INTO approval_reviewers (approval_id, user_id, since) VALUES ($1, $2, $3)",
        )
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

async fn insert_signing_key(conn: &mut PgConnection, key: &SigningKeyRecord) -> Result<()> {
    sqlx::query("INSERT INTO signing_keys (kid, alg, private_der, created_at, active) VALUES ($1, $2, $3, $4, $5)")
        .bind(&key.kid)
        .bind(&key.alg)
        .bind(&key.private_der)
        .bind(ms(key.created_at))
        .bind(key.active)
        .execute(conn)
        .await
        .map_err(pg_error)?;
    Ok(())
}

fn settings_changed(action: &str) -> bool {
    action == "guard.settings_updated"
}

async fn group_in(conn: &mut PgConnection, tenant_id: &str, id: &str) -> Result<Option<Group>> {
    let head = sqlx::query("SELECT id, tenant_id, name, escalation_minutes, created_at, updated_at FROM approval_groups WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(pg_error)?;
    let Some(row) = head else { return Ok(None) };
    let members = sqlx::query(
        "SELECT m.user_id, u.email, m.role FROM approval_group_members m JOIN users u ON u.id = m.user_id \
         WHERE m.tenant_id = $1 AND m.group_id = $2 ORDER BY m.role DESC, u.email",
    )
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

#[async_trait]
impl Backend for PgStore {
    fn dialect(&self) -> &'static str {
        "postgres"
    }

    fn changes(&self) -> Option<broadcast::Receiver<Change>> {
        Some(self.changes.subscribe())
    }

    async fn has_tenants(&self) -> Result<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants)")
            .fetch_one(&self.pool)
            .await
            .map_err(pg_error)
    }

    async fn create_tenant(
        &self,
        tenant: Tenant,
        admin_key: MintedKey,
        actor: Actor,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&tenant.id)
            .bind(&tenant.name)
            .bind(ms(tenant.created_at))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                renamed_conflict(
                    pg_error(e),
                    format!("tenant {:?} already exists", tenant.id),
                )
            })?;
        append_audit(&mut tx, audit_records::tenant_created(&tenant, &actor)).await?;
        insert_api_key(&mut tx, &admin_key.record).await?;
        append_audit(
            &mut tx,
            audit_records::api_key_created(&admin_key.record, &actor),
        )
        .await?;
        tx.commit().await.map_err(pg_error)
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>> {
        sqlx::query("SELECT id, name, created_at FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?
            .map(|r| rows::tenant(&r))
            .transpose()
    }

    async fn create_user(&self, user: User, actor: Actor) -> Result<User> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO users (id, tenant_id, email, name, disabled, created_at, is_admin) VALUES ($1, $2, $3, $4, FALSE, $5, $6)")
            .bind(&user.id)
            .bind(&user.tenant_id)
            .bind(&user.email)
            .bind(&user.name)
            .bind(ms(user.created_at))
            .bind(user.is_admin)
            .execute(&mut *tx)
            .await
            .map_err(|e| renamed_conflict(pg_error(e), format!("a user with email {:?} already exists", user.email)))?;
        append_audit(&mut tx, audit_records::user_created(&user, &actor)).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(user)
    }

    async fn list_users(&self, tenant_id: &str) -> Result<Vec<User>> {
        sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 ORDER BY id"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?
        .iter()
        .map(rows::user)
        .collect()
    }

    async fn get_user(&self, tenant_id: &str, id: &str) -> Result<Option<User>> {
        sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?
        .map(|r| rows::user(&r))
        .transpose()
    }

    async fn disable_user(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<User> {
        let mut tx = self.begin().await?;
        mark_disabled(&mut tx, "users", tenant_id, id, &actor, at).await?;
        let user = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?
        .map(|r| rows::user(&r))
        .transpose()?
        .ok_or_else(|| not_found("user"))?;
        tx.commit().await.map_err(pg_error)?;
        Ok(user)
    }

    async fn create_agent(&self, agent: Agent, actor: Actor) -> Result<Agent> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO agents (id, tenant_id, name, trust_level, disabled, created_at) VALUES ($1, $2, $3, $4, FALSE, $5)")
            .bind(&agent.id)
            .bind(&agent.tenant_id)
            .bind(&agent.name)
            .bind(agent.trust_level.as_str())
            .bind(ms(agent.created_at))
            .execute(&mut *tx)
            .await
            .map_err(|e| renamed_conflict(pg_error(e), format!("an agent named {:?} already exists", agent.name)))?;
        append_audit(&mut tx, audit_records::agent_created(&agent, &actor)).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(agent)
    }

    async fn list_agents(&self, tenant_id: &str) -> Result<Vec<Agent>> {
        sqlx::query(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 ORDER BY id"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?
        .iter()
        .map(rows::agent)
        .collect()
    }

    async fn get_agent(&self, tenant_id: &str, id: &str) -> Result<Option<Agent>> {
        sqlx::query(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?
        .map(|r| rows::agent(&r))
        .transpose()
    }

    async fn disable_agent(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<Agent> {
        let mut tx = self.begin().await?;
        mark_disabled(&mut tx, "agents", tenant_id, id, &actor, at).await?;
        let agent = sqlx::query(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?
        .map(|r| rows::agent(&r))
        .transpose()?
        .ok_or_else(|| not_found("agent"))?;
        tx.commit().await.map_err(pg_error)?;
        Ok(agent)
    }

    async fn create_api_key(&self, key: ApiKey, actor: Actor) -> Result<ApiKey> {
        let mut tx = self.begin().await?;
        let owner = match key.role {
            KeyRole::Reviewer => {
                Some(("users", key.user_id.as_deref().unwrap_or_default(), "user"))
            }
            KeyRole::Agent => Some((
                "agents",
                key.agent_id.as_deref().unwrap_or_default(),
                "agent",
            )),
            KeyRole::Admin | KeyRole::Executor => None,
        };
        if let Some((table, id, what)) = owner {
            let disabled: Option<bool> = sqlx::query_scalar(&format!(
                "SELECT disabled FROM {table} WHERE tenant_id = $1 AND id = $2"
            ))
            .bind(&key.tenant_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(pg_error)?;
            if disabled != Some(false) {
                return Err(Error::NotFound(format!(
                    "no active {what} {id:?} in this tenant"
                )));
            }
        }
        insert_api_key(&mut tx, &key).await?;
        append_audit(&mut tx, audit_records::api_key_created(&key, &actor)).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(key)
    }

    async fn list_api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>> {
        sqlx::query(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY id"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?
        .iter()
        .map(rows::api_key)
        .collect()
    }

    async fn revoke_api_key(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<ApiKey> {
        let mut tx = self.begin().await?;
        let changed =
            sqlx::query("UPDATE api_keys SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL")
                .bind(tenant_id)
                .bind(id)
                .bind(ms(at))
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?
                .rows_affected();
        if changed == 1 {
            append_audit(
                &mut tx,
                audit_records::api_key_revoked(tenant_id, id, &actor, at),
            )
            .await?;
        }
        let key = sqlx::query(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?
        .map(|r| rows::api_key(&r))
        .transpose()?
        .ok_or_else(|| not_found("API key"))?;
        tx.commit().await.map_err(pg_error)?;
        Ok(key)
    }

    async fn authenticate(&self, key_hash: &str) -> Result<Option<Principal>> {
        sqlx::query(
            "SELECT k.id, k.tenant_id, k.role, k.user_id, k.agent_id, k.audiences FROM api_keys k \
             LEFT JOIN users u ON u.id = k.user_id LEFT JOIN agents a ON a.id = k.agent_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL \
             AND NOT COALESCE(u.disabled, FALSE) AND NOT COALESCE(a.disabled, FALSE)",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?
        .map(|r| rows::principal(&r))
        .transpose()
    }

    async fn find_user_by_email(&self, tenant_id: &str, email: &str) -> Result<Option<User>> {
        sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND email = $2"
        ))
        .bind(tenant_id)
        .bind(email)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?
        .map(|r| rows::user(&r))
        .transpose()
    }

    async fn create_request(
        &self,
        new: NewRequest,
        reviewers: ReviewerPlan,
        actor: Actor,
    ) -> Result<ApprovalRequest> {
        let mut tx = self.begin().await?;
        insert_request(&mut tx, &new, &reviewers, &actor).await?;
        notify(&mut tx, &format!("r:{}", new.request.id)).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(new.request)
    }

    async fn idempotent_answer(
        &self,
        tenant_id: &str,
        owner: &str,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<countersign_core::idempotency::StoredAnswer>> {
        PgStore::idempotent_answer(self, tenant_id, owner, key_hash, now).await
    }

    async fn remember_answer(
        &self,
        answer: countersign_core::idempotency::StoredAnswer,
    ) -> Result<()> {
        PgStore::remember_answer(self, answer).await
    }

    async fn forget_expired_answers(&self, now: DateTime<Utc>) -> Result<u64> {
        PgStore::forget_expired_answers(self, now).await
    }

    async fn find_request(
        &self,
        tenant_id: &str,
        by: &RequestRef,
    ) -> Result<Option<ApprovalRequest>> {
        let (column, value) = match by {
            RequestRef::AuthReqHash(h) => ("auth_req_hash", h),
            RequestRef::PublicId(id) => ("id", id),
        };
        sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE {column} = $1 AND tenant_id = $2"
        ))
        .bind(value)
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?
        .map(|r| rows::request(&r))
        .transpose()
    }

    async fn find_pending_tool_call(
        &self,
        tenant_id: &str,
        call: &SameCall<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<ApprovalRequest>> {
        sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE tenant_id = $1 AND kind = 'tool' AND status = 'pending' \
             AND agent_id = $2 AND session_id = $3 AND tool_name = $4 AND context_sha256 = $5 AND expires_at > $6 \
             AND COALESCE(mcp_server, '') = $7"
        ))
        .bind(tenant_id)
        .bind(call.agent_id)
        .bind(call.session_id)
        .bind(call.tool_name)
        .bind(call.arguments_sha256)
        .bind(ms(now))
        .bind(call.mcp_server.unwrap_or_default())
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?
        .map(|r| rows::request(&r))
        .transpose()
    }

    async fn reviewer_since(
        &self,
        approval_id: &str,
        user_id: &str,
    ) -> Result<Option<DateTime<Utc>>> {
        let since: Option<i64> = sqlx::query_scalar(
            "SELECT since FROM approval_reviewers WHERE approval_id = $1 AND user_id = $2",
        )
        .bind(approval_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?;
        Ok(since.map(countersign_core::clock::from_millis))
    }

    async fn list_decisions(&self, approval_id: &str) -> Result<Vec<DecisionRecord>> {
        sqlx::query(&format!(
            "SELECT {DECISION_COLUMNS} FROM approval_decisions WHERE approval_id = $1 ORDER BY decided_at, reviewer_id"
        ))
        .bind(approval_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?
        .iter()
        .map(rows::decision)
        .collect()
    }

    async fn cancel_request(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<ApprovalRequest> {
        let mut tx = self.begin().await?;
        let updated = sqlx::query(&format!(
            "UPDATE approval_requests SET status = 'cancelled', decided_at = $3, decided_by = $4 \
             WHERE tenant_id = $1 AND id = $2 AND status = 'pending' AND expires_at > $3 RETURNING {REQUEST_COLUMNS}"
        ))
        .bind(tenant_id)
        .bind(id)
        .bind(ms(at))
        .bind(&actor.id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        let Some(row) = updated else {
            let current = PgStore::request_by_id(&mut tx, tenant_id, id)
                .await?
                .ok_or_else(|| not_found("approval request"))?;
            return Err(Error::AlreadyDecided {
                status: current.status_at(at),
            });
        };
        let request = rows::request(&row)?;
        append_audit(
            &mut tx,
            audit_records::request_cancelled(tenant_id, id, &actor, at),
        )
        .await?;
        oidc::enqueue_outbox(&mut tx, id, "cancelled", at).await?;
        notify(&mut tx, &format!("r:{id}")).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(request)
    }

    async fn escalate_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<ApprovalRequest>> {
        let mut tx = self.begin().await?;
        let due = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE status = 'pending' AND next_escalation_at <= $1 \
             AND expires_at > $1 ORDER BY next_escalation_at LIMIT $2 FOR UPDATE SKIP LOCKED"
        ))
        .bind(ms(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_error)?
        .iter()
        .map(rows::request)
        .collect::<Result<Vec<_>>>()?;
        let mut escalated = Vec::with_capacity(due.len());
        for mut request in due {
            let from = request.rules.escalation_level;
            let to = request.rules.level_at(now);
            request.rules.escalation_level = to;
            sqlx::query("UPDATE approval_requests SET escalation_level = $2, next_escalation_at = $3 WHERE id = $1")
                .bind(&request.id)
                .bind(to as i32)
                .bind(request.rules.next_escalation_at().map(ms))
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?;
            for (level, step) in request
                .rules
                .escalation_plan
                .iter()
                .enumerate()
                .take(to as usize)
                .skip(from as usize)
            {
                append_audit(
                    &mut tx,
                    audit_records::escalation(&request, level as u32 + 1, step, now),
                )
                .await?;
            }
            let levels = json!({"from_level": from, "to_level": to});
            notify::enqueue_notification(&mut tx, &request.id, "escalated", Some(&levels), now)
                .await?;
            notify(&mut tx, &format!("r:{}", request.id)).await?;
            escalated.push(request);
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(escalated)
    }

    async fn list_requests(
        &self,
        tenant_id: &str,
        filter: &RequestFilter,
    ) -> Result<Page<ApprovalRequest>> {
        let limit = filter.limit.clamp(1, 500);
        let (sql, args) =
            crate::listing::requests(REQUEST_COLUMNS, tenant_id, filter, |n| format!("${n}"));
        let mut query = sqlx::query(&sql);
        for a in args {
            query = match a {
                Arg::Text(t) => query.bind(t),
                Arg::Int(i) => query.bind(i),
            };
        }
        let mut items = query
            .fetch_all(&self.pool)
            .await
            .map_err(pg_error)?
            .iter()
            .map(rows::request)
            .collect::<Result<Vec<_>>>()?;
        let has_more = items.len() > limit as usize;
        items.truncate(limit as usize);
        Ok(Page { items, has_more })
    }

    async fn decide(
        &self,
        tenant_id: &str,
        id: &str,
        decision: Decision,
    ) -> Result<ApprovalRequest> {
        let mut tx = self.begin().await?;
        // The row lock makes concurrent decisions on this request (from any replica) take
        // turns, so the quorum count and the final transition are exact.
        let current = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?
        .map(|r| rows::request(&r))
        .transpose()?
        .ok_or_else(|| not_found("approval request"))?;
        if current.status != ApprovalStatus::Pending || current.expires_at <= decision.at {
            // Release the row lock now, not when the pool gets round to it: the expiry
            // sweep skips locked rows.
            tx.rollback().await.map_err(pg_error)?;
            return Err(Error::AlreadyDecided {
                status: current.status_at(decision.at),
            });
        }
        sqlx::query(
            "INSERT INTO approval_decisions (approval_id, tenant_id, reviewer_id, reviewer, verdict, comment, channel, decided_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(&decision.actor.id)
        .bind(&decision.reviewer)
        .bind(decision.verdict.as_str())
        .bind(&decision.comment)
        .bind(&decision.channel)
        .bind(ms(decision.at))
        .execute(&mut *tx)
        .await
        .map_err(|e| match pg_error(e) {
            Error::AlreadyExists(_) => already_voted(),
            other => other,
        })?;
        let approvals: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM approval_decisions WHERE approval_id = $1 AND verdict = 'approve'",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .map_err(pg_error)?;
        let approvals = approvals as u32;
        let outcome = quorum_outcome(&current, decision.verdict, approvals);
        if let Some(status) = outcome {
            sqlx::query(
                "UPDATE approval_requests SET status = $3, decided_at = $4, decided_by = $5, comment = $6 \
                 WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
            )
            .bind(tenant_id)
            .bind(id)
            .bind(status.as_str())
            .bind(ms(decision.at))
            .bind(&decision.actor.id)
            .bind(&decision.comment)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
            // One callback per subscription of the request (CIBA ping/push).
            oidc::enqueue_outbox(&mut tx, id, status.as_str(), decision.at).await?;
        }
        append_audit(
            &mut tx,
            audit_records::decision(
                tenant_id,
                id,
                &decision,
                outcome,
                approvals,
                current.rules.required_approvals,
            ),
        )
        .await?;
        notify(&mut tx, &format!("r:{id}")).await?;
        let request = PgStore::request_by_id(&mut tx, tenant_id, id)
            .await?
            .ok_or_else(|| not_found("approval request"))?;
        tx.commit().await.map_err(pg_error)?;
        Ok(request)
    }

    async fn mark_token_issued(
        &self,
        tenant_id: &str,
        id: &str,
        jti: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let changed = sqlx::query(
            "UPDATE approval_requests SET token_issued_at = $3, token_jti = $4 \
             WHERE tenant_id = $1 AND id = $2 AND status = 'approved' AND token_issued_at IS NULL",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(ms(at))
        .bind(jti)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?
        .rows_affected();
        if changed == 1 {
            append_audit(
                &mut tx,
                audit_records::token_issued(tenant_id, id, jti, &actor, at),
            )
            .await?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(changed == 1)
    }

    async fn end_grant(&self, ended: EndedGrant, actor: Actor) -> Result<bool> {
        let mut tx = self.begin().await?;
        // Records of expired grants are of no use: an expired grant is inactive anyway.
        sqlx::query("DELETE FROM ended_grants WHERE expires_at < $1")
            .bind(ms(ended.at))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        let inserted = sqlx::query(
            "INSERT INTO ended_grants (jti, tenant_id, approval_id, audience, outcome, ended_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (jti) DO NOTHING",
        )
        .bind(&ended.jti)
        .bind(&ended.tenant_id)
        .bind(&ended.approval_id)
        .bind(&ended.audience)
        .bind(ended.end.as_str())
        .bind(ms(ended.at))
        .bind(ms(ended.expires_at))
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?
        .rows_affected();
        if inserted == 1 {
            append_audit(&mut tx, audit_records::grant_ended(&ended, &actor)).await?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(inserted == 1)
    }

    async fn grant_ended(&self, jti: &str) -> Result<bool> {
        let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM ended_grants WHERE jti = $1")
            .bind(jti)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?;
        Ok(found.is_some())
    }

    async fn expire_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Expired>> {
        let mut tx = self.begin().await?;
        // Rows another replica is timing out right now are skipped, not waited for; if that
        // replica dies, its transaction rolls back and the rows are claimable again.
        let due = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE status = 'pending' AND expires_at <= $1 \
             ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED"
        ))
        .bind(ms(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_error)?
        .iter()
        .map(rows::request)
        .collect::<Result<Vec<_>>>()?;
        let mut expired = Vec::with_capacity(due.len());
        for mut request in due {
            let status = request.timeout_status();
            let decided_by = (status == ApprovalStatus::Approved).then_some(TIMEOUT_DECIDER);
            sqlx::query("UPDATE approval_requests SET status = $2, decided_at = $3, decided_by = $4 WHERE id = $1 AND status = 'pending'")
                .bind(&request.id)
                .bind(status.as_str())
                .bind(ms(request.expires_at))
                .bind(decided_by)
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?;
            request.status = status;
            request.decided_at = Some(request.expires_at);
            request.decided_by = decided_by.map(str::to_string);
            append_audit(&mut tx, audit_records::timeout(&request, now)).await?;
            oidc::enqueue_outbox(&mut tx, &request.id, request.status.as_str(), now).await?;
            notify(&mut tx, &format!("r:{}", request.id)).await?;
            expired.push(Expired {
                tenant_id: request.tenant_id.clone(),
                request,
            });
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(expired)
    }

    async fn agent_pending_count(
        &self,
        tenant_id: &str,
        agent_id: &str,
        now: DateTime<Utc>,
        up_to: u64,
    ) -> Result<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM approval_requests WHERE tenant_id = $1 \
             AND status = 'pending' AND agent_id = $2 AND expires_at > $3 LIMIT $4) AS pending",
        )
        .bind(tenant_id)
        .bind(agent_id)
        .bind(ms(now))
        .bind(i64::try_from(up_to).unwrap_or(i64::MAX))
        .fetch_one(&self.pool)
        .await
        .map_err(pg_error)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn pending_count(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM approval_requests WHERE status = 'pending'")
            .fetch_one(&self.pool)
            .await
            .map_err(pg_error)
    }

    async fn list_policies(&self, tenant_id: &str) -> Result<Vec<Policy>> {
        sqlx::query(&format!(
            "SELECT {POLICY_COLUMNS} FROM policies WHERE tenant_id = $1 ORDER BY id"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?
        .iter()
        .map(rows::policy)
        .collect()
    }

    async fn get_policy(&self, tenant_id: &str, id: &str) -> Result<Option<Policy>> {
        sqlx::query(&format!(
            "SELECT {POLICY_COLUMNS} FROM policies WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?
        .map(|r| rows::policy(&r))
        .transpose()
    }

    async fn put_policy(&self, policy: Policy, created: bool, actor: Actor) -> Result<Policy> {
        let config = serde_json::to_string(&policy.approval).map_err(Error::internal)?;
        let sql = if created {
            "INSERT INTO policies (id, tenant_id, name, description, tool_pattern, action, priority, is_active, \
             condition, approval_config, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        } else {
            "UPDATE policies SET name = $3, description = $4, tool_pattern = $5, action = $6, priority = $7, \
             is_active = $8, condition = $9, approval_config = $10, updated_at = $12 \
             WHERE id = $1 AND tenant_id = $2 AND $11::bigint IS NOT NULL"
        };
        let mut tx = self.begin().await?;
        let changed = sqlx::query(sql)
            .bind(&policy.id)
            .bind(&policy.tenant_id)
            .bind(&policy.name)
            .bind(&policy.description)
            .bind(&policy.tool_pattern)
            .bind(policy.action.as_str())
            .bind(policy.priority)
            .bind(policy.is_active)
            .bind(&policy.condition)
            .bind(config)
            .bind(ms(policy.created_at))
            .bind(ms(policy.updated_at))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?
            .rows_affected();
        if changed == 0 {
            return Err(not_found("policy"));
        }
        let action = if created {
            "policy.created"
        } else {
            "policy.updated"
        };
        append_audit(
            &mut tx,
            audit_records::config(
                &policy.tenant_id,
                policy.updated_at,
                &actor,
                action,
                &policy.id,
                json!({"name": policy.name, "tool_pattern": policy.tool_pattern, "action": policy.action.as_str(),
                       "priority": policy.priority, "is_active": policy.is_active, "condition": policy.condition}),
            ),
        )
        .await?;
        notify(&mut tx, &format!("g:{}", policy.tenant_id)).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(policy)
    }

    async fn delete_policy(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let changed = sqlx::query("DELETE FROM policies WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?
            .rows_affected();
        if changed == 0 {
            return Err(not_found("policy"));
        }
        append_audit(
            &mut tx,
            audit_records::config(tenant_id, at, &actor, "policy.deleted", id, json!({})),
        )
        .await?;
        notify(&mut tx, &format!("g:{tenant_id}")).await?;
        tx.commit().await.map_err(pg_error)
    }

    async fn list_groups(&self, tenant_id: &str) -> Result<Vec<Group>> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM approval_groups WHERE tenant_id = $1 ORDER BY id")
                .bind(tenant_id)
                .fetch_all(&self.pool)
                .await
                .map_err(pg_error)?;
        let mut conn = self.pool.acquire().await.map_err(pg_error)?;
        let mut groups = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(g) = group_in(&mut conn, tenant_id, &id).await? {
                groups.push(g);
            }
        }
        Ok(groups)
    }

    async fn get_group(&self, tenant_id: &str, id: &str) -> Result<Option<Group>> {
        let mut conn = self.pool.acquire().await.map_err(pg_error)?;
        group_in(&mut conn, tenant_id, id).await
    }

    async fn put_group(&self, group: Group, created: bool, actor: Actor) -> Result<Group> {
        let mut tx = self.begin().await?;
        let changed = if created {
            sqlx::query(
                "INSERT INTO approval_groups (tenant_id, id, name, escalation_minutes, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&group.tenant_id)
            .bind(&group.id)
            .bind(&group.name)
            .bind(group.escalation_minutes.map(|m| m as i32))
            .bind(ms(group.created_at))
            .bind(ms(group.updated_at))
            .execute(&mut *tx)
            .await
            .map_err(|e| renamed_conflict(pg_error(e), format!("an approval group {:?} already exists", group.id)))?
            .rows_affected()
        } else {
            sqlx::query("UPDATE approval_groups SET name = $3, escalation_minutes = $4, updated_at = $5 WHERE tenant_id = $1 AND id = $2")
                .bind(&group.tenant_id)
                .bind(&group.id)
                .bind(&group.name)
                .bind(group.escalation_minutes.map(|m| m as i32))
                .bind(ms(group.updated_at))
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?
                .rows_affected()
        };
        if changed == 0 {
            return Err(not_found("approval group"));
        }
        sqlx::query("DELETE FROM approval_group_members WHERE tenant_id = $1 AND group_id = $2")
            .bind(&group.tenant_id)
            .bind(&group.id)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        for m in &group.members {
            sqlx::query(
                "INSERT INTO approval_group_members (tenant_id, group_id, user_id, role) VALUES ($1, $2, $3, $4)",
            )
            .bind(&group.tenant_id)
            .bind(&group.id)
            .bind(&m.user_id)
            .bind(m.role.as_str())
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        }
        let action = if created {
            "approval_group.created"
        } else {
            "approval_group.updated"
        };
        let members: Vec<_> = group
            .members
            .iter()
            .map(|m| json!({"user_id": m.user_id, "role": m.role.as_str()}))
            .collect();
        append_audit(
            &mut tx,
            audit_records::config(
                &group.tenant_id,
                group.updated_at,
                &actor,
                action,
                &group.id,
                json!({"name": group.name, "escalation_minutes": group.escalation_minutes, "members": members}),
            ),
        )
        .await?;
        notify(&mut tx, &format!("g:{}", group.tenant_id)).await?;
        let stored = group_in(&mut tx, &group.tenant_id, &group.id)
            .await?
            .ok_or_else(|| not_found("approval group"))?;
        tx.commit().await.map_err(pg_error)?;
        Ok(stored)
    }

    async fn delete_group(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM approval_group_members WHERE tenant_id = $1 AND group_id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        let changed = sqlx::query("DELETE FROM approval_groups WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?
            .rows_affected();
        if changed == 0 {
            return Err(not_found("approval group"));
        }
        append_audit(
            &mut tx,
            audit_records::config(
                tenant_id,
                at,
                &actor,
                "approval_group.deleted",
                id,
                json!({}),
            ),
        )
        .await?;
        notify(&mut tx, &format!("g:{tenant_id}")).await?;
        tx.commit().await.map_err(pg_error)
    }

    async fn guard_settings(&self, tenant_id: &str) -> Result<(GuardSettings, RoutingRules)> {
        let stored: Option<(String, String)> =
            sqlx::query_as("SELECT guard, routing FROM tenant_settings WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(pg_error)?;
        crate::records::parse_settings(stored)
    }

    async fn put_guard_settings(
        &self,
        tenant_id: &str,
        settings: Option<GuardSettings>,
        routing: Option<RoutingRules>,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<(GuardSettings, RoutingRules)> {
        let mut tx = self.begin().await?;
        let stored: Option<(String, String)> = sqlx::query_as(
            "SELECT guard, routing FROM tenant_settings WHERE tenant_id = $1 FOR UPDATE",
        )
        .bind(tenant_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        let (old_settings, old_routing) = crate::records::parse_settings(stored)?;
        let action = if settings.is_some() {
            "guard.settings_updated"
        } else {
            "guard.routing_updated"
        };
        let settings = settings.unwrap_or(old_settings);
        let routing = routing.unwrap_or(old_routing);
        let guard_json = serde_json::to_string(&settings).map_err(Error::internal)?;
        let routing_json = serde_json::to_string(&routing).map_err(Error::internal)?;
        sqlx::query(
            "INSERT INTO tenant_settings (tenant_id, guard, routing, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id) DO UPDATE SET guard = excluded.guard, routing = excluded.routing, updated_at = excluded.updated_at",
        )
        .bind(tenant_id)
        .bind(&guard_json)
        .bind(&routing_json)
        .bind(ms(at))
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        let details = serde_json::from_str(if settings_changed(action) {
            &guard_json
        } else {
            &routing_json
        })
        .map_err(Error::internal)?;
        append_audit(
            &mut tx,
            audit_records::config(tenant_id, at, &actor, action, tenant_id, details),
        )
        .await?;
        notify(&mut tx, &format!("g:{tenant_id}")).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok((settings, routing))
    }

    async fn list_audit(
        &self,
        tenant_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<ChainedEvent>> {
        sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(tenant_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?
        .iter()
        .map(rows::audit_event)
        .collect()
    }

    async fn append_audit(&self, record: AuditRecord) -> Result<ChainedEvent> {
        let mut tx = self.begin().await?;
        let event = append_audit(&mut tx, record).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(event)
    }

    async fn create_oidc_client(&self, client: OidcClient, actor: Actor) -> Result<OidcClient> {
        self.oidc_create_client(client, actor).await
    }

    async fn list_oidc_clients(&self, tenant_id: &str) -> Result<Vec<OidcClient>> {
        self.oidc_list_clients(tenant_id).await
    }

    async fn get_oidc_client(
        &self,
        tenant_id: &str,
        client_id: &str,
    ) -> Result<Option<OidcClient>> {
        self.oidc_get_client(tenant_id, client_id).await
    }

    async fn find_active_oidc_client(&self, client_id: &str) -> Result<Option<OidcClient>> {
        self.oidc_find_active_client(client_id).await
    }

    async fn delete_oidc_client(
        &self,
        tenant_id: &str,
        client_id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.oidc_delete_client(tenant_id, client_id, actor, at)
            .await
    }

    async fn create_oidc_request(
        &self,
        new: NewOidcRequest,
        actor: Actor,
    ) -> Result<ApprovalRequest> {
        self.oidc_create_request(new, actor).await
    }

    async fn get_oidc_request(
        &self,
        tenant_id: &str,
        approval_id: &str,
    ) -> Result<Option<OidcRequestState>> {
        self.oidc_get_request(tenant_id, approval_id).await
    }

    async fn record_oidc_poll(&self, approval_id: &str, at: DateTime<Utc>) -> Result<PollRecord> {
        self.oidc_record_poll(approval_id, at).await
    }

    async fn use_jti(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.oidc_use_jti(client_id, jti, expires_at, now).await
    }

    async fn set_user_code(
        &self,
        tenant_id: &str,
        user_id: &str,
        code_hash: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.oidc_set_user_code(tenant_id, user_id, code_hash, actor, at)
            .await
    }

    async fn user_code_hash(&self, tenant_id: &str, user_id: &str) -> Result<Option<String>> {
        self.oidc_user_code_hash(tenant_id, user_id).await
    }

    async fn server_secret(
        &self,
        name: &str,
        candidate: Vec<u8>,
        at: DateTime<Utc>,
    ) -> Result<Vec<u8>> {
        self.oidc_server_secret(name, candidate, at).await
    }

    async fn token_jti(&self, tenant_id: &str, approval_id: &str) -> Result<Option<String>> {
        self.oidc_token_jti(tenant_id, approval_id).await
    }

    async fn claim_outbox(
        &self,
        rows: crate::OutboxRows,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxItem>> {
        self.outbox_claim(rows.changes(), now, lease_until, limit)
            .await
    }

    async fn finish_outbox(&self, id: i64, outcome: OutboxOutcome) -> Result<()> {
        self.outbox_finish(id, outcome).await
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        sqlx::query("SELECT kid, alg, private_der, created_at, active FROM signing_keys ORDER BY created_at")
            .fetch_all(&self.pool)
            .await
            .map_err(pg_error)?
            .iter()
            .map(rows::signing_key)
            .collect()
    }

    async fn ensure_signing_key(
        &self,
        candidate: SigningKeyRecord,
    ) -> Result<Vec<SigningKeyRecord>> {
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SIGNING_KEY_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        let active: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM signing_keys WHERE active)")
                .fetch_one(&mut *tx)
                .await
                .map_err(pg_error)?;
        if !active {
            insert_signing_key(&mut tx, &candidate).await?;
            notify(&mut tx, "k").await?;
        }
        tx.commit().await.map_err(pg_error)?;
        self.signing_keys().await
    }

    async fn rotate_signing_key(
        &self,
        key: SigningKeyRecord,
        actor: Actor,
        tenant_id: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SIGNING_KEY_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        sqlx::query("UPDATE signing_keys SET active = FALSE WHERE active")
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        insert_signing_key(&mut tx, &key).await?;
        append_audit(
            &mut tx,
            audit_records::signing_key_rotated(tenant_id, &key, &actor),
        )
        .await?;
        notify(&mut tx, "k").await?;
        tx.commit().await.map_err(pg_error)
    }
}
