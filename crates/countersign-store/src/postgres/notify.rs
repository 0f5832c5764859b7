//! Reviewer notifications on PostgreSQL: what the other operations of this backend still
//! queue, and the fan-out (its rows' claims live in the rows, so it needs nothing more).
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::Result;
use countersign_core::notify::{FanOut, NOTIFY};
use serde_json::Value;
use sqlx::PgConnection;

use super::PgStore;
use super::rows::{ms, pg_error};
use crate::notify::fan_out_rows;
use crate::{NotificationStore, sql};

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

#[async_trait]
impl NotificationStore for PgStore {
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn fan_out(&self, batch: Vec<FanOut>, at: DateTime<Utc>) -> Result<()> {
        fan_out_rows(self, batch, at).await
    }
}
