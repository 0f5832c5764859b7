//! Guard configuration on PostgreSQL: policies, reviewer groups, settings and routing rules.
use super::*;
use crate::GuardStore;
use crate::sql;

#[async_trait]
impl GuardStore for PgStore {
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
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

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
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

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %policy.tenant_id))]
    async fn put_policy(&self, policy: Policy, created: bool, actor: Actor) -> Result<Policy> {
        let config = serde_json::to_string(&policy.approval).map_err(Error::internal)?;
        let sql = if created {
            &sql::pg(sql::UPSERT_POLICY)
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

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn delete_policy(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let changed = sqlx::query(&sql::pg(sql::DELETE_POLICY))
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

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_groups(&self, tenant_id: &str) -> Result<Vec<Group>> {
        let ids: Vec<String> = sqlx::query_scalar(&sql::pg(sql::GROUP_IDS))
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

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn get_group(&self, tenant_id: &str, id: &str) -> Result<Option<Group>> {
        let mut conn = self.pool.acquire().await.map_err(pg_error)?;
        group_in(&mut conn, tenant_id, id).await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %group.tenant_id))]
    async fn put_group(&self, group: Group, created: bool, actor: Actor) -> Result<Group> {
        let mut tx = self.begin().await?;
        let changed = if created {
            sqlx::query(&sql::pg(sql::INSERT_GROUP))
                .bind(&group.tenant_id)
                .bind(&group.id)
                .bind(&group.name)
                .bind(group.escalation_minutes.map(|m| m as i32))
                .bind(ms(group.created_at))
                .bind(ms(group.updated_at))
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    renamed_conflict(
                        pg_error(e),
                        format!("an approval group {:?} already exists", group.id),
                    )
                })?
                .rows_affected()
        } else {
            sqlx::query(&sql::pg(sql::UPDATE_GROUP))
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
        sqlx::query(&sql::pg(sql::DELETE_GROUP_MEMBERS))
            .bind(&group.tenant_id)
            .bind(&group.id)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        for m in &group.members {
            sqlx::query(&sql::pg(sql::INSERT_GROUP_MEMBER))
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

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn delete_group(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(&sql::pg(sql::DELETE_GROUP_MEMBERS))
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        let changed = sqlx::query(&sql::pg(sql::DELETE_GROUP))
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

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn guard_settings(&self, tenant_id: &str) -> Result<(GuardSettings, RoutingRules)> {
        let stored: Option<(String, String)> = sqlx::query_as(&sql::pg(sql::TENANT_SETTINGS))
            .bind(tenant_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?;
        crate::records::parse_settings(stored)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
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
        sqlx::query(&sql::pg(sql::UPSERT_TENANT_SETTINGS))
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
}
