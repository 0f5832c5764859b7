//! Reviewer notifications on PostgreSQL: what the other operations of this backend still
//! queue, and the fan-out (its rows' claims live in the rows, so it needs nothing more).
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::Result;
use countersign_core::notify::FanOut;

use super::PgStore;
use crate::NotificationStore;
use crate::notify::fan_out_rows;

#[async_trait]
impl NotificationStore for PgStore {
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn fan_out(&self, batch: Vec<FanOut>, at: DateTime<Utc>) -> Result<()> {
        fan_out_rows(self, batch, at).await
    }
}
