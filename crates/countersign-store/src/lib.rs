//! Countersign's store. Every state change is one transaction that also appends its audit
//! event, so a change and its record are durable together or not at all.
//!
//! Two backends implement one contract ([`Backend`]):
//! - SQLite, the embedded default: one writer thread commits queued changes in groups (one
//!   fsync for many requests), and a small pool of read connections answers queries in place.
//! - PostgreSQL, for several replicas: atomic SQL per change, per-tenant audit chains kept
//!   linear by a row lock, background jobs claimed with `FOR UPDATE SKIP LOCKED`, and
//!   LISTEN/NOTIFY to wake waiters on other replicas.

/// A dialect's schema migrations, by version; both dialects have the same versions.
macro_rules! migrations {
    ($dialect:literal) => {
        migrations!(@files $dialect;
            1 "0001_init", 2 "0002_guard", 3 "0003_oidc", 4 "0004_dashboard",
            5 "0005_notifications", 6 "0006_grants", 7 "0007_idempotency",
            8 "0008_pending_per_agent", 9 "0009_mcp", 10 "0010_reviewer_queue")
    };
    (@files $dialect:literal; $($version:literal $file:literal),*) => {
        &[$((
            $version,
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"), "/migrations/", $dialect, "/", $file, ".sql"
            )),
        )),*]
    };
}

#[macro_use]
mod db;
mod audit_records;
mod dashboard;
mod directory;
mod guard;

mod listing;
mod mcp;
mod notify;
mod oidc;
mod postgres;
mod records;
mod requests;
mod rows;
mod sql;
mod sqlite;
mod writes;

use std::ops::Deref;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::Result;
use countersign_core::approval::{ApprovalRequest, RequestKind};
use countersign_proto::ApprovalStatus;
use tokio::sync::broadcast;

pub use dashboard::DashboardStore;
pub use directory::DirectoryStore;
pub use guard::GuardStore;
pub use mcp::McpStore;
pub use notify::NotificationStore;
pub use oidc::OidcStore;
pub use postgres::PostgresOptions;
pub use requests::RequestStore;
pub use sqlite::{SqliteOptions, Synchronous};

/// Where the data lives.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    Sqlite(SqliteOptions),
    Postgres(PostgresOptions),
}

/// Which approval requests to list, newest first.
#[derive(Debug, Clone)]
pub struct RequestFilter {
    pub status: Option<ApprovalStatus>,
    /// Only requests this reviewer may decide (already eligible by `now`).
    pub user_id: Option<String>,
    pub kind: Option<RequestKind>,
    pub tool_name: Option<String>,
    /// The final decider's user id (or admin key id) or, with `decided_by_email`, their email.
    pub decided_by: Option<String>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Start after this id (the previous page's last id).
    pub before_id: Option<String>,
    pub limit: u32,
    /// Requests pending past their expiry count as timed out.
    pub now: DateTime<Utc>,
}

impl RequestFilter {
    pub fn new(now: DateTime<Utc>, limit: u32) -> RequestFilter {
        RequestFilter {
            status: None,
            user_id: None,
            kind: None,
            tool_name: None,
            decided_by: None,
            created_from: None,
            created_before: None,
            before_id: None,
            limit,
            now,
        }
    }
}

/// What makes two tool calls the same call: one pending approval covers them both.
#[derive(Debug, Clone, Copy)]
pub struct SameCall<'a> {
    pub agent_id: &'a str,
    pub session_id: &'a str,
    pub tool_name: &'a str,
    pub arguments_sha256: &'a str,
    /// The MCP server the call came through; `None` when it did not come through MCP.
    pub mcp_server: Option<&'a str>,
}

/// A page of results and whether more follow.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}

/// A key that signs access tokens, kept in the store so every restart and replica shares it.
#[derive(Debug, Clone)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub alg: String,
    pub private_der: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub active: bool,
}

/// What the expiry sweep changed, for waking up waiters.
#[derive(Debug, Clone)]
pub struct Expired {
    pub tenant_id: String,
    pub request: ApprovalRequest,
}

/// A hint from another replica that something changed. The store stays the truth: a hint
/// only says "read again".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An approval request changed state.
    Request(String),
    /// The signing keys changed.
    SigningKeys,
    /// A tenant's guard configuration (policies, groups, settings) changed.
    Guard(String),
    /// An API key was revoked or its owner disabled: forget the keys already checked.
    Keys,
    /// Hints may have been lost (the listener reconnected): re-read everything waited on.
    Resync,
}

/// Which outbox rows a claim takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxRows {
    /// State changes waiting to be fanned out into deliveries (`notify`).
    Changes,
    /// What is sent: notification deliveries and CIBA callbacks.
    Sends,
}

impl OutboxRows {
    /// Whether the claim takes `notify` rows (as a SQL boolean parameter).
    fn changes(self) -> bool {
        self == OutboxRows::Changes
    }
}

/// What an outbox claim takes: up to `limit` rows of one kind due at `now`, each hidden from
/// other workers until `lease_until`.
#[derive(Debug, Clone, Copy)]
pub struct OutboxClaim {
    pub rows: OutboxRows,
    pub now: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
    pub limit: u32,
}

impl OutboxClaim {
    pub fn new(
        rows: OutboxRows,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> OutboxClaim {
        OutboxClaim {
            rows,
            now,
            lease_until,
            limit,
        }
    }
}

/// A tenant channel's stored settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRecord {
    pub channel: String,
    pub config: serde_json::Value,
    pub updated_at: DateTime<Utc>,
}

/// The contract both backends keep, with the same semantics.
#[async_trait]
pub trait Backend:
    DirectoryStore
    + GuardStore
    + OidcStore
    + DashboardStore
    + NotificationStore
    + McpStore
    + RequestStore
    + Send
    + Sync
    + std::fmt::Debug
{
    /// `sqlite` or `postgres`.
    fn dialect(&self) -> &'static str;

    /// Hints of changes made by other replicas; `None` when there is only this process.
    fn changes(&self) -> Option<broadcast::Receiver<Change>>;
}

/// The store handle; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl Deref for Store {
    type Target = dyn Backend;

    fn deref(&self) -> &Self::Target {
        self.backend.as_ref()
    }
}

impl Store {
    /// Opens (creating if needed) the database and applies pending migrations.
    pub async fn open(config: StoreConfig) -> Result<Store> {
        let backend: Arc<dyn Backend> = match config {
            StoreConfig::Sqlite(options) => {
                let store = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(options))
                    .await
                    .map_err(countersign_core::Error::internal)??;
                Arc::new(store)
            }
            StoreConfig::Postgres(options) => Arc::new(postgres::PgStore::open(options).await?),
        };
        Ok(Store { backend })
    }
}

/// The versions of each dialect's migrations; they must match.
pub fn migration_versions() -> (Vec<i64>, Vec<i64>) {
    (sqlite::migration_versions(), postgres::migration_versions())
}
