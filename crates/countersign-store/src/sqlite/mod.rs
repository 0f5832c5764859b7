//! The SQLite backend: WAL, one writer thread with group commit, a pool of readers.
mod errors;
mod notify;
mod oidc;
mod tx;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use chrono::Utc;
use countersign_core::audit::{self, AuditRecord, ChainedEvent};
use countersign_core::{Error, Result};
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use errors::{db_error, ms};

use crate::sql;

const MIGRATIONS: &[(i64, &str)] = migrations!("sqlite");

/// How hard SQLite works to make a commit survive a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// fsync on every commit (group commit makes this cheap): survives power loss.
    #[default]
    Full,
    /// fsync at checkpoints only: survives a process crash, may lose the last commits on power
    /// loss.
    Normal,
}

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub path: PathBuf,
    pub synchronous: Synchronous,
    pub readers: usize,
    /// Most changes committed in one transaction.
    pub max_batch: usize,
}

impl SqliteOptions {
    pub fn new(path: impl Into<PathBuf>) -> SqliteOptions {
        SqliteOptions {
            path: path.into(),
            synchronous: Synchronous::Full,
            readers: 4,
            max_batch: 512,
        }
    }
}

/// The SQLite store; cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

struct Inner {
    path: PathBuf,
    writer: mpsc::Sender<Box<dyn WriteJob>>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Outbox rows being delivered, with the end of their lease (unix ms). One process owns a
    /// SQLite store, so claims need not reach the disk: a crash forgets them and the rows
    /// are simply delivered again.
    outbox_leases: Mutex<std::collections::HashMap<i64, i64>>,
    /// Dropped with the store, which ends the checkpointer.
    _stop_checkpoints: mpsc::Sender<()>,
}

/// A unit of work run by the writer thread inside the shared transaction.
trait WriteJob: Send {
    fn run(&mut self, conn: &mut Connection);
    fn finish(self: Box<Self>, commit: Result<()>);
}

struct TypedJob<T, F> {
    work: Option<F>,
    result: Option<Result<T>>,
    reply: Option<oneshot::Sender<Result<T>>>,
}

impl<T, F> WriteJob for TypedJob<T, F>
where
    T: Send,
    F: FnOnce(&mut Connection) -> Result<T> + Send,
{
    fn run(&mut self, conn: &mut Connection) {
        let Some(work) = self.work.take() else { return };
        // Each job gets its own savepoint, so one failing change does not undo its neighbours.
        let result = match control(conn, "SAVEPOINT job") {
            Ok(()) => {
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut *conn)))
                        .unwrap_or_else(|_| Err(Error::internal_msg("a store operation panicked")));
                let end = if outcome.is_ok() {
                    control(conn, "RELEASE job")
                } else {
                    control(conn, "ROLLBACK TO job").and_then(|()| control(conn, "RELEASE job"))
                };
                match end {
                    Ok(()) => outcome,
                    Err(e) => Err(db_error(e)),
                }
            }
            Err(e) => Err(db_error(e)),
        };
        self.result = Some(result);
    }

    fn finish(mut self: Box<Self>, commit: Result<()>) {
        let outcome = match (self.result.take(), commit) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (_, Err(e)) => Err(e),
            (None, Ok(())) => Err(Error::internal_msg("store operation was not run")),
        };
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(outcome);
        }
    }
}

/// Runs a transaction-control statement, prepared once: the writer runs four of them per
/// batch or job, and parsing them each time showed in its profile.
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn open_connection(path: &Path, read_only: bool) -> rusqlite::Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // More than the statements the store runs, so none is parsed twice.
    conn.set_prepared_statement_cache_capacity(512);
    Ok(conn)
}

fn migrate(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .map_err(db_error)?;
    for (version, sql) in MIGRATIONS {
        let applied: Option<i64> = conn
            .query_row(sql::MIGRATION_APPLIED, [version], |r| r.get(0))
            .optional()
            .map_err(db_error)?;
        if applied.is_some() {
            continue;
        }
        let tx = format!(
            "BEGIN IMMEDIATE; {sql}; INSERT INTO schema_migrations (version, applied_at) VALUES ({version}, {}); COMMIT;",
            Utc::now().timestamp_millis()
        );
        if let Err(e) = conn.execute_batch(&tx) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(Error::internal_msg(format!(
                "migration {version} failed: {e}"
            )));
        }
        tracing::info!(version, "applied migration");
    }
    Ok(())
}

/// The versions of the embedded migrations, for checking dialects agree.
pub fn migration_versions() -> Vec<i64> {
    MIGRATIONS.iter().map(|(v, _)| *v).collect()
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Copies committed WAL frames into the database file (PASSIVE: never blocks the writer or
/// readers) until the store is dropped.
fn checkpoint_loop(conn: Connection, stop: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
            tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
        }
    }
}

fn writer_loop(mut conn: Connection, jobs: mpsc::Receiver<Box<dyn WriteJob>>, max_batch: usize) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = control(&conn, "BEGIN IMMEDIATE") {
            let err = db_error(e);
            for job in batch {
                job.finish(Err(err.clone()));
            }
            continue;
        }
        for job in batch.iter_mut() {
            job.run(&mut conn);
        }
        let commit = control(&conn, "COMMIT").map_err(db_error);
        if commit.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for job in batch {
            job.finish(commit.clone());
        }
    }
}

/// Appends an audit event at the end of its tenant's chain, inside the caller's transaction.
fn append_audit(conn: &Connection, record: AuditRecord) -> Result<ChainedEvent> {
    let previous: Option<(i64, String)> = conn
        .prepare_cached(
            "SELECT seq, hash FROM audit_events WHERE tenant_id = ?1 ORDER BY seq DESC LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row([&record.tenant_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(db_error)?;
    let event = audit::chain(record, previous)?;
    let details = serde_json::to_string(&event.record.details).map_err(Error::internal)?;
    conn.prepare_cached(sql::INSERT_AUDIT_EVENT)
        .and_then(|mut s| {
            s.execute(params![
                event.record.tenant_id,
                event.seq,
                ms(event.record.at),
                event.record.actor_type,
                event.record.actor_id,
                event.record.action,
                event.record.subject,
                details,
                event.prev_hash,
                event.hash,
            ])
        })
        .map_err(db_error)?;
    Ok(event)
}

impl SqliteStore {
    /// Opens (creating if needed) the database and applies pending migrations.
    pub fn open(options: SqliteOptions) -> Result<SqliteStore> {
        if let Some(dir) = options.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let writer = open_connection(&options.path, false).map_err(|e| {
            Error::Unavailable(format!("cannot open {}: {e}", options.path.display()))
        })?;
        let sync = match options.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        writer
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; \
                 PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 0;"
            ))
            .map_err(db_error)?;
        migrate(&writer)?;
        let readers = (0..options.readers.max(1))
            .map(|_| open_connection(&options.path, true).map(Mutex::new))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_error)?;
        // Checkpoints run on their own thread, so no commit waits for one. The sub-journals of
        // the writer's per-job savepoints live in memory (temp_store): they only ever undo a
        // job inside its open transaction, so they need no file.
        let checkpointer = open_connection(&options.path, false).map_err(db_error)?;
        checkpointer
            .execute_batch(&format!("PRAGMA synchronous = {sync};"))
            .map_err(db_error)?;
        let (stop_checkpoints, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("countersign-sqlite-checkpointer".into())
            .spawn(move || checkpoint_loop(checkpointer, stopped))
            .map_err(|e| Error::internal_msg(format!("cannot start the checkpointer: {e}")))?;
        let (tx, rx) = mpsc::channel::<Box<dyn WriteJob>>();
        let max_batch = options.max_batch.max(1);
        std::thread::Builder::new()
            .name("countersign-sqlite-writer".into())
            .spawn(move || writer_loop(writer, rx, max_batch))
            .map_err(|e| Error::internal_msg(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: options.path,
                writer: tx,
                readers,
                next_reader: AtomicUsize::new(0),
                outbox_leases: Mutex::new(std::collections::HashMap::new()),
                _stop_checkpoints: stop_checkpoints,
            }),
        })
    }

    /// Runs a change inside the writer's next group commit and waits until it is durable.
    async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = TypedJob {
            work: Some(work),
            result: None,
            reply: Some(reply),
        };
        self.inner
            .writer
            .send(Box::new(job))
            .map_err(|_| Error::Unavailable("the store is closed".into()))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the store is closed".into()))?
    }

    /// Forgets the in-memory claim of an outbox row whose outcome is durable.
    fn release_lease(&self, id: i64) {
        self.inner.outbox_leases.lock().remove(&id);
    }

    /// A free read connection, or the next one to free up.
    fn reader_connection(&self) -> parking_lot::MutexGuard<'_, Connection> {
        let readers = &self.inner.readers;
        let start = self.inner.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..readers.len() {
            if let Some(conn) = readers[(start + i) % readers.len()].try_lock() {
                return conn;
            }
        }
        readers[start % readers.len()].lock()
    }
}
