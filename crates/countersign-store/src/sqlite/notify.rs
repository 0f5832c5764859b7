//! Reviewer notifications on SQLite: channel settings, preferences, webhook endpoints, push
//! subscriptions, review tokens, and the outbox's fan-out and delivery log.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::audit::Actor;
use countersign_core::notify::{
    Delivery, FanOut, NOTIFY, NewDelivery, Preferences, PushSubscription, ReviewToken,
    WebhookEndpoint,
};
use countersign_core::oidc::OutboxItem;
use countersign_core::{Error, Result};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;

use super::rows::{self, db_error, ms, opt_time, time};
use super::{SqliteStore, append_audit, not_found};
use crate::audit_records;
use crate::records::{DELIVERY_COLUMNS, PREFERENCE_COLUMNS, PUSH_COLUMNS, WEBHOOK_COLUMNS};
use crate::sql;
use crate::{ChannelRecord, NotificationStore};

/// Puts a `notify` row for a state change of a request, inside the change's transaction.
pub(super) fn enqueue_notification(
    c: &Connection,
    approval_id: &str,
    event: &str,
    payload: Option<&Value>,
    at: DateTime<Utc>,
) -> Result<()> {
    let payload = payload.map(Value::to_string);
    c.prepare_cached(sql::ENQUEUE_NOTIFICATION)
        .and_then(|mut s| s.execute(params![approval_id, NOTIFY, event, payload, ms(at)]))
        .map_err(db_error)?;
    Ok(())
}

fn json_text(row: &Row, idx: usize) -> rusqlite::Result<Option<Value>> {
    let text: Option<String> = row.get(idx)?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
        })
    })
    .transpose()
}

fn delivery(row: &Row) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        approval_id: row.get(2)?,
        channel: row.get(3)?,
        target: row.get(4)?,
        recipient: row.get(5)?,
        event: row.get(6)?,
        state: row.get(7)?,
        attempts: row.get(8)?,
        created_at: time(row, 9)?,
        next_attempt_at: time(row, 10)?,
        delivered_at: opt_time(row, 11)?,
        last_error: row.get(12)?,
        status_code: row.get(13)?,
        external_ref: row.get(14)?,
        payload: json_text(row, 15)?,
    })
}

fn preferences(row: &Row) -> rusqlite::Result<Preferences> {
    Ok(Preferences {
        tenant_id: row.get(0)?,
        user_id: row.get(1)?,
        email: row.get(2)?,
        slack: row.get(3)?,
        push: row.get(4)?,
        slack_user_id: row.get(5)?,
        updated_at: time(row, 6)?,
    })
}

fn webhook(row: &Row) -> rusqlite::Result<WebhookEndpoint> {
    let events: String = row.get(3)?;
    Ok(WebhookEndpoint {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        url: row.get(2)?,
        events: serde_json::from_str(&events).map_err(|_| rows::bad(3, "webhook events"))?,
        secret: row.get(4)?,
        description: row.get(5)?,
        disabled_at: opt_time(row, 6)?,
        disabled_reason: row.get(7)?,
        created_at: time(row, 8)?,
        updated_at: time(row, 9)?,
    })
}

fn push(row: &Row) -> rusqlite::Result<PushSubscription> {
    Ok(PushSubscription {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        user_id: row.get(2)?,
        endpoint: row.get(3)?,
        p256dh: row.get(4)?,
        auth: row.get(5)?,
        user_agent: row.get(6)?,
        created_at: time(row, 7)?,
    })
}

fn webhook_in_tx(c: &Connection, tenant_id: &str, id: &str) -> Result<Option<WebhookEndpoint>> {
    c.prepare_cached(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhook_endpoints WHERE tenant_id = ?1 AND id = ?2"
    ))
    .and_then(|mut s| s.query_row([tenant_id, id], webhook).optional())
    .map_err(db_error)
}

fn insert_delivery(c: &Connection, notify: &OutboxItem, d: &NewDelivery, at: i64) -> Result<()> {
    let payload = d.payload.as_ref().map(Value::to_string);
    c.prepare_cached(sql::ENQUEUE_DELIVERY)
        .and_then(|mut s| {
            s.execute(params![
                notify.tenant_id,
                notify.approval_id,
                d.channel,
                d.target,
                d.recipient,
                d.event.as_str(),
                payload,
                d.dedupe_key,
                at,
            ])
        })
        .map_err(db_error)?;
    Ok(())
}

#[async_trait]
impl NotificationStore for SqliteStore {
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn channel_configs(&self, tenant_id: &str) -> Result<Vec<ChannelRecord>> {
        self.read(|c| {
            c.prepare_cached(sql::CHANNELS)?
                .query_map([tenant_id], |r| {
                    Ok(ChannelRecord {
                        channel: r.get(0)?,
                        config: json_text(r, 1)?.unwrap_or(Value::Null),
                        updated_at: time(r, 2)?,
                    })
                })?
                .collect()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn put_channel_config(
        &self,
        tenant_id: &str,
        channel: &str,
        config: Option<Value>,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let (tenant_id, channel) = (tenant_id.to_string(), channel.to_string());
        self.write(move |c| {
            let changed = match &config {
                Some(config) => c.prepare_cached(sql::UPSERT_CHANNEL).and_then(|mut s| {
                    s.execute(params![tenant_id, channel, config.to_string(), ms(at)])
                }),
                None => c
                    .prepare_cached(sql::DELETE_CHANNEL)
                    .and_then(|mut s| s.execute(params![tenant_id, channel])),
            }
            .map_err(db_error)?;
            if changed > 0 {
                append_audit(
                    c,
                    audit_records::channel(&tenant_id, &channel, config.is_some(), &actor, at),
                )?;
            }
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_preferences(&self, tenant_id: &str) -> Result<Vec<Preferences>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {PREFERENCE_COLUMNS} FROM notification_preferences WHERE tenant_id = ?1"
            ))?
            .query_map([tenant_id], preferences)?
            .collect()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, user_id = %user_id))]
    async fn get_preferences(&self, tenant_id: &str, user_id: &str) -> Result<Option<Preferences>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {PREFERENCE_COLUMNS} FROM notification_preferences WHERE tenant_id = ?1 AND user_id = ?2"
            ))?
            .query_row([tenant_id, user_id], preferences)
            .optional()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %prefs.tenant_id))]
    async fn put_preferences(&self, prefs: Preferences, actor: Actor) -> Result<Preferences> {
        self.write(move |c| {
            let exists: bool = c
                .prepare_cached(sql::USER_EXISTS)
                .and_then(|mut s| s.query_row([&prefs.tenant_id, &prefs.user_id], |r| r.get(0)))
                .map_err(db_error)?;
            if !exists {
                return Err(not_found("user"));
            }
            c.prepare_cached(&format!(
                "INSERT INTO notification_preferences ({PREFERENCE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, slack = excluded.slack, push = excluded.push, \
                 slack_user_id = excluded.slack_user_id, updated_at = excluded.updated_at"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    prefs.tenant_id, prefs.user_id, prefs.email, prefs.slack, prefs.push,
                    prefs.slack_user_id, ms(prefs.updated_at),
                ])
            })
            .map_err(|e| match db_error(e) {
                Error::AlreadyExists(_) => crate::records::slack_id_taken(),
                other => other,
            })?;
            append_audit(c, audit_records::preferences(&prefs, &actor))?;
            Ok(prefs)
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn find_user_by_slack_id(
        &self,
        tenant_id: &str,
        slack_user_id: &str,
    ) -> Result<Option<countersign_core::directory::User>> {
        let columns = rows::USER_COLUMNS
            .split(", ")
            .map(|c| format!("u.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {columns} FROM notification_preferences p JOIN users u ON u.id = p.user_id \
                 WHERE p.tenant_id = ?1 AND p.slack_user_id = ?2 AND u.disabled = 0"
            ))?
            .query_row([tenant_id, slack_user_id], rows::user)
            .optional()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %endpoint.tenant_id))]
    async fn create_webhook(
        &self,
        endpoint: WebhookEndpoint,
        actor: Actor,
    ) -> Result<WebhookEndpoint> {
        self.write(move |c| {
            let events = serde_json::to_string(&endpoint.events).map_err(Error::internal)?;
            c.prepare_cached(&format!(
                "INSERT INTO webhook_endpoints ({WEBHOOK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    endpoint.id, endpoint.tenant_id, endpoint.url, events, endpoint.secret,
                    endpoint.description, endpoint.disabled_at.map(ms), endpoint.disabled_reason,
                    ms(endpoint.created_at), ms(endpoint.updated_at),
                ])
            })
            .map_err(db_error)?;
            append_audit(c, audit_records::webhook(&endpoint, "webhook.created", &actor))?;
            Ok(endpoint)
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_webhooks(&self, tenant_id: &str) -> Result<Vec<WebhookEndpoint>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhook_endpoints WHERE tenant_id = ?1 ORDER BY id"
            ))?
            .query_map([tenant_id], webhook)?
            .collect()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn get_webhook(&self, tenant_id: &str, id: &str) -> Result<Option<WebhookEndpoint>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhook_endpoints WHERE tenant_id = ?1 AND id = ?2"
            ))?
            .query_row([tenant_id, id], webhook)
            .optional()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %endpoint.tenant_id))]
    async fn update_webhook(
        &self,
        endpoint: WebhookEndpoint,
        action: &str,
        actor: Actor,
    ) -> Result<WebhookEndpoint> {
        let action = action.to_string();
        self.write(move |c| {
            let events = serde_json::to_string(&endpoint.events).map_err(Error::internal)?;
            let changed = c
                .prepare_cached(sql::UPDATE_WEBHOOK)
                .and_then(|mut s| {
                    s.execute(params![
                        endpoint.tenant_id,
                        endpoint.id,
                        endpoint.url,
                        events,
                        endpoint.secret,
                        endpoint.description,
                        endpoint.disabled_at.map(ms),
                        endpoint.disabled_reason,
                        ms(endpoint.updated_at),
                    ])
                })
                .map_err(db_error)?;
            if changed == 0 {
                return Err(not_found("webhook endpoint"));
            }
            append_audit(c, audit_records::webhook(&endpoint, &action, &actor))?;
            webhook_in_tx(c, &endpoint.tenant_id, &endpoint.id)?
                .ok_or_else(|| not_found("webhook endpoint"))
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn delete_webhook(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.write(move |c| {
            let Some(mut endpoint) = webhook_in_tx(c, &tenant_id, &id)? else {
                return Err(not_found("webhook endpoint"));
            };
            c.prepare_cached(sql::DELETE_WEBHOOK)
                .and_then(|mut s| s.execute([&tenant_id, &id]))
                .map_err(db_error)?;
            // Deliveries still waiting for it have nowhere to go.
            c.prepare_cached(sql::FAIL_DELETED_WEBHOOK_DELIVERIES)
                .and_then(|mut s| s.execute([&id]))
                .map_err(db_error)?;
            endpoint.updated_at = at;
            append_audit(
                c,
                audit_records::webhook(&endpoint, "webhook.deleted", &actor),
            )?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %sub.tenant_id))]
    async fn put_push_subscription(&self, sub: PushSubscription, actor: Actor) -> Result<()> {
        self.write(move |c| {
            c.prepare_cached(sql::DELETE_PUSH_SUBSCRIPTION_BY_ENDPOINT)
                .and_then(|mut s| s.execute([&sub.endpoint]))
                .map_err(db_error)?;
            c.prepare_cached(&format!(
                "INSERT INTO push_subscriptions ({PUSH_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    sub.id, sub.tenant_id, sub.user_id, sub.endpoint, sub.p256dh, sub.auth,
                    sub.user_agent, ms(sub.created_at),
                ])
            })
            .map_err(db_error)?;
            append_audit(
                c,
                audit_records::push_subscription_created(&sub, &actor),
            )?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_push_subscriptions(&self, tenant_id: &str) -> Result<Vec<PushSubscription>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {PUSH_COLUMNS} FROM push_subscriptions WHERE tenant_id = ?1 ORDER BY id"
            ))?
            .query_map([tenant_id], push)?
            .collect()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(id = %id))]
    async fn get_push_subscription(&self, id: &str) -> Result<Option<PushSubscription>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {PUSH_COLUMNS} FROM push_subscriptions WHERE id = ?1"
            ))?
            .query_row([id], push)
            .optional()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn delete_push_subscription(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.write(move |c| {
            let n = c
                .prepare_cached(sql::DELETE_PUSH_SUBSCRIPTION)
                .and_then(|mut s| s.execute([&tenant_id, &id]))
                .map_err(db_error)?;
            Ok(n > 0)
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn find_review_token(&self, token_hash: &str) -> Result<Option<ReviewToken>> {
        self.read(|c| {
            c.prepare_cached(sql::REVIEW_TOKEN)?
                .query_row([token_hash], |r| {
                    Ok(ReviewToken {
                        token_hash: r.get(0)?,
                        tenant_id: r.get(1)?,
                        approval_id: r.get(2)?,
                        user_id: r.get(3)?,
                        expires_at: time(r, 4)?,
                        created_at: time(r, 5)?,
                    })
                })
                .optional()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(approval_id = %approval_id))]
    async fn list_reviewers(&self, approval_id: &str) -> Result<Vec<(String, DateTime<Utc>)>> {
        self.read(|c| {
            c.prepare_cached(sql::REVIEWERS)?
                .query_map([approval_id], |r| Ok((r.get(0)?, time(r, 1)?)))?
                .collect()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn fan_out(&self, batch: Vec<FanOut>, at: DateTime<Utc>) -> Result<()> {
        let ids: Vec<i64> = batch.iter().map(|f| f.notify.id).collect();
        let done = self
            .write(move |c| {
                for f in &batch {
                    for d in &f.deliveries {
                        insert_delivery(c, &f.notify, d, ms(at))?;
                    }
                    for t in &f.tokens {
                        c.prepare_cached(sql::INSERT_REVIEW_TOKEN)
                            .and_then(|mut s| {
                                s.execute(params![
                                    t.token_hash,
                                    t.tenant_id,
                                    t.approval_id,
                                    t.user_id,
                                    ms(t.expires_at),
                                    ms(t.created_at)
                                ])
                            })
                            .map_err(db_error)?;
                    }
                    // Done: the row has become its deliveries, so it goes (the outbox keeps
                    // only what is still to be sent or worth showing).
                    c.prepare_cached(sql::DELETE_NOTIFY_JOB)
                        .and_then(|mut s| s.execute(params![f.notify.id]))
                        .map_err(db_error)?;
                }
                Ok(())
            })
            .await;
        if done.is_ok() {
            for id in ids {
                self.release_lease(id);
            }
        }
        done
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, approval_id = %approval_id))]
    async fn list_deliveries(&self, tenant_id: &str, approval_id: &str) -> Result<Vec<Delivery>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM outbox WHERE approval_id = ?1 AND tenant_id = ?2 \
                 AND channel IN ('email', 'slack', 'teams', 'webhook', 'push') ORDER BY id"
            ))?
            .query_map([approval_id, tenant_id], delivery)?
            .collect()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn webhook_deliveries(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM outbox WHERE recipient = ?1 AND tenant_id = ?2 AND channel = 'webhook' \
                 AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
            ))?
            .query_map(params![endpoint_id, tenant_id, before_id, limit], delivery)?
            .collect()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn get_delivery(&self, tenant_id: &str, id: i64) -> Result<Option<Delivery>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM outbox WHERE id = ?1 AND tenant_id = ?2 AND channel <> 'notify'"
            ))?
            .query_row(params![id, tenant_id], delivery)
            .optional()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn redeliver(&self, tenant_id: &str, id: i64, at: DateTime<Utc>) -> Result<()> {
        let tenant_id = tenant_id.to_string();
        self.write(move |c| {
            let changed = c
                .prepare_cached(sql::RETRY_DELIVERY)
                .and_then(|mut s| s.execute(params![id, tenant_id, ms(at)]))
                .map_err(db_error)?;
            if changed == 0 {
                return Err(Error::invalid_with(
                    countersign_proto::ErrorCode::DeliveryPending,
                    "only a finished delivery can be sent again; this one is still pending",
                ));
            }
            Ok(())
        })
        .await
    }
}
