//! Tenants, users, agents and API keys on PostgreSQL.
use super::*;
use crate::DirectoryStore;
use crate::sql;

#[async_trait]
impl DirectoryStore for PgStore {
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn has_tenants(&self) -> Result<bool> {
        sqlx::query_scalar(&sql::pg(sql::HAS_TENANTS))
            .fetch_one(&self.pool)
            .await
            .map_err(pg_error)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant.id))]
    async fn create_tenant(
        &self,
        tenant: Tenant,
        admin_key: MintedKey,
        actor: Actor,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(&sql::pg(sql::INSERT_TENANT))
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

    #[tracing::instrument(skip_all, err(level = "warn"), fields(id = %id))]
    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>> {
        sqlx::query("SELECT id, name, created_at FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?
            .map(|r| rows::tenant(&r))
            .transpose()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %user.tenant_id))]
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

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
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

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
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

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
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

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %agent.tenant_id))]
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

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
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

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
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

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
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

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %key.tenant_id))]
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

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
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

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn revoke_api_key(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<ApiKey> {
        let mut tx = self.begin().await?;
        let changed = sqlx::query(&sql::pg(sql::REVOKE_API_KEY))
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

    #[tracing::instrument(skip_all, err(level = "warn"))]
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

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
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
}
