//! The SQLite backend: WAL, one writer thread with group commit, a pool of readers.
mod accounts;
mod idempotency;
mod mcp;
mod notify;
mod oidc;
mod rows;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use chrono::{DateTime, Utc};
use countersign_core::approval::{
    ApprovalRequest, Decision, DecisionRecord, NewRequest, RequestRef, TIMEOUT_DECIDER,
    quorum_outcome,
};
use countersign_core::audit::{self, Actor, AuditRecord, ChainedEvent};
use countersign_core::directory::{Agent, ApiKey, MintedKey, Tenant, User};
use countersign_core::grant::EndedGrant;
use countersign_core::oidc::{
    NewOidcRequest, OidcClient, OidcRequestState, OutboxItem, OutboxOutcome, PollRecord,
};
use countersign_core::policy::Policy;
use countersign_core::routing::{Group, Member, ReviewerPlan};
use countersign_core::{Error, Principal, Result};
use countersign_proto::ApprovalStatus;
use countersign_proto::admin::KeyRole;
use countersign_proto::guard::{GuardSettings, MemberRole, RoutingRules};
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::json;
use tokio::sync::oneshot;

use async_trait::async_trait;
use rows::{db_error, ms};
use tokio::sync::broadcast;

use crate::audit_records;
use crate::listing::Arg;
use crate::records::already_voted;
use crate::{Backend, Change, Expired, Page, RequestFilter, SameCall, SigningKeyRecord};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_guard.sql")),
    (3, include_str!("../../migrations/sqlite/0003_oidc.sql")),
    (
        4,
        include_str!("../../migrations/sqlite/0004_dashboard.sql"),
    ),
    (
        5,
        include_str!("../../migrations/sqlite/0005_notifications.sql"),
    ),
    (6, include_str!("../../migrations/sqlite/0006_grants.sql")),
    (
        7,
        include_str!("../../migrations/sqlite/0007_idempotency.sql"),
    ),
    (
        8,
        include_str!("../../migrations/sqlite/0008_pending_per_agent.sql"),
    ),
    (9, include_str!("../../migrations/sqlite/0009_mcp.sql")),
];

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
}

/// A unit of work run by the writer thread inside the shared transaction.
trait WriteJob: Send {
    fn run(&mut self, conn: &Connection);
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
    F: FnOnce(&Connection) -> Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) {
        let Some(work) = self.work.take() else { return };
        // Each job gets its own savepoint, so one failing change does not undo its neighbours.
        let result = match conn.execute_batch("SAVEPOINT job") {
            Ok(()) => {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn)))
                    .unwrap_or_else(|_| Err(Error::Internal("a store operation panicked".into())));
                let end = if outcome.is_ok() {
                    conn.execute_batch("RELEASE job")
                } else {
                    conn.execute_batch("ROLLBACK TO job; RELEASE job")
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
            (None, Ok(())) => Err(Error::Internal("store operation was not run".into())),
        };
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(outcome);
        }
    }
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
    conn.set_prepared_statement_cache_capacity(64);
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
            .query_row(
                "SELECT version FROM schema_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
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
            return Err(Error::Internal(format!("migration {version} failed: {e}")));
        }
        tracing::info!(version, "applied migration");
    }
    Ok(())
}

/// The versions of the embedded migrations, for checking dialects agree.
pub fn migration_versions() -> Vec<i64> {
    MIGRATIONS.iter().map(|(v, _)| *v).collect()
}

fn writer_loop(conn: Connection, jobs: mpsc::Receiver<Box<dyn WriteJob>>, max_batch: usize) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let err = db_error(e);
            for job in batch {
                job.finish(Err(err.clone()));
            }
            continue;
        }
        for job in batch.iter_mut() {
            job.run(&conn);
        }
        let commit = conn.execute_batch("COMMIT").map_err(db_error);
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
    conn.prepare_cached(
        "INSERT INTO audit_events (tenant_id, seq, at, actor_type, actor_id, action, subject, \
         details, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
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

fn insert_api_key(conn: &Connection, key: &ApiKey) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO api_keys (id, tenant_id, key_hash, prefix, role, user_id, agent_id, name, \
         created_at, revoked_at, audiences) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, ?10)",
    )
    .and_then(|mut s| {
        s.execute(params![
            key.id,
            key.tenant_id,
            key.key_hash,
            key.prefix,
            key.role.as_str(),
            key.user_id,
            key.agent_id,
            key.name,
            ms(key.created_at),
            audiences_json(&key.audiences),
        ])
    })
    .map_err(db_error)?;
    Ok(())
}

/// An executor key's audiences as stored (JSON), `NULL` for the other keys.
fn audiences_json(audiences: &[String]) -> Option<String> {
    (!audiences.is_empty()).then(|| json!(audiences).to_string())
}

fn request_in_tx(conn: &Connection, tenant_id: &str, id: &str) -> Result<Option<ApprovalRequest>> {
    conn.prepare_cached(&format!(
        "SELECT {} FROM approval_requests WHERE tenant_id = ?1 AND id = ?2",
        rows::REQUEST_COLUMNS
    ))
    .and_then(|mut s| s.query_row([tenant_id, id], rows::request).optional())
    .map_err(db_error)
}

fn insert_signing_key(c: &Connection, key: &SigningKeyRecord) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO signing_keys (kid, alg, private_der, created_at, active) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            key.kid,
            key.alg,
            key.private_der,
            ms(key.created_at),
            key.active
        ])
    })
    .map_err(db_error)?;
    Ok(())
}

/// Inserts an approval request, its reviewers and its audit event, inside the caller's
/// transaction.
fn insert_request_with_plan(
    c: &Connection,
    new: &NewRequest,
    reviewers: &ReviewerPlan,
    actor: &Actor,
) -> Result<()> {
    // The answer first: a key that is taken stops the request before it is written.
    if let Some(answer) = &new.idempotency {
        idempotency::insert_answer(c, answer)?;
    }
    insert_request(c, new)?;
    let r = &new.request;
    for (user_id, since) in &reviewers.reviewers {
        c.prepare_cached(
            "INSERT INTO approval_reviewers (approval_id, user_id, since) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut s| s.execute(params![r.id, user_id, ms(*since)]))
        .map_err(db_error)?;
    }
    append_audit(c, audit_records::request_created(r, actor))?;
    notify::enqueue_notification(c, &r.id, "requested", None, r.created_at)?;
    Ok(())
}

fn insert_request(c: &Connection, new: &NewRequest) -> Result<()> {
    let r = &new.request;
    let context = serde_json::to_string(&r.context).map_err(Error::internal)?;
    let tool = r.tool.as_ref();
    let to_json = |v: &dyn erased::Json| v.json();
    let threats = tool.map(|t| to_json(&t.threats)).transpose()?;
    let channels = tool
        .map(|t| to_json(&t.notification_channels))
        .transpose()?;
    let plan = (!r.rules.escalation_plan.is_empty())
        .then(|| to_json(&r.rules.escalation_plan))
        .transpose()?;
    let annotations = tool
        .and_then(|t| t.annotations.as_ref())
        .map(|a| to_json(a))
        .transpose()?;
    c.prepare_cached(
        "INSERT INTO approval_requests (id, tenant_id, kind, auth_req_hash, agent_id, user_id, scope, \
         binding_message, context, context_sha256, status, created_at, expires_at, tool_name, session_id, \
         reason, risk_score, threats, policy_id, policy_name, notification_channels, on_behalf_of, \
         approval_group_id, required_approvals, allow_self_approval, default_on_timeout, escalation_level, \
         escalation_plan, next_escalation_at, annotations, mcp_server, mcp_client) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, \
         ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32)",
    )
    .and_then(|mut s| {
        s.execute(params![
            r.id,
            r.tenant_id,
            r.kind.as_str(),
            new.auth_req_hash,
            r.agent_id,
            r.user_id,
            r.scope,
            r.binding_message,
            context,
            r.context_sha256,
            r.status.as_str(),
            ms(r.created_at),
            ms(r.expires_at),
            tool.map(|t| &t.tool_name),
            tool.map(|t| &t.session_id),
            tool.and_then(|t| t.reason.as_ref()),
            tool.map(|t| t.risk_score),
            threats,
            tool.and_then(|t| t.policy_id.as_ref()),
            tool.and_then(|t| t.policy_name.as_ref()),
            channels,
            tool.and_then(|t| t.on_behalf_of.as_ref()),
            r.rules.approval_group_id,
            r.rules.required_approvals,
            r.rules.allow_self_approval,
            r.rules.default_on_timeout.as_str(),
            r.rules.escalation_level,
            plan,
            r.rules.next_escalation_at().map(ms),
            annotations,
            tool.and_then(|t| t.mcp.as_ref()).map(|m| &m.server),
            tool.and_then(|t| t.mcp.as_ref()).and_then(|m| m.client.as_ref()),
        ])
    })
    .map_err(|e| match db_error(e) {
        Error::AlreadyExists(_) => Error::AlreadyExists("an identical tool call is already pending".into()),
        other => other,
    })?;
    Ok(())
}

mod erased {
    use countersign_core::{Error, Result};

    /// Serialises a value to JSON text for a TEXT column.
    pub trait Json {
        fn json(&self) -> Result<String>;
    }

    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> Result<String> {
            serde_json::to_string(self).map_err(Error::internal)
        }
    }
}

fn group_in_tx(c: &Connection, tenant_id: &str, id: &str) -> Result<Option<Group>> {
    let head = c
        .prepare_cached("SELECT id, tenant_id, name, escalation_minutes, created_at, updated_at FROM approval_groups WHERE tenant_id = ?1 AND id = ?2")
        .and_then(|mut s| {
            s.query_row([tenant_id, id], |r| {
                Ok(Group {
                    id: r.get(0)?,
                    tenant_id: r.get(1)?,
                    name: r.get(2)?,
                    escalation_minutes: r.get(3)?,
                    members: Vec::new(),
                    created_at: countersign_core::clock::from_millis(r.get(4)?),
                    updated_at: countersign_core::clock::from_millis(r.get(5)?),
                })
            })
            .optional()
        })
        .map_err(db_error)?;
    let Some(mut group) = head else {
        return Ok(None);
    };
    group.members = c
        .prepare_cached(
            "SELECT m.user_id, u.email, m.role FROM approval_group_members m JOIN users u ON u.id = m.user_id \
             WHERE m.tenant_id = ?1 AND m.group_id = ?2 ORDER BY m.role DESC, u.email",
        )
        .and_then(|mut s| {
            s.query_map([tenant_id, id], |r| {
                let role: String = r.get(2)?;
                Ok(Member {
                    user_id: r.get(0)?,
                    email: r.get(1)?,
                    role: MemberRole::parse(&role).unwrap_or(MemberRole::Backup),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_error)?;
    Ok(Some(group))
}

/// Disables a user or an agent, recording it only when it was active.
fn mark_disabled(
    c: &Connection,
    table: &str,
    tenant_id: &str,
    id: &str,
    actor: &Actor,
    at: DateTime<Utc>,
) -> Result<()> {
    let changed = c
        .prepare_cached(&format!(
            "UPDATE {table} SET disabled = 1 WHERE tenant_id = ?1 AND id = ?2 AND disabled = 0"
        ))
        .and_then(|mut s| s.execute([tenant_id, id]))
        .map_err(db_error)?;
    if changed == 1 {
        append_audit(c, audit_records::disabled(table, tenant_id, id, actor, at))?;
    }
    Ok(())
}

fn not_found(what: &str) -> Error {
    Error::NotFound(format!("no such {what}"))
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
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;"
            ))
            .map_err(db_error)?;
        migrate(&writer)?;
        let readers = (0..options.readers.max(1))
            .map(|_| open_connection(&options.path, true).map(Mutex::new))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_error)?;
        let (tx, rx) = mpsc::channel::<Box<dyn WriteJob>>();
        let max_batch = options.max_batch.max(1);
        std::thread::Builder::new()
            .name("countersign-sqlite-writer".into())
            .spawn(move || writer_loop(writer, rx, max_batch))
            .map_err(|e| Error::Internal(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: options.path,
                writer: tx,
                readers,
                next_reader: AtomicUsize::new(0),
                outbox_leases: Mutex::new(std::collections::HashMap::new()),
            }),
        })
    }

    /// Runs a change inside the writer's next group commit and waits until it is durable.
    async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
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

    /// Runs a query on a free read connection. Queries are short and indexed, so they run in
    /// place rather than hopping to another thread.
    fn read<T>(&self, query: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let readers = &self.inner.readers;
        let start = self.inner.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..readers.len() {
            if let Some(conn) = readers[(start + i) % readers.len()].try_lock() {
                return query(&conn).map_err(db_error);
            }
        }
        let conn = readers[start % readers.len()].lock();
        query(&conn).map_err(db_error)
    }
}

#[async_trait]
impl Backend for SqliteStore {
    fn dialect(&self) -> &'static str {
        "sqlite"
    }

    /// One process owns a SQLite store, so it wakes its own waiters.
    fn changes(&self) -> Option<broadcast::Receiver<Change>> {
        None
    }

    // ----- tenants -----

    async fn has_tenants(&self) -> Result<bool> {
        self.read(|c| c.query_row("SELECT EXISTS (SELECT 1 FROM tenants)", [], |r| r.get(0)))
    }

    /// Creates a tenant together with its first admin key.
    async fn create_tenant(
        &self,
        tenant: Tenant,
        admin_key: MintedKey,
        actor: Actor,
    ) -> Result<()> {
        self.write(move |c| {
            c.prepare_cached("INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3)")
                .and_then(|mut s| s.execute(params![tenant.id, tenant.name, ms(tenant.created_at)]))
                .map_err(|e| match db_error(e) {
                    Error::AlreadyExists(_) => {
                        Error::AlreadyExists(format!("tenant {:?} already exists", tenant.id))
                    }
                    other => other,
                })?;
            append_audit(c, audit_records::tenant_created(&tenant, &actor))?;
            insert_api_key(c, &admin_key.record)?;
            append_audit(c, audit_records::api_key_created(&admin_key.record, &actor))?;
            Ok(())
        })
        .await
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM tenants WHERE id = ?1",
                rows::TENANT_COLUMNS
            ))?
            .query_row([id], rows::tenant)
            .optional()
        })
    }

    // ----- users -----

    async fn create_user(&self, user: User, actor: Actor) -> Result<User> {
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO users (id, tenant_id, email, name, disabled, created_at, is_admin) VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
            )
            .and_then(|mut s| s.execute(params![user.id, user.tenant_id, user.email, user.name, ms(user.created_at), user.is_admin]))
            .map_err(|e| match db_error(e) {
                Error::AlreadyExists(_) => {
                    Error::AlreadyExists(format!("a user with email {:?} already exists", user.email))
                }
                other => other,
            })?;
            append_audit(
                c,
                audit_records::user_created(&user, &actor),
            )?;
            Ok(user)
        })
        .await
    }

    async fn list_users(&self, tenant_id: &str) -> Result<Vec<User>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM users WHERE tenant_id = ?1 ORDER BY id",
                rows::USER_COLUMNS
            ))?
            .query_map([tenant_id], rows::user)?
            .collect()
        })
    }

    async fn get_user(&self, tenant_id: &str, id: &str) -> Result<Option<User>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM users WHERE tenant_id = ?1 AND id = ?2",
                rows::USER_COLUMNS
            ))?
            .query_row([tenant_id, id], rows::user)
            .optional()
        })
    }

    /// Disables a user; their keys stop working at once and they can no longer be asked.
    async fn disable_user(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<User> {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.write(move |c| {
            mark_disabled(c, "users", &tenant_id, &id, &actor, at)?;
            c.prepare_cached(&format!(
                "SELECT {} FROM users WHERE tenant_id = ?1 AND id = ?2",
                rows::USER_COLUMNS
            ))
            .and_then(|mut s| s.query_row([&tenant_id, &id], rows::user).optional())
            .map_err(db_error)?
            .ok_or_else(|| not_found("user"))
        })
        .await
    }

    // ----- agents -----

    async fn create_agent(&self, agent: Agent, actor: Actor) -> Result<Agent> {
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO agents (id, tenant_id, name, trust_level, disabled, created_at) VALUES (?1, ?2, ?3, ?4, 0, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![agent.id, agent.tenant_id, agent.name, agent.trust_level.as_str(), ms(agent.created_at)])
            })
            .map_err(|e| match db_error(e) {
                Error::AlreadyExists(_) => Error::AlreadyExists(format!("an agent named {:?} already exists", agent.name)),
                other => other,
            })?;
            append_audit(
                c,
                audit_records::agent_created(&agent, &actor),
            )?;
            Ok(agent)
        })
        .await
    }

    async fn list_agents(&self, tenant_id: &str) -> Result<Vec<Agent>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM agents WHERE tenant_id = ?1 ORDER BY id",
                rows::AGENT_COLUMNS
            ))?
            .query_map([tenant_id], rows::agent)?
            .collect()
        })
    }

    async fn get_agent(&self, tenant_id: &str, id: &str) -> Result<Option<Agent>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM agents WHERE tenant_id = ?1 AND id = ?2",
                rows::AGENT_COLUMNS
            ))?
            .query_row([tenant_id, id], rows::agent)
            .optional()
        })
    }

    async fn disable_agent(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<Agent> {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.write(move |c| {
            mark_disabled(c, "agents", &tenant_id, &id, &actor, at)?;
            c.prepare_cached(&format!(
                "SELECT {} FROM agents WHERE tenant_id = ?1 AND id = ?2",
                rows::AGENT_COLUMNS
            ))
            .and_then(|mut s| s.query_row([&tenant_id, &id], rows::agent).optional())
            .map_err(db_error)?
            .ok_or_else(|| not_found("agent"))
        })
        .await
    }

    // ----- API keys -----

    /// Stores a minted key after checking that its owner exists in the tenant and is active.
    async fn create_api_key(&self, key: ApiKey, actor: Actor) -> Result<ApiKey> {
        self.write(move |c| {
            let owner_ok = |table: &str, id: &str| -> Result<bool> {
                c.prepare_cached(&format!(
                    "SELECT disabled FROM {table} WHERE tenant_id = ?1 AND id = ?2"
                ))
                .and_then(|mut s| {
                    s.query_row([&key.tenant_id, id], |r| r.get::<_, bool>(0))
                        .optional()
                })
                .map_err(db_error)
                .map(|d| d == Some(false))
            };
            match key.role {
                KeyRole::Reviewer => {
                    let user = key.user_id.as_deref().unwrap_or_default();
                    if !owner_ok("users", user)? {
                        return Err(Error::NotFound(format!(
                            "no active user {user:?} in this tenant"
                        )));
                    }
                }
                KeyRole::Agent => {
                    let agent = key.agent_id.as_deref().unwrap_or_default();
                    if !owner_ok("agents", agent)? {
                        return Err(Error::NotFound(format!(
                            "no active agent {agent:?} in this tenant"
                        )));
                    }
                }
                KeyRole::Admin | KeyRole::Executor => {}
            }
            insert_api_key(c, &key)?;
            append_audit(c, audit_records::api_key_created(&key, &actor))?;
            Ok(key)
        })
        .await
    }

    async fn list_api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM api_keys WHERE tenant_id = ?1 ORDER BY id",
                rows::API_KEY_COLUMNS
            ))?
            .query_map([tenant_id], rows::api_key)?
            .collect()
        })
    }

    async fn revoke_api_key(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<ApiKey> {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.write(move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE api_keys SET revoked_at = ?3 WHERE tenant_id = ?1 AND id = ?2 AND revoked_at IS NULL",
                )
                .and_then(|mut s| s.execute(params![tenant_id, id, ms(at)]))
                .map_err(db_error)?;
            if changed == 1 {
                append_audit(
                    c,
                    audit_records::api_key_revoked(&tenant_id, &id, &actor, at),
                )?;
            }
            c.prepare_cached(&format!(
                "SELECT {} FROM api_keys WHERE tenant_id = ?1 AND id = ?2",
                rows::API_KEY_COLUMNS
            ))
            .and_then(|mut s| s.query_row([&tenant_id, &id], rows::api_key).optional())
            .map_err(db_error)?
            .ok_or_else(|| not_found("API key"))
        })
        .await
    }

    /// The principal of an active key whose owner is active, by the key's hash.
    async fn authenticate(&self, key_hash: &str) -> Result<Option<Principal>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT k.id, k.tenant_id, k.role, k.user_id, k.agent_id, k.audiences FROM api_keys k \
                 LEFT JOIN users u ON u.id = k.user_id LEFT JOIN agents a ON a.id = k.agent_id \
                 WHERE k.key_hash = ?1 AND k.revoked_at IS NULL \
                 AND COALESCE(u.disabled, 0) = 0 AND COALESCE(a.disabled, 0) = 0",
            )?
            .query_row([key_hash], rows::principal)
            .optional()
        })
    }

    // ----- approval requests -----

    async fn find_user_by_email(&self, tenant_id: &str, email: &str) -> Result<Option<User>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM users WHERE tenant_id = ?1 AND email = ?2",
                rows::USER_COLUMNS
            ))?
            .query_row([tenant_id, email], rows::user)
            .optional()
        })
    }

    async fn create_request(
        &self,
        new: NewRequest,
        reviewers: ReviewerPlan,
        actor: Actor,
    ) -> Result<ApprovalRequest> {
        self.write(move |c| {
            insert_request_with_plan(c, &new, &reviewers, &actor)?;
            Ok(new.request)
        })
        .await
    }

    async fn idempotent_answer(
        &self,
        tenant_id: &str,
        owner: &str,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<countersign_core::idempotency::StoredAnswer>> {
        SqliteStore::idempotent_answer(self, tenant_id, owner, key_hash, now).await
    }

    async fn remember_answer(
        &self,
        answer: countersign_core::idempotency::StoredAnswer,
    ) -> Result<()> {
        SqliteStore::remember_answer(self, answer).await
    }

    async fn forget_expired_answers(&self, now: DateTime<Utc>) -> Result<u64> {
        SqliteStore::forget_expired_answers(self, now).await
    }

    async fn find_request(
        &self,
        tenant_id: &str,
        by: &RequestRef,
    ) -> Result<Option<ApprovalRequest>> {
        let (column, value) = match by {
            RequestRef::AuthReqHash(h) => ("auth_req_hash", h),
            RequestRef::PublicId(id) => ("id", id),
        };
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM approval_requests WHERE {column} = ?1 AND tenant_id = ?2",
                rows::REQUEST_COLUMNS
            ))?
            .query_row([value.as_str(), tenant_id], rows::request)
            .optional()
        })
    }

    async fn find_pending_tool_call(
        &self,
        tenant_id: &str,
        call: &SameCall<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<ApprovalRequest>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM approval_requests WHERE tenant_id = ?1 AND kind = 'tool' AND status = 'pending' \
                 AND agent_id = ?2 AND session_id = ?3 AND tool_name = ?4 AND context_sha256 = ?5 AND expires_at > ?6 \
                 AND COALESCE(mcp_server, '') = ?7",
                rows::REQUEST_COLUMNS
            ))?
            .query_row(
                params![
                    tenant_id,
                    call.agent_id,
                    call.session_id,
                    call.tool_name,
                    call.arguments_sha256,
                    ms(now),
                    call.mcp_server.unwrap_or_default()
                ],
                rows::request,
            )
            .optional()
        })
    }

    async fn reviewer_since(
        &self,
        approval_id: &str,
        user_id: &str,
    ) -> Result<Option<DateTime<Utc>>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT since FROM approval_reviewers WHERE approval_id = ?1 AND user_id = ?2",
            )?
            .query_row([approval_id, user_id], |r| r.get::<_, i64>(0))
            .optional()
        })
        .map(|t| t.map(countersign_core::clock::from_millis))
    }

    async fn list_decisions(&self, approval_id: &str) -> Result<Vec<DecisionRecord>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM approval_decisions WHERE approval_id = ?1 ORDER BY decided_at, reviewer_id",
                rows::DECISION_COLUMNS
            ))?
            .query_map([approval_id], rows::decision)?
            .collect()
        })
    }

    async fn cancel_request(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<ApprovalRequest> {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.write(move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE approval_requests SET status = 'cancelled', decided_at = ?3, decided_by = ?4 \
                     WHERE tenant_id = ?1 AND id = ?2 AND status = 'pending' AND expires_at > ?3",
                )
                .and_then(|mut s| s.execute(params![tenant_id, id, ms(at), actor.id]))
                .map_err(db_error)?;
            let request = request_in_tx(c, &tenant_id, &id)?.ok_or_else(|| not_found("approval request"))?;
            if changed == 0 {
                return Err(Error::AlreadyDecided {
                    status: request.status_at(at),
                });
            }
            append_audit(
                c,
                audit_records::request_cancelled(&tenant_id, &id, &actor, at),
            )?;
            oidc::enqueue_outbox(c, &id, "cancelled", at)?;
            Ok(request)
        })
        .await
    }

    async fn escalate_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<ApprovalRequest>> {
        self.write(move |c| {
            let due = c
                .prepare_cached(&format!(
                    "SELECT {} FROM approval_requests WHERE status = 'pending' AND next_escalation_at <= ?1 \
                     AND expires_at > ?1 ORDER BY next_escalation_at LIMIT ?2",
                    rows::REQUEST_COLUMNS
                ))
                .and_then(|mut s| {
                    s.query_map(params![ms(now), limit], rows::request)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_error)?;
            let mut escalated = Vec::with_capacity(due.len());
            for mut request in due {
                let from = request.rules.escalation_level;
                let to = request.rules.level_at(now);
                request.rules.escalation_level = to;
                let next = request.rules.next_escalation_at().map(ms);
                c.prepare_cached(
                    "UPDATE approval_requests SET escalation_level = ?2, next_escalation_at = ?3 WHERE id = ?1",
                )
                .and_then(|mut s| s.execute(params![request.id, to, next]))
                .map_err(db_error)?;
                for (level, step) in request
                    .rules
                    .escalation_plan
                    .iter()
                    .enumerate()
                    .take(to as usize)
                    .skip(from as usize)
                {
                    append_audit(c, audit_records::escalation(&request, level as u32 + 1, step, now))?;
                }
                let levels = json!({"from_level": from, "to_level": to});
                notify::enqueue_notification(c, &request.id, "escalated", Some(&levels), now)?;
                escalated.push(request);
            }
            Ok(escalated)
        })
        .await
    }

    async fn list_requests(
        &self,
        tenant_id: &str,
        filter: &RequestFilter,
    ) -> Result<Page<ApprovalRequest>> {
        let (sql, args) = crate::listing::requests(rows::REQUEST_COLUMNS, tenant_id, filter, |n| {
            format!("?{n}")
        });
        let args: Vec<rusqlite::types::Value> = args
            .into_iter()
            .map(|a| match a {
                Arg::Text(t) => rusqlite::types::Value::Text(t),
                Arg::Int(i) => rusqlite::types::Value::Integer(i),
            })
            .collect();
        let limit = filter.limit.clamp(1, 500) as usize;
        let mut items = self.read(|c| {
            c.prepare_cached(&sql)?
                .query_map(rusqlite::params_from_iter(args.iter()), rows::request)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let has_more = items.len() > limit;
        items.truncate(limit);
        Ok(Page { items, has_more })
    }

    async fn decide(
        &self,
        tenant_id: &str,
        id: &str,
        decision: Decision,
    ) -> Result<ApprovalRequest> {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.write(move |c| {
            let current = request_in_tx(c, &tenant_id, &id)?.ok_or_else(|| not_found("approval request"))?;
            if current.status != ApprovalStatus::Pending || current.expires_at <= decision.at {
                return Err(Error::AlreadyDecided { status: current.status_at(decision.at) });
            }
            c.prepare_cached(
                "INSERT INTO approval_decisions (approval_id, tenant_id, reviewer_id, reviewer, verdict, comment, channel, decided_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id, tenant_id, decision.actor.id, decision.reviewer, decision.verdict.as_str(),
                    decision.comment, decision.channel, ms(decision.at),
                ])
            })
            .map_err(|e| match db_error(e) {
                Error::AlreadyExists(_) => already_voted(),
                other => other,
            })?;
            let approvals: u32 = c
                .prepare_cached("SELECT COUNT(*) FROM approval_decisions WHERE approval_id = ?1 AND verdict = 'approve'")
                .and_then(|mut s| s.query_row([&id], |r| r.get(0)))
                .map_err(db_error)?;
            let outcome = quorum_outcome(&current, decision.verdict, approvals);
            if let Some(status) = outcome {
                let changed = c
                    .prepare_cached(
                        "UPDATE approval_requests SET status = ?3, decided_at = ?4, decided_by = ?5, comment = ?6 \
                         WHERE tenant_id = ?1 AND id = ?2 AND status = 'pending'",
                    )
                    .and_then(|mut s| {
                        s.execute(params![tenant_id, id, status.as_str(), ms(decision.at), decision.actor.id, decision.comment])
                    })
                    .map_err(db_error)?;
                if changed != 1 {
                    return Err(Error::AlreadyDecided { status: current.status_at(decision.at) });
                }
                oidc::enqueue_outbox(c, &id, status.as_str(), decision.at)?;
            }
            append_audit(c, audit_records::decision(&tenant_id, &id, &decision, outcome, approvals, current.rules.required_approvals))?;
            request_in_tx(c, &tenant_id, &id)?.ok_or_else(|| not_found("approval request"))
        })
        .await
    }

    async fn mark_token_issued(
        &self,
        tenant_id: &str,
        id: &str,
        jti: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let (tenant_id, id, jti) = (tenant_id.to_string(), id.to_string(), jti.to_string());
        self.write(move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE approval_requests SET token_issued_at = ?3, token_jti = ?4 \
                     WHERE tenant_id = ?1 AND id = ?2 AND status = 'approved' AND token_issued_at IS NULL",
                )
                .and_then(|mut s| s.execute(params![tenant_id, id, ms(at), jti]))
                .map_err(db_error)?;
            if changed == 1 {
                append_audit(
                    c,
                    audit_records::token_issued(&tenant_id, &id, &jti, &actor, at),
                )?;
            }
            Ok(changed == 1)
        })
        .await
    }

    async fn end_grant(&self, ended: EndedGrant, actor: Actor) -> Result<bool> {
        self.write(move |c| {
            // Records of expired grants are of no use: an expired grant is inactive anyway.
            c.prepare_cached("DELETE FROM ended_grants WHERE expires_at < ?1")
                .and_then(|mut s| s.execute([ms(ended.at)]))
                .map_err(db_error)?;
            let inserted = c
                .prepare_cached(
                    "INSERT INTO ended_grants (jti, tenant_id, approval_id, audience, outcome, ended_at, expires_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (jti) DO NOTHING",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        ended.jti,
                        ended.tenant_id,
                        ended.approval_id,
                        ended.audience,
                        ended.end.as_str(),
                        ms(ended.at),
                        ms(ended.expires_at),
                    ])
                })
                .map_err(db_error)?;
            if inserted == 1 {
                append_audit(c, audit_records::grant_ended(&ended, &actor))?;
            }
            Ok(inserted == 1)
        })
        .await
    }

    async fn grant_ended(&self, jti: &str) -> Result<bool> {
        self.read(|c| {
            c.prepare_cached("SELECT 1 FROM ended_grants WHERE jti = ?1")?
                .query_row([jti], |_| Ok(()))
                .optional()
                .map(|found| found.is_some())
        })
    }

    /// Marks up to `limit` pending requests past their expiry as expired, each with its audit
    /// event.
    async fn expire_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Expired>> {
        self.write(move |c| {
            let due = c
                .prepare_cached(&format!(
                    "SELECT {} FROM approval_requests WHERE status = 'pending' AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2",
                    rows::REQUEST_COLUMNS
                ))
                .and_then(|mut s| s.query_map(params![ms(now), limit], rows::request)?.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(db_error)?;
            let mut expired = Vec::with_capacity(due.len());
            for mut request in due {
                let status = request.timeout_status();
                let decided_by = (status == ApprovalStatus::Approved).then_some(TIMEOUT_DECIDER);
                let changed = c
                    .prepare_cached(
                        "UPDATE approval_requests SET status = ?2, decided_at = ?3, decided_by = ?4 WHERE id = ?1 AND status = 'pending'",
                    )
                    .and_then(|mut s| s.execute(params![request.id, status.as_str(), ms(request.expires_at), decided_by]))
                    .map_err(db_error)?;
                if changed == 1 {
                    request.status = status;
                    request.decided_at = Some(request.expires_at);
                    request.decided_by = decided_by.map(str::to_string);
                    append_audit(c, audit_records::timeout(&request, now))?;
                    oidc::enqueue_outbox(c, &request.id, request.status.as_str(), now)?;
                    expired.push(Expired { tenant_id: request.tenant_id.clone(), request });
                }
            }
            Ok(expired)
        })
        .await
    }

    async fn agent_pending_count(
        &self,
        tenant_id: &str,
        agent_id: &str,
        now: DateTime<Utc>,
        up_to: u64,
    ) -> Result<u64> {
        let up_to = i64::try_from(up_to).unwrap_or(i64::MAX);
        let count: i64 = self.read(|c| {
            c.prepare_cached(
                "SELECT COUNT(*) FROM (SELECT 1 FROM approval_requests WHERE tenant_id = ?1 \
                 AND status = 'pending' AND agent_id = ?2 AND expires_at > ?3 LIMIT ?4)",
            )?
            .query_row(params![tenant_id, agent_id, ms(now), up_to], |r| r.get(0))
        })?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn pending_count(&self) -> Result<i64> {
        self.read(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM approval_requests WHERE status = 'pending'",
                [],
                |r| r.get(0),
            )
        })
    }

    // ----- guard configuration -----

    async fn list_policies(&self, tenant_id: &str) -> Result<Vec<Policy>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM policies WHERE tenant_id = ?1 ORDER BY id",
                rows::POLICY_COLUMNS
            ))?
            .query_map([tenant_id], rows::policy)?
            .collect()
        })
    }

    async fn get_policy(&self, tenant_id: &str, id: &str) -> Result<Option<Policy>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM policies WHERE tenant_id = ?1 AND id = ?2",
                rows::POLICY_COLUMNS
            ))?
            .query_row([tenant_id, id], rows::policy)
            .optional()
        })
    }

    async fn put_policy(&self, policy: Policy, created: bool, actor: Actor) -> Result<Policy> {
        self.write(move |c| {
            let config = serde_json::to_string(&policy.approval).map_err(Error::internal)?;
            let sql = if created {
                "INSERT INTO policies (id, tenant_id, name, description, tool_pattern, action, priority, is_active, \
                 condition, approval_config, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            } else {
                "UPDATE policies SET name = ?3, description = ?4, tool_pattern = ?5, action = ?6, priority = ?7, \
                 is_active = ?8, condition = ?9, approval_config = ?10, updated_at = ?12 WHERE id = ?1 AND tenant_id = ?2 AND ?11 IS NOT NULL"
            };
            let changed = c
                .prepare_cached(sql)
                .and_then(|mut s| {
                    s.execute(params![
                        policy.id, policy.tenant_id, policy.name, policy.description, policy.tool_pattern,
                        policy.action.as_str(), policy.priority, policy.is_active, policy.condition, config,
                        ms(policy.created_at), ms(policy.updated_at),
                    ])
                })
                .map_err(db_error)?;
            if changed == 0 {
                return Err(not_found("policy"));
            }
            let action = if created { "policy.created" } else { "policy.updated" };
            append_audit(
                c,
                audit_records::config(&policy.tenant_id, policy.updated_at, &actor, action, &policy.id,
                    json!({"name": policy.name, "tool_pattern": policy.tool_pattern, "action": policy.action.as_str(),
                           "priority": policy.priority, "is_active": policy.is_active, "condition": policy.condition})),
            )?;
            Ok(policy)
        })
        .await
    }

    async fn delete_policy(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.write(move |c| {
            let changed = c
                .prepare_cached("DELETE FROM policies WHERE tenant_id = ?1 AND id = ?2")
                .and_then(|mut s| s.execute([&tenant_id, &id]))
                .map_err(db_error)?;
            if changed == 0 {
                return Err(not_found("policy"));
            }
            append_audit(
                c,
                audit_records::config(&tenant_id, at, &actor, "policy.deleted", &id, json!({})),
            )?;
            Ok(())
        })
        .await
    }

    async fn list_groups(&self, tenant_id: &str) -> Result<Vec<Group>> {
        let ids: Vec<String> = self.read(|c| {
            c.prepare_cached("SELECT id FROM approval_groups WHERE tenant_id = ?1 ORDER BY id")?
                .query_map([tenant_id], |r| r.get(0))?
                .collect()
        })?;
        let mut groups = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(g) = self.get_group(tenant_id, &id).await? {
                groups.push(g);
            }
        }
        Ok(groups)
    }

    async fn get_group(&self, tenant_id: &str, id: &str) -> Result<Option<Group>> {
        let readers = &self.inner.readers;
        let conn =
            readers[self.inner.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len()].lock();
        group_in_tx(&conn, tenant_id, id)
    }

    async fn put_group(&self, group: Group, created: bool, actor: Actor) -> Result<Group> {
        self.write(move |c| {
            let changed = if created {
                c.prepare_cached(
                    "INSERT INTO approval_groups (tenant_id, id, name, escalation_minutes, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut s| {
                    s.execute(params![group.tenant_id, group.id, group.name, group.escalation_minutes, ms(group.created_at), ms(group.updated_at)])
                })
                .map_err(|e| match db_error(e) {
                    Error::AlreadyExists(_) => Error::AlreadyExists(format!("an approval group {:?} already exists", group.id)),
                    other => other,
                })?
            } else {
                c.prepare_cached("UPDATE approval_groups SET name = ?3, escalation_minutes = ?4, updated_at = ?5 WHERE tenant_id = ?1 AND id = ?2")
                    .and_then(|mut s| s.execute(params![group.tenant_id, group.id, group.name, group.escalation_minutes, ms(group.updated_at)]))
                    .map_err(db_error)?
            };
            if changed == 0 {
                return Err(not_found("approval group"));
            }
            c.prepare_cached("DELETE FROM approval_group_members WHERE tenant_id = ?1 AND group_id = ?2")
                .and_then(|mut s| s.execute([&group.tenant_id, &group.id]))
                .map_err(db_error)?;
            for m in &group.members {
                c.prepare_cached("INSERT INTO approval_group_members (tenant_id, group_id, user_id, role) VALUES (?1, ?2, ?3, ?4)")
                    .and_then(|mut s| s.execute(params![group.tenant_id, group.id, m.user_id, m.role.as_str()]))
                    .map_err(db_error)?;
            }
            let action = if created { "approval_group.created" } else { "approval_group.updated" };
            let members: Vec<_> = group.members.iter().map(|m| json!({"user_id": m.user_id, "role": m.role.as_str()})).collect();
            append_audit(
                c,
                audit_records::config(&group.tenant_id, group.updated_at, &actor, action, &group.id,
                    json!({"name": group.name, "escalation_minutes": group.escalation_minutes, "members": members})),
            )?;
            group_in_tx(c, &group.tenant_id, &group.id)?.ok_or_else(|| not_found("approval group"))
        })
        .await
    }

    async fn delete_group(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.write(move |c| {
            c.prepare_cached(
                "DELETE FROM approval_group_members WHERE tenant_id = ?1 AND group_id = ?2",
            )
            .and_then(|mut s| s.execute([&tenant_id, &id]))
            .map_err(db_error)?;
            let changed = c
                .prepare_cached("DELETE FROM approval_groups WHERE tenant_id = ?1 AND id = ?2")
                .and_then(|mut s| s.execute([&tenant_id, &id]))
                .map_err(db_error)?;
            if changed == 0 {
                return Err(not_found("approval group"));
            }
            append_audit(
                c,
                audit_records::config(
                    &tenant_id,
                    at,
                    &actor,
                    "approval_group.deleted",
                    &id,
                    json!({}),
                ),
            )?;
            Ok(())
        })
        .await
    }

    async fn guard_settings(&self, tenant_id: &str) -> Result<(GuardSettings, RoutingRules)> {
        let stored: Option<(String, String)> = self.read(|c| {
            c.prepare_cached("SELECT guard, routing FROM tenant_settings WHERE tenant_id = ?1")?
                .query_row([tenant_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })?;
        crate::records::parse_settings(stored)
    }

    async fn put_guard_settings(
        &self,
        tenant_id: &str,
        settings: Option<GuardSettings>,
        routing: Option<RoutingRules>,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<(GuardSettings, RoutingRules)> {
        let tenant_id = tenant_id.to_string();
        self.write(move |c| {
            let stored: Option<(String, String)> = c
                .prepare_cached("SELECT guard, routing FROM tenant_settings WHERE tenant_id = ?1")
                .and_then(|mut s| s.query_row([&tenant_id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                .map_err(db_error)?;
            let (old_settings, old_routing) = crate::records::parse_settings(stored)?;
            let action = if settings.is_some() { "guard.settings_updated" } else { "guard.routing_updated" };
            let settings = settings.unwrap_or(old_settings);
            let routing = routing.unwrap_or(old_routing);
            let (guard_json, routing_json) = (
                serde_json::to_string(&settings).map_err(Error::internal)?,
                serde_json::to_string(&routing).map_err(Error::internal)?,
            );
            c.prepare_cached(
                "INSERT INTO tenant_settings (tenant_id, guard, routing, updated_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (tenant_id) DO UPDATE SET guard = excluded.guard, routing = excluded.routing, updated_at = excluded.updated_at",
            )
            .and_then(|mut s| s.execute(params![tenant_id, guard_json, routing_json, ms(at)]))
            .map_err(db_error)?;
            let details = serde_json::from_str(if action == "guard.settings_updated" { &guard_json } else { &routing_json })
                .map_err(Error::internal)?;
            append_audit(c, audit_records::config(&tenant_id, at, &actor, action, &tenant_id, details))?;
            Ok((settings, routing))
        })
        .await
    }

    // ----- audit -----

    /// Events of a tenant in chain order, after `after_seq`.
    async fn list_audit(
        &self,
        tenant_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<ChainedEvent>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM audit_events WHERE tenant_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                rows::AUDIT_COLUMNS
            ))?
            .query_map(params![tenant_id, after_seq, limit], rows::audit_event)?
            .collect()
        })
    }

    // ----- OpenID Connect -----

    async fn create_oidc_client(&self, client: OidcClient, actor: Actor) -> Result<OidcClient> {
        self.oidc_create_client(client, actor).await
    }

    async fn list_oidc_clients(&self, tenant_id: &str) -> Result<Vec<OidcClient>> {
        self.oidc_list_clients(tenant_id)
    }

    async fn get_oidc_client(
        &self,
        tenant_id: &str,
        client_id: &str,
    ) -> Result<Option<OidcClient>> {
        self.oidc_get_client(tenant_id, client_id)
    }

    async fn find_active_oidc_client(&self, client_id: &str) -> Result<Option<OidcClient>> {
        self.oidc_find_active_client(client_id)
    }

    async fn delete_oidc_client(
        &self,
        tenant_id: &str,
        client_id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.oidc_delete_client(tenant_id, client_id, actor, at)
            .await
    }

    async fn create_oidc_request(
        &self,
        new: NewOidcRequest,
        actor: Actor,
    ) -> Result<ApprovalRequest> {
        self.oidc_create_request(new, actor).await
    }

    async fn get_oidc_request(
        &self,
        tenant_id: &str,
        approval_id: &str,
    ) -> Result<Option<OidcRequestState>> {
        self.oidc_get_request(tenant_id, approval_id)
    }

    async fn record_oidc_poll(&self, approval_id: &str, at: DateTime<Utc>) -> Result<PollRecord> {
        self.oidc_record_poll(approval_id, at).await
    }

    async fn use_jti(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.oidc_use_jti(client_id, jti, expires_at, now).await
    }

    async fn set_user_code(
        &self,
        tenant_id: &str,
        user_id: &str,
        code_hash: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.oidc_set_user_code(tenant_id, user_id, code_hash, actor, at)
            .await
    }

    async fn user_code_hash(&self, tenant_id: &str, user_id: &str) -> Result<Option<String>> {
        self.oidc_user_code_hash(tenant_id, user_id)
    }

    async fn server_secret(
        &self,
        name: &str,
        candidate: Vec<u8>,
        at: DateTime<Utc>,
    ) -> Result<Vec<u8>> {
        self.oidc_server_secret(name, candidate, at).await
    }

    async fn token_jti(&self, tenant_id: &str, approval_id: &str) -> Result<Option<String>> {
        self.oidc_token_jti(tenant_id, approval_id)
    }

    async fn claim_outbox(
        &self,
        rows: crate::OutboxRows,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxItem>> {
        self.outbox_claim(rows.changes(), now, lease_until, limit)
    }

    async fn finish_outbox(&self, id: i64, outcome: OutboxOutcome) -> Result<()> {
        self.outbox_finish(id, outcome).await
    }

    // ----- signing keys -----

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        self.read(|c| {
            c.prepare_cached("SELECT kid, alg, private_der, created_at, active FROM signing_keys ORDER BY created_at")?
                .query_map([], |r| {
                    Ok(SigningKeyRecord {
                        kid: r.get(0)?,
                        alg: r.get(1)?,
                        private_der: r.get(2)?,
                        created_at: countersign_core::clock::from_millis(r.get(3)?),
                        active: r.get(4)?,
                    })
                })?
                .collect()
        })
    }

    async fn ensure_signing_key(
        &self,
        candidate: SigningKeyRecord,
    ) -> Result<Vec<SigningKeyRecord>> {
        self.write(move |c| {
            let active: bool = c
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM signing_keys WHERE active = 1)",
                    [],
                    |r| r.get(0),
                )
                .map_err(db_error)?;
            if !active {
                insert_signing_key(c, &candidate)?;
            }
            Ok(())
        })
        .await?;
        self.signing_keys().await
    }

    async fn rotate_signing_key(
        &self,
        key: SigningKeyRecord,
        actor: Actor,
        tenant_id: &str,
    ) -> Result<()> {
        let tenant_id = tenant_id.to_string();
        self.write(move |c| {
            c.execute("UPDATE signing_keys SET active = 0 WHERE active = 1", [])
                .map_err(db_error)?;
            insert_signing_key(c, &key)?;
            append_audit(
                c,
                audit_records::signing_key_rotated(&tenant_id, &key, &actor),
            )?;
            Ok(())
        })
        .await
    }

    /// Records an audit event that is not part of another change.
    async fn append_audit(&self, record: AuditRecord) -> Result<ChainedEvent> {
        self.write(move |c| append_audit(c, record)).await
    }
}
