//! Countersign's store. Every state change is one transaction that also appends its audit
//! event, so a change and its record are durable together or not at all.
//!
//! Two backends implement one contract ([`Backend`]):
//! - SQLite, the embedded default: one writer thread commits queued changes in groups (one
//!   fsync for many requests), and a small pool of read connections answers queries in place.
//! - PostgreSQL, for several replicas: atomic SQL per change, per-tenant audit chains kept
//!   linear by a row lock, background jobs claimed with `FOR UPDATE SKIP LOCKED`, and
//!   LISTEN/NOTIFY to wake waiters on other replicas.

#[macro_use]
mod db;
mod audit_records;

mod directory;
mod guard;
mod listing;
mod mcp;
mod postgres;
mod records;
mod rows;
mod sql;
mod sqlite;
mod writes;

use std::ops::Deref;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::Result;
use countersign_core::approval::{
    ApprovalRequest, Decision, DecisionRecord, NewRequest, RequestKind, RequestRef,
};
use countersign_core::audit::{Actor, AuditRecord, ChainedEvent};
use countersign_core::dashboard::{
    LinkKind, LoginLink, NewLink, NewSession, PasskeyRecord, Session, SessionProof,
};
use countersign_core::directory::User;
use countersign_core::grant::EndedGrant;
use countersign_core::idempotency::StoredAnswer;
use countersign_core::notify::{
    Delivery, FanOut, Preferences, PushSubscription, ReviewToken, WebhookEndpoint,
};
use countersign_core::oidc::{
    NewOidcRequest, OidcClient, OidcRequestState, OutboxItem, OutboxOutcome, PollRecord, PollSeen,
};
use countersign_core::routing::ReviewerPlan;
use countersign_proto::ApprovalStatus;
use tokio::sync::broadcast;

pub use directory::DirectoryStore;
pub use guard::GuardStore;
pub use mcp::McpStore;
pub use postgres::PostgresOptions;
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
    /// Hints may have been lost (the listener reconnected): re-read everything waited on.
    Resync,
}

/// The dashboard's part of the contract both backends keep: admins among users, one-time
/// links, sessions, passkeys and WebAuthn ceremony state. Secrets arrive hashed.
#[async_trait]
pub trait DashboardStore: Send + Sync {
    /// How many of a tenant's requests are in each status (pending past expiry counts as its
    /// timeout outcome), optionally only those one reviewer may already decide.
    async fn count_requests(
        &self,
        tenant_id: &str,
        user_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(ApprovalStatus, i64)>>;

    /// Makes a user an admin of their tenant, or a reviewer again.
    async fn set_user_admin(
        &self,
        tenant_id: &str,
        id: &str,
        is_admin: bool,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<User>;
    /// Stores a one-time link (only its token's hash).
    async fn create_login_link(&self, link: NewLink, actor: Actor) -> Result<LoginLink>;
    /// The link with this token hash and its user, whatever its state.
    async fn find_login_link(&self, token_hash: &str) -> Result<Option<(LoginLink, User)>>;
    /// A tenant's links of one kind, newest first.
    async fn list_login_links(&self, tenant_id: &str, kind: LinkKind) -> Result<Vec<LoginLink>>;
    async fn revoke_login_link(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<LoginLink>;

    /// Spends `proof` and creates the session in one transaction: a link is used at most
    /// once, only before it expires, only by an active user; a passkey must belong to the
    /// session's user. Refusals change nothing.
    async fn start_session(&self, new: NewSession, proof: SessionProof, actor: Actor)
    -> Result<()>;
    /// The session with this cookie hash and its user, whatever their state (the domain
    /// decides whether it is still live).
    async fn session_by_token(&self, token_hash: &str) -> Result<Option<(Session, User)>>;
    /// Records activity on a session (idle timeout).
    async fn touch_session(&self, id: &str, at: DateTime<Utc>) -> Result<()>;
    /// A user's sessions, newest first.
    async fn list_sessions(&self, tenant_id: &str, user_id: &str) -> Result<Vec<Session>>;
    /// Ends one of a user's sessions; false when it was not theirs or already ended.
    async fn revoke_session(
        &self,
        tenant_id: &str,
        user_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<bool>;

    /// Registers another passkey for a signed-in user.
    async fn add_passkey(&self, passkey: PasskeyRecord, actor: Actor) -> Result<PasskeyRecord>;
    async fn list_passkeys(&self, tenant_id: &str, user_id: &str) -> Result<Vec<PasskeyRecord>>;
    /// Passkeys of the active users with this email, in every tenant.
    async fn passkeys_for_email(&self, email: &str) -> Result<Vec<PasskeyRecord>>;
    async fn find_passkey(&self, credential_id: &str) -> Result<Option<PasskeyRecord>>;
    async fn delete_passkey(
        &self,
        tenant_id: &str,
        user_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<bool>;

    /// Keeps a WebAuthn ceremony's state until `expires_at` (dropping expired ones).
    async fn put_ceremony(
        &self,
        id_hash: &str,
        state: String,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Removes and returns a ceremony's state, so each challenge is answered at most once.
    async fn take_ceremony(&self, id_hash: &str, now: DateTime<Utc>) -> Result<Option<String>>;
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

/// A tenant channel's stored settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRecord {
    pub channel: String,
    pub config: serde_json::Value,
    pub updated_at: DateTime<Utc>,
}

/// Reviewer notifications: tenant channel settings, people's preferences, webhook endpoints,
/// push subscriptions, review-link tokens, and the outbox's fan-out and delivery log.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    async fn channel_configs(&self, tenant_id: &str) -> Result<Vec<ChannelRecord>>;
    /// Stores (`Some`) or removes (`None`) a tenant channel's settings, with its audit event
    /// (which never carries the settings: they hold secrets).
    async fn put_channel_config(
        &self,
        tenant_id: &str,
        channel: &str,
        config: Option<serde_json::Value>,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()>;

    /// Stored preferences of a tenant's users (the others have the defaults).
    async fn list_preferences(&self, tenant_id: &str) -> Result<Vec<Preferences>>;
    async fn get_preferences(&self, tenant_id: &str, user_id: &str) -> Result<Option<Preferences>>;
    /// Stores a user's preferences; a Slack user id already taken by another user of the
    /// tenant is `AlreadyExists`.
    async fn put_preferences(&self, prefs: Preferences, actor: Actor) -> Result<Preferences>;
    /// The active user of the tenant with this Slack user id.
    async fn find_user_by_slack_id(
        &self,
        tenant_id: &str,
        slack_user_id: &str,
    ) -> Result<Option<User>>;

    async fn create_webhook(
        &self,
        endpoint: WebhookEndpoint,
        actor: Actor,
    ) -> Result<WebhookEndpoint>;
    async fn list_webhooks(&self, tenant_id: &str) -> Result<Vec<WebhookEndpoint>>;
    async fn get_webhook(&self, tenant_id: &str, id: &str) -> Result<Option<WebhookEndpoint>>;
    /// Replaces an endpoint's URL, events, secret, description and disabled state; `action`
    /// names the audit event (`webhook.updated`, `webhook.secret_rotated`, `webhook.disabled`).
    async fn update_webhook(
        &self,
        endpoint: WebhookEndpoint,
        action: &str,
        actor: Actor,
    ) -> Result<WebhookEndpoint>;
    async fn delete_webhook(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()>;

    /// Stores a device's subscription (the same endpoint again replaces the old one).
    async fn put_push_subscription(&self, sub: PushSubscription, actor: Actor) -> Result<()>;
    async fn list_push_subscriptions(&self, tenant_id: &str) -> Result<Vec<PushSubscription>>;
    async fn get_push_subscription(&self, id: &str) -> Result<Option<PushSubscription>>;
    /// Removes a subscription (the push service said it is gone, or its user removed it).
    async fn delete_push_subscription(&self, tenant_id: &str, id: &str) -> Result<bool>;

    /// The review-link token with this hash, whatever its state.
    async fn find_review_token(&self, token_hash: &str) -> Result<Option<ReviewToken>>;

    /// Every reviewer of a request with the moment they may decide.
    async fn list_reviewers(&self, approval_id: &str) -> Result<Vec<(String, DateTime<Utc>)>>;
    /// In one transaction, for each `notify` row of the batch: adds its deliveries (those an
    /// earlier run added are skipped), stores their review-link tokens, and removes the row.
    async fn fan_out(&self, batch: Vec<FanOut>, at: DateTime<Utc>) -> Result<()>;
    /// A request's notifications (not its fan-out rows or CIBA callbacks), oldest first.
    async fn list_deliveries(&self, tenant_id: &str, approval_id: &str) -> Result<Vec<Delivery>>;
    /// A webhook endpoint's deliveries, newest first, before `before_id` when given.
    async fn webhook_deliveries(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Delivery>>;
    async fn get_delivery(&self, tenant_id: &str, id: i64) -> Result<Option<Delivery>>;
    /// Makes a finished delivery due again now (a manual redelivery).
    async fn redeliver(&self, tenant_id: &str, id: i64, at: DateTime<Utc>) -> Result<()>;
}

/// OpenID Connect clients, CIBA requests, the callback outbox and token signing keys.
#[async_trait]
pub trait OidcStore: Send + Sync {
    // OpenID Connect clients and CIBA requests
    /// Registers an agent of the tenant (which must be active) as an OpenID client.
    async fn create_oidc_client(&self, client: OidcClient, actor: Actor) -> Result<OidcClient>;
    async fn list_oidc_clients(&self, tenant_id: &str) -> Result<Vec<OidcClient>>;
    async fn get_oidc_client(&self, tenant_id: &str, client_id: &str)
    -> Result<Option<OidcClient>>;
    /// The client with this id, in whatever tenant, while its agent is active: client
    /// authentication starts from the `client_id` alone.
    async fn find_active_oidc_client(&self, client_id: &str) -> Result<Option<OidcClient>>;
    async fn delete_oidc_client(
        &self,
        tenant_id: &str,
        client_id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()>;
    /// Stores a CIBA request: the approval request, its OIDC state and its subscriptions, with
    /// the audit event, in one transaction.
    async fn create_oidc_request(
        &self,
        new: NewOidcRequest,
        actor: Actor,
    ) -> Result<ApprovalRequest>;
    async fn get_oidc_request(
        &self,
        tenant_id: &str,
        approval_id: &str,
    ) -> Result<Option<OidcRequestState>>;
    /// Records a token-endpoint poll of a pending request: a poll sooner than `interval` after
    /// the previous one is too fast and grows the interval by the slow-down step
    /// (`PollRecord::at`). `seen` is the request's polling state as the caller read it: the
    /// write lands only if no other poll came since (one statement in the usual case);
    /// otherwise the store reads it again and retries.
    async fn record_oidc_poll(
        &self,
        approval_id: &str,
        seen: PollSeen,
        at: DateTime<Utc>,
    ) -> Result<PollRecord>;
    /// Remembers a client's `jti` until `expires_at`; false when it was seen before (a replay).
    async fn use_jti(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    async fn set_user_code(
        &self,
        tenant_id: &str,
        user_id: &str,
        code_hash: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()>;
    async fn user_code_hash(&self, tenant_id: &str, user_id: &str) -> Result<Option<String>>;
    /// The server-wide secret `name`, storing `candidate` if there is none yet (replicas
    /// starting at once agree on the first one stored).
    async fn server_secret(
        &self,
        name: &str,
        candidate: Vec<u8>,
        at: DateTime<Utc>,
    ) -> Result<Vec<u8>>;
    /// The `jti` of the access token issued for an approval, if one was.
    async fn token_jti(&self, tenant_id: &str, approval_id: &str) -> Result<Option<String>>;
    // outbox
    /// Claims up to `limit` rows of one kind due at `now`: each gets one more attempt and is
    /// hidden from other workers until `lease_until` (so a worker that dies mid-delivery only
    /// delays it). Safe on every replica at once.
    async fn claim_outbox(
        &self,
        rows: OutboxRows,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxItem>>;
    /// Records how an attempt ended.
    async fn finish_outbox(&self, id: i64, outcome: OutboxOutcome) -> Result<()>;
    // signing keys
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>>;
    /// Stores `candidate` as the active key unless one is already active (another replica may
    /// have created it first); returns every key.
    async fn ensure_signing_key(
        &self,
        candidate: SigningKeyRecord,
    ) -> Result<Vec<SigningKeyRecord>>;
    /// Makes `key` the active key; older keys stay published for verification.
    async fn rotate_signing_key(
        &self,
        key: SigningKeyRecord,
        actor: Actor,
        tenant_id: &str,
    ) -> Result<()>;
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
    + Send
    + Sync
    + std::fmt::Debug
{
    /// `sqlite` or `postgres`.
    fn dialect(&self) -> &'static str;

    /// Hints of changes made by other replicas; `None` when there is only this process.
    fn changes(&self) -> Option<broadcast::Receiver<Change>>;

    // approval requests
    /// Stores a new request with the reviewers who may decide it and from when. For tool
    /// calls, an identical pending call (agent, session, tool, arguments, MCP server) makes this fail
    /// with `AlreadyExists`.
    async fn create_request(
        &self,
        new: NewRequest,
        reviewers: ReviewerPlan,
        actor: Actor,
    ) -> Result<ApprovalRequest>;
    async fn find_request(
        &self,
        tenant_id: &str,
        by: &RequestRef,
    ) -> Result<Option<ApprovalRequest>>;
    /// The unexpired answer remembered under a caller's idempotency key.
    async fn idempotent_answer(
        &self,
        tenant_id: &str,
        owner: &str,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<StoredAnswer>>;
    /// Remembers an answer that created nothing (answers that create a request travel with
    /// it, in [`NewRequest::idempotency`]). Fails with `idempotency_key_in_use` when the key
    /// already holds a live answer.
    async fn remember_answer(&self, answer: StoredAnswer) -> Result<()>;
    /// Deletes answers whose retention has passed; how many.
    async fn forget_expired_answers(&self, now: DateTime<Utc>) -> Result<u64>;
    /// The pending, unexpired approval of an identical tool call (through the same MCP server,
    /// or neither through MCP), if any.
    async fn find_pending_tool_call(
        &self,
        tenant_id: &str,
        call: &SameCall<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<ApprovalRequest>>;
    async fn list_requests(
        &self,
        tenant_id: &str,
        filter: &RequestFilter,
    ) -> Result<Page<ApprovalRequest>>;
    /// When this user became (or becomes) eligible to decide the request, if ever.
    async fn reviewer_since(
        &self,
        approval_id: &str,
        user_id: &str,
    ) -> Result<Option<DateTime<Utc>>>;
    /// Records one reviewer's decision. A rejection rejects; an approval approves once
    /// `required_approvals` distinct reviewers approved. All of it is one compare-and-set on
    /// a pending, unexpired request, so of many concurrent decisions exactly one finishes
    /// the request; the losers learn the current status, and a reviewer who already decided
    /// gets `already_voted`.
    async fn decide(
        &self,
        tenant_id: &str,
        id: &str,
        decision: Decision,
    ) -> Result<ApprovalRequest>;
    async fn list_decisions(&self, approval_id: &str) -> Result<Vec<DecisionRecord>>;
    /// Withdraws a pending request.
    async fn cancel_request(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<ApprovalRequest>;
    /// Records escalation steps that came due (backups or further groups joining).
    async fn escalate_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<ApprovalRequest>>;
    /// Records that the one access token of an approval was issued; false if it already was.
    async fn mark_token_issued(
        &self,
        tenant_id: &str,
        id: &str,
        jti: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<bool>;
    /// Records that a grant was consumed or revoked, with its audit event; false when it had
    /// already ended. Of concurrent calls for one `jti`, exactly one returns true.
    async fn end_grant(&self, ended: EndedGrant, actor: Actor) -> Result<bool>;
    /// Whether the grant with this `jti` was consumed or revoked.
    async fn grant_ended(&self, jti: &str) -> Result<bool>;
    /// Times out up to `limit` pending requests past their expiry (expired, or approved when
    /// their policy says so), each with its audit event. Safe to run on every replica at
    /// once: each request times out exactly once.
    async fn expire_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Expired>>;
    async fn pending_count(&self) -> Result<i64>;
    /// How many unexpired requests of one agent are pending, counting no further than
    /// `up_to` (enough to compare with a limit).
    async fn agent_pending_count(
        &self,
        tenant_id: &str,
        agent_id: &str,
        now: DateTime<Utc>,
        up_to: u64,
    ) -> Result<u64>;

    // audit
    /// Events of a tenant in chain order, after `after_seq`.
    async fn list_audit(
        &self,
        tenant_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<ChainedEvent>>;
    /// Records an audit event that is not part of another change.
    async fn append_audit(&self, record: AuditRecord) -> Result<ChainedEvent>;
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

/// Every status with its count (zero when absent), in the order of [`ApprovalStatus::ALL`].
fn merge_counts(rows: Vec<(String, i64)>) -> Vec<(ApprovalStatus, i64)> {
    ApprovalStatus::ALL
        .into_iter()
        .map(|status| {
            let n = rows
                .iter()
                .filter(|(s, _)| ApprovalStatus::parse(s) == Some(status))
                .map(|(_, n)| *n)
                .sum();
            (status, n)
        })
        .collect()
}
