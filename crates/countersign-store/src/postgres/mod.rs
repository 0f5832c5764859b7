//! The PostgreSQL backend, for several replicas on one database.
mod accounts;
mod rows;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::approval::{ApprovalRequest, Decision, NewRequest, RequestRef};
use countersign_core::audit::{self, Actor, AuditRecord, ChainedEvent, GENESIS_HASH};
use countersign_core::directory::{Agent, ApiKey, MintedKey, Tenant, User};
use countersign_core::{Error, Principal, Result};
use countersign_proto::ApprovalStatus;
use countersign_proto::admin::KeyRole;
use rows::{
    AGENT_COLUMNS, API_KEY_COLUMNS, AUDIT_COLUMNS, REQUEST_COLUMNS, USER_COLUMNS, ms, pg_error,
};
use serde_json::json;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Row};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::{Backend, Change, Expired, Page, RequestFilter, SigningKeyRecord};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (
        4,
        include_str!("../../migrations/postgres/0004_dashboard.sql"),
    ),
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
        "INSERT INTO api_keys (id, tenant_id, key_hash, prefix, role, user_id, agent_id, name, created_at, revoked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)",
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
    .execute(conn)
    .await
    .map_err(pg_error)?;
    Ok(())
}

fn key_created_audit(key: &ApiKey, actor: &Actor) -> AuditRecord {
    AuditRecord::new(
        &key.tenant_id,
        key.created_at,
        actor,
        "api_key.created",
        &key.id,
        json!({"role": key.role.as_str(), "user_id": key.user_id, "agent_id": key.agent_id, "prefix": key.prefix}),
    )
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
        append_audit(
            &mut tx,
            AuditRecord::new(
                &tenant.id,
                tenant.created_at,
                &actor,
                "tenant.created",
                &tenant.id,
                json!({"name": tenant.name}),
            ),
        )
        .await?;
        insert_api_key(&mut tx, &admin_key.record).await?;
        append_audit(&mut tx, key_created_audit(&admin_key.record, &actor)).await?;
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
        append_audit(
            &mut tx,
            AuditRecord::new(
                &user.tenant_id,
                user.created_at,
                &actor,
                "user.created",
                &user.id,
                json!({"email": user.email, "name": user.name, "is_admin": user.is_admin}),
            ),
        )
        .await?;
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
        let changed = sqlx::query(
            "UPDATE users SET disabled = TRUE WHERE tenant_id = $1 AND id = $2 AND NOT disabled",
        )
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?
        .rows_affected();
        if changed == 1 {
            append_audit(
                &mut tx,
                AuditRecord::new(tenant_id, at, &actor, "user.disabled", id, json!({})),
            )
            .await?;
        }
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
        append_audit(
            &mut tx,
            AuditRecord::new(
                &agent.tenant_id,
                agent.created_at,
                &actor,
                "agent.created",
                &agent.id,
                json!({"name": agent.name, "trust_level": agent.trust_level.as_str()}),
            ),
        )
        .await?;
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
        let changed = sqlx::query(
            "UPDATE agents SET disabled = TRUE WHERE tenant_id = $1 AND id = $2 AND NOT disabled",
        )
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?
        .rows_affected();
        if changed == 1 {
            append_audit(
                &mut tx,
                AuditRecord::new(tenant_id, at, &actor, "agent.disabled", id, json!({})),
            )
            .await?;
        }
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
            KeyRole::Admin => None,
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
        append_audit(&mut tx, key_created_audit(&key, &actor)).await?;
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
        let changed = sqlx::query("UPDATE api_keys SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL")
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
                AuditRecord::new(tenant_id, at, &actor, "api_key.revoked", id, json!({})),
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
            "SELECT k.id, k.tenant_id, k.role, k.user_id, k.agent_id FROM api_keys k \
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

    async fn create_request(&self, new: NewRequest, actor: Actor) -> Result<ApprovalRequest> {
        let r = &new.request;
        let context = serde_json::to_string(&r.context).map_err(Error::internal)?;
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO approval_requests (id, tenant_id, kind, auth_req_hash, agent_id, user_id, scope, \
             binding_message, context, context_sha256, status, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
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
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        append_audit(
            &mut tx,
            AuditRecord::new(
                &r.tenant_id,
                r.created_at,
                &actor,
                "approval.created",
                &r.id,
                json!({
                    "kind": r.kind.as_str(), "user_id": r.user_id, "scope": r.scope,
                    "binding_message": r.binding_message, "context_sha256": r.context_sha256,
                    "expires_at_ms": ms(r.expires_at),
                }),
            ),
        )
        .await?;
        notify(&mut tx, &format!("r:{}", r.id)).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(new.request)
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

    async fn list_requests(
        &self,
        tenant_id: &str,
        filter: &RequestFilter,
    ) -> Result<Page<ApprovalRequest>> {
        let status_clause = match filter.status {
            Some(ApprovalStatus::Pending) => "status = 'pending' AND expires_at > $2".to_string(),
            Some(ApprovalStatus::Expired) => {
                "(status = 'expired' OR (status = 'pending' AND expires_at <= $2))".to_string()
            }
            Some(s) => format!("status = '{}' AND $2::bigint IS NOT NULL", s.as_str()),
            None => "$2::bigint IS NOT NULL".to_string(),
        };
        let limit = filter.limit.clamp(1, 500);
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE tenant_id = $1 AND {status_clause} \
             AND ($3::text IS NULL OR user_id = $3) AND ($4::text IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
        );
        let mut items = sqlx::query(&sql)
            .bind(tenant_id)
            .bind(ms(filter.now))
            .bind(&filter.user_id)
            .bind(&filter.before_id)
            .bind(i64::from(limit) + 1)
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
        let status = decision.verdict.status();
        let mut tx = self.begin().await?;
        let updated = sqlx::query(&format!(
            "UPDATE approval_requests SET status = $3, decided_at = $4, decided_by = $5, comment = $6 \
             WHERE tenant_id = $1 AND id = $2 AND status = 'pending' AND expires_at > $4 RETURNING {REQUEST_COLUMNS}"
        ))
        .bind(tenant_id)
        .bind(id)
        .bind(status.as_str())
        .bind(ms(decision.at))
        .bind(&decision.actor.id)
        .bind(&decision.comment)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        let Some(row) = updated else {
            let current = PgStore::request_by_id(&mut tx, tenant_id, id)
                .await?
                .ok_or_else(|| not_found("approval request"))?;
            return Err(Error::AlreadyDecided {
                status: current.status_at(decision.at),
            });
        };
        let request = rows::request(&row)?;
        let action = match status {
            ApprovalStatus::Approved => "approval.approved",
            _ => "approval.rejected",
        };
        append_audit(
            &mut tx,
            AuditRecord::new(
                tenant_id,
                decision.at,
                &decision.actor,
                action,
                id,
                json!({"comment": decision.comment, "channel": decision.channel.as_str()}),
            ),
        )
        .await?;
        notify(&mut tx, &format!("r:{id}")).await?;
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
                AuditRecord::new(
                    tenant_id,
                    at,
                    &actor,
                    "token.issued",
                    id,
                    json!({"jti": jti}),
                ),
            )
            .await?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(changed == 1)
    }

    async fn expire_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Expired>> {
        let mut tx = self.begin().await?;
        // Rows another replica is expiring right now are skipped, not waited for; if that
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
            sqlx::query("UPDATE approval_requests SET status = 'expired', decided_at = $2 WHERE id = $1 AND status = 'pending'")
                .bind(&request.id)
                .bind(ms(request.expires_at))
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?;
            request.status = ApprovalStatus::Expired;
            request.decided_at = Some(request.expires_at);
            append_audit(
                &mut tx,
                AuditRecord::new(
                    &request.tenant_id,
                    now,
                    &Actor::system("expiry"),
                    "approval.expired",
                    &request.id,
                    json!({"expires_at_ms": ms(request.expires_at)}),
                ),
            )
            .await?;
            notify(&mut tx, &format!("r:{}", request.id)).await?;
            expired.push(Expired {
                tenant_id: request.tenant_id.clone(),
                request,
            });
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(expired)
    }

    async fn pending_count(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM approval_requests WHERE status = 'pending'")
            .fetch_one(&self.pool)
            .await
            .map_err(pg_error)
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
            AuditRecord::new(
                tenant_id,
                key.created_at,
                &actor,
                "signing_key.rotated",
                &key.kid,
                json!({"alg": key.alg}),
            ),
        )
        .await?;
        notify(&mut tx, "k").await?;
        tx.commit().await.map_err(pg_error)
    }
}
