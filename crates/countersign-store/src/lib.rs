//! Countersign's store. Every state change is one transaction that also appends its audit
//! event, so a change and its record are durable together or not at all.
//!
//! SQLite is the embedded default: one writer thread commits queued changes in groups (one
//! fsync for many requests), and a small pool of read connections answers queries in place.

mod rows;
mod sqlite;

pub use sqlite::{SqliteOptions, Synchronous, sqlite_migration_versions};

use chrono::{DateTime, Utc};
use countersign_core::approval::ApprovalRequest;
use countersign_core::audit::ChainedEvent;
use countersign_proto::ApprovalStatus;

pub use sqlite::Store;

/// Which approval requests to list, newest first.
#[derive(Debug, Clone)]
pub struct RequestFilter {
    pub status: Option<ApprovalStatus>,
    /// Only requests addressed to this reviewer.
    pub user_id: Option<String>,
    /// Start after this id (the previous page's last id).
    pub before_id: Option<String>,
    pub limit: u32,
    /// Requests pending past their expiry count as expired.
    pub now: DateTime<Utc>,
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

/// One batch of audit events for verification or export.
pub type AuditBatch = Vec<ChainedEvent>;
