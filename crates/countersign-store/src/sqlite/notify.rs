//! Reviewer notifications on SQLite: what the other operations of this backend still queue,
//! and the fan-out, which releases the in-memory claims of the rows it consumed.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::Result;
use countersign_core::notify::FanOut;

use super::SqliteStore;
use crate::NotificationStore;
use crate::notify::fan_out_rows;

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
