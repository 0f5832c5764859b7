//! Reviewer notifications on SQLite: what the other operations of this backend still queue,
//! and the fan-out, which releases the in-memory claims of the rows it consumed.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::Result;
use countersign_core::notify::{FanOut, NOTIFY};
use rusqlite::{Connection, params};
use serde_json::Value;

use super::SqliteStore;
use super::rows::{db_error, ms};
use crate::notify::fan_out_rows;
use crate::{NotificationStore, sql};

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

#[async_trait]
impl NotificationStore for SqliteStore {
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn fan_out(&self, batch: Vec<FanOut>, at: DateTime<Utc>) -> Result<()> {
        let ids: Vec<i64> = batch.iter().map(|f| f.notify.id).collect();
        fan_out_rows(self, batch, at).await?;
        // The rows are gone, so their claims go too.
        for id in ids {
            self.release_lease(id);
        }
        Ok(())
    }
}
