//! Tenants, users, agents and API keys on SQLite.
use super::*;
use crate::DirectoryStore;
use crate::sql;

#[async_trait]
impl DirectoryStore for SqliteStore {
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn has_tenants(&self) -> Result<bool> {
        self.read(|c| c.query_row(sql::HAS_TENANTS, [], |r| r.get(0)))
    }

    /// Creates a tenant together with its first admin key.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant.id))]
    async fn create_tenant(
        &self,
        tenant: Tenant,
        admin_key: MintedKey,
        actor: Actor,
    ) -> Result<()> {
        self.write(move |c| {
            c.prepare_cached(sql::INSERT_TENANT)
                .and_then(|mut s| s.execute(params![tenant.id, tenant.name, ms(tenant.created_at)]))
                .map_err(|e| match db_error(e) {
                    Error::AlreadyExists(_) => {
                        Error::AlreadyExists(format!("tenant {:?} already exists", tenant.id))
                    }
                    other => other,
                })?;
            append_audit(c, audit_records::tenant_created(&tenant, &actor))?;
            insert_api_key(c, &admin_key.record)?;
            append_audit(c, audit_records::api_key_created(&admin_key.record, &actor))?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(id = %id))]
    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM tenants WHERE id = ?1",
                rows::TENANT_COLUMNS
            ))?
            .query_row([id], rows::tenant)
            .optional()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %user.tenant_id))]
    async fn create_user(&self, user: User, actor: Actor) -> Result<User> {
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO users (id, tenant_id, email, name, disabled, created_at, is_admin) VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
            )
            .and_then(|mut s| s.execute(params![user.id, user.tenant_id, user.email, user.name, ms(user.created_at), user.is_admin]))
            .map_err(|e| match db_error(e) {
                Error::AlreadyExists(_) => {
                    Error::AlreadyExists(format!("a user with email {:?} already exists", user.email))
                }
                other => other,
            })?;
            append_audit(
                c,
                audit_records::user_created(&user, &actor),
            )?;
            Ok(user)
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_users(&self, tenant_id: &str) -> Result<Vec<User>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM users WHERE tenant_id = ?1 ORDER BY id",
                rows::USER_COLUMNS
            ))?
            .query_map([tenant_id], rows::user)?
            .collect()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn get_user(&self, tenant_id: &str, id: &str) -> Result<Option<User>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM users WHERE tenant_id = ?1 AND id = ?2",
                rows::USER_COLUMNS
            ))?
            .query_row([tenant_id, id], rows::user)
            .optional()
        })
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
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.write(move |c| {
            mark_disabled(c, "users", &tenant_id, &id, &actor, at)?;
            c.prepare_cached(&format!(
                "SELECT {} FROM users WHERE tenant_id = ?1 AND id = ?2",
                rows::USER_COLUMNS
            ))
            .and_then(|mut s| s.query_row([&tenant_id, &id], rows::user).optional())
            .map_err(db_error)?
            .ok_or_else(|| not_found("user"))
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %agent.tenant_id))]
    async fn create_agent(&self, agent: Agent, actor: Actor) -> Result<Agent> {
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO agents (id, tenant_id, name, trust_level, disabled, created_at) VALUES (?1, ?2, ?3, ?4, 0, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![agent.id, agent.tenant_id, agent.name, agent.trust_level.as_str(), ms(agent.created_at)])
            })
            .map_err(|e| match db_error(e) {
                Error::AlreadyExists(_) => Error::AlreadyExists(format!("an agent named {:?} already exists", agent.name)),
                other => other,
            })?;
            append_audit(
                c,
                audit_records::agent_created(&agent, &actor),
            )?;
            Ok(agent)
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_agents(&self, tenant_id: &str) -> Result<Vec<Agent>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM agents WHERE tenant_id = ?1 ORDER BY id",
                rows::AGENT_COLUMNS
            ))?
            .query_map([tenant_id], rows::agent)?
            .collect()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn get_agent(&self, tenant_id: &str, id: &str) -> Result<Option<Agent>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM agents WHERE tenant_id = ?1 AND id = ?2",
                rows::AGENT_COLUMNS
            ))?
            .query_row([tenant_id, id], rows::agent)
            .optional()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn disable_agent(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<Agent> {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.write(move |c| {
            mark_disabled(c, "agents", &tenant_id, &id, &actor, at)?;
            c.prepare_cached(&format!(
                "SELECT {} FROM agents WHERE tenant_id = ?1 AND id = ?2",
                rows::AGENT_COLUMNS
            ))
            .and_then(|mut s| s.query_row([&tenant_id, &id], rows::agent).optional())
            .map_err(db_error)?
            .ok_or_else(|| not_found("agent"))
        })
        .await
    }

    /// Stores a minted key after checking that its owner exists in the tenant and is active.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %key.tenant_id))]
    async fn create_api_key(&self, key: ApiKey, actor: Actor) -> Result<ApiKey> {
        self.write(move |c| {
            let owner_ok = |table: &str, id: &str| -> Result<bool> {
                c.prepare_cached(&format!(
                    "SELECT disabled FROM {table} WHERE tenant_id = ?1 AND id = ?2"
                ))
                .and_then(|mut s| {
                    s.query_row([&key.tenant_id, id], |r| r.get::<_, bool>(0))
                        .optional()
                })
                .map_err(db_error)
                .map(|d| d == Some(false))
            };
            match key.role {
                KeyRole::Reviewer => {
                    let user = key.user_id.as_deref().unwrap_or_default();
                    if !owner_ok("users", user)? {
                        return Err(Error::NotFound(format!(
                            "no active user {user:?} in this tenant"
                        )));
                    }
                }
                KeyRole::Agent => {
                    let agent = key.agent_id.as_deref().unwrap_or_default();
                    if !owner_ok("agents", agent)? {
                        return Err(Error::NotFound(format!(
                            "no active agent {agent:?} in this tenant"
                        )));
                    }
                }
                KeyRole::Admin | KeyRole::Executor => {}
            }
            insert_api_key(c, &key)?;
            append_audit(c, audit_records::api_key_created(&key, &actor))?;
            Ok(key)
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM api_keys WHERE tenant_id = ?1 ORDER BY id",
                rows::API_KEY_COLUMNS
            ))?
            .query_map([tenant_id], rows::api_key)?
            .collect()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn revoke_api_key(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<ApiKey> {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.write(move |c| {
            let changed = c
                .prepare_cached(sql::REVOKE_API_KEY)
                .and_then(|mut s| s.execute(params![tenant_id, id, ms(at)]))
                .map_err(db_error)?;
            if changed == 1 {
                append_audit(
                    c,
                    audit_records::api_key_revoked(&tenant_id, &id, &actor, at),
                )?;
            }
            c.prepare_cached(&format!(
                "SELECT {} FROM api_keys WHERE tenant_id = ?1 AND id = ?2",
                rows::API_KEY_COLUMNS
            ))
            .and_then(|mut s| s.query_row([&tenant_id, &id], rows::api_key).optional())
            .map_err(db_error)?
            .ok_or_else(|| not_found("API key"))
        })
        .await
    }

    /// The principal of an active key whose owner is active, by the key's hash.
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn authenticate(&self, key_hash: &str) -> Result<Option<Principal>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT k.id, k.tenant_id, k.role, k.user_id, k.agent_id, k.audiences FROM api_keys k \
                 LEFT JOIN users u ON u.id = k.user_id LEFT JOIN agents a ON a.id = k.agent_id \
                 WHERE k.key_hash = ?1 AND k.revoked_at IS NULL \
                 AND COALESCE(u.disabled, 0) = 0 AND COALESCE(a.disabled, 0) = 0",
            )?
            .query_row([key_hash], rows::principal)
            .optional()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn find_user_by_email(&self, tenant_id: &str, email: &str) -> Result<Option<User>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM users WHERE tenant_id = ?1 AND email = ?2",
                rows::USER_COLUMNS
            ))?
            .query_row([tenant_id, email], rows::user)
            .optional()
        })
    }
}
