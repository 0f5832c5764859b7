//! Guard configuration on SQLite: policies, reviewer groups, settings and routing rules.
use super::*;
use crate::GuardStore;
use crate::sql;

#[async_trait]
impl GuardStore for SqliteStore {
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_policies(&self, tenant_id: &str) -> Result<Vec<Policy>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM policies WHERE tenant_id = ?1 ORDER BY id",
                rows::POLICY_COLUMNS
            ))?
            .query_map([tenant_id], rows::policy)?
            .collect()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn get_policy(&self, tenant_id: &str, id: &str) -> Result<Option<Policy>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM policies WHERE tenant_id = ?1 AND id = ?2",
                rows::POLICY_COLUMNS
            ))?
            .query_row([tenant_id, id], rows::policy)
            .optional()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %policy.tenant_id))]
    async fn put_policy(&self, policy: Policy, created: bool, actor: Actor) -> Result<Policy> {
        self.write(move |c| {
            let config = serde_json::to_string(&policy.approval).map_err(Error::internal)?;
            let sql = if created {
                sql::UPSERT_POLICY
            } else {
                "UPDATE policies SET name = ?3, description = ?4, tool_pattern = ?5, action = ?6, priority = ?7, \
                 is_active = ?8, condition = ?9, approval_config = ?10, updated_at = ?12 WHERE id = ?1 AND tenant_id = ?2 AND ?11 IS NOT NULL"
            };
            let changed = c
                .prepare_cached(sql)
                .and_then(|mut s| {
                    s.execute(params![
                        policy.id, policy.tenant_id, policy.name, policy.description, policy.tool_pattern,
                        policy.action.as_str(), policy.priority, policy.is_active, policy.condition, config,
                        ms(policy.created_at), ms(policy.updated_at),
                    ])
                })
                .map_err(db_error)?;
            if changed == 0 {
                return Err(not_found("policy"));
            }
            let action = if created { "policy.created" } else { "policy.updated" };
            append_audit(
                c,
                audit_records::config(&policy.tenant_id, policy.updated_at, &actor, action, &policy.id,
                    json!({"name": policy.name, "tool_pattern": policy.tool_pattern, "action": policy.action.as_str(),
                           "priority": policy.priority, "is_active": policy.is_active, "condition": policy.condition})),
            )?;
            Ok(policy)
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn delete_policy(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.write(move |c| {
            let changed = c
                .prepare_cached(sql::DELETE_POLICY)
                .and_then(|mut s| s.execute([&tenant_id, &id]))
                .map_err(db_error)?;
            if changed == 0 {
                return Err(not_found("policy"));
            }
            append_audit(
                c,
                audit_records::config(&tenant_id, at, &actor, "policy.deleted", &id, json!({})),
            )?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_groups(&self, tenant_id: &str) -> Result<Vec<Group>> {
        let ids: Vec<String> = self.read(|c| {
            c.prepare_cached(sql::GROUP_IDS)?
                .query_map([tenant_id], |r| r.get(0))?
                .collect()
        })?;
        let mut groups = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(g) = self.get_group(tenant_id, &id).await? {
                groups.push(g);
            }
        }
        Ok(groups)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn get_group(&self, tenant_id: &str, id: &str) -> Result<Option<Group>> {
        let readers = &self.inner.readers;
        let conn =
            readers[self.inner.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len()].lock();
        group_in_tx(&conn, tenant_id, id)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %group.tenant_id))]
    async fn put_group(&self, group: Group, created: bool, actor: Actor) -> Result<Group> {
        self.write(move |c| {
            let changed = if created {
                c.prepare_cached(
                    sql::INSERT_GROUP,
                )
                .and_then(|mut s| {
                    s.execute(params![group.tenant_id, group.id, group.name, group.escalation_minutes, ms(group.created_at), ms(group.updated_at)])
                })
                .map_err(|e| match db_error(e) {
                    Error::AlreadyExists(_) => Error::AlreadyExists(format!("an approval group {:?} already exists", group.id)),
                    other => other,
                })?
            } else {
                c.prepare_cached(sql::UPDATE_GROUP)
                    .and_then(|mut s| s.execute(params![group.tenant_id, group.id, group.name, group.escalation_minutes, ms(group.updated_at)]))
                    .map_err(db_error)?
            };
            if changed == 0 {
                return Err(not_found("approval group"));
            }
            c.prepare_cached(sql::DELETE_GROUP_MEMBERS)
                .and_then(|mut s| s.execute([&group.tenant_id, &group.id]))
                .map_err(db_error)?;
            for m in &group.members {
                c.prepare_cached(sql::INSERT_GROUP_MEMBER)
                    .and_then(|mut s| s.execute(params![group.tenant_id, group.id, m.user_id, m.role.as_str()]))
                    .map_err(db_error)?;
            }
            let action = if created { "approval_group.created" } else { "approval_group.updated" };
            let members: Vec<_> = group.members.iter().map(|m| json!({"user_id": m.user_id, "role": m.role.as_str()})).collect();
            append_audit(
                c,
                audit_records::config(&group.tenant_id, group.updated_at, &actor, action, &group.id,
                    json!({"name": group.name, "escalation_minutes": group.escalation_minutes, "members": members})),
            )?;
            group_in_tx(c, &group.tenant_id, &group.id)?.ok_or_else(|| not_found("approval group"))
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn delete_group(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.write(move |c| {
            c.prepare_cached(sql::DELETE_GROUP_MEMBERS)
                .and_then(|mut s| s.execute([&tenant_id, &id]))
                .map_err(db_error)?;
            let changed = c
                .prepare_cached(sql::DELETE_GROUP)
                .and_then(|mut s| s.execute([&tenant_id, &id]))
                .map_err(db_error)?;
            if changed == 0 {
                return Err(not_found("approval group"));
            }
            append_audit(
                c,
                audit_records::config(
                    &tenant_id,
                    at,
                    &actor,
                    "approval_group.deleted",
                    &id,
                    json!({}),
                ),
            )?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn guard_settings(&self, tenant_id: &str) -> Result<(GuardSettings, RoutingRules)> {
        let stored: Option<(String, String)> = self.read(|c| {
            c.prepare_cached(sql::TENANT_SETTINGS)?
                .query_row([tenant_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })?;
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
        let tenant_id = tenant_id.to_string();
        self.write(move |c| {
            let stored: Option<(String, String)> = c
                .prepare_cached(sql::TENANT_SETTINGS)
                .and_then(|mut s| {
                    s.query_row([&tenant_id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(db_error)?;
            let (old_settings, old_routing) = crate::records::parse_settings(stored)?;
            let action = if settings.is_some() {
                "guard.settings_updated"
            } else {
                "guard.routing_updated"
            };
            let settings = settings.unwrap_or(old_settings);
            let routing = routing.unwrap_or(old_routing);
            let (guard_json, routing_json) = (
                serde_json::to_string(&settings).map_err(Error::internal)?,
                serde_json::to_string(&routing).map_err(Error::internal)?,
            );
            c.prepare_cached(sql::UPSERT_TENANT_SETTINGS)
                .and_then(|mut s| s.execute(params![tenant_id, guard_json, routing_json, ms(at)]))
                .map_err(db_error)?;
            let details = serde_json::from_str(if action == "guard.settings_updated" {
                &guard_json
            } else {
                &routing_json
            })
            .map_err(Error::internal)?;
            append_audit(
                c,
                audit_records::config(&tenant_id, at, &actor, action, &tenant_id, details),
            )?;
            Ok((settings, routing))
        })
        .await
    }
}
