//! OpenID Connect clients, CIBA requests and their polls, the callback outbox and the token
//! signing keys, for both backends. Only what the backends really do differently lives in
//! `sqlite/oidc.rs` and `postgres/oidc.rs`: where a token poll runs, and how outbox rows are
//! claimed and finished.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::approval::ApprovalRequest;
use countersign_core::audit::Actor;
use countersign_core::oidc::{
    NewOidcRequest, OidcClient, OidcRequestState, OutboxItem, OutboxOutcome, PollRecord, PollSeen,
};
use countersign_core::routing::ReviewerPlan;
use countersign_core::{Error, Result};

use crate::db::{Commit, Db, Dialect, Tx, run};
use crate::records::no_ciba_request;
use crate::rows::{client, state};
use crate::sql::{CLIENT_COLUMNS, STATE_COLUMNS};
use crate::writes::{insert_request_with_plan, json_text, renamed_conflict};
use crate::{OutboxClaim, SigningKeyRecord, audit_records, rows, sql};

/// Attempts to record a poll while other polls of the same request keep landing first.
const MAX_POLL_ATTEMPTS: usize = 8;

/// Serialises changes of the active signing key between replicas.
const SIGNING_KEY_LOCK: i64 = 0x0063_6f75_6e74_6b65;

/// The columns an outbox claim returns: id, tenant_id, approval_id, channel, target, secret,
/// event, attempts, recipient, payload.
pub(crate) const OUTBOX_ITEM_COLUMNS: &str =
    "id, tenant_id, approval_id, channel, target, secret, event, attempts, recipient, payload";

/// Records an attempt's outcome; `attempts` is what the row's attempt count grows by (the
/// backends count the attempt either when claiming or when finishing it).
pub(crate) async fn finish_outbox_row(
    tx: &mut dyn Tx,
    id: i64,
    outcome: OutboxOutcome,
    attempts: i64,
) -> Result<()> {
    let (state, next, delivered, error, status, reference) = outcome.columns();
    tx.exec(
        "UPDATE outbox SET state = ?2, next_attempt_at = ?3, delivered_at = ?4, last_error = ?5, \
         status_code = ?6, external_ref = COALESCE(?7, external_ref), attempts = attempts + ?8 \
         WHERE id = ?1",
        args![
            id, state, next, delivered, &error, status, &reference, attempts
        ],
    )
    .await?;
    Ok(())
}

/// Records a token poll judged on `seen`: the write lands only if no other poll came since;
/// otherwise the poll is judged again on what is stored.
async fn record_poll(
    tx: &mut dyn Tx,
    approval_id: &str,
    mut seen: PollSeen,
    at: DateTime<Utc>,
) -> Result<PollRecord> {
    for _ in 0..MAX_POLL_ATTEMPTS {
        let record = PollRecord::at(seen.interval_secs, seen.last_poll_ms, at.timestamp_millis());
        let values = args![
            approval_id,
            at,
            record.interval_secs,
            seen.interval_secs,
            seen.last_poll_ms
        ];
        if tx.exec(sql::RECORD_POLL_IF_UNCHANGED, values).await? == 1 {
            return Ok(record);
        }
        seen = tx
            .one(sql::POLL_SEEN, args![approval_id], |row| {
                Ok(PollSeen {
                    interval_secs: row.get(0)?,
                    last_poll_ms: row.get(1)?,
                })
            })
            .await?
            .ok_or_else(no_ciba_request)?;
    }
    Err(Error::internal_msg(
        "a poll could not be recorded: too many concurrent polls",
    ))
}

/// Makes concurrent changes of the active signing key wait for each other. SQLite's single
/// writer already serialises them; PostgreSQL replicas take an advisory lock.
async fn lock_signing_keys(tx: &mut dyn Tx) -> Result<()> {
    if tx.dialect() == Dialect::Postgres {
        tx.exec("SELECT pg_advisory_xact_lock(?1)", args![SIGNING_KEY_LOCK])
            .await?;
    }
    Ok(())
}

async fn insert_signing_key(tx: &mut dyn Tx, key: &SigningKeyRecord) -> Result<()> {
    let values = args![
        &key.kid,
        &key.alg,
        &key.private_der,
        key.created_at,
        key.active
    ];
    tx.exec(sql::INSERT_SIGNING_KEY, values).await?;
    Ok(())
}

/// OpenID Connect clients, CIBA requests, the callback outbox and token signing keys.
#[async_trait]
pub trait OidcStore: Db {
    // OpenID Connect clients and CIBA requests
    /// Registers an agent of the tenant (which must be active) as an OpenID client.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %client.tenant_id))]
    async fn create_oidc_client(&self, client: OidcClient, actor: Actor) -> Result<OidcClient> {
        write_tx!(self, |tx| {
            let key = args![&client.tenant_id, &client.client_id];
            let disabled: Option<bool> = tx.scalar(sql::AGENT_DISABLED, key).await?;
            if disabled != Some(false) {
                return Err(Error::NotFound(format!(
                    "no active agent {:?} in this tenant",
                    client.client_id
                )));
            }
            let jwks = client.jwks.as_ref().map(json_text).transpose()?;
            let grants = json_text(&client.grant_types)?;
            let values = args![
                &client.client_id,
                &client.tenant_id,
                client.auth_method.as_str(),
                &client.secret_hash,
                &jwks,
                client.delivery_mode.as_str(),
                &client.notification_endpoint,
                &client.request_signing_alg,
                client.user_code_parameter,
                &grants,
                client.created_at,
            ];
            let insert = format!(
                "INSERT INTO oidc_clients ({CLIENT_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            );
            tx.exec(&insert, values).await.map_err(|e| {
                renamed_conflict(
                    e,
                    &format!("agent {:?} is already an OpenID client", client.client_id),
                )
            })?;
            tx.audit(audit_records::oidc_client_created(&client, &actor))
                .await?;
            Ok(client)
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_oidc_clients(&self, tenant_id: &str) -> Result<Vec<OidcClient>> {
        let sql = format!(
            "SELECT {CLIENT_COLUMNS} FROM oidc_clients WHERE tenant_id = ?1 ORDER BY client_id"
        );
        self.reader()
            .await?
            .all(&sql, args![tenant_id], client)
            .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, client_id = %client_id))]
    async fn get_oidc_client(
        &self,
        tenant_id: &str,
        client_id: &str,
    ) -> Result<Option<OidcClient>> {
        let sql = format!(
            "SELECT {CLIENT_COLUMNS} FROM oidc_clients WHERE tenant_id = ?1 AND client_id = ?2"
        );
        self.reader()
            .await?
            .one(&sql, args![tenant_id, client_id], client)
            .await
    }

    /// The client with this id, in whatever tenant, while its agent is active: client
    /// authentication starts from the `client_id` alone.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(client_id = %client_id))]
    async fn find_active_oidc_client(&self, client_id: &str) -> Result<Option<OidcClient>> {
        let columns = CLIENT_COLUMNS
            .split(", ")
            .map(|col| format!("o.{col}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {columns} FROM oidc_clients o JOIN agents a ON a.id = o.client_id \
             WHERE o.client_id = ?1 AND NOT a.disabled"
        );
        self.reader()
            .await?
            .one(&sql, args![client_id], client)
            .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, client_id = %client_id))]
    async fn delete_oidc_client(
        &self,
        tenant_id: &str,
        client_id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let (tenant_id, client_id) = (tenant_id.to_owned(), client_id.to_owned());
        write_tx!(self, |tx| {
            let key = args![&tenant_id, &client_id];
            if tx.exec(sql::DELETE_OIDC_CLIENT, key).await? == 0 {
                return Err(Error::NotFound("no such OpenID client".into()));
            }
            tx.audit(audit_records::oidc_client_deleted(
                &tenant_id, &client_id, &actor, at,
            ))
            .await?;
            Ok(())
        })
    }

    /// Stores a CIBA request: the approval request, its OIDC state and its subscriptions, with
    /// the audit event, in one transaction.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %new.new.request.tenant_id))]
    async fn create_oidc_request(
        &self,
        new: NewOidcRequest,
        actor: Actor,
    ) -> Result<ApprovalRequest> {
        write_tx!(self, |tx| {
            let request = &new.new.request;
            let plan = ReviewerPlan::single(
                request.user_id.as_deref().unwrap_or_default(),
                request.created_at,
            );
            insert_request_with_plan(tx, &new.new, &plan, &actor).await?;
            let s = &new.state;
            let insert = format!(
                "INSERT INTO oidc_requests ({STATE_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)"
            );
            let values = args![
                &s.approval_id,
                &s.tenant_id,
                &s.client_id,
                s.delivery_mode.as_str(),
                &s.scope,
                &s.acr,
                s.interval_secs,
            ];
            tx.exec(&insert, values).await?;
            for sub in &new.subscriptions {
                let values = args![
                    &s.approval_id,
                    &s.tenant_id,
                    &sub.channel,
                    &sub.target,
                    &sub.secret,
                    request.created_at,
                ];
                tx.exec(sql::INSERT_SUBSCRIPTION, values).await?;
            }
            tx.hint(&format!("r:{}", s.approval_id)).await?;
            Ok(new.new.request)
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, approval_id = %approval_id))]
    async fn get_oidc_request(
        &self,
        tenant_id: &str,
        approval_id: &str,
    ) -> Result<Option<OidcRequestState>> {
        let sql = format!(
            "SELECT {STATE_COLUMNS} FROM oidc_requests WHERE tenant_id = ?1 AND approval_id = ?2"
        );
        self.reader()
            .await?
            .one(&sql, args![tenant_id, approval_id], state)
            .await
    }

    /// Records a token-endpoint poll of a pending request: a poll sooner than `interval` after
    /// the previous one is too fast and grows the interval by the slow-down step
    /// (`PollRecord::at`). `seen` is the request's polling state as the caller read it: the
    /// write lands only if no other poll came since (one statement in the usual case);
    /// otherwise the store reads it again and retries.
    ///
    /// Statement by statement (see [`Commit::EachStatement`]), so the usual poll is one
    /// statement on PostgreSQL; a poll from another replica that lands first makes it read
    /// again.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(approval_id = %approval_id))]
    async fn record_oidc_poll(
        &self,
        approval_id: &str,
        seen: PollSeen,
        at: DateTime<Utc>,
    ) -> Result<PollRecord> {
        let approval_id = approval_id.to_owned();
        run(self, Commit::EachStatement, move |tx| {
            Box::pin(async move { record_poll(tx, &approval_id, seen, at).await })
        })
        .await
    }

    /// Remembers a client's `jti` until `expires_at`; false when it was seen before (a replay).
    #[tracing::instrument(skip_all, err(level = "warn"), fields(client_id = %client_id))]
    async fn use_jti(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (client_id, jti) = (client_id.to_owned(), jti.to_owned());
        write_tx!(self, |tx| {
            // Forget what has expired (a replay after expiry fails the `exp` check anyway).
            tx.exec(sql::FORGET_EXPIRED_JTIS, args![now]).await?;
            let inserted = tx
                .exec(sql::INSERT_JTI, args![&client_id, &jti, expires_at])
                .await?;
            Ok(inserted == 1)
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, user_id = %user_id))]
    async fn set_user_code(
        &self,
        tenant_id: &str,
        user_id: &str,
        code_hash: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let (tenant_id, user_id, code_hash) = (
            tenant_id.to_owned(),
            user_id.to_owned(),
            code_hash.to_owned(),
        );
        write_tx!(self, |tx| {
            let exists: Option<bool> = tx
                .scalar(sql::USER_EXISTS, args![&tenant_id, &user_id])
                .await?;
            if exists != Some(true) {
                return Err(Error::NotFound("no such user".into()));
            }
            let values = args![&user_id, &tenant_id, &code_hash, at];
            tx.exec(sql::UPSERT_USER_CODE, values).await?;
            tx.audit(audit_records::user_code_set(
                &tenant_id, &user_id, &actor, at,
            ))
            .await?;
            Ok(())
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, user_id = %user_id))]
    async fn user_code_hash(&self, tenant_id: &str, user_id: &str) -> Result<Option<String>> {
        self.reader()
            .await?
            .scalar(sql::USER_CODE_HASH, args![tenant_id, user_id])
            .await
    }

    /// The server-wide secret `name`, storing `candidate` if there is none yet (replicas
    /// starting at once agree on the first one stored).
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn server_secret(
        &self,
        name: &str,
        candidate: Vec<u8>,
        at: DateTime<Utc>,
    ) -> Result<Vec<u8>> {
        let name = name.to_owned();
        write_tx!(self, |tx| {
            tx.exec(sql::INSERT_SERVER_SECRET, args![&name, &candidate, at])
                .await?;
            tx.scalar(sql::SERVER_SECRET, args![&name])
                .await?
                .ok_or_else(|| Error::internal_msg("a server secret was not stored"))
        })
    }

    /// The `jti` of the access token issued for an approval, if one was.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, approval_id = %approval_id))]
    async fn token_jti(&self, tenant_id: &str, approval_id: &str) -> Result<Option<String>> {
        let jti: Option<Option<String>> = self
            .reader()
            .await?
            .scalar(sql::TOKEN_JTI, args![tenant_id, approval_id])
            .await?;
        Ok(jti.flatten())
    }

    // outbox
    /// Claims up to `limit` rows of one kind due at `now`: each gets one more attempt and is
    /// hidden from other workers until `lease_until` (so a worker that dies mid-delivery only
    /// delays it). Safe on every replica at once.
    ///
    /// Per backend: PostgreSQL claims with `FOR UPDATE SKIP LOCKED`, writing the lease;
    /// SQLite's one process keeps leases in memory, so a claim writes nothing.
    async fn claim_outbox(&self, claim: OutboxClaim) -> Result<Vec<OutboxItem>>;

    /// Records how an attempt ended. Per backend, with the claim: SQLite counts the attempt
    /// here and drops its in-memory lease once the outcome is durable.
    async fn finish_outbox(&self, id: i64, outcome: OutboxOutcome) -> Result<()>;

    // signing keys
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        self.reader()
            .await?
            .all(sql::SIGNING_KEYS, args![], rows::signing_key)
            .await
    }

    /// Stores `candidate` as the active key unless one is already active (another replica may
    /// have created it first); returns every key.
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn ensure_signing_key(
        &self,
        candidate: SigningKeyRecord,
    ) -> Result<Vec<SigningKeyRecord>> {
        write_tx!(self, |tx| {
            lock_signing_keys(tx).await?;
            let active: Option<bool> = tx
                .scalar(
                    "SELECT EXISTS (SELECT 1 FROM signing_keys WHERE active)",
                    args![],
                )
                .await?;
            if active != Some(true) {
                insert_signing_key(tx, &candidate).await?;
                tx.hint("k").await?;
            }
            Ok(())
        })?;
        self.signing_keys().await
    }

    /// Makes `key` the active key; older keys stay published for verification.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn rotate_signing_key(
        &self,
        key: SigningKeyRecord,
        actor: Actor,
        tenant_id: &str,
    ) -> Result<()> {
        let tenant_id = tenant_id.to_owned();
        write_tx!(self, |tx| {
            lock_signing_keys(tx).await?;
            tx.exec(
                "UPDATE signing_keys SET active = FALSE WHERE active",
                args![],
            )
            .await?;
            insert_signing_key(tx, &key).await?;
            tx.audit(audit_records::signing_key_rotated(&tenant_id, &key, &actor))
                .await?;
            tx.hint("k").await?;
            Ok(())
        })
    }
}
