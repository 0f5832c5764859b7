//! Reviewer notifications on PostgreSQL: channel settings, preferences, webhook endpoints,
//! push subscriptions, review tokens, and the outbox's fan-out and delivery log.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::audit::Actor;
use countersign_core::directory::User;
use countersign_core::notify::{
    Delivery, FanOut, NOTIFY, NewDelivery, Preferences, PushSubscription, ReviewToken,
    WebhookEndpoint,
};
use countersign_core::oidc::OutboxItem;
use countersign_core::{Error, Result};
use serde_json::Value;
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use super::rows::{self, USER_COLUMNS, get, ms, opt_time, pg_error, time};
use super::{PgStore, append_audit, not_found};
use crate::audit_records;
use crate::records::{DELIVERY_COLUMNS, PREFERENCE_COLUMNS, PUSH_COLUMNS, WEBHOOK_COLUMNS};
use crate::sql;
use crate::{ChannelRecord, NotificationStore};

/// Puts a `notify` row for a state change of a request, inside the change's transaction.
pub(super) async fn enqueue_notification(
    conn: &mut PgConnection,
    approval_id: &str,
    event: &str,
    payload: Option<&Value>,
    at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(&sql::pg(sql::ENQUEUE_NOTIFICATION))
        .bind(approval_id)
        .bind(NOTIFY)
        .bind(event)
        .bind(payload.map(Value::to_string))
        .bind(ms(at))
        .execute(conn)
        .await
        .map_err(pg_error)?;
    Ok(())
}

fn json_text(row: &PgRow, idx: usize) -> Result<Option<Value>> {
    get::<Option<String>>(row, idx)?
        .map(|t| serde_json::from_str(&t).map_err(Error::internal))
        .transpose()
}

fn delivery(row: &PgRow) -> Result<Delivery> {
    Ok(Delivery {
        id: get(row, 0)?,
        tenant_id: get(row, 1)?,
        approval_id: get(row, 2)?,
        channel: get(row, 3)?,
        target: get(row, 4)?,
        recipient: get(row, 5)?,
        event: get(row, 6)?,
        state: get(row, 7)?,
        attempts: get(row, 8)?,
        created_at: time(row, 9)?,
        next_attempt_at: time(row, 10)?,
        delivered_at: opt_time(row, 11)?,
        last_error: get(row, 12)?,
        status_code: get(row, 13)?,
        external_ref: get(row, 14)?,
        payload: json_text(row, 15)?,
    })
}

fn preferences(row: &PgRow) -> Result<Preferences> {
    Ok(Preferences {
        tenant_id: get(row, 0)?,
        user_id: get(row, 1)?,
        email: get(row, 2)?,
        slack: get(row, 3)?,
        push: get(row, 4)?,
        slack_user_id: get(row, 5)?,
        updated_at: time(row, 6)?,
    })
}

fn webhook(row: &PgRow) -> Result<WebhookEndpoint> {
    let events: String = get(row, 3)?;
    Ok(WebhookEndpoint {
        id: get(row, 0)?,
        tenant_id: get(row, 1)?,
        url: get(row, 2)?,
        events: serde_json::from_str(&events).map_err(Error::internal)?,
        secret: get(row, 4)?,
        description: get(row, 5)?,
        disabled_at: opt_time(row, 6)?,
        disabled_reason: get(row, 7)?,
        created_at: time(row, 8)?,
        updated_at: time(row, 9)?,
    })
}

fn push(row: &PgRow) -> Result<PushSubscription> {
    Ok(PushSubscription {
        id: get(row, 0)?,
        tenant_id: get(row, 1)?,
        user_id: get(row, 2)?,
        endpoint: get(row, 3)?,
        p256dh: get(row, 4)?,
        auth: get(row, 5)?,
        user_agent: get(row, 6)?,
        created_at: time(row, 7)?,
    })
}

async fn webhook_in_tx(
    conn: &mut PgConnection,
    tenant_id: &str,
    id: &str,
) -> Result<Option<WebhookEndpoint>> {
    sqlx::query(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(pg_error)?
    .as_ref()
    .map(webhook)
    .transpose()
}

#[async_trait]
impl NotificationStore for PgStore {
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn channel_configs(&self, tenant_id: &str) -> Result<Vec<ChannelRecord>> {
        sqlx::query(&sql::pg(sql::CHANNELS))
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await
            .map_err(pg_error)?
            .iter()
            .map(|r| {
                Ok(ChannelRecord {
                    channel: get(r, 0)?,
                    config: json_text(r, 1)?.unwrap_or(Value::Null),
                    updated_at: time(r, 2)?,
                })
            })
            .collect()
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
        let mut tx = self.begin().await?;
        let (upsert, delete) = (sql::pg(sql::UPSERT_CHANNEL), sql::pg(sql::DELETE_CHANNEL));
        let changed = match &config {
            Some(config) => sqlx::query(&upsert)
                .bind(tenant_id)
                .bind(channel)
                .bind(config.to_string())
                .bind(ms(at)),
            None => sqlx::query(&delete).bind(tenant_id).bind(channel),
        }
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?
        .rows_affected();
        if changed > 0 {
            append_audit(
                &mut tx,
                audit_records::channel(tenant_id, channel, config.is_some(), &actor, at),
            )
            .await?;
        }
        tx.commit().await.map_err(pg_error)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_preferences(&self, tenant_id: &str) -> Result<Vec<Preferences>> {
        sqlx::query(&format!(
            "SELECT {PREFERENCE_COLUMNS} FROM notification_preferences WHERE tenant_id = $1"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?
        .iter()
        .map(preferences)
        .collect()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, user_id = %user_id))]
    async fn get_preferences(&self, tenant_id: &str, user_id: &str) -> Result<Option<Preferences>> {
        sqlx::query(&format!(
            "SELECT {PREFERENCE_COLUMNS} FROM notification_preferences WHERE tenant_id = $1 AND user_id = $2"
        ))
        .bind(tenant_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?
        .as_ref()
        .map(preferences)
        .transpose()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %prefs.tenant_id))]
    async fn put_preferences(&self, prefs: Preferences, actor: Actor) -> Result<Preferences> {
        let mut tx = self.begin().await?;
        let exists: bool = sqlx::query_scalar(&sql::pg(sql::USER_EXISTS))
            .bind(&prefs.tenant_id)
            .bind(&prefs.user_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(pg_error)?;
        if !exists {
            return Err(not_found("user"));
        }
        sqlx::query(&format!(
            "INSERT INTO notification_preferences ({PREFERENCE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, slack = excluded.slack, push = excluded.push, \
             slack_user_id = excluded.slack_user_id, updated_at = excluded.updated_at"
        ))
        .bind(&prefs.tenant_id)
        .bind(&prefs.user_id)
        .bind(prefs.email)
        .bind(prefs.slack)
        .bind(prefs.push)
        .bind(&prefs.slack_user_id)
        .bind(ms(prefs.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| match pg_error(e) {
            Error::AlreadyExists(_) => crate::records::slack_id_taken(),
            other => other,
        })?;
        append_audit(&mut tx, audit_records::preferences(&prefs, &actor)).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(prefs)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn find_user_by_slack_id(
        &self,
        tenant_id: &str,
        slack_user_id: &str,
    ) -> Result<Option<User>> {
        let columns = USER_COLUMNS
            .split(", ")
            .map(|c| format!("u.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        sqlx::query(&format!(
            "SELECT {columns} FROM notification_preferences p JOIN users u ON u.id = p.user_id \
             WHERE p.tenant_id = $1 AND p.slack_user_id = $2 AND NOT u.disabled"
        ))
        .bind(tenant_id)
        .bind(slack_user_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?
        .as_ref()
        .map(rows::user)
        .transpose()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %endpoint.tenant_id))]
    async fn create_webhook(
        &self,
        endpoint: WebhookEndpoint,
        actor: Actor,
    ) -> Result<WebhookEndpoint> {
        let mut tx = self.begin().await?;
        let events = serde_json::to_string(&endpoint.events).map_err(Error::internal)?;
        sqlx::query(&format!(
            "INSERT INTO webhook_endpoints ({WEBHOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(&endpoint.id)
        .bind(&endpoint.tenant_id)
        .bind(&endpoint.url)
        .bind(events)
        .bind(&endpoint.secret)
        .bind(&endpoint.description)
        .bind(endpoint.disabled_at.map(ms))
        .bind(&endpoint.disabled_reason)
        .bind(ms(endpoint.created_at))
        .bind(ms(endpoint.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        append_audit(
            &mut tx,
            audit_records::webhook(&endpoint, "webhook.created", &actor),
        )
        .await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(endpoint)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_webhooks(&self, tenant_id: &str) -> Result<Vec<WebhookEndpoint>> {
        sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 ORDER BY id"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?
        .iter()
        .map(webhook)
        .collect()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn get_webhook(&self, tenant_id: &str, id: &str) -> Result<Option<WebhookEndpoint>> {
        let mut conn = self.pool.acquire().await.map_err(pg_error)?;
        webhook_in_tx(&mut conn, tenant_id, id).await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %endpoint.tenant_id))]
    async fn update_webhook(
        &self,
        endpoint: WebhookEndpoint,
        action: &str,
        actor: Actor,
    ) -> Result<WebhookEndpoint> {
        let mut tx = self.begin().await?;
        let events = serde_json::to_string(&endpoint.events).map_err(Error::internal)?;
        let changed = sqlx::query(&sql::pg(sql::UPDATE_WEBHOOK))
            .bind(&endpoint.tenant_id)
            .bind(&endpoint.id)
            .bind(&endpoint.url)
            .bind(events)
            .bind(&endpoint.secret)
            .bind(&endpoint.description)
            .bind(endpoint.disabled_at.map(ms))
            .bind(&endpoint.disabled_reason)
            .bind(ms(endpoint.updated_at))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?
            .rows_affected();
        if changed == 0 {
            return Err(not_found("webhook endpoint"));
        }
        append_audit(&mut tx, audit_records::webhook(&endpoint, action, &actor)).await?;
        let stored = webhook_in_tx(&mut tx, &endpoint.tenant_id, &endpoint.id)
            .await?
            .ok_or_else(|| not_found("webhook endpoint"))?;
        tx.commit().await.map_err(pg_error)?;
        Ok(stored)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn delete_webhook(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let Some(mut endpoint) = webhook_in_tx(&mut tx, tenant_id, id).await? else {
            return Err(not_found("webhook endpoint"));
        };
        sqlx::query(&sql::pg(sql::DELETE_WEBHOOK))
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        // Deliveries still waiting for it have nowhere to go.
        sqlx::query(&sql::pg(sql::FAIL_DELETED_WEBHOOK_DELIVERIES))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        endpoint.updated_at = at;
        append_audit(
            &mut tx,
            audit_records::webhook(&endpoint, "webhook.deleted", &actor),
        )
        .await?;
        tx.commit().await.map_err(pg_error)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %sub.tenant_id))]
    async fn put_push_subscription(&self, sub: PushSubscription, actor: Actor) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(&sql::pg(sql::DELETE_PUSH_SUBSCRIPTION_BY_ENDPOINT))
            .bind(&sub.endpoint)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        sqlx::query(&format!(
            "INSERT INTO push_subscriptions ({PUSH_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&sub.id)
        .bind(&sub.tenant_id)
        .bind(&sub.user_id)
        .bind(&sub.endpoint)
        .bind(&sub.p256dh)
        .bind(&sub.auth)
        .bind(&sub.user_agent)
        .bind(ms(sub.created_at))
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        append_audit(
            &mut tx,
            audit_records::push_subscription_created(&sub, &actor),
        )
        .await?;
        tx.commit().await.map_err(pg_error)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_push_subscriptions(&self, tenant_id: &str) -> Result<Vec<PushSubscription>> {
        sqlx::query(&format!(
            "SELECT {PUSH_COLUMNS} FROM push_subscriptions WHERE tenant_id = $1 ORDER BY id"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?
        .iter()
        .map(push)
        .collect()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(id = %id))]
    async fn get_push_subscription(&self, id: &str) -> Result<Option<PushSubscription>> {
        sqlx::query(&format!(
            "SELECT {PUSH_COLUMNS} FROM push_subscriptions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?
        .as_ref()
        .map(push)
        .transpose()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn delete_push_subscription(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let n = sqlx::query(&sql::pg(sql::DELETE_PUSH_SUBSCRIPTION))
            .bind(tenant_id)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(pg_error)?
            .rows_affected();
        Ok(n > 0)
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn find_review_token(&self, token_hash: &str) -> Result<Option<ReviewToken>> {
        sqlx::query(&sql::pg(sql::REVIEW_TOKEN))
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?
            .as_ref()
            .map(|r| {
                Ok(ReviewToken {
                    token_hash: get(r, 0)?,
                    tenant_id: get(r, 1)?,
                    approval_id: get(r, 2)?,
                    user_id: get(r, 3)?,
                    expires_at: time(r, 4)?,
                    created_at: time(r, 5)?,
                })
            })
            .transpose()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(approval_id = %approval_id))]
    async fn list_reviewers(&self, approval_id: &str) -> Result<Vec<(String, DateTime<Utc>)>> {
        sqlx::query(&sql::pg(sql::REVIEWERS))
            .bind(approval_id)
            .fetch_all(&self.pool)
            .await
            .map_err(pg_error)?
            .iter()
            .map(|r| Ok((get(r, 0)?, time(r, 1)?)))
            .collect()
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn fan_out(&self, batch: Vec<FanOut>, at: DateTime<Utc>) -> Result<()> {
        let mut tx = self.begin().await?;
        for f in &batch {
            fan_out_one(&mut tx, &f.notify, &f.deliveries, &f.tokens, at).await?;
        }
        tx.commit().await.map_err(pg_error)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, approval_id = %approval_id))]
    async fn list_deliveries(&self, tenant_id: &str, approval_id: &str) -> Result<Vec<Delivery>> {
        sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM outbox WHERE approval_id = $1 AND tenant_id = $2 \
             AND channel IN ('email', 'slack', 'teams', 'webhook', 'push') ORDER BY id"
        ))
        .bind(approval_id)
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?
        .iter()
        .map(delivery)
        .collect()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn webhook_deliveries(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM outbox WHERE recipient = $1 AND tenant_id = $2 AND channel = 'webhook' \
             AND ($3::BIGINT IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
        ))
        .bind(endpoint_id)
        .bind(tenant_id)
        .bind(before_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?
        .iter()
        .map(delivery)
        .collect()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn get_delivery(&self, tenant_id: &str, id: i64) -> Result<Option<Delivery>> {
        sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM outbox WHERE id = $1 AND tenant_id = $2 AND channel <> 'notify'"
        ))
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?
        .as_ref()
        .map(delivery)
        .transpose()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn redeliver(&self, tenant_id: &str, id: i64, at: DateTime<Utc>) -> Result<()> {
        let changed = sqlx::query(&sql::pg(sql::RETRY_DELIVERY))
            .bind(id)
            .bind(tenant_id)
            .bind(ms(at))
            .execute(&self.pool)
            .await
            .map_err(pg_error)?
            .rows_affected();
        if changed == 0 {
            return Err(Error::invalid_with(
                countersign_proto::ErrorCode::DeliveryPending,
                "only a finished delivery can be sent again; this one is still pending",
            ));
        }
        Ok(())
    }
}

/// One `notify` row's deliveries and tokens, and the row marked done, in the caller's
/// transaction.
async fn fan_out_one(
    tx: &mut PgConnection,
    notify: &OutboxItem,
    deliveries: &[NewDelivery],
    tokens: &[ReviewToken],
    at: DateTime<Utc>,
) -> Result<()> {
    for d in deliveries {
        sqlx::query(&sql::pg(sql::ENQUEUE_DELIVERY))
            .bind(&notify.tenant_id)
            .bind(&notify.approval_id)
            .bind(d.channel)
            .bind(&d.target)
            .bind(&d.recipient)
            .bind(d.event.as_str())
            .bind(d.payload.as_ref().map(Value::to_string))
            .bind(&d.dedupe_key)
            .bind(ms(at))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
    }
    for t in tokens {
        sqlx::query(&sql::pg(sql::INSERT_REVIEW_TOKEN))
            .bind(&t.token_hash)
            .bind(&t.tenant_id)
            .bind(&t.approval_id)
            .bind(&t.user_id)
            .bind(ms(t.expires_at))
            .bind(ms(t.created_at))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
    }
    // Done: the row has become its deliveries, so it goes.
    sqlx::query(&sql::pg(sql::DELETE_NOTIFY_JOB))
        .bind(notify.id)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
    Ok(())
}
