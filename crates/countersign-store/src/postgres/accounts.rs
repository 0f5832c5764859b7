//! The dashboard's accounts on PostgreSQL: one-time links, sessions, passkeys, ceremonies.
use crate::sql::{LINK_COLUMNS, PASSKEY_COLUMNS, SESSION_COLUMNS};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::audit::Actor;
use countersign_core::dashboard::{
    self, LinkKind, LoginLink, NewLink, NewSession, PasskeyRecord, Session, SessionProof,
};
use countersign_core::directory::User;
use countersign_core::{Error, Result};
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use super::rows::{self, USER_COLUMNS, bad, get, ms, opt_time, pg_error, time};
use super::{PgStore, append_audit, not_found};
use crate::audit_records;
use crate::listing;
use crate::sql;
use crate::{DashboardStore, merge_counts};
use countersign_proto::ApprovalStatus;

fn prefixed(columns: &str, prefix: &str) -> String {
    columns
        .split(", ")
        .map(|c| format!("{prefix}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn link(row: &PgRow) -> Result<LoginLink> {
    let kind: String = get(row, 3)?;
    Ok(LoginLink {
        id: get(row, 0)?,
        tenant_id: get(row, 1)?,
        user_id: get(row, 2)?,
        kind: LinkKind::parse(&kind).ok_or_else(|| bad("link kind"))?,
        created_at: time(row, 4)?,
        expires_at: time(row, 5)?,
        used_at: opt_time(row, 6)?,
        revoked_at: opt_time(row, 7)?,
    })
}

fn session(row: &PgRow) -> Result<Session> {
    Ok(Session {
        id: get(row, 0)?,
        tenant_id: get(row, 1)?,
        user_id: get(row, 2)?,
        method: get(row, 3)?,
        user_agent: get(row, 4)?,
        created_at: time(row, 5)?,
        last_seen_at: time(row, 6)?,
        expires_at: time(row, 7)?,
        revoked_at: opt_time(row, 8)?,
    })
}

fn passkey(row: &PgRow) -> Result<PasskeyRecord> {
    Ok(PasskeyRecord {
        id: get(row, 0)?,
        tenant_id: get(row, 1)?,
        user_id: get(row, 2)?,
        credential_id: get(row, 3)?,
        name: get(row, 4)?,
        credential: get(row, 5)?,
        created_at: time(row, 6)?,
        last_used_at: opt_time(row, 7)?,
    })
}

fn user_at(row: &PgRow, offset: usize) -> Result<User> {
    Ok(User {
        id: get(row, offset)?,
        tenant_id: get(row, offset + 1)?,
        email: get(row, offset + 2)?,
        name: get(row, offset + 3)?,
        disabled: get(row, offset + 4)?,
        created_at: time(row, offset + 5)?,
        is_admin: get(row, offset + 6)?,
    })
}

async fn user_in_tx(c: &mut PgConnection, tenant_id: &str, id: &str) -> Result<Option<User>> {
    sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(c)
    .await
    .map_err(pg_error)?
    .map(|r| rows::user(&r))
    .transpose()
}

async fn insert_passkey(c: &mut PgConnection, p: &PasskeyRecord, actor: &Actor) -> Result<()> {
    sqlx::query(&sql::pg(sql::INSERT_PASSKEY))
        .bind(&p.id)
        .bind(&p.tenant_id)
        .bind(&p.user_id)
        .bind(&p.credential_id)
        .bind(&p.name)
        .bind(&p.credential)
        .bind(ms(p.created_at))
        .execute(&mut *c)
        .await
        .map_err(|e| match pg_error(e) {
            Error::AlreadyExists(_) => {
                Error::AlreadyExists("this passkey is already registered".into())
            }
            other => other,
        })?;
    append_audit(c, audit_records::passkey_registered(p, actor)).await?;
    Ok(())
}

async fn spend_proof(
    c: &mut PgConnection,
    s: &Session,
    proof: &SessionProof,
    actor: &Actor,
) -> Result<()> {
    let now = ms(s.created_at);
    match proof {
        SessionProof::Link {
            token_hash,
            kind,
            new_passkey,
        } => {
            let changed = sqlx::query(&sql::pg(sql::SPEND_LOGIN_LINK))
                .bind(now)
                .bind(token_hash)
                .bind(kind.as_str())
                .bind(&s.tenant_id)
                .bind(&s.user_id)
                .execute(&mut *c)
                .await
                .map_err(pg_error)?
                .rows_affected();
            if changed != 1 {
                return Err(dashboard::link_unusable());
            }
            append_audit(c, audit_records::login_link_used(s, *kind, actor)).await?;
            if let Some(p) = new_passkey {
                if p.user_id != s.user_id || p.tenant_id != s.tenant_id {
                    return Err(Error::invalid("the passkey belongs to another user"));
                }
                insert_passkey(c, p, actor).await?;
            }
        }
        SessionProof::Passkey {
            credential_id,
            credential,
        } => {
            let changed = sqlx::query(&sql::pg(sql::REPLACE_PASSKEY_CREDENTIAL))
                .bind(credential)
                .bind(now)
                .bind(credential_id)
                .bind(&s.tenant_id)
                .bind(&s.user_id)
                .execute(&mut *c)
                .await
                .map_err(pg_error)?
                .rows_affected();
            if changed != 1 {
                return Err(Error::Unauthorized("unknown passkey".into()));
            }
        }
    }
    Ok(())
}

#[async_trait]
impl DashboardStore for PgStore {
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, user_id = ?user_id))]
    async fn count_requests(
        &self,
        tenant_id: &str,
        user_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(ApprovalStatus, i64)>> {
        let counts: Vec<(String, i64)> = sqlx::query_as(
            &format!(
                "SELECT {} AS s, COUNT(*) \
                 FROM approval_requests WHERE tenant_id = $1 AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM approval_reviewers r \
                 WHERE r.approval_id = approval_requests.id AND r.user_id = $3 AND r.since <= $2)) GROUP BY s",
                listing::status_at_sql("$2")
            ),
        )
        .bind(tenant_id)
        .bind(ms(now))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
        Ok(merge_counts(counts))
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn set_user_admin(
        &self,
        tenant_id: &str,
        id: &str,
        is_admin: bool,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<User> {
        let mut tx = self.begin().await?;
        let changed = sqlx::query(&sql::pg(sql::SET_USER_ADMIN))
            .bind(tenant_id)
            .bind(id)
            .bind(is_admin)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?
            .rows_affected();
        if changed == 1 {
            append_audit(
                &mut tx,
                audit_records::user_admin_changed(tenant_id, id, is_admin, &actor, at),
            )
            .await?;
        }
        let user = user_in_tx(&mut tx, tenant_id, id)
            .await?
            .ok_or_else(|| not_found("user"))?;
        tx.commit().await.map_err(pg_error)?;
        Ok(user)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %new.link.tenant_id))]
    async fn create_login_link(&self, new: NewLink, actor: Actor) -> Result<LoginLink> {
        let l = &new.link;
        let mut tx = self.begin().await?;
        match user_in_tx(&mut tx, &l.tenant_id, &l.user_id).await? {
            Some(u) if !u.disabled => {}
            _ => {
                return Err(Error::NotFound(format!(
                    "no active user {:?} in this tenant",
                    l.user_id
                )));
            }
        }
        sqlx::query(&sql::pg(sql::INSERT_LOGIN_LINK))
            .bind(&l.id)
            .bind(&l.tenant_id)
            .bind(&l.user_id)
            .bind(l.kind.as_str())
            .bind(&new.token_hash)
            .bind(ms(l.created_at))
            .bind(ms(l.expires_at))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        append_audit(&mut tx, audit_records::login_link_created(l, &actor)).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(new.link)
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn find_login_link(&self, token_hash: &str) -> Result<Option<(LoginLink, User)>> {
        let sql = format!(
            "SELECT {}, {} FROM login_links l JOIN users u ON u.id = l.user_id WHERE l.token_hash = $1",
            prefixed(LINK_COLUMNS, "l"),
            prefixed(USER_COLUMNS, "u")
        );
        sqlx::query(&sql)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?
            .map(|r| Ok((link(&r)?, user_at(&r, 8)?)))
            .transpose()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_login_links(&self, tenant_id: &str, kind: LinkKind) -> Result<Vec<LoginLink>> {
        sqlx::query(&format!(
            "SELECT {LINK_COLUMNS} FROM login_links WHERE tenant_id = $1 AND kind = $2 ORDER BY id DESC LIMIT 500"
        ))
        .bind(tenant_id)
        .bind(kind.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?
        .iter()
        .map(link)
        .collect()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn revoke_login_link(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<LoginLink> {
        let mut tx = self.begin().await?;
        let changed = sqlx::query(&sql::pg(sql::REVOKE_LOGIN_LINK))
            .bind(tenant_id)
            .bind(id)
            .bind(ms(at))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?
            .rows_affected();
        if changed == 1 {
            append_audit(
                &mut tx,
                audit_records::login_link_revoked(tenant_id, id, &actor, at),
            )
            .await?;
        }
        let found = sqlx::query(&format!(
            "SELECT {LINK_COLUMNS} FROM login_links WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?
        .map(|r| link(&r))
        .transpose()?
        .ok_or_else(|| not_found("link"))?;
        tx.commit().await.map_err(pg_error)?;
        Ok(found)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %new.session.tenant_id))]
    async fn start_session(
        &self,
        new: NewSession,
        proof: SessionProof,
        actor: Actor,
    ) -> Result<()> {
        let s = &new.session;
        let mut tx = self.begin().await?;
        match user_in_tx(&mut tx, &s.tenant_id, &s.user_id).await? {
            Some(u) if !u.disabled => {}
            _ => return Err(Error::Unauthorized("this account is disabled".into())),
        }
        spend_proof(&mut tx, s, &proof, &actor).await?;
        sqlx::query(&sql::pg(sql::INSERT_SESSION))
            .bind(&s.id)
            .bind(&s.tenant_id)
            .bind(&s.user_id)
            .bind(&new.token_hash)
            .bind(&s.method)
            .bind(&s.user_agent)
            .bind(ms(s.created_at))
            .bind(ms(s.expires_at))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        append_audit(&mut tx, audit_records::session_created(s, &actor)).await?;
        tx.commit().await.map_err(pg_error)
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn session_by_token(&self, token_hash: &str) -> Result<Option<(Session, User)>> {
        let sql = format!(
            "SELECT {}, {} FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1",
            prefixed(SESSION_COLUMNS, "s"),
            prefixed(USER_COLUMNS, "u")
        );
        sqlx::query(&sql)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?
            .map(|r| Ok((session(&r)?, user_at(&r, 9)?)))
            .transpose()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(id = %id))]
    async fn touch_session(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        sqlx::query(&sql::pg(sql::TOUCH_SESSION))
            .bind(id)
            .bind(ms(at))
            .execute(&self.pool)
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, user_id = %user_id))]
    async fn list_sessions(&self, tenant_id: &str, user_id: &str) -> Result<Vec<Session>> {
        sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant_id = $1 AND user_id = $2 ORDER BY id DESC LIMIT 200"
        ))
        .bind(tenant_id)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?
        .iter()
        .map(session)
        .collect()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id, user_id = %user_id))]
    async fn revoke_session(
        &self,
        tenant_id: &str,
        user_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let changed = sqlx::query(&sql::pg(sql::REVOKE_SESSION))
            .bind(tenant_id)
            .bind(user_id)
            .bind(id)
            .bind(ms(at))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?
            .rows_affected();
        if changed == 1 {
            append_audit(
                &mut tx,
                audit_records::session_revoked(tenant_id, id, user_id, &actor, at),
            )
            .await?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(changed == 1)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %passkey.tenant_id))]
    async fn add_passkey(&self, passkey: PasskeyRecord, actor: Actor) -> Result<PasskeyRecord> {
        let mut tx = self.begin().await?;
        match user_in_tx(&mut tx, &passkey.tenant_id, &passkey.user_id).await? {
            Some(u) if !u.disabled => {}
            _ => return Err(Error::NotFound("no such user".into())),
        }
        insert_passkey(&mut tx, &passkey, &actor).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(passkey)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, user_id = %user_id))]
    async fn list_passkeys(&self, tenant_id: &str, user_id: &str) -> Result<Vec<PasskeyRecord>> {
        sqlx::query(&format!(
            "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE tenant_id = $1 AND user_id = $2 ORDER BY id"
        ))
        .bind(tenant_id)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?
        .iter()
        .map(passkey)
        .collect()
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn passkeys_for_email(&self, email: &str) -> Result<Vec<PasskeyRecord>> {
        sqlx::query(&format!(
            "SELECT {} FROM passkeys p JOIN users u ON u.id = p.user_id \
             WHERE u.email = $1 AND NOT u.disabled ORDER BY p.id LIMIT 100",
            prefixed(PASSKEY_COLUMNS, "p")
        ))
        .bind(email)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?
        .iter()
        .map(passkey)
        .collect()
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn find_passkey(&self, credential_id: &str) -> Result<Option<PasskeyRecord>> {
        sqlx::query(&format!(
            "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE credential_id = $1"
        ))
        .bind(credential_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?
        .map(|r| passkey(&r))
        .transpose()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id, user_id = %user_id))]
    async fn delete_passkey(
        &self,
        tenant_id: &str,
        user_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let changed = sqlx::query(&sql::pg(sql::DELETE_PASSKEY))
            .bind(tenant_id)
            .bind(user_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?
            .rows_affected();
        if changed == 1 {
            append_audit(
                &mut tx,
                audit_records::passkey_removed(tenant_id, id, user_id, &actor, at),
            )
            .await?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(changed == 1)
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn put_ceremony(
        &self,
        id_hash: &str,
        state: String,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(&sql::pg(sql::FORGET_EXPIRED_CEREMONIES))
            .bind(ms(now))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        sqlx::query(&sql::pg(sql::INSERT_CEREMONY))
            .bind(id_hash)
            .bind(state)
            .bind(ms(expires_at))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn take_ceremony(&self, id_hash: &str, now: DateTime<Utc>) -> Result<Option<String>> {
        let row: Option<(String, i64)> = sqlx::query_as(&sql::pg(sql::TAKE_CEREMONY))
            .bind(id_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?;
        Ok(row.filter(|(_, exp)| *exp > ms(now)).map(|(s, _)| s))
    }
}
