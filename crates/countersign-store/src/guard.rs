//! Guard configuration, for both backends: policies, reviewer groups, settings and routing
//! rules. Every change tells the other replicas (`g:<tenant>`) to read the tenant's guard
//! configuration again.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::audit::{Actor, AuditRecord};
use countersign_core::policy::Policy;
use countersign_core::routing::Group;
use countersign_core::{Error, Result};
use countersign_proto::guard::{GuardSettings, RoutingRules};
use serde_json::json;

use crate::db::{Db, Row, Tx};
use crate::records::parse_settings;
use crate::sql::POLICY_COLUMNS;
use crate::writes::{group_in, json_text, not_found, renamed_conflict};
use crate::{audit_records, rows, sql};

const UPDATE_POLICY: &str = "UPDATE policies SET name = ?3, description = ?4, tool_pattern = ?5, action = ?6, \
     priority = ?7, is_active = ?8, condition = ?9, approval_config = ?10, updated_at = ?11 \
     WHERE id = ?1 AND tenant_id = ?2";

/// The hint that a tenant's guard configuration changed.
/// Records a change of a tenant's guard configuration, and tells other replicas to read it
/// again.
async fn config_changed(tx: &mut dyn Tx, record: AuditRecord) -> Result<()> {
    let hint = format!("g:{}", record.tenant_id);
    tx.audit(record).await?;
    tx.hint(&hint).await
}

fn stored_settings(row: &dyn Row) -> Result<(String, String)> {
    Ok((row.get(0)?, row.get(1)?))
}

/// The tenant's settings and routing rules as stored, locked until the transaction ends on
/// PostgreSQL.
async fn settings_in(tx: &mut dyn Tx, tenant_id: &str) -> Result<(GuardSettings, RoutingRules)> {
    let sql = format!("{}{}", sql::TENANT_SETTINGS, tx.dialect().for_update());
    parse_settings(tx.one(&sql, args![tenant_id], stored_settings).await?)
}

/// Guard configuration: policies, reviewer groups, settings and routing rules.
#[async_trait]
pub trait GuardStore: Db {
    // guard configuration
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_policies(&self, tenant_id: &str) -> Result<Vec<Policy>> {
        let sql = format!("SELECT {POLICY_COLUMNS} FROM policies WHERE tenant_id = ?1 ORDER BY id");
        self.reader()
            .await?
            .all(&sql, args![tenant_id], rows::policy)
            .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn get_policy(&self, tenant_id: &str, id: &str) -> Result<Option<Policy>> {
        let sql = format!("SELECT {POLICY_COLUMNS} FROM policies WHERE tenant_id = ?1 AND id = ?2");
        self.reader()
            .await?
            .one(&sql, args![tenant_id, id], rows::policy)
            .await
    }

    /// Inserts (`created`) or replaces a policy.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %policy.tenant_id))]
    async fn put_policy(&self, policy: Policy, created: bool, actor: Actor) -> Result<Policy> {
        write_tx!(self, |tx| {
            let p = &policy;
            let config = json_text(&p.approval)?;
            let stored = if created {
                let values = args![
                    &p.id,
                    &p.tenant_id,
                    &p.name,
                    &p.description,
                    &p.tool_pattern,
                    p.action.as_str(),
                    p.priority,
                    p.is_active,
                    &p.condition,
                    &config,
                    p.created_at,
                    p.updated_at,
                ];
                tx.exec(sql::UPSERT_POLICY, values).await?
            } else {
                let values = args![
                    &p.id,
                    &p.tenant_id,
                    &p.name,
                    &p.description,
                    &p.tool_pattern,
                    p.action.as_str(),
                    p.priority,
                    p.is_active,
                    &p.condition,
                    &config,
                    p.updated_at,
                ];
                tx.exec(UPDATE_POLICY, values).await?
            };
            if stored == 0 {
                return Err(not_found("policy"));
            }
            let action = if created {
                "policy.created"
            } else {
                "policy.updated"
            };
            let details = json!({"name": p.name, "tool_pattern": p.tool_pattern,
                "action": p.action.as_str(), "priority": p.priority,
                "is_active": p.is_active, "condition": p.condition});
            config_changed(
                tx,
                audit_records::config(&p.tenant_id, p.updated_at, &actor, action, &p.id, details),
            )
            .await?;
            Ok(policy)
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn delete_policy(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        write_tx!(self, |tx| {
            if tx.exec(sql::DELETE_POLICY, args![&tenant_id, &id]).await? == 0 {
                return Err(not_found("policy"));
            }
            config_changed(
                tx,
                audit_records::config(&tenant_id, at, &actor, "policy.deleted", &id, json!({})),
            )
            .await
        })
    }

    /// A tenant's groups with their members, by id, read on one connection.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_groups(&self, tenant_id: &str) -> Result<Vec<Group>> {
        let mut tx = self.reader().await?;
        let ids: Vec<String> = tx
            .all(sql::GROUP_IDS, args![tenant_id], |row| row.get(0))
            .await?;
        let mut groups = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(group) = group_in(&mut *tx, tenant_id, &id).await? {
                groups.push(group);
            }
        }
        Ok(groups)
    }

    /// A group with its members, read on one connection.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn get_group(&self, tenant_id: &str, id: &str) -> Result<Option<Group>> {
        group_in(&mut *self.reader().await?, tenant_id, id).await
    }

    /// Inserts (`created`) or replaces a group and its members.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %group.tenant_id))]
    async fn put_group(&self, group: Group, created: bool, actor: Actor) -> Result<Group> {
        write_tx!(self, |tx| {
            let g = &group;
            let stored = if created {
                let values = args![
                    &g.tenant_id,
                    &g.id,
                    &g.name,
                    g.escalation_minutes,
                    g.created_at,
                    g.updated_at,
                ];
                tx.exec(sql::INSERT_GROUP, values).await.map_err(|e| {
                    renamed_conflict(e, &format!("an approval group {:?} already exists", g.id))
                })?
            } else {
                let values = args![
                    &g.tenant_id,
                    &g.id,
                    &g.name,
                    g.escalation_minutes,
                    g.updated_at
                ];
                tx.exec(sql::UPDATE_GROUP, values).await?
            };
            if stored == 0 {
                return Err(not_found("approval group"));
            }
            tx.exec(sql::DELETE_GROUP_MEMBERS, args![&g.tenant_id, &g.id])
                .await?;
            for m in &g.members {
                let values = args![&g.tenant_id, &g.id, &m.user_id, m.role.as_str()];
                tx.exec(sql::INSERT_GROUP_MEMBER, values).await?;
            }
            let action = if created {
                "approval_group.created"
            } else {
                "approval_group.updated"
            };
            let members: Vec<_> = g
                .members
                .iter()
                .map(|m| json!({"user_id": m.user_id, "role": m.role.as_str()}))
                .collect();
            let details = json!({"name": g.name,
                "escalation_minutes": g.escalation_minutes, "members": members});
            config_changed(
                tx,
                audit_records::config(&g.tenant_id, g.updated_at, &actor, action, &g.id, details),
            )
            .await?;
            group_in(tx, &g.tenant_id, &g.id)
                .await?
                .ok_or_else(|| not_found("approval group"))
        })
    }

    /// Deletes a group no policy, routing rule or setting refers to.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn delete_group(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        write_tx!(self, |tx| {
            let key = args![&tenant_id, &id];
            tx.exec(sql::DELETE_GROUP_MEMBERS, key).await?;
            if tx.exec(sql::DELETE_GROUP, key).await? == 0 {
                return Err(not_found("approval group"));
            }
            config_changed(
                tx,
                audit_records::config(
                    &tenant_id,
                    at,
                    &actor,
                    "approval_group.deleted",
                    &id,
                    json!({}),
                ),
            )
            .await
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn guard_settings(&self, tenant_id: &str) -> Result<(GuardSettings, RoutingRules)> {
        let stored = self
            .reader()
            .await?
            .one(sql::TENANT_SETTINGS, args![tenant_id], stored_settings)
            .await?;
        parse_settings(stored)
    }

    /// Replaces what is given (`Some`), keeping the rest as stored. The audit event carries
    /// the new settings when they were given, else the new routing rules.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn put_guard_settings(
        &self,
        tenant_id: &str,
        settings: Option<GuardSettings>,
        routing: Option<RoutingRules>,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<(GuardSettings, RoutingRules)> {
        let tenant_id = tenant_id.to_owned();
        write_tx!(self, |tx| {
            let (old_settings, old_routing) = settings_in(tx, &tenant_id).await?;
            let settings_changed = settings.is_some();
            let settings = settings.unwrap_or(old_settings);
            let routing = routing.unwrap_or(old_routing);
            let guard_json = json_text(&settings)?;
            let routing_json = json_text(&routing)?;
            let values = args![&tenant_id, &guard_json, &routing_json, at];
            tx.exec(sql::UPSERT_TENANT_SETTINGS, values).await?;
            let (action, details) = if settings_changed {
                ("guard.settings_updated", &guard_json)
            } else {
                ("guard.routing_updated", &routing_json)
            };
            let details = serde_json::from_str(details).map_err(Error::internal)?;
            config_changed(
                tx,
                audit_records::config(&tenant_id, at, &actor, action, &tenant_id, details),
            )
            .await?;
            Ok((settings, routing))
        })
    }
}

impl GuardStore for crate::sqlite::SqliteStore {}
impl GuardStore for crate::postgres::PgStore {}
