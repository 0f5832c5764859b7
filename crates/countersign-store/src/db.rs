//! What both backends offer the operations written once for both: a transaction that runs
//! statements ([`Tx`]), rows read by column ([`Row`]), and a store that runs an operation for
//! reading or inside a durable write ([`Db`]).
//!
//! Statements are written with SQLite's `?N` placeholders; the PostgreSQL transaction renders
//! them as `$N`. Booleans are bound as parameters or written `TRUE`/`FALSE`, which both
//! dialects read alike. Where the dialects really differ (row locks, outbox claims, change
//! hints) a `Tx` method or [`Dialect`] says so.
use std::any::Any;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::audit::{AuditRecord, ChainedEvent};
use countersign_core::clock::from_millis;
use countersign_core::{Error, Result};
use futures::future::BoxFuture;

/// Which SQL the transaction speaks, for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Locks the rows a `SELECT` reads until the transaction ends. SQLite's single writer
    /// already serialises every write, so it needs no lock.
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// Claims the rows a `SELECT` reads, skipping those another replica holds, so that every
    /// replica may run the same sweep at once.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }
}

/// A bind parameter. A `NULL` carries its type, because PostgreSQL is told each
/// parameter's type.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Text(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    Bytes(&'a [u8]),
    NullText,
    NullInt,
    NullFloat,
    NullBool,
    NullBytes,
}

/// A Rust value bound as a parameter.
pub trait ToArg<'a> {
    /// The `NULL` of this type.
    const NULL: Arg<'static>;
    fn to_arg(self) -> Arg<'a>;
}

impl<'a> ToArg<'a> for &'a str {
    const NULL: Arg<'static> = Arg::NullText;
    fn to_arg(self) -> Arg<'a> {
        Arg::Text(self)
    }
}

impl<'a> ToArg<'a> for &'a String {
    const NULL: Arg<'static> = Arg::NullText;
    fn to_arg(self) -> Arg<'a> {
        Arg::Text(self)
    }
}

impl<'a> ToArg<'a> for &'a [u8] {
    const NULL: Arg<'static> = Arg::NullBytes;
    fn to_arg(self) -> Arg<'a> {
        Arg::Bytes(self)
    }
}

impl<'a> ToArg<'a> for &'a Vec<u8> {
    const NULL: Arg<'static> = Arg::NullBytes;
    fn to_arg(self) -> Arg<'a> {
        Arg::Bytes(self)
    }
}

/// Integers are bound as 64-bit.
macro_rules! int_args {
    ($($t:ty),*) => {$(
        impl<'a> ToArg<'a> for $t {
            const NULL: Arg<'static> = Arg::NullInt;
            fn to_arg(self) -> Arg<'a> {
                Arg::Int(i64::from(self))
            }
        }
    )*};
}

int_args!(i64, i32, u16, u32);

impl<'a> ToArg<'a> for f64 {
    const NULL: Arg<'static> = Arg::NullFloat;
    fn to_arg(self) -> Arg<'a> {
        Arg::Float(self)
    }
}

impl<'a> ToArg<'a> for bool {
    const NULL: Arg<'static> = Arg::NullBool;
    fn to_arg(self) -> Arg<'a> {
        Arg::Bool(self)
    }
}

/// Times are stored as milliseconds since the epoch.
impl<'a> ToArg<'a> for DateTime<Utc> {
    const NULL: Arg<'static> = Arg::NullInt;
    fn to_arg(self) -> Arg<'a> {
        Arg::Int(self.timestamp_millis())
    }
}

impl<'a, T: ToArg<'a>> ToArg<'a> for Option<T> {
    const NULL: Arg<'static> = T::NULL;
    fn to_arg(self) -> Arg<'a> {
        self.map_or(T::NULL, ToArg::to_arg)
    }
}

impl<'a, T> ToArg<'a> for &'a Option<T>
where
    &'a T: ToArg<'a>,
{
    const NULL: Arg<'static> = <&'a T>::NULL;
    fn to_arg(self) -> Arg<'a> {
        self.as_ref().to_arg()
    }
}

/// The bind parameters of a statement, in order.
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        &[$($crate::db::ToArg::to_arg($arg)),*]
    };
}

/// A column's value as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Bool(bool),
}

/// A row of a result, read by column index.
pub trait Row {
    fn value(&self, idx: usize) -> Result<Value>;
}

/// A Rust value read from a column.
pub trait FromValue: Sized {
    fn from_value(value: Value) -> Option<Self>;
}

impl FromValue for String {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

impl FromValue for i64 {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Int(n) => Some(n),
            _ => None,
        }
    }
}

/// Narrower integers refuse a stored value out of their range.
macro_rules! int_values {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(value: Value) -> Option<Self> {
                i64::from_value(value).and_then(|n| <$t>::try_from(n).ok())
            }
        }
    )*};
}

int_values!(i32, u16, u32);

impl FromValue for f64 {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Float(f) => Some(f),
            // SQLite keeps a REAL that is a whole number as an integer.
            Value::Int(n) => Some(n as f64),
            _ => None,
        }
    }
}

/// SQLite stores booleans as 0 and 1.
impl FromValue for bool {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Bool(b) => Some(b),
            Value::Int(n) => Some(n != 0),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// A stored value the code cannot read: the database holds something it never wrote.
pub fn bad(what: &str) -> Error {
    Error::internal_msg(format!("unexpected {what} in the database"))
}

impl dyn Row + '_ {
    pub fn get<T: FromValue>(&self, idx: usize) -> Result<T> {
        T::from_value(self.value(idx)?).ok_or_else(|| bad(&format!("value in column {idx}")))
    }

    pub fn time(&self, idx: usize) -> Result<DateTime<Utc>> {
        Ok(from_millis(self.get(idx)?))
    }

    pub fn opt_time(&self, idx: usize) -> Result<Option<DateTime<Utc>>> {
        Ok(self.get::<Option<i64>>(idx)?.map(from_millis))
    }

    /// A JSON text column.
    pub fn json<T: serde::de::DeserializeOwned>(&self, idx: usize) -> Result<T> {
        let text: String = self.get(idx)?;
        serde_json::from_str(&text).map_err(|_| bad(&format!("JSON in column {idx}")))
    }

    /// A JSON text column that may be `NULL`.
    pub fn opt_json<T: serde::de::DeserializeOwned>(&self, idx: usize) -> Result<Option<T>> {
        self.get::<Option<String>>(idx)?
            .map(|text| {
                serde_json::from_str(&text).map_err(|_| bad(&format!("JSON in column {idx}")))
            })
            .transpose()
    }

    /// A JSON text column that may be `NULL`, read as the type's default.
    pub fn json_or<T: serde::de::DeserializeOwned + Default>(&self, idx: usize) -> Result<T> {
        match self.get::<Option<String>>(idx)? {
            None => Ok(T::default()),
            Some(text) => {
                serde_json::from_str(&text).map_err(|_| bad(&format!("JSON in column {idx}")))
            }
        }
    }
}

/// Reads a row into a record.
pub type ReadRow<T> = fn(&dyn Row) -> Result<T>;

/// What a query calls for each row.
pub type EachRow<'a> = dyn for<'r> FnMut(&'r (dyn Row + 'r)) -> Result<()> + Send + 'a;

/// One transaction (or, for reads, one connection) of either backend.
#[async_trait]
pub trait Tx: Send {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; the number of rows it changed.
    async fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64>;
    /// Runs a query, handing each row to `each` in order.
    async fn each(&mut self, sql: &str, args: &[Arg<'_>], each: &mut EachRow<'_>) -> Result<()>;
    /// Appends an audit event at the end of its tenant's chain now, and answers it.
    async fn append_audit(&mut self, record: AuditRecord) -> Result<ChainedEvent>;
    /// Records a change's audit event, in the same transaction. PostgreSQL appends a
    /// transaction's events last, just before it commits, so that the tenant's chain head is
    /// locked for as short a time as possible; SQLite's single writer appends at once.
    async fn audit(&mut self, record: AuditRecord) -> Result<()>;
    /// Tells other replicas, once this transaction commits, that something changed
    /// (`r:<id>`, `g:<tenant>`, `k`). One process owns a SQLite store: nobody to tell.
    async fn hint(&mut self, payload: &str) -> Result<()>;
}

impl dyn Tx + '_ {
    /// Every row, read into records.
    pub async fn all<T: Send>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        read: ReadRow<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.each(sql, args, &mut |row| {
            out.push(read(row)?);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// The first row, if any.
    pub async fn one<T: Send>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        read: ReadRow<T>,
    ) -> Result<Option<T>> {
        let mut out = None;
        self.each(sql, args, &mut |row| {
            if out.is_none() {
                out = Some(read(row)?);
            }
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// The first column of the first row, if any.
    pub async fn scalar<T: FromValue + Send>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Option<T>> {
        self.one(sql, args, |row| row.get(0)).await
    }
}

/// A result with its type erased, so that [`Db`] stays usable as a trait object.
pub type AnyResult = Result<Box<dyn Any + Send>>;

/// An operation over a transaction, its result type erased.
pub type ErasedOp = Box<dyn for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, AnyResult> + Send>;

/// A store that runs operations: reads on a connection of its own, writes in a transaction
/// that is durable before the answer comes back.
#[async_trait]
pub trait Db: Send + Sync {
    /// A connection for reading, returned to the store when dropped.
    async fn reader(&self) -> Result<Box<dyn Tx + '_>>;
    /// Runs a change, committed as `commit` says.
    async fn run_erased(&self, commit: Commit, op: ErasedOp) -> AnyResult;
}

/// How a change commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// In one transaction: durable when the change returns `Ok`, undone entirely on `Err`.
    Transaction,
    /// Statement by statement, for the few changes that stay correct that way and must be
    /// cheap: PostgreSQL runs it on a pooled connection outside any transaction; SQLite in
    /// its writer like any change (its readers are read-only).
    EachStatement,
}

fn erase<T, F>(op: F) -> ErasedOp
where
    T: Send + 'static,
    F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<T>> + Send + 'static,
{
    Box::new(move |tx| {
        let run = op(tx);
        Box::pin(async move { run.await.map(|v| Box::new(v) as Box<dyn Any + Send>) })
    })
}

fn unerase<T: 'static>(any: Box<dyn Any + Send>) -> Result<T> {
    any.downcast::<T>()
        .map(|v| *v)
        .map_err(|_| Error::internal_msg("a store operation answered the wrong type"))
}

/// Runs a change. The operation owns what it uses, because SQLite runs it on the writer's
/// thread.
pub async fn run<D, T, F>(db: &D, commit: Commit, op: F) -> Result<T>
where
    D: Db + ?Sized,
    T: Send + 'static,
    F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<T>> + Send + 'static,
{
    unerase(db.run_erased(commit, erase(op)).await?)
}

/// Runs a change in one transaction (see [`run`]): `write_tx!(self, |tx| { ... })`, the body
/// an async block over the transaction that owns what it uses.
macro_rules! write_tx {
    ($db:expr, |$tx:ident| $body:block) => {
        $crate::db::run($db, $crate::db::Commit::Transaction, move |$tx| {
            Box::pin(async move $body)
        })
        .await
    };
}

/// Runs a future that never waits (a SQLite operation: every statement completes in place)
/// to its end without an executor.
pub fn run_in_place<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(outcome) => outcome,
        std::task::Poll::Pending => Err(Error::internal_msg(
            "a SQLite operation waited for something",
        )),
    }
}
