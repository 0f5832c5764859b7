//! OpenID Connect clients, CIBA request state and the outbox on PostgreSQL.
use super::rows;
use crate::sql;
use crate::sql::CLIENT_COLUMNS;
use crate::sql::STATE_COLUMNS;
use crate::{OidcStore, SigningKeyRecord};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::approval::ApprovalRequest;
use countersign_core::audit::Actor;
use countersign_core::clock::from_millis;
use countersign_core::oidc::{
    AuthMethod, DeliveryMode, NewOidcRequest, OidcClient, OidcRequestState, OutboxItem,
    OutboxOutcome, PollRecord, PollSeen,
};
use countersign_core::{Error, Result};

use crate::audit_records;
use crate::records::no_ciba_request;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::rows::{ms, pg_error};
use countersign_core::routing::ReviewerPlan;

use super::{PgStore, append_audit, insert_request, notify};

/// Attempts to record a poll while other polls of the same request keep landing first.
const MAX_POLL_ATTEMPTS: usize = 8;

fn bad(what: &str) -> Error {
    Error::Internal(format!("unexpected {what} in the database"))
}

fn get<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
    row: &'r PgRow,
    idx: usize,
) -> Result<T> {
    row.try_get(idx).map_err(pg_error)
}

fn client(row: &PgRow) -> Result<OidcClient> {
    let method: String = get(row, 2)?;
    let mode: String = get(row, 5)?;
    let jwks: Option<String> = get(row, 4)?;
    let grants: String = get(row, 9)?;
    Ok(OidcClient {
        client_id: get(row, 0)?,
        tenant_id: get(row, 1)?,
        auth_method: AuthMethod::parse(&method).ok_or_else(|| bad("auth method"))?,
        secret_hash: get(row, 3)?,
        jwks: jwks
            .map(|j| serde_json::from_str(&j))
            .transpose()
            .map_err(|_| bad("jwks"))?,
        delivery_mode: DeliveryMode::parse(&mode).ok_or_else(|| bad("delivery mode"))?,
        notification_endpoint: get(row, 6)?,
        request_signing_alg: get(row, 7)?,
        user_code_parameter: get(row, 8)?,
        grant_types: serde_json::from_str(&grants).map_err(|_| bad("grant types"))?,
        created_at: from_millis(get(row, 10)?),
    })
}

fn state(row: &PgRow) -> Result<OidcRequestState> {
    let mode: String = get(row, 3)?;
    Ok(OidcRequestState {
        approval_id: get(row, 0)?,
        tenant_id: get(row, 1)?,
        client_id: get(row, 2)?,
        delivery_mode: DeliveryMode::parse(&mode).ok_or_else(|| bad("delivery mode"))?,
        scope: get(row, 4)?,
        acr: get(row, 5)?,
        interval_secs: get(row, 6)?,
        last_poll_at: get::<Option<i64>>(row, 7)?.map(from_millis),
    })
}

/// Puts one outbox row per subscription of the request, inside the transaction of the state
/// change that causes it.
pub(super) async fn enqueue_outbox(
    conn: &mut PgConnection,
    approval_id: &str,
    event: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(&sql::pg(sql::ENQUEUE_CALLBACK))
        .bind(approval_id)
        .bind(event)
        .bind(ms(at))
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
    super::notify::enqueue_notification(conn, approval_id, event, None, at).await
}

impl PgStore {
    pub(super) async fn oidc_create_client(
        &self,
        client: OidcClient,
        actor: Actor,
    ) -> Result<OidcClient> {
        let mut tx = self.begin().await?;
        let agent: Option<bool> = sqlx::query_scalar(&sql::pg(sql::AGENT_DISABLED))
            .bind(&client.tenant_id)
            .bind(&client.client_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(pg_error)?;
        if agent != Some(false) {
            return Err(Error::NotFound(format!(
                "no active agent {:?} in this tenant",
                client.client_id
            )));
        }
        let jwks = client
            .jwks
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(Error::internal)?;
        let grants = serde_json::to_string(&client.grant_types).map_err(Error::internal)?;
        sqlx::query(&format!(
            "INSERT INTO oidc_clients ({CLIENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&client.client_id)
        .bind(&client.tenant_id)
        .bind(client.auth_method.as_str())
        .bind(&client.secret_hash)
        .bind(jwks)
        .bind(client.delivery_mode.as_str())
        .bind(&client.notification_endpoint)
        .bind(&client.request_signing_alg)
        .bind(client.user_code_parameter)
        .bind(grants)
        .bind(ms(client.created_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| match pg_error(e) {
            Error::AlreadyExists(_) => Error::AlreadyExists(format!(
                "agent {:?} is already an OpenID client",
                client.client_id
            )),
            other => other,
        })?;
        append_audit(&mut tx, audit_records::oidc_client_created(&client, &actor)).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(client)
    }

    pub(super) async fn oidc_list_clients(&self, tenant_id: &str) -> Result<Vec<OidcClient>> {
        sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oidc_clients WHERE tenant_id = $1 ORDER BY client_id"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?
        .iter()
        .map(client)
        .collect()
    }

    pub(super) async fn oidc_get_client(
        &self,
        tenant_id: &str,
        client_id: &str,
    ) -> Result<Option<OidcClient>> {
        sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oidc_clients WHERE tenant_id = $1 AND client_id = $2"
        ))
        .bind(tenant_id)
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?
        .map(|r| client(&r))
        .transpose()
    }

    pub(super) async fn oidc_find_active_client(
        &self,
        client_id: &str,
    ) -> Result<Option<OidcClient>> {
        let columns = CLIENT_COLUMNS
            .split(", ")
            .map(|col| format!("o.{col}"))
            .collect::<Vec<_>>()
            .join(", ");
        sqlx::query(&format!(
            "SELECT {columns} FROM oidc_clients o JOIN agents a ON a.id = o.client_id \
             WHERE o.client_id = $1 AND NOT a.disabled"
        ))
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?
        .map(|r| client(&r))
        .transpose()
    }

    pub(super) async fn oidc_delete_client(
        &self,
        tenant_id: &str,
        client_id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let deleted = sqlx::query(&sql::pg(sql::DELETE_OIDC_CLIENT))
            .bind(tenant_id)
            .bind(client_id)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?
            .rows_affected();
        if deleted == 0 {
            return Err(Error::NotFound("no such OpenID client".into()));
        }
        append_audit(
            &mut tx,
            audit_records::oidc_client_deleted(tenant_id, client_id, &actor, at),
        )
        .await?;
        tx.commit().await.map_err(pg_error)
    }

    pub(super) async fn oidc_create_request(
        &self,
        new: NewOidcRequest,
        actor: Actor,
    ) -> Result<ApprovalRequest> {
        let mut tx = self.begin().await?;
        let plan = ReviewerPlan::single(
            new.new.request.user_id.as_deref().unwrap_or_default(),
            new.new.request.created_at,
        );
        insert_request(&mut tx, &new.new, &plan, &actor).await?;
        let s = &new.state;
        sqlx::query(&format!(
            "INSERT INTO oidc_requests ({STATE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)"
        ))
        .bind(&s.approval_id)
        .bind(&s.tenant_id)
        .bind(&s.client_id)
        .bind(s.delivery_mode.as_str())
        .bind(&s.scope)
        .bind(&s.acr)
        .bind(s.interval_secs)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        for sub in &new.subscriptions {
            sqlx::query(&sql::pg(sql::INSERT_SUBSCRIPTION))
                .bind(&s.approval_id)
                .bind(&s.tenant_id)
                .bind(&sub.channel)
                .bind(&sub.target)
                .bind(&sub.secret)
                .bind(ms(new.new.request.created_at))
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?;
        }
        notify(&mut tx, &format!("r:{}", s.approval_id)).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(new.new.request)
    }

    pub(super) async fn oidc_get_request(
        &self,
        tenant_id: &str,
        approval_id: &str,
    ) -> Result<Option<OidcRequestState>> {
        sqlx::query(&format!(
            "SELECT {STATE_COLUMNS} FROM oidc_requests WHERE tenant_id = $1 AND approval_id = $2"
        ))
        .bind(tenant_id)
        .bind(approval_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?
        .map(|r| state(&r))
        .transpose()
    }

    pub(super) async fn oidc_record_poll(
        &self,
        approval_id: &str,
        mut seen: PollSeen,
        at: DateTime<Utc>,
    ) -> Result<PollRecord> {
        // One statement when no other poll came since `seen` was read; otherwise read again
        // and judge the poll on what is stored (concurrent polls of one request are rare).
        for _ in 0..MAX_POLL_ATTEMPTS {
            let record = PollRecord::at(seen.interval_secs, seen.last_poll_ms, ms(at));
            let written = sqlx::query(&sql::pg(sql::RECORD_POLL_IF_UNCHANGED))
                .bind(approval_id)
                .bind(ms(at))
                .bind(record.interval_secs)
                .bind(seen.interval_secs)
                .bind(seen.last_poll_ms)
                .execute(&self.pool)
                .await
                .map_err(pg_error)?
                .rows_affected();
            if written == 1 {
                return Ok(record);
            }
            let row = sqlx::query(&sql::pg(sql::POLL_SEEN))
                .bind(approval_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(pg_error)?
                .ok_or_else(no_ciba_request)?;
            seen = PollSeen {
                interval_secs: get(&row, 0)?,
                last_poll_ms: get(&row, 1)?,
            };
        }
        Err(Error::internal(
            "a poll could not be recorded: too many concurrent polls",
        ))
    }

    pub(super) async fn outbox_claim(
        &self,
        changes: bool,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxItem>> {
        // Rows another replica is claiming are skipped, not waited for.
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2 WHERE id IN \
             (SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $1 \
              AND (channel = 'notify') = $4 ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING id, tenant_id, approval_id, channel, target, secret, event, attempts, recipient, payload",
        )
        .bind(ms(now))
        .bind(ms(lease_until))
        .bind(i64::from(limit))
        .bind(changes)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?
        .iter()
        .map(|r| {
            Ok(OutboxItem {
                id: get(r, 0)?,
                tenant_id: get(r, 1)?,
                approval_id: get(r, 2)?,
                channel: get(r, 3)?,
                target: get(r, 4)?,
                secret: get(r, 5)?,
                event: get(r, 6)?,
                attempts: get(r, 7)?,
                recipient: get(r, 8)?,
                payload: get::<Option<String>>(r, 9)?
                    .and_then(|p| serde_json::from_str(&p).ok()),
            })
        })
        .collect()
    }

    pub(super) async fn outbox_finish(&self, id: i64, outcome: OutboxOutcome) -> Result<()> {
        let (state, next, delivered, error, status, reference) = outcome.columns();
        sqlx::query(
            "UPDATE outbox SET state = $2, next_attempt_at = $3, delivered_at = $4, last_error = $5, \
             status_code = $6, external_ref = COALESCE($7, external_ref) WHERE id = $1",
        )
        .bind(id)
        .bind(state)
        .bind(ms(next))
        .bind(delivered.map(ms))
        .bind(error)
        .bind(status)
        .bind(reference)
        .execute(&self.pool)
        .await
        .map_err(pg_error)?;
        Ok(())
    }
}

/// Serialises creation of the first signing key.
const SIGNING_KEY_LOCK: i64 = 0x0063_6f75_6e74_6b65;

async fn insert_signing_key(conn: &mut PgConnection, key: &SigningKeyRecord) -> Result<()> {
    sqlx::query(&sql::pg(sql::INSERT_SIGNING_KEY))
        .bind(&key.kid)
        .bind(&key.alg)
        .bind(&key.private_der)
        .bind(ms(key.created_at))
        .bind(key.active)
        .execute(conn)
        .await
        .map_err(pg_error)?;
    Ok(())
}

#[async_trait]
impl OidcStore for PgStore {
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %client.tenant_id))]
    async fn create_oidc_client(&self, client: OidcClient, actor: Actor) -> Result<OidcClient> {
        self.oidc_create_client(client, actor).await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_oidc_clients(&self, tenant_id: &str) -> Result<Vec<OidcClient>> {
        self.oidc_list_clients(tenant_id).await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, client_id = %client_id))]
    async fn get_oidc_client(
        &self,
        tenant_id: &str,
        client_id: &str,
    ) -> Result<Option<OidcClient>> {
        self.oidc_get_client(tenant_id, client_id).await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(client_id = %client_id))]
    async fn find_active_oidc_client(&self, client_id: &str) -> Result<Option<OidcClient>> {
        self.oidc_find_active_client(client_id).await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, client_id = %client_id))]
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

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %new.new.request.tenant_id))]
    async fn create_oidc_request(
        &self,
        new: NewOidcRequest,
        actor: Actor,
    ) -> Result<ApprovalRequest> {
        self.oidc_create_request(new, actor).await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, approval_id = %approval_id))]
    async fn get_oidc_request(
        &self,
        tenant_id: &str,
        approval_id: &str,
    ) -> Result<Option<OidcRequestState>> {
        self.oidc_get_request(tenant_id, approval_id).await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(approval_id = %approval_id))]
    async fn record_oidc_poll(
        &self,
        approval_id: &str,
        seen: PollSeen,
        at: DateTime<Utc>,
    ) -> Result<PollRecord> {
        self.oidc_record_poll(approval_id, seen, at).await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(client_id = %client_id))]
    async fn use_jti(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        sqlx::query(&sql::pg(sql::FORGET_EXPIRED_JTIS))
            .bind(ms(now))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        let inserted = sqlx::query(&sql::pg(sql::INSERT_JTI))
            .bind(client_id)
            .bind(jti)
            .bind(ms(expires_at))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?
            .rows_affected();
        tx.commit().await.map_err(pg_error)?;
        Ok(inserted == 1)
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
        let mut tx = self.begin().await?;
        let exists: bool = sqlx::query_scalar(&sql::pg(sql::USER_EXISTS))
            .bind(tenant_id)
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(pg_error)?;
        if !exists {
            return Err(Error::NotFound("no such user".into()));
        }
        sqlx::query(&sql::pg(sql::UPSERT_USER_CODE))
            .bind(user_id)
            .bind(tenant_id)
            .bind(code_hash)
            .bind(ms(at))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        append_audit(
            &mut tx,
            audit_records::user_code_set(tenant_id, user_id, &actor, at),
        )
        .await?;
        tx.commit().await.map_err(pg_error)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, user_id = %user_id))]
    async fn user_code_hash(&self, tenant_id: &str, user_id: &str) -> Result<Option<String>> {
        sqlx::query_scalar(&sql::pg(sql::USER_CODE_HASH))
            .bind(tenant_id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn server_secret(
        &self,
        name: &str,
        candidate: Vec<u8>,
        at: DateTime<Utc>,
    ) -> Result<Vec<u8>> {
        sqlx::query(&sql::pg(sql::INSERT_SERVER_SECRET))
            .bind(name)
            .bind(candidate)
            .bind(ms(at))
            .execute(&self.pool)
            .await
            .map_err(pg_error)?;
        sqlx::query_scalar(&sql::pg(sql::SERVER_SECRET))
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(pg_error)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, approval_id = %approval_id))]
    async fn token_jti(&self, tenant_id: &str, approval_id: &str) -> Result<Option<String>> {
        let jti: Option<Option<String>> = sqlx::query_scalar(&sql::pg(sql::TOKEN_JTI))
            .bind(tenant_id)
            .bind(approval_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?;
        Ok(jti.flatten())
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn claim_outbox(
        &self,
        rows: crate::OutboxRows,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxItem>> {
        self.outbox_claim(rows.changes(), now, lease_until, limit)
            .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(id = %id))]
    async fn finish_outbox(&self, id: i64, outcome: OutboxOutcome) -> Result<()> {
        self.outbox_finish(id, outcome).await
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        sqlx::query(&sql::pg(sql::SIGNING_KEYS))
            .fetch_all(&self.pool)
            .await
            .map_err(pg_error)?
            .iter()
            .map(rows::signing_key)
            .collect()
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn ensure_signing_key(
        &self,
        candidate: SigningKeyRecord,
    ) -> Result<Vec<SigningKeyRecord>> {
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SIGNING_KEY_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        let active: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM signing_keys WHERE active)")
                .fetch_one(&mut *tx)
                .await
                .map_err(pg_error)?;
        if !active {
            insert_signing_key(&mut tx, &candidate).await?;
            notify(&mut tx, "k").await?;
        }
        tx.commit().await.map_err(pg_error)?;
        self.signing_keys().await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn rotate_signing_key(
        &self,
        key: SigningKeyRecord,
        actor: Actor,
        tenant_id: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SIGNING_KEY_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        sqlx::query("UPDATE signing_keys SET active = FALSE WHERE active")
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        insert_signing_key(&mut tx, &key).await?;
        append_audit(
            &mut tx,
            audit_records::signing_key_rotated(tenant_id, &key, &actor),
        )
        .await?;
        notify(&mut tx, "k").await?;
        tx.commit().await.map_err(pg_error)
    }
}
