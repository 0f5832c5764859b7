//! What SQLite does its own way for OpenID: outbox claims.
use async_trait::async_trait;
use countersign_core::Result;
use countersign_core::oidc::{OutboxItem, OutboxOutcome};

use super::SqliteStore;
use super::errors::ms;
use super::tx::SqliteTx;
use crate::db::{Tx, run_in_place};
use crate::oidc::{OUTBOX_ITEM_COLUMNS, finish_outbox_row};
use crate::rows::outbox_item;
use crate::{OidcStore, OutboxClaim};

#[async_trait]
impl OidcStore for SqliteStore {
    /// Claims due rows without a write: the lease lives in memory (see `Inner`), so the
    /// first delivery attempt waits for no commit.
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn claim_outbox(&self, claim: OutboxClaim) -> Result<Vec<OutboxItem>> {
        let mut leases = self.inner.outbox_leases.lock();
        leases.retain(|_, until| *until > ms(claim.now));
        let window = i64::from(claim.limit) + leases.len() as i64;
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
            args![claim.now, window, claim.rows.changes()],
            outbox_item,
        ))?;
        let claimed: Vec<OutboxItem> = due
            .into_iter()
            .filter(|item| !leases.contains_key(&item.id))
            .take(claim.limit as usize)
            .map(|item| OutboxItem {
                // The attempt is counted when it finishes.
                attempts: item.attempts + 1,
                ..item
            })
            .collect();
        for item in &claimed {
            leases.insert(item.id, ms(claim.lease_until));
        }
        Ok(claimed)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(id = %id))]
    async fn finish_outbox(&self, id: i64, outcome: OutboxOutcome) -> Result<()> {
        let finished = write_tx!(self, |tx| { finish_outbox_row(tx, id, outcome, 1).await });
        // Once the outcome is durable the row needs no lease (a retry is due by its time);
        // if it is not, the lease keeps the row from being retried at once.
        if finished.is_ok() {
            self.release_lease(id);
        }
        finished
    }
}
