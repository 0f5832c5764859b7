//! Reviewer notifications, for both backends: channel settings, preferences, webhook
//! endpoints, push subscriptions, review tokens, and the outbox's fan-out and delivery log.
//! Only the fan-out is written per backend, because the two claim outbox rows differently.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::audit::Actor;
use countersign_core::directory::User;
use countersign_core::notify::{
    Delivery, FanOut, Preferences, PushSubscription, ReviewToken, WebhookEndpoint,
};
use countersign_core::{Error, Result};
use serde_json::Value;

use crate::db::{Arg, Db, ToArg, Tx};
use crate::records::{self, DELIVERY_COLUMNS, PREFERENCE_COLUMNS, PUSH_COLUMNS, WEBHOOK_COLUMNS};
use crate::rows::{delivery, preferences, push, review_token, webhook};
use crate::writes::{json_text, not_found};
use crate::{ChannelRecord, audit_records, rows, sql};

async fn webhook_in(tx: &mut dyn Tx, tenant_id: &str, id: &str) -> Result<Option<WebhookEndpoint>> {
    let sql =
        format!("SELECT {WEBHOOK_COLUMNS} FROM webhook_endpoints WHERE tenant_id = ?1 AND id = ?2");
    tx.one(&sql, args![tenant_id, id], webhook).await
}

/// Most notification rows one statement deletes: a handful of statement shapes, each prepared
/// once per connection.
const DELETE_CHUNK: usize = 32;

/// The writes of a fan-out, in one transaction: for each `notify` row of the batch, its
/// deliveries (those an earlier run added are skipped), its review-link tokens, and the row
/// removed.
pub(crate) async fn fan_out_rows<D: Db + ?Sized>(
    db: &D,
    batch: Vec<FanOut>,
    at: DateTime<Utc>,
) -> Result<()> {
    write_tx!(db, |tx| {
        for f in &batch {
            let notify = &f.notify;
            for d in &f.deliveries {
                let payload = d.payload.as_ref().map(Value::to_string);
                let values = args![
                    &notify.tenant_id,
                    &notify.approval_id,
                    d.channel,
                    &d.target,
                    &d.recipient,
                    d.event.as_str(),
                    &payload,
                    &d.dedupe_key,
                    at,
                ];
                tx.exec(sql::ENQUEUE_DELIVERY, values).await?;
            }
            for t in &f.tokens {
                let values = args![
                    &t.token_hash,
                    &t.tenant_id,
                    &t.approval_id,
                    &t.user_id,
                    t.expires_at,
                    t.created_at,
                ];
                tx.exec(sql::INSERT_REVIEW_TOKEN, values).await?;
            }
        }
        // Done: each row has become its deliveries, so it goes (the outbox keeps only what is
        // still to be sent or worth showing). A statement per chunk, not per row: on
        // PostgreSQL each statement is a round trip.
        let ids: Vec<i64> = batch.iter().map(|f| f.notify.id).collect();
        for chunk in ids.chunks(DELETE_CHUNK) {
            let values: Vec<Arg<'_>> = chunk.iter().map(|id| id.to_arg()).collect();
            tx.exec(&sql::delete_notify_jobs(chunk.len()), &values)
                .await?;
        }
        Ok(())
    })
}

/// Reviewer notifications: tenant channel settings, people's preferences, webhook endpoints,
/// push subscriptions, review-link tokens, and the outbox's fan-out and delivery log.
#[async_trait]
pub trait NotificationStore: Db {
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn channel_configs(&self, tenant_id: &str) -> Result<Vec<ChannelRecord>> {
        self.reader()
            .await?
            .all(sql::CHANNELS, args![tenant_id], |row| {
                Ok(ChannelRecord {
                    channel: row.get(0)?,
                    config: row.json_or(1)?,
                    updated_at: row.time(2)?,
                })
            })
            .await
    }

    /// Stores (`Some`) or removes (`None`) a tenant channel's settings, with its audit event
    /// (which never carries the settings: they hold secrets).
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn put_channel_config(
        &self,
        tenant_id: &str,
        channel: &str,
        config: Option<Value>,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let (tenant_id, channel) = (tenant_id.to_owned(), channel.to_owned());
        write_tx!(self, |tx| {
            let changed = match &config {
                Some(config) => {
                    let config = config.to_string();
                    let values = args![&tenant_id, &channel, &config, at];
                    tx.exec(sql::UPSERT_CHANNEL, values).await?
                }
                None => {
                    tx.exec(sql::DELETE_CHANNEL, args![&tenant_id, &channel])
                        .await?
                }
            };
            if changed > 0 {
                let record =
                    audit_records::channel(&tenant_id, &channel, config.is_some(), &actor, at);
                tx.audit(record).await?;
            }
            Ok(())
        })
    }

    /// Stored preferences of a tenant's users (the others have the defaults).
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_preferences(&self, tenant_id: &str) -> Result<Vec<Preferences>> {
        let sql = format!(
            "SELECT {PREFERENCE_COLUMNS} FROM notification_preferences WHERE tenant_id = ?1"
        );
        self.reader()
            .await?
            .all(&sql, args![tenant_id], preferences)
            .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, user_id = %user_id))]
    async fn get_preferences(&self, tenant_id: &str, user_id: &str) -> Result<Option<Preferences>> {
        let sql = format!(
            "SELECT {PREFERENCE_COLUMNS} FROM notification_preferences WHERE tenant_id = ?1 AND user_id = ?2"
        );
        self.reader()
            .await?
            .one(&sql, args![tenant_id, user_id], preferences)
            .await
    }

    /// Stores a user's preferences; a Slack user id already taken by another user of the
    /// tenant is `AlreadyExists`.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %prefs.tenant_id))]
    async fn put_preferences(&self, prefs: Preferences, actor: Actor) -> Result<Preferences> {
        write_tx!(self, |tx| {
            let key = args![&prefs.tenant_id, &prefs.user_id];
            if !tx
                .scalar::<bool>(sql::USER_EXISTS, key)
                .await?
                .unwrap_or(false)
            {
                return Err(not_found("user"));
            }
            let sql = format!(
                "INSERT INTO notification_preferences ({PREFERENCE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, slack = excluded.slack, push = excluded.push, \
                 slack_user_id = excluded.slack_user_id, updated_at = excluded.updated_at"
            );
            let values = args![
                &prefs.tenant_id,
                &prefs.user_id,
                prefs.email,
                prefs.slack,
                prefs.push,
                &prefs.slack_user_id,
                prefs.updated_at,
            ];
            tx.exec(&sql, values).await.map_err(|e| match e {
                Error::AlreadyExists(_) => records::slack_id_taken(),
                other => other,
            })?;
            tx.audit(audit_records::preferences(&prefs, &actor)).await?;
            Ok(prefs)
        })
    }

    /// The active user of the tenant with this Slack user id.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn find_user_by_slack_id(
        &self,
        tenant_id: &str,
        slack_user_id: &str,
    ) -> Result<Option<User>> {
        let columns = sql::USER_COLUMNS
            .split(", ")
            .map(|c| format!("u.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {columns} FROM notification_preferences p JOIN users u ON u.id = p.user_id \
             WHERE p.tenant_id = ?1 AND p.slack_user_id = ?2 AND NOT u.disabled"
        );
        self.reader()
            .await?
            .one(&sql, args![tenant_id, slack_user_id], rows::user)
            .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %endpoint.tenant_id))]
    async fn create_webhook(
        &self,
        endpoint: WebhookEndpoint,
        actor: Actor,
    ) -> Result<WebhookEndpoint> {
        write_tx!(self, |tx| {
            let e = &endpoint;
            let events = json_text(&e.events)?;
            let sql = format!(
                "INSERT INTO webhook_endpoints ({WEBHOOK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            );
            let values = args![
                &e.id,
                &e.tenant_id,
                &e.url,
                &events,
                &e.secret,
                &e.description,
                e.disabled_at,
                &e.disabled_reason,
                e.created_at,
                e.updated_at,
            ];
            tx.exec(&sql, values).await?;
            tx.audit(audit_records::webhook(e, "webhook.created", &actor))
                .await?;
            Ok(endpoint)
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_webhooks(&self, tenant_id: &str) -> Result<Vec<WebhookEndpoint>> {
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhook_endpoints WHERE tenant_id = ?1 ORDER BY id"
        );
        self.reader()
            .await?
            .all(&sql, args![tenant_id], webhook)
            .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn get_webhook(&self, tenant_id: &str, id: &str) -> Result<Option<WebhookEndpoint>> {
        webhook_in(&mut *self.reader().await?, tenant_id, id).await
    }

    /// Replaces an endpoint's URL, events, secret, description and disabled state; `action`
    /// names the audit event (`webhook.updated`, `webhook.secret_rotated`, `webhook.disabled`).
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %endpoint.tenant_id))]
    async fn update_webhook(
        &self,
        endpoint: WebhookEndpoint,
        action: &str,
        actor: Actor,
    ) -> Result<WebhookEndpoint> {
        let action = action.to_owned();
        write_tx!(self, |tx| {
            let e = &endpoint;
            let events = json_text(&e.events)?;
            let values = args![
                &e.tenant_id,
                &e.id,
                &e.url,
                &events,
                &e.secret,
                &e.description,
                e.disabled_at,
                &e.disabled_reason,
                e.updated_at,
            ];
            if tx.exec(sql::UPDATE_WEBHOOK, values).await? == 0 {
                return Err(not_found("webhook endpoint"));
            }
            tx.audit(audit_records::webhook(e, &action, &actor)).await?;
            webhook_in(tx, &e.tenant_id, &e.id)
                .await?
                .ok_or_else(|| not_found("webhook endpoint"))
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn delete_webhook(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        write_tx!(self, |tx| {
            let Some(mut endpoint) = webhook_in(tx, &tenant_id, &id).await? else {
                return Err(not_found("webhook endpoint"));
            };
            tx.exec(sql::DELETE_WEBHOOK, args![&tenant_id, &id]).await?;
            // Deliveries still waiting for it have nowhere to go.
            tx.exec(sql::FAIL_DELETED_WEBHOOK_DELIVERIES, args![&id])
                .await?;
            endpoint.updated_at = at;
            tx.audit(audit_records::webhook(&endpoint, "webhook.deleted", &actor))
                .await?;
            Ok(())
        })
    }

    /// Stores a device's subscription (the same endpoint again replaces the old one).
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %sub.tenant_id))]
    async fn put_push_subscription(&self, sub: PushSubscription, actor: Actor) -> Result<()> {
        write_tx!(self, |tx| {
            tx.exec(
                sql::DELETE_PUSH_SUBSCRIPTION_BY_ENDPOINT,
                args![&sub.endpoint],
            )
            .await?;
            let sql = format!(
                "INSERT INTO push_subscriptions ({PUSH_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            );
            let values = args![
                &sub.id,
                &sub.tenant_id,
                &sub.user_id,
                &sub.endpoint,
                &sub.p256dh,
                &sub.auth,
                &sub.user_agent,
                sub.created_at,
            ];
            tx.exec(&sql, values).await?;
            tx.audit(audit_records::push_subscription_created(&sub, &actor))
                .await?;
            Ok(())
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_push_subscriptions(&self, tenant_id: &str) -> Result<Vec<PushSubscription>> {
        let sql = format!(
            "SELECT {PUSH_COLUMNS} FROM push_subscriptions WHERE tenant_id = ?1 ORDER BY id"
        );
        self.reader().await?.all(&sql, args![tenant_id], push).await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(id = %id))]
    async fn get_push_subscription(&self, id: &str) -> Result<Option<PushSubscription>> {
        let sql = format!("SELECT {PUSH_COLUMNS} FROM push_subscriptions WHERE id = ?1");
        self.reader().await?.one(&sql, args![id], push).await
    }

    /// Removes a subscription (the push service said it is gone, or its user removed it).
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn delete_push_subscription(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        write_tx!(self, |tx| {
            let n = tx
                .exec(sql::DELETE_PUSH_SUBSCRIPTION, args![&tenant_id, &id])
                .await?;
            Ok(n > 0)
        })
    }

    /// The review-link token with this hash, whatever its state.
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn find_review_token(&self, token_hash: &str) -> Result<Option<ReviewToken>> {
        self.reader()
            .await?
            .one(sql::REVIEW_TOKEN, args![token_hash], review_token)
            .await
    }

    /// Every reviewer of a request with the moment they may decide.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(approval_id = %approval_id))]
    async fn list_reviewers(&self, approval_id: &str) -> Result<Vec<(String, DateTime<Utc>)>> {
        self.reader()
            .await?
            .all(sql::REVIEWERS, args![approval_id], |row| {
                Ok((row.get(0)?, row.time(1)?))
            })
            .await
    }

    /// In one transaction, for each `notify` row of the batch: adds its deliveries (those an
    /// earlier run added are skipped), stores their review-link tokens, and removes the row.
    /// Written per backend, because SQLite also forgets its in-memory claims of the rows.
    async fn fan_out(&self, batch: Vec<FanOut>, at: DateTime<Utc>) -> Result<()>;

    /// A request's notifications (not its fan-out rows or CIBA callbacks), oldest first.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, approval_id = %approval_id))]
    async fn list_deliveries(&self, tenant_id: &str, approval_id: &str) -> Result<Vec<Delivery>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM outbox WHERE approval_id = ?1 AND tenant_id = ?2 \
             AND channel IN ('email', 'slack', 'teams', 'webhook', 'push') ORDER BY id"
        );
        self.reader()
            .await?
            .all(&sql, args![approval_id, tenant_id], delivery)
            .await
    }

    /// A webhook endpoint's deliveries, newest first, before `before_id` when given.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn webhook_deliveries(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM outbox WHERE recipient = ?1 AND tenant_id = ?2 AND channel = 'webhook' \
             AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
        );
        self.reader()
            .await?
            .all(
                &sql,
                args![endpoint_id, tenant_id, before_id, limit],
                delivery,
            )
            .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn get_delivery(&self, tenant_id: &str, id: i64) -> Result<Option<Delivery>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM outbox WHERE id = ?1 AND tenant_id = ?2 AND channel <> 'notify'"
        );
        self.reader()
            .await?
            .one(&sql, args![id, tenant_id], delivery)
            .await
    }

    /// Makes a finished delivery due again now (a manual redelivery).
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn redeliver(&self, tenant_id: &str, id: i64, at: DateTime<Utc>) -> Result<()> {
        let tenant_id = tenant_id.to_owned();
        write_tx!(self, |tx| {
            if tx
                .exec(sql::RETRY_DELIVERY, args![id, &tenant_id, at])
                .await?
                == 0
            {
                return Err(Error::coded(
                    countersign_proto::ErrorCode::DeliveryPending,
                    "only a finished delivery can be sent again; this one is still pending",
                ));
            }
            Ok(())
        })
    }
}
