//! What PostgreSQL does its own way for OpenID: token polls and outbox claims.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::Result;
use countersign_core::oidc::{OutboxItem, OutboxOutcome, PollRecord, PollSeen};

use super::PgStore;
use crate::db::Db;
use crate::oidc::{OUTBOX_ITEM_COLUMNS, finish_outbox_row, outbox_item, record_poll};
use crate::{OidcStore, OutboxRows};

#[async_trait]
impl OidcStore for PgStore {
    /// Outside a transaction: each statement commits on its own, so the usual poll is one
    /// statement; polls from other replicas that land first make it read again.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(approval_id = %approval_id))]
    async fn record_oidc_poll(
        &self,
        approval_id: &str,
        seen: PollSeen,
        at: DateTime<Utc>,
    ) -> Result<PollRecord> {
        let mut conn = self.reader().await?;
        record_poll(&mut *conn, approval_id, seen, at).await
    }

    /// Rows another replica is claiming are skipped, not waited for; the claim counts the
    /// attempt and writes the lease in one statement.
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn claim_outbox(
        &self,
        rows: OutboxRows,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxItem>> {
        let sql = format!(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2 WHERE id IN \
             (SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?1 \
              AND (channel = 'notify') = ?4 ORDER BY next_attempt_at LIMIT ?3 FOR UPDATE SKIP LOCKED) \
             RETURNING {OUTBOX_ITEM_COLUMNS}"
        );
        let values = args![now, lease_until, i64::from(limit), rows.changes()];
        self.reader().await?.all(&sql, values, outbox_item).await
    }

    /// The claim already counted the attempt.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(id = %id))]
    async fn finish_outbox(&self, id: i64, outcome: OutboxOutcome) -> Result<()> {
        finish_outbox_row(&mut *self.reader().await?, id, outcome, 0).await
    }
}
