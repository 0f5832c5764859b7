//! Tenants, users, agents and API keys, for both backends.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::audit::Actor;
use countersign_core::directory::{Agent, ApiKey, MintedKey, Tenant, User};
use countersign_core::{Error, Principal, Result};
use countersign_proto::admin::KeyRole;

use crate::db::{Db, Tx};
use crate::sql::{AGENT_COLUMNS, API_KEY_COLUMNS, TENANT_COLUMNS, USER_COLUMNS};
use crate::writes::{insert_api_key, mark_disabled, not_found, renamed_conflict};
use crate::{audit_records, rows, sql};

const INSERT_USER: &str = "INSERT INTO users (id, tenant_id, email, name, disabled, created_at, is_admin) \
     VALUES (?1, ?2, ?3, ?4, FALSE, ?5, ?6)";
const INSERT_AGENT: &str = "INSERT INTO agents (id, tenant_id, name, trust_level, disabled, created_at) \
     VALUES (?1, ?2, ?3, ?4, FALSE, ?5)";
/// Columns as [`rows::principal`] reads them.
const AUTHENTICATE: &str = "SELECT k.id, k.tenant_id, k.role, k.user_id, k.agent_id, k.audiences FROM api_keys k \
     LEFT JOIN users u ON u.id = k.user_id LEFT JOIN agents a ON a.id = k.agent_id \
     WHERE k.key_hash = ?1 AND k.revoked_at IS NULL \
     AND NOT COALESCE(u.disabled, FALSE) AND NOT COALESCE(a.disabled, FALSE)";

fn user_by_id() -> String {
    format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ?1 AND id = ?2")
}

fn agent_by_id() -> String {
    format!("SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = ?1 AND id = ?2")
}

fn api_key_by_id() -> String {
    format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = ?1 AND id = ?2")
}

/// Whether the user or agent `id` exists in the tenant and is active.
async fn owner_active(tx: &mut dyn Tx, table: &str, tenant_id: &str, id: &str) -> Result<bool> {
    let sql = format!("SELECT disabled FROM {table} WHERE tenant_id = ?1 AND id = ?2");
    let disabled: Option<bool> = tx.scalar(&sql, args![tenant_id, id]).await?;
    Ok(disabled == Some(false))
}

/// Tenants, users, agents and API keys.
#[async_trait]
pub trait DirectoryStore: Db {
    // tenants
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn has_tenants(&self) -> Result<bool> {
        let any = self
            .reader()
            .await?
            .scalar(sql::HAS_TENANTS, args![])
            .await?;
        Ok(any.unwrap_or(false))
    }

    /// Creates a tenant together with its first admin key.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant.id))]
    async fn create_tenant(
        &self,
        tenant: Tenant,
        admin_key: MintedKey,
        actor: Actor,
    ) -> Result<()> {
        write_tx!(self, |tx| {
            let values = args![&tenant.id, &tenant.name, tenant.created_at];
            tx.exec(sql::INSERT_TENANT, values).await.map_err(|e| {
                renamed_conflict(e, &format!("tenant {:?} already exists", tenant.id))
            })?;
            tx.audit(audit_records::tenant_created(&tenant, &actor))
                .await?;
            insert_api_key(tx, &admin_key.record).await?;
            tx.audit(audit_records::api_key_created(&admin_key.record, &actor))
                .await?;
            Ok(())
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(id = %id))]
    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1");
        self.reader()
            .await?
            .one(&sql, args![id], rows::tenant)
            .await
    }

    // users
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %user.tenant_id))]
    async fn create_user(&self, user: User, actor: Actor) -> Result<User> {
        write_tx!(self, |tx| {
            let values = args![
                &user.id,
                &user.tenant_id,
                &user.email,
                &user.name,
                user.created_at,
                user.is_admin,
            ];
            tx.exec(INSERT_USER, values).await.map_err(|e| {
                renamed_conflict(
                    e,
                    &format!("a user with email {:?} already exists", user.email),
                )
            })?;
            tx.audit(audit_records::user_created(&user, &actor)).await?;
            Ok(user)
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_users(&self, tenant_id: &str) -> Result<Vec<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ?1 ORDER BY id");
        self.reader()
            .await?
            .all(&sql, args![tenant_id], rows::user)
            .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn get_user(&self, tenant_id: &str, id: &str) -> Result<Option<User>> {
        self.reader()
            .await?
            .one(&user_by_id(), args![tenant_id, id], rows::user)
            .await
    }

    /// Disables a user; their keys stop working at once and they can no longer be asked.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn disable_user(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<User> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        write_tx!(self, |tx| {
            mark_disabled(tx, "users", &tenant_id, &id, &actor, at).await?;
            tx.one(&user_by_id(), args![&tenant_id, &id], rows::user)
                .await?
                .ok_or_else(|| not_found("user"))
        })
    }

    // agents
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %agent.tenant_id))]
    async fn create_agent(&self, agent: Agent, actor: Actor) -> Result<Agent> {
        write_tx!(self, |tx| {
            let values = args![
                &agent.id,
                &agent.tenant_id,
                &agent.name,
                agent.trust_level.as_str(),
                agent.created_at,
            ];
            tx.exec(INSERT_AGENT, values).await.map_err(|e| {
                renamed_conflict(
                    e,
                    &format!("an agent named {:?} already exists", agent.name),
                )
            })?;
            tx.audit(audit_records::agent_created(&agent, &actor))
                .await?;
            Ok(agent)
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_agents(&self, tenant_id: &str) -> Result<Vec<Agent>> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = ?1 ORDER BY id");
        self.reader()
            .await?
            .all(&sql, args![tenant_id], rows::agent)
            .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn get_agent(&self, tenant_id: &str, id: &str) -> Result<Option<Agent>> {
        self.reader()
            .await?
            .one(&agent_by_id(), args![tenant_id, id], rows::agent)
            .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn disable_agent(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<Agent> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        write_tx!(self, |tx| {
            mark_disabled(tx, "agents", &tenant_id, &id, &actor, at).await?;
            tx.one(&agent_by_id(), args![&tenant_id, &id], rows::agent)
                .await?
                .ok_or_else(|| not_found("agent"))
        })
    }

    // API keys
    /// Stores a minted key after checking that its owner exists in the tenant and is active.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %key.tenant_id))]
    async fn create_api_key(&self, key: ApiKey, actor: Actor) -> Result<ApiKey> {
        write_tx!(self, |tx| {
            let owner = match key.role {
                KeyRole::Reviewer => Some(("users", key.user_id.as_deref(), "user")),
                KeyRole::Agent => Some(("agents", key.agent_id.as_deref(), "agent")),
                KeyRole::Admin | KeyRole::Executor => None,
            };
            if let Some((table, id, what)) = owner {
                let id = id.unwrap_or_default();
                if !owner_active(tx, table, &key.tenant_id, id).await? {
                    return Err(Error::NotFound(format!(
                        "no active {what} {id:?} in this tenant"
                    )));
                }
            }
            insert_api_key(tx, &key).await?;
            tx.audit(audit_records::api_key_created(&key, &actor))
                .await?;
            Ok(key)
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>> {
        let sql =
            format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = ?1 ORDER BY id");
        self.reader()
            .await?
            .all(&sql, args![tenant_id], rows::api_key)
            .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn revoke_api_key(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<ApiKey> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        write_tx!(self, |tx| {
            let revoked = tx
                .exec(sql::REVOKE_API_KEY, args![&tenant_id, &id, at])
                .await?;
            if revoked == 1 {
                tx.audit(audit_records::api_key_revoked(&tenant_id, &id, &actor, at))
                    .await?;
                tx.hint("a").await?;
            }
            tx.one(&api_key_by_id(), args![&tenant_id, &id], rows::api_key)
                .await?
                .ok_or_else(|| not_found("API key"))
        })
    }

    /// The principal of an active key whose owner is active, by the key's hash.
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn authenticate(&self, key_hash: &str) -> Result<Option<Principal>> {
        self.reader()
            .await?
            .one(AUTHENTICATE, args![key_hash], rows::principal)
            .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn find_user_by_email(&self, tenant_id: &str, email: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ?1 AND email = ?2");
        self.reader()
            .await?
            .one(&sql, args![tenant_id, email], rows::user)
            .await
    }
}

impl DirectoryStore for crate::sqlite::SqliteStore {}
impl DirectoryStore for crate::postgres::PgStore {}
