//! The dashboard's accounts on SQLite: one-time links, sessions, passkeys, ceremonies.
use crate::sql::{LINK_COLUMNS, PASSKEY_COLUMNS, SESSION_COLUMNS};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::audit::Actor;
use countersign_core::dashboard::{
    self, LinkKind, LoginLink, NewLink, NewSession, PasskeyRecord, Session, SessionProof,
};
use countersign_core::directory::User;
use countersign_core::{Error, Result};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::rows::{self, bad, db_error, ms, opt_time, time};
use super::{SqliteStore, append_audit, not_found};
use crate::audit_records;
use crate::listing;
use crate::sql;
use crate::{DashboardStore, merge_counts};
use countersign_proto::ApprovalStatus;

fn link(row: &Row) -> rusqlite::Result<LoginLink> {
    let kind: String = row.get(3)?;
    Ok(LoginLink {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        user_id: row.get(2)?,
        kind: LinkKind::parse(&kind).ok_or_else(|| bad(3, "link kind"))?,
        created_at: time(row, 4)?,
        expires_at: time(row, 5)?,
        used_at: opt_time(row, 6)?,
        revoked_at: opt_time(row, 7)?,
    })
}

fn session(row: &Row) -> rusqlite::Result<Session> {
    Ok(Session {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        user_id: row.get(2)?,
        method: row.get(3)?,
        user_agent: row.get(4)?,
        created_at: time(row, 5)?,
        last_seen_at: time(row, 6)?,
        expires_at: time(row, 7)?,
        revoked_at: opt_time(row, 8)?,
    })
}

fn passkey(row: &Row) -> rusqlite::Result<PasskeyRecord> {
    Ok(PasskeyRecord {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        user_id: row.get(2)?,
        credential_id: row.get(3)?,
        name: row.get(4)?,
        credential: row.get(5)?,
        created_at: time(row, 6)?,
        last_used_at: opt_time(row, 7)?,
    })
}

/// Columns of a joined user, prefixed `u.`, placed after the first `offset` columns.
fn prefixed_user_columns() -> String {
    rows::USER_COLUMNS
        .split(", ")
        .map(|c| format!("u.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn user_at(row: &Row, offset: usize) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(offset)?,
        tenant_id: row.get(offset + 1)?,
        email: row.get(offset + 2)?,
        name: row.get(offset + 3)?,
        disabled: row.get(offset + 4)?,
        created_at: time(row, offset + 5)?,
        is_admin: row.get(offset + 6)?,
    })
}

fn user_in_tx(c: &Connection, tenant_id: &str, id: &str) -> Result<Option<User>> {
    c.prepare_cached(&format!(
        "SELECT {} FROM users WHERE tenant_id = ?1 AND id = ?2",
        rows::USER_COLUMNS
    ))
    .and_then(|mut s| s.query_row([tenant_id, id], rows::user).optional())
    .map_err(db_error)
}

fn insert_passkey(c: &Connection, p: &PasskeyRecord, actor: &Actor) -> Result<()> {
    c.prepare_cached(sql::INSERT_PASSKEY)
        .and_then(|mut s| {
            s.execute(params![
                p.id,
                p.tenant_id,
                p.user_id,
                p.credential_id,
                p.name,
                p.credential,
                ms(p.created_at)
            ])
        })
        .map_err(|e| match db_error(e) {
            Error::AlreadyExists(_) => {
                Error::AlreadyExists("this passkey is already registered".into())
            }
            other => other,
        })?;
    append_audit(c, audit_records::passkey_registered(p, actor))?;
    Ok(())
}

fn spend_proof(c: &Connection, s: &Session, proof: &SessionProof, actor: &Actor) -> Result<()> {
    let now = ms(s.created_at);
    match proof {
        SessionProof::Link {
            token_hash,
            kind,
            new_passkey,
        } => {
            let changed = c
                .prepare_cached(sql::SPEND_LOGIN_LINK)
                .and_then(|mut st| {
                    st.execute(params![
                        now,
                        token_hash,
                        kind.as_str(),
                        s.tenant_id,
                        s.user_id
                    ])
                })
                .map_err(db_error)?;
            if changed != 1 {
                return Err(dashboard::link_unusable());
            }
            append_audit(c, audit_records::login_link_used(s, *kind, actor))?;
            if let Some(p) = new_passkey {
                if p.user_id != s.user_id || p.tenant_id != s.tenant_id {
                    return Err(Error::invalid("the passkey belongs to another user"));
                }
                insert_passkey(c, p, actor)?;
            }
        }
        SessionProof::Passkey {
            credential_id,
            credential,
        } => {
            let changed = c
                .prepare_cached(sql::REPLACE_PASSKEY_CREDENTIAL)
                .and_then(|mut st| {
                    st.execute(params![
                        credential,
                        now,
                        credential_id,
                        s.tenant_id,
                        s.user_id
                    ])
                })
                .map_err(db_error)?;
            if changed != 1 {
                return Err(Error::Unauthorized("unknown passkey".into()));
            }
        }
    }
    Ok(())
}

#[async_trait]
impl DashboardStore for SqliteStore {
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, user_id = ?user_id))]
    async fn count_requests(
        &self,
        tenant_id: &str,
        user_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(ApprovalStatus, i64)>> {
        let counts: Vec<(String, i64)> = self.read(|c| {
            c.prepare_cached(
                &format!(
                    "SELECT {} AS s, COUNT(*) \
                     FROM approval_requests WHERE tenant_id = ?1 AND (?3 IS NULL OR EXISTS (SELECT 1 FROM approval_reviewers r \
                     WHERE r.approval_id = approval_requests.id AND r.user_id = ?3 AND r.since <= ?2)) GROUP BY s",
                    listing::status_at_sql("?2")
                ),
            )?
            .query_map(params![tenant_id, ms(now), user_id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
        })?;
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
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.write(move |c| {
            let changed = c
                .prepare_cached(sql::SET_USER_ADMIN)
                .and_then(|mut s| s.execute(params![tenant_id, id, is_admin]))
                .map_err(db_error)?;
            if changed == 1 {
                append_audit(
                    c,
                    audit_records::user_admin_changed(&tenant_id, &id, is_admin, &actor, at),
                )?;
            }
            user_in_tx(c, &tenant_id, &id)?.ok_or_else(|| not_found("user"))
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %new.link.tenant_id))]
    async fn create_login_link(&self, new: NewLink, actor: Actor) -> Result<LoginLink> {
        self.write(move |c| {
            let l = &new.link;
            let active: Option<bool> = c
                .prepare_cached("SELECT disabled = 0 FROM users WHERE tenant_id = ?1 AND id = ?2")
                .and_then(|mut s| {
                    s.query_row([&l.tenant_id, &l.user_id], |r| r.get(0))
                        .optional()
                })
                .map_err(db_error)?;
            if active != Some(true) {
                return Err(Error::NotFound(format!(
                    "no active user {:?} in this tenant",
                    l.user_id
                )));
            }
            c.prepare_cached(sql::INSERT_LOGIN_LINK)
                .and_then(|mut s| {
                    s.execute(params![
                        l.id,
                        l.tenant_id,
                        l.user_id,
                        l.kind.as_str(),
                        new.token_hash,
                        ms(l.created_at),
                        ms(l.expires_at)
                    ])
                })
                .map_err(db_error)?;
            append_audit(c, audit_records::login_link_created(l, &actor))?;
            Ok(new.link)
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn find_login_link(&self, token_hash: &str) -> Result<Option<(LoginLink, User)>> {
        let sql = format!(
            "SELECT {}, {} FROM login_links l JOIN users u ON u.id = l.user_id WHERE l.token_hash = ?1",
            LINK_COLUMNS
                .split(", ")
                .map(|c| format!("l.{c}"))
                .collect::<Vec<_>>()
                .join(", "),
            prefixed_user_columns()
        );
        self.read(|c| {
            c.prepare_cached(&sql)?
                .query_row([token_hash], |r| Ok((link(r)?, user_at(r, 8)?)))
                .optional()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_login_links(&self, tenant_id: &str, kind: LinkKind) -> Result<Vec<LoginLink>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {LINK_COLUMNS} FROM login_links WHERE tenant_id = ?1 AND kind = ?2 ORDER BY id DESC LIMIT 500"
            ))?
            .query_map([tenant_id, kind.as_str()], link)?
            .collect()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn revoke_login_link(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<LoginLink> {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.write(move |c| {
            let changed = c
                .prepare_cached(sql::REVOKE_LOGIN_LINK)
                .and_then(|mut s| s.execute(params![tenant_id, id, ms(at)]))
                .map_err(db_error)?;
            if changed == 1 {
                append_audit(
                    c,
                    audit_records::login_link_revoked(&tenant_id, &id, &actor, at),
                )?;
            }
            c.prepare_cached(&format!(
                "SELECT {LINK_COLUMNS} FROM login_links WHERE tenant_id = ?1 AND id = ?2"
            ))
            .and_then(|mut s| s.query_row([&tenant_id, &id], link).optional())
            .map_err(db_error)?
            .ok_or_else(|| not_found("link"))
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %new.session.tenant_id))]
    async fn start_session(
        &self,
        new: NewSession,
        proof: SessionProof,
        actor: Actor,
    ) -> Result<()> {
        self.write(move |c| {
            let s = &new.session;
            match user_in_tx(c, &s.tenant_id, &s.user_id)? {
                Some(u) if !u.disabled => {}
                _ => return Err(Error::Unauthorized("this account is disabled".into())),
            }
            spend_proof(c, s, &proof, &actor)?;
            c.prepare_cached(sql::INSERT_SESSION)
                .and_then(|mut st| {
                    st.execute(params![
                        s.id,
                        s.tenant_id,
                        s.user_id,
                        new.token_hash,
                        s.method,
                        s.user_agent,
                        ms(s.created_at),
                        ms(s.expires_at)
                    ])
                })
                .map_err(db_error)?;
            append_audit(c, audit_records::session_created(s, &actor))?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn session_by_token(&self, token_hash: &str) -> Result<Option<(Session, User)>> {
        let sql = format!(
            "SELECT {}, {} FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?1",
            SESSION_COLUMNS
                .split(", ")
                .map(|c| format!("s.{c}"))
                .collect::<Vec<_>>()
                .join(", "),
            prefixed_user_columns()
        );
        self.read(|c| {
            c.prepare_cached(&sql)?
                .query_row([token_hash], |r| Ok((session(r)?, user_at(r, 9)?)))
                .optional()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(id = %id))]
    async fn touch_session(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        let id = id.to_string();
        self.write(move |c| {
            c.prepare_cached(sql::TOUCH_SESSION)
                .and_then(|mut s| s.execute(params![id, ms(at)]))
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, user_id = %user_id))]
    async fn list_sessions(&self, tenant_id: &str, user_id: &str) -> Result<Vec<Session>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant_id = ?1 AND user_id = ?2 ORDER BY id DESC LIMIT 200"
            ))?
            .query_map([tenant_id, user_id], session)?
            .collect()
        })
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
        let (tenant_id, user_id, id) = (tenant_id.to_string(), user_id.to_string(), id.to_string());
        self.write(move |c| {
            let changed = c
                .prepare_cached(sql::REVOKE_SESSION)
                .and_then(|mut s| s.execute(params![tenant_id, user_id, id, ms(at)]))
                .map_err(db_error)?;
            if changed == 1 {
                append_audit(
                    c,
                    audit_records::session_revoked(&tenant_id, &id, &user_id, &actor, at),
                )?;
            }
            Ok(changed == 1)
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %passkey.tenant_id))]
    async fn add_passkey(&self, passkey: PasskeyRecord, actor: Actor) -> Result<PasskeyRecord> {
        self.write(move |c| {
            match user_in_tx(c, &passkey.tenant_id, &passkey.user_id)? {
                Some(u) if !u.disabled => {}
                _ => return Err(Error::NotFound("no such user".into())),
            }
            insert_passkey(c, &passkey, &actor)?;
            Ok(passkey)
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, user_id = %user_id))]
    async fn list_passkeys(&self, tenant_id: &str, user_id: &str) -> Result<Vec<PasskeyRecord>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE tenant_id = ?1 AND user_id = ?2 ORDER BY id"
            ))?
            .query_map([tenant_id, user_id], passkey)?
            .collect()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn passkeys_for_email(&self, email: &str) -> Result<Vec<PasskeyRecord>> {
        let sql = format!(
            "SELECT {} FROM passkeys p JOIN users u ON u.id = p.user_id \
             WHERE u.email = ?1 AND u.disabled = 0 ORDER BY p.id LIMIT 100",
            PASSKEY_COLUMNS
                .split(", ")
                .map(|c| format!("p.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.read(|c| {
            c.prepare_cached(&sql)?
                .query_map([email], passkey)?
                .collect()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn find_passkey(&self, credential_id: &str) -> Result<Option<PasskeyRecord>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE credential_id = ?1"
            ))?
            .query_row([credential_id], passkey)
            .optional()
        })
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
        let (tenant_id, user_id, id) = (tenant_id.to_string(), user_id.to_string(), id.to_string());
        self.write(move |c| {
            let changed = c
                .prepare_cached(sql::DELETE_PASSKEY)
                .and_then(|mut s| s.execute(params![tenant_id, user_id, id]))
                .map_err(db_error)?;
            if changed == 1 {
                append_audit(
                    c,
                    audit_records::passkey_removed(&tenant_id, &id, &user_id, &actor, at),
                )?;
            }
            Ok(changed == 1)
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn put_ceremony(
        &self,
        id_hash: &str,
        state: String,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let id_hash = id_hash.to_string();
        self.write(move |c| {
            c.prepare_cached(sql::FORGET_EXPIRED_CEREMONIES)
                .and_then(|mut s| s.execute([ms(now)]))
                .map_err(db_error)?;
            c.prepare_cached(sql::INSERT_CEREMONY)
                .and_then(|mut s| s.execute(params![id_hash, state, ms(expires_at)]))
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn take_ceremony(&self, id_hash: &str, now: DateTime<Utc>) -> Result<Option<String>> {
        let id_hash = id_hash.to_string();
        self.write(move |c| {
            let state: Option<(String, i64)> = c
                .prepare_cached(sql::TAKE_CEREMONY)
                .and_then(|mut s| {
                    s.query_row([&id_hash], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(db_error)?;
            Ok(state.filter(|(_, exp)| *exp > ms(now)).map(|(s, _)| s))
        })
        .await
    }
}
