//! Answers remembered under an `Idempotency-Key`, on PostgreSQL.
use chrono::{DateTime, Utc};
use countersign_core::idempotency::{self, StoredAnswer};
use countersign_core::{Error, Result};
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use super::PgStore;
use super::rows::{get, ms, pg_error, time};
use crate::sql;

fn answer(row: &PgRow) -> Result<StoredAnswer> {
    let status: i32 = get(row, 4)?;
    Ok(StoredAnswer {
        tenant_id: get(row, 0)?,
        owner: get(row, 1)?,
        key_hash: get(row, 2)?,
        fingerprint: get(row, 3)?,
        status: u16::try_from(status).map_err(Error::internal)?,
        answer: get(row, 5)?,
        created_at: time(row, 6)?,
        expires_at: time(row, 7)?,
    })
}

/// Remembers an answer inside the caller's transaction. A key whose answer has expired is
/// taken over; a live one makes this fail with `idempotency_key_in_use`, which rolls back
/// whatever the transaction created. (A concurrent insert of the same key waits for the
/// first transaction and then sees its row.)
pub(super) async fn insert_answer(conn: &mut PgConnection, a: &StoredAnswer) -> Result<()> {
    let inserted = sqlx::query(&sql::pg(&sql::insert_answer()))
        .bind(&a.tenant_id)
        .bind(&a.owner)
        .bind(&a.key_hash)
        .bind(&a.fingerprint)
        .bind(i32::from(a.status))
        .bind(&a.answer)
        .bind(ms(a.created_at))
        .bind(ms(a.expires_at))
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?
        .rows_affected();
    if inserted == 1 {
        Ok(())
    } else {
        Err(idempotency::key_in_use())
    }
}

impl PgStore {
    pub(super) async fn idempotent_answer(
        &self,
        tenant_id: &str,
        owner: &str,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<StoredAnswer>> {
        sqlx::query(&sql::pg(&sql::live_answer()))
            .bind(tenant_id)
            .bind(owner)
            .bind(key_hash)
            .bind(ms(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?
            .map(|r| answer(&r))
            .transpose()
    }

    pub(super) async fn remember_answer(&self, answer: StoredAnswer) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_answer(&mut tx, &answer).await?;
        tx.commit().await.map_err(pg_error)
    }

    pub(super) async fn forget_expired_answers(&self, now: DateTime<Utc>) -> Result<u64> {
        Ok(sqlx::query(&sql::pg(sql::FORGET_EXPIRED_ANSWERS))
            .bind(ms(now))
            .execute(&self.pool)
            .await
            .map_err(pg_error)?
            .rows_affected())
    }
}
