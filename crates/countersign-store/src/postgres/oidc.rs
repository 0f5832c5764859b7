//! What PostgreSQL does its own way for OpenID: outbox claims.
use async_trait::async_trait;
use countersign_core::Result;
use countersign_core::oidc::{OutboxItem, OutboxOutcome};

use super::PgStore;
use crate::db::{Commit, run};
use crate::oidc::{OUTBOX_ITEM_COLUMNS, finish_outbox_row};
use crate::rows::outbox_item;
use crate::{OidcStore, OutboxClaim};

#[async_trait]
impl OidcStore for PgStore {
    /// Rows another replica is claiming are skipped, not waited for; the claim counts the
    /// attempt and writes the lease in one statement.
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn claim_outbox(&self, claim: OutboxClaim) -> Result<Vec<OutboxItem>> {
        let sql = format!(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2 WHERE id IN \
             (SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?1 \
              AND (channel = 'notify') = ?4 ORDER BY next_attempt_at LIMIT ?3 FOR UPDATE SKIP LOCKED) \
             RETURNING {OUTBOX_ITEM_COLUMNS}"
        );
        run(self, Commit::EachStatement, move |tx| {
            Box::pin(async move {
                let c = claim;
                let values = args![c.now, c.lease_until, c.limit, c.rows.changes()];
                tx.all(&sql, values, outbox_item).await
            })
        })
        .await
    }

    /// The claim already counted the attempt.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(id = %id))]
    async fn finish_outbox(&self, id: i64, outcome: OutboxOutcome) -> Result<()> {
        run(self, Commit::EachStatement, move |tx| {
            Box::pin(async move { finish_outbox_row(tx, id, outcome, 0).await })
        })
        .await
    }
}
