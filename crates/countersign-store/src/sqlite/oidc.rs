//! What SQLite does its own way for OpenID: token polls and outbox claims.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::Result;
use countersign_core::oidc::{OutboxItem, OutboxOutcome, PollRecord, PollSeen};

use super::SqliteStore;
use super::errors::ms;
use super::tx::SqliteTx;
use crate::db::{Tx, run_in_place, write};
use crate::oidc::{OUTBOX_ITEM_COLUMNS, finish_outbox_row, outbox_item, record_poll};
use crate::{OidcStore, OutboxRows};

#[async_trait]
impl OidcStore for SqliteStore {
    /// In the writer: writes are serial here, so a second attempt, on what is stored, always
    /// lands.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(approval_id = %approval_id))]
    async fn record_oidc_poll(
        &self,
        approval_id: &str,
        seen: PollSeen,
        at: DateTime<Utc>,
    ) -> Result<PollRecord> {
        let approval_id = approval_id.to_owned();
        write(self, move |tx| {
            Box::pin(async move { record_poll(tx, &approval_id, seen, at).await })
        })
        .await
    }

    /// Claims due rows without a write: the lease lives in memory (see `Inner`), so the
    /// first delivery attempt waits for no commit.
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn claim_outbox(
        &self,
        rows: OutboxRows,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxItem>> {
        let mut leases = self.inner.outbox_leases.lock();
        leases.retain(|_, until| *until > ms(now));
        let window = i64::from(limit) + leases.len() as i64;
        let sql = format!(
            "SELECT {OUTBOX_ITEM_COLUMNS} FROM outbox \
             WHERE state = 'pending' AND next_attempt_at <= ?1 AND (channel = 'notify') = ?3 \
             ORDER BY next_attempt_at LIMIT ?2"
        );
        // Read in place, under the lease lock, so two claims never take the same row.
        let mut reader = SqliteTx {
            conn: self.reader_connection(),
        };
        let due = run_in_place((&mut reader as &mut dyn Tx).all(
            &sql,
            args![now, window, rows.changes()],
            outbox_item,
        ))?;
        let claimed: Vec<OutboxItem> = due
            .into_iter()
            .filter(|item| !leases.contains_key(&item.id))
            .take(limit as usize)
            .map(|item| OutboxItem {
                // The attempt is counted when it finishes.
                attempts: item.attempts + 1,
                ..item
            })
            .collect();
        for item in &claimed {
            leases.insert(item.id, ms(lease_until));
        }
        Ok(claimed)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(id = %id))]
    async fn finish_outbox(&self, id: i64, outcome: OutboxOutcome) -> Result<()> {
        let finished = write(self, move |tx| {
            Box::pin(async move { finish_outbox_row(tx, id, outcome, 1).await })
        })
        .await;
        // Once the outcome is durable the row needs no lease (a retry is due by its time);
        // if it is not, the lease keeps the row from being retried at once.
        if finished.is_ok() {
            self.release_lease(id);
        }
        finished
    }
}
