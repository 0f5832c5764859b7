//! OpenID Connect clients, CIBA request state and the outbox on SQLite.
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
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::rows::{db_error, ms};
use crate::sql;
use countersign_core::routing::ReviewerPlan;

use super::{SqliteStore, append_audit, insert_request_with_plan};

fn bad(idx: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        idx,
        rusqlite::types::Type::Text,
        format!("unexpected {what}").into(),
    )
}

fn client(row: &Row) -> rusqlite::Result<OidcClient> {
    let method: String = row.get(2)?;
    let mode: String = row.get(5)?;
    let jwks: Option<String> = row.get(4)?;
    let grants: String = row.get(9)?;
    Ok(OidcClient {
        client_id: row.get(0)?,
        tenant_id: row.get(1)?,
        auth_method: AuthMethod::parse(&method).ok_or_else(|| bad(2, "auth method"))?,
        secret_hash: row.get(3)?,
        jwks: jwks
            .map(|j| serde_json::from_str(&j))
            .transpose()
            .map_err(|_| bad(4, "jwks"))?,
        delivery_mode: DeliveryMode::parse(&mode).ok_or_else(|| bad(5, "delivery mode"))?,
        notification_endpoint: row.get(6)?,
        request_signing_alg: row.get(7)?,
        user_code_parameter: row.get(8)?,
        grant_types: serde_json::from_str(&grants).map_err(|_| bad(9, "grant types"))?,
        created_at: from_millis(row.get(10)?),
    })
}

fn state(row: &Row) -> rusqlite::Result<OidcRequestState> {
    let mode: String = row.get(3)?;
    Ok(OidcRequestState {
        approval_id: row.get(0)?,
        tenant_id: row.get(1)?,
        client_id: row.get(2)?,
        delivery_mode: DeliveryMode::parse(&mode).ok_or_else(|| bad(3, "delivery mode"))?,
        scope: row.get(4)?,
        acr: row.get(5)?,
        interval_secs: row.get(6)?,
        last_poll_at: row.get::<_, Option<i64>>(7)?.map(from_millis),
    })
}

/// Puts one outbox row per subscription of the request, inside the transaction of the state
/// change that causes it.
pub(super) fn enqueue_outbox(
    conn: &Connection,
    approval_id: &str,
    event: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    conn.prepare_cached(sql::ENQUEUE_CALLBACK)
        .and_then(|mut s| s.execute(params![approval_id, event, ms(at)]))
        .map_err(db_error)?;
    super::notify::enqueue_notification(conn, approval_id, event, None, at)
}

impl SqliteStore {
    pub(super) async fn oidc_create_client(
        &self,
        client: OidcClient,
        actor: Actor,
    ) -> Result<OidcClient> {
        self.write(move |c| {
            let agent: Option<bool> = c
                .prepare_cached(sql::AGENT_DISABLED)
                .and_then(|mut s| {
                    s.query_row([&client.tenant_id, &client.client_id], |r| r.get(0))
                        .optional()
                })
                .map_err(db_error)?;
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
            c.prepare_cached(&format!(
                "INSERT INTO oidc_clients ({CLIENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    client.client_id,
                    client.tenant_id,
                    client.auth_method.as_str(),
                    client.secret_hash,
                    jwks,
                    client.delivery_mode.as_str(),
                    client.notification_endpoint,
                    client.request_signing_alg,
                    client.user_code_parameter,
                    grants,
                    ms(client.created_at),
                ])
            })
            .map_err(|e| match db_error(e) {
                Error::AlreadyExists(_) => Error::AlreadyExists(format!(
                    "agent {:?} is already an OpenID client",
                    client.client_id
                )),
                other => other,
            })?;
            append_audit(
                c,
                audit_records::oidc_client_created(&client, &actor),
            )?;
            Ok(client)
        })
        .await
    }

    pub(super) fn oidc_list_clients(&self, tenant_id: &str) -> Result<Vec<OidcClient>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {CLIENT_COLUMNS} FROM oidc_clients WHERE tenant_id = ?1 ORDER BY client_id"
            ))?
            .query_map([tenant_id], client)?
            .collect()
        })
    }

    pub(super) fn oidc_get_client(
        &self,
        tenant_id: &str,
        client_id: &str,
    ) -> Result<Option<OidcClient>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {CLIENT_COLUMNS} FROM oidc_clients WHERE tenant_id = ?1 AND client_id = ?2"
            ))?
            .query_row([tenant_id, client_id], client)
            .optional()
        })
    }

    pub(super) fn oidc_find_active_client(&self, client_id: &str) -> Result<Option<OidcClient>> {
        let columns = CLIENT_COLUMNS
            .split(", ")
            .map(|col| format!("o.{col}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {columns} FROM oidc_clients o JOIN agents a ON a.id = o.client_id \
                 WHERE o.client_id = ?1 AND a.disabled = 0"
            ))?
            .query_row([client_id], client)
            .optional()
        })
    }

    pub(super) async fn oidc_delete_client(
        &self,
        tenant_id: &str,
        client_id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let (tenant_id, client_id) = (tenant_id.to_string(), client_id.to_string());
        self.write(move |c| {
            let deleted = c
                .prepare_cached(sql::DELETE_OIDC_CLIENT)
                .and_then(|mut s| s.execute([&tenant_id, &client_id]))
                .map_err(db_error)?;
            if deleted == 0 {
                return Err(Error::NotFound("no such OpenID client".into()));
            }
            append_audit(
                c,
                audit_records::oidc_client_deleted(&tenant_id, &client_id, &actor, at),
            )?;
            Ok(())
        })
        .await
    }

    pub(super) async fn oidc_create_request(
        &self,
        new: NewOidcRequest,
        actor: Actor,
    ) -> Result<ApprovalRequest> {
        self.write(move |c| {
            let plan = ReviewerPlan::single(
            new.new.request.user_id.as_deref().unwrap_or_default(),
            new.new.request.created_at,
        );
            insert_request_with_plan(c, &new.new, &plan, &actor)?;
            let s = &new.state;
            c.prepare_cached(&format!(
                "INSERT INTO oidc_requests ({STATE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)"
            ))
            .and_then(|mut st| {
                st.execute(params![
                    s.approval_id,
                    s.tenant_id,
                    s.client_id,
                    s.delivery_mode.as_str(),
                    s.scope,
                    s.acr,
                    s.interval_secs,
                ])
            })
            .map_err(db_error)?;
            for sub in &new.subscriptions {
                c.prepare_cached(
                    sql::INSERT_SUBSCRIPTION,
                )
                .and_then(|mut st| {
                    st.execute(params![
                        s.approval_id,
                        s.tenant_id,
                        sub.channel,
                        sub.target,
                        sub.secret,
                        ms(new.new.request.created_at),
                    ])
                })
                .map_err(db_error)?;
            }
            Ok(new.new.request)
        })
        .await
    }

    pub(super) fn oidc_get_request(
        &self,
        tenant_id: &str,
        approval_id: &str,
    ) -> Result<Option<OidcRequestState>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {STATE_COLUMNS} FROM oidc_requests WHERE tenant_id = ?1 AND approval_id = ?2"
            ))?
            .query_row([tenant_id, approval_id], state)
            .optional()
        })
    }

    pub(super) async fn oidc_record_poll(
        &self,
        approval_id: &str,
        seen: PollSeen,
        at: DateTime<Utc>,
    ) -> Result<PollRecord> {
        let approval_id = approval_id.to_string();
        self.write(move |c| {
            let mut seen = seen;
            // Writes are serial here: a second attempt, on what is stored, always lands.
            for _ in 0..2 {
                let record = PollRecord::at(seen.interval_secs, seen.last_poll_ms, ms(at));
                let written = c
                    .prepare_cached(sql::RECORD_POLL_IF_UNCHANGED)
                    .and_then(|mut s| {
                        s.execute(params![
                            approval_id,
                            ms(at),
                            record.interval_secs,
                            seen.interval_secs,
                            seen.last_poll_ms
                        ])
                    })
                    .map_err(db_error)?;
                if written == 1 {
                    return Ok(record);
                }
                seen = c
                    .prepare_cached(sql::POLL_SEEN)
                    .and_then(|mut s| {
                        s.query_row([&approval_id], |r| {
                            Ok(PollSeen {
                                interval_secs: r.get(0)?,
                                last_poll_ms: r.get(1)?,
                            })
                        })
                        .optional()
                    })
                    .map_err(db_error)?
                    .ok_or_else(no_ciba_request)?;
            }
            Err(Error::internal("a poll could not be recorded"))
        })
        .await
    }

    /// Claims due rows without a write: the lease lives in memory (see `Inner`), so the
    /// first delivery attempt waits for no commit.
    pub(super) fn outbox_claim(
        &self,
        changes: bool,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxItem>> {
        let mut leases = self.inner.outbox_leases.lock();
        leases.retain(|_, until| *until > ms(now));
        let window = i64::from(limit) + leases.len() as i64;
        let due = self.read(|c| {
            c.prepare_cached(
                "SELECT id, tenant_id, approval_id, channel, target, secret, event, attempts, recipient, payload FROM outbox \
                 WHERE state = 'pending' AND next_attempt_at <= ?1 AND (channel = 'notify') = ?3 \
                 ORDER BY next_attempt_at LIMIT ?2",
            )?
            .query_map(params![ms(now), window, changes], |r| {
                Ok(OutboxItem {
                    id: r.get(0)?,
                    tenant_id: r.get(1)?,
                    approval_id: r.get(2)?,
                    channel: r.get(3)?,
                    target: r.get(4)?,
                    secret: r.get(5)?,
                    event: r.get(6)?,
                    attempts: r.get::<_, i64>(7)? + 1,
                    recipient: r.get(8)?,
                    payload: r
                        .get::<_, Option<String>>(9)?
                        .and_then(|p| serde_json::from_str(&p).ok()),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let claimed: Vec<OutboxItem> = due
            .into_iter()
            .filter(|item| !leases.contains_key(&item.id))
            .take(limit as usize)
            .collect();
        for item in &claimed {
            leases.insert(item.id, ms(lease_until));
        }
        Ok(claimed)
    }

    pub(super) async fn outbox_finish(&self, id: i64, outcome: OutboxOutcome) -> Result<()> {
        let store = self.clone();
        let finished = self.write(move |c| {
            let (state, next, delivered, error, status, reference) = outcome.columns();
            c.prepare_cached(
                "UPDATE outbox SET state = ?2, next_attempt_at = ?3, delivered_at = ?4, last_error = ?5, \
                 status_code = ?6, external_ref = COALESCE(?7, external_ref), attempts = attempts + 1 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![id, state, ms(next), delivered.map(ms), error, status, reference])
            })
            .map_err(db_error)?;
            Ok(())
        })
        .await;
        // Once the outcome is durable the row needs no lease (a retry is due by its time);
        // if it is not, the lease keeps the row from being retried at once.
        if finished.is_ok() {
            store.inner.outbox_leases.lock().remove(&id);
        }
        finished
    }
}

fn insert_signing_key(c: &Connection, key: &SigningKeyRecord) -> Result<()> {
    c.prepare_cached(sql::INSERT_SIGNING_KEY)
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

#[async_trait]
impl OidcStore for SqliteStore {
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %client.tenant_id))]
    async fn create_oidc_client(&self, client: OidcClient, actor: Actor) -> Result<OidcClient> {
        self.oidc_create_client(client, actor).await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_oidc_clients(&self, tenant_id: &str) -> Result<Vec<OidcClient>> {
        self.oidc_list_clients(tenant_id)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, client_id = %client_id))]
    async fn get_oidc_client(
        &self,
        tenant_id: &str,
        client_id: &str,
    ) -> Result<Option<OidcClient>> {
        self.oidc_get_client(tenant_id, client_id)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(client_id = %client_id))]
    async fn find_active_oidc_client(&self, client_id: &str) -> Result<Option<OidcClient>> {
        self.oidc_find_active_client(client_id)
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
        self.oidc_get_request(tenant_id, approval_id)
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
        let (client_id, jti) = (client_id.to_string(), jti.to_string());
        self.write(move |c| {
            // Forget what has expired (a replay after expiry fails the `exp` check anyway).
            c.prepare_cached(sql::FORGET_EXPIRED_JTIS)
                .and_then(|mut s| s.execute([ms(now)]))
                .map_err(db_error)?;
            let inserted = c
                .prepare_cached(sql::INSERT_JTI)
                .and_then(|mut s| s.execute(params![client_id, jti, ms(expires_at)]))
                .map_err(db_error)?;
            Ok(inserted == 1)
        })
        .await
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
            tenant_id.to_string(),
            user_id.to_string(),
            code_hash.to_string(),
        );
        self.write(move |c| {
            let exists: bool = c
                .prepare_cached(sql::USER_EXISTS)
                .and_then(|mut s| s.query_row([&tenant_id, &user_id], |r| r.get(0)))
                .map_err(db_error)?;
            if !exists {
                return Err(Error::NotFound("no such user".into()));
            }
            c.prepare_cached(sql::UPSERT_USER_CODE)
                .and_then(|mut s| s.execute(params![user_id, tenant_id, code_hash, ms(at)]))
                .map_err(db_error)?;
            append_audit(
                c,
                audit_records::user_code_set(&tenant_id, &user_id, &actor, at),
            )?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, user_id = %user_id))]
    async fn user_code_hash(&self, tenant_id: &str, user_id: &str) -> Result<Option<String>> {
        self.read(|c| {
            c.prepare_cached(sql::USER_CODE_HASH)?
                .query_row([tenant_id, user_id], |r| r.get(0))
                .optional()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn server_secret(
        &self,
        name: &str,
        candidate: Vec<u8>,
        at: DateTime<Utc>,
    ) -> Result<Vec<u8>> {
        let name = name.to_string();
        self.write(move |c| {
            c.prepare_cached(sql::INSERT_SERVER_SECRET)
                .and_then(|mut s| s.execute(params![name, candidate, ms(at)]))
                .map_err(db_error)?;
            c.prepare_cached(sql::SERVER_SECRET)
                .and_then(|mut s| s.query_row([&name], |r| r.get(0)))
                .map_err(db_error)
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, approval_id = %approval_id))]
    async fn token_jti(&self, tenant_id: &str, approval_id: &str) -> Result<Option<String>> {
        self.read(|c| {
            c.prepare_cached(sql::TOKEN_JTI)?
                .query_row([tenant_id, approval_id], |r| r.get::<_, Option<String>>(0))
                .optional()
                .map(Option::flatten)
        })
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
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(id = %id))]
    async fn finish_outbox(&self, id: i64, outcome: OutboxOutcome) -> Result<()> {
        self.outbox_finish(id, outcome).await
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        self.read(|c| {
            c.prepare_cached(sql::SIGNING_KEYS)?
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

    #[tracing::instrument(skip_all, err(level = "warn"))]
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

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
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
}
