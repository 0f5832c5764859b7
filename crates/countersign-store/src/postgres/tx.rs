//! PostgreSQL's side of the operations written once for both backends.
use std::ops::DerefMut;
use std::sync::Arc;

use async_trait::async_trait;
use countersign_core::audit::{AuditRecord, ChainedEvent};
use countersign_core::{Error, Result};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres, Row as _, TypeInfo, ValueRef};

use super::PgStore;
use super::Replica;
use super::errors::pg_error;
use crate::db::{AnyResult, Arg, Commit, Db, Dialect, EachRow, ErasedOp, Row, Tx, Value, bad};
use crate::sql;

fn bind<'q>(
    query: Query<'q, Postgres, PgArguments>,
    arg: Arg<'q>,
) -> Query<'q, Postgres, PgArguments> {
    match arg {
        Arg::Text(s) => query.bind(s),
        Arg::Int(n) => query.bind(n),
        Arg::Float(f) => query.bind(f),
        Arg::Bool(b) => query.bind(b),
        Arg::Bytes(b) => query.bind(b),
        Arg::NullText => query.bind(None::<&str>),
        Arg::NullInt => query.bind(None::<i64>),
        Arg::NullFloat => query.bind(None::<f64>),
        Arg::NullBool => query.bind(None::<bool>),
        Arg::NullBytes => query.bind(None::<&[u8]>),
    }
}

impl Row for PgRow {
    fn value(&self, idx: usize) -> Result<Value> {
        let raw = self.try_get_raw(idx).map_err(pg_error)?;
        if raw.is_null() {
            return Ok(Value::Null);
        }
        let info = raw.type_info();
        Ok(match info.name() {
            "INT8" => Value::Int(self.try_get(idx).map_err(pg_error)?),
            "INT4" => Value::Int(i64::from(self.try_get::<i32, _>(idx).map_err(pg_error)?)),
            "INT2" => Value::Int(i64::from(self.try_get::<i16, _>(idx).map_err(pg_error)?)),
            "FLOAT8" => Value::Float(self.try_get(idx).map_err(pg_error)?),
            "FLOAT4" => Value::Float(f64::from(self.try_get::<f32, _>(idx).map_err(pg_error)?)),
            "BOOL" => Value::Bool(self.try_get(idx).map_err(pg_error)?),
            "BYTEA" => Value::Bytes(self.try_get(idx).map_err(pg_error)?),
            "TEXT" | "VARCHAR" | "NAME" | "BPCHAR" => {
                Value::Text(self.try_get(idx).map_err(pg_error)?)
            }
            other => return Err(bad(&format!("column type {other}"))),
        })
    }
}

/// A transaction, or for reads a pooled connection.
pub struct PgTx<C> {
    pub conn: C,
    /// Audit events to append just before the transaction commits; `None` outside a
    /// transaction, where each is appended at once.
    pub deferred: Option<Vec<AuditRecord>>,
    pub replica: Arc<Replica>,
}

impl<C> PgTx<C> {
    fn query<'q>(sql: &'q str, args: &[Arg<'q>]) -> Query<'q, Postgres, PgArguments> {
        args.iter()
            .fold(sqlx::query(sql), |query, arg| bind(query, *arg))
    }
}

#[async_trait]
impl<C: DerefMut<Target = PgConnection> + Send> Tx for PgTx<C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        let sql = sql::pg(sql);
        let done = Self::query(&sql, args)
            .execute(&mut *self.conn)
            .await
            .map_err(pg_error)?;
        Ok(done.rows_affected())
    }

    async fn each(&mut self, sql: &str, args: &[Arg<'_>], each: &mut EachRow<'_>) -> Result<()> {
        let sql = sql::pg(sql);
        let rows = Self::query(&sql, args)
            .fetch_all(&mut *self.conn)
            .await
            .map_err(pg_error)?;
        for row in &rows {
            each(row)?;
        }
        Ok(())
    }

    async fn append_audit(&mut self, record: AuditRecord) -> Result<ChainedEvent> {
        let events = self
            .replica
            .chains
            .append(&mut self.conn, vec![record])
            .await?;
        events
            .into_iter()
            .next()
            .ok_or_else(|| Error::internal_msg("an audit append returned no event"))
    }

    async fn audit(&mut self, record: AuditRecord) -> Result<()> {
        match &mut self.deferred {
            Some(deferred) => deferred.push(record),
            None => {
                self.replica
                    .chains
                    .append(&mut self.conn, vec![record])
                    .await?;
            }
        }
        Ok(())
    }

    async fn hint(&mut self, payload: &str) -> Result<()> {
        super::notify(&mut self.conn, &self.replica.origin, payload).await
    }
}

/// Appends a transaction's audit events, last: the tenant's chain head stays locked only
/// from here to the commit.
async fn append_deferred(ptx: &mut PgTx<&mut PgConnection>) -> Result<()> {
    let records = ptx.deferred.take().unwrap_or_default();
    if !records.is_empty() {
        ptx.replica.chains.append(&mut *ptx.conn, records).await?;
    }
    Ok(())
}

#[async_trait]
impl Db for PgStore {
    async fn reader(&self) -> Result<Box<dyn Tx + '_>> {
        let conn = self.pool.acquire().await.map_err(pg_error)?;
        Ok(Box::new(PgTx {
            conn,
            deferred: None,
            replica: self.replica.clone(),
        }))
    }

    async fn run_erased(&self, commit: Commit, op: ErasedOp) -> AnyResult {
        if commit == Commit::EachStatement {
            let conn = self.pool.acquire().await.map_err(pg_error)?;
            return op(&mut PgTx {
                conn,
                deferred: None,
                replica: self.replica.clone(),
            })
            .await;
        }
        let mut tx = self.begin().await?;
        let mut ptx = PgTx {
            conn: &mut *tx,
            deferred: Some(Vec::new()),
            replica: self.replica.clone(),
        };
        let done = match op(&mut ptx).await {
            Ok(out) => append_deferred(&mut ptx).await.map(|()| out),
            Err(e) => Err(e),
        };
        match done {
            Ok(out) => {
                tx.commit().await.map_err(pg_error)?;
                Ok(out)
            }
            Err(e) => {
                // Release row locks now, not when the pool next uses the connection: the
                // sweeps skip locked rows.
                tx.rollback().await.map_err(pg_error)?;
                Err(e)
            }
        }
    }
}

impl crate::Backend for PgStore {
    fn dialect(&self) -> &'static str {
        "postgres"
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<crate::Change>> {
        Some(self.changes.subscribe())
    }
}
