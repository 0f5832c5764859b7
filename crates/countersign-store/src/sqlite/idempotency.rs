//! Answers remembered under an `Idempotency-Key`, on SQLite.
use chrono::{DateTime, Utc};
use countersign_core::Result;
use countersign_core::idempotency::{self, StoredAnswer};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqliteStore;
use super::rows::{db_error, ms, time};
use crate::sql;

fn answer(row: &Row) -> rusqlite::Result<StoredAnswer> {
    Ok(StoredAnswer {
        tenant_id: row.get(0)?,
        owner: row.get(1)?,
        key_hash: row.get(2)?,
        fingerprint: row.get(3)?,
        status: row.get(4)?,
        answer: row.get(5)?,
        created_at: time(row, 6)?,
        expires_at: time(row, 7)?,
    })
}

/// Remembers an answer inside the caller's transaction. A key whose answer has expired is
/// taken over; a live one makes this fail with `idempotency_key_in_use`, which rolls back
/// whatever the transaction created.
pub(super) fn insert_answer(c: &Connection, a: &StoredAnswer) -> Result<()> {
    let inserted = c
        .prepare_cached(&sql::insert_answer())
        .and_then(|mut s| {
            s.execute(params![
                a.tenant_id,
                a.owner,
                a.key_hash,
                a.fingerprint,
                a.status,
                a.answer,
                ms(a.created_at),
                ms(a.expires_at),
            ])
        })
        .map_err(db_error)?;
    if inserted == 1 {
        Ok(())
    } else {
        Err(idempotency::key_in_use())
    }
}

impl SqliteStore {
    pub(super) async fn idempotent_answer(
        &self,
        tenant_id: &str,
        owner: &str,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<StoredAnswer>> {
        self.read(|c| {
            c.prepare_cached(&sql::live_answer())?
                .query_row(params![tenant_id, owner, key_hash, ms(now)], answer)
                .optional()
        })
    }

    pub(super) async fn remember_answer(&self, answer: StoredAnswer) -> Result<()> {
        self.write(move |c| insert_answer(c, &answer)).await
    }

    pub(super) async fn forget_expired_answers(&self, now: DateTime<Utc>) -> Result<u64> {
        self.write(move |c| {
            c.prepare_cached(sql::FORGET_EXPIRED_ANSWERS)
                .and_then(|mut s| s.execute([ms(now)]))
                .map(|n| n as u64)
                .map_err(db_error)
        })
        .await
    }
}
