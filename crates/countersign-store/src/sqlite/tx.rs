//! SQLite's side of the operations written once for both backends.
use std::ops::DerefMut;

use async_trait::async_trait;
use countersign_core::audit::{AuditRecord, ChainedEvent};
use countersign_core::{Error, Result};
use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};

use super::SqliteStore;
use super::errors::db_error;
use crate::db::{
    AnyResult, Arg, Commit, Db, Dialect, EachRow, ErasedOp, Row, Tx, Value, run_in_place,
};

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Arg::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Arg::Int(n) => ToSqlOutput::Owned(SqlValue::Integer(n)),
            Arg::Float(f) => ToSqlOutput::Owned(SqlValue::Real(f)),
            Arg::Bool(b) => ToSqlOutput::Owned(SqlValue::Integer(i64::from(b))),
            Arg::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Arg::NullText | Arg::NullInt | Arg::NullFloat | Arg::NullBool | Arg::NullBytes => {
                ToSqlOutput::Owned(SqlValue::Null)
            }
        })
    }
}

impl Row for rusqlite::Row<'_> {
    fn value(&self, idx: usize) -> Result<Value> {
        Ok(match self.get_ref(idx).map_err(db_error)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(n) => Value::Int(n),
            ValueRef::Real(f) => Value::Float(f),
            ValueRef::Text(t) => Value::Text(
                std::str::from_utf8(t)
                    .map_err(|_| Error::internal_msg("stored text is not UTF-8"))?
                    .to_owned(),
            ),
            ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
        })
    }
}

/// A connection: the writer's, inside the group transaction, or a reader's. Every statement
/// completes in place, so a write runs on the writer's thread without an executor.
pub struct SqliteTx<C> {
    pub conn: C,
}

#[async_trait]
impl<C: DerefMut<Target = Connection> + Send> Tx for SqliteTx<C> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        let changed = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute(rusqlite::params_from_iter(args)))
            .map_err(db_error)?;
        Ok(changed as u64)
    }

    async fn each(&mut self, sql: &str, args: &[Arg<'_>], each: &mut EachRow<'_>) -> Result<()> {
        let mut statement = self.conn.prepare_cached(sql).map_err(db_error)?;
        let mut rows = statement
            .query(rusqlite::params_from_iter(args))
            .map_err(db_error)?;
        while let Some(row) = rows.next().map_err(db_error)? {
            each(row)?;
        }
        Ok(())
    }

    async fn append_audit(&mut self, record: AuditRecord) -> Result<ChainedEvent> {
        super::append_audit(&self.conn, record)
    }

    async fn audit(&mut self, record: AuditRecord) -> Result<()> {
        super::append_audit(&self.conn, record).map(|_| ())
    }

    async fn hint(&mut self, _payload: &str) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl Db for SqliteStore {
    async fn reader(&self) -> Result<Box<dyn Tx + '_>> {
        Ok(Box::new(SqliteTx {
            conn: self.reader_connection(),
        }))
    }

    /// Every change runs in the writer's group commit: writes are serial there, so a change
    /// is as cheap as it gets whichever way it asks to commit.
    async fn run_erased(&self, _commit: Commit, op: ErasedOp) -> AnyResult {
        self.write(move |conn| run_in_place(op(&mut SqliteTx { conn })))
            .await
    }
}

impl crate::Backend for SqliteStore {
    fn dialect(&self) -> &'static str {
        "sqlite"
    }

    /// One process owns a SQLite store, so it wakes its own waiters.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<crate::Change>> {
        None
    }
}
