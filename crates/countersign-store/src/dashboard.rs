//! The dashboard's accounts, for both backends: admins among users, one-time links,
//! sessions, passkeys and WebAuthn ceremony state.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::audit::Actor;
use countersign_core::dashboard::{
    self, LinkKind, LoginLink, NewLink, NewSession, PasskeyRecord, Session, SessionProof,
};
use countersign_core::directory::User;
use countersign_core::{Error, Result};
use countersign_proto::ApprovalStatus;

use crate::db::{Db, Row, Tx, Value};
use crate::rows::{link, passkey, session};
use crate::sql::{self, LINK_COLUMNS, PASSKEY_COLUMNS, SESSION_COLUMNS, USER_COLUMNS, prefixed};
use crate::writes::{not_found, renamed_conflict};
use crate::{audit_records, listing, rows};

/// A row read from column `by` on, so that a joined record's reader can read its columns.
struct Shifted<'a> {
    row: &'a dyn Row,
    by: usize,
}

impl Row for Shifted<'_> {
    fn value(&self, idx: usize) -> Result<Value> {
        self.row.value(idx + self.by)
    }
}

/// Columns: the link's, then the user's.
fn link_and_user(row: &dyn Row) -> Result<(LoginLink, User)> {
    Ok((link(row)?, rows::user(&Shifted { row, by: 8 })?))
}

/// Columns: the session's, then the user's.
fn session_and_user(row: &dyn Row) -> Result<(Session, User)> {
    Ok((session(row)?, rows::user(&Shifted { row, by: 9 })?))
}

/// Columns: status, count.
fn status_count(row: &dyn Row) -> Result<(String, i64)> {
    Ok((row.get(0)?, row.get(1)?))
}

/// Columns: state, expires_at.
fn ceremony(row: &dyn Row) -> Result<(String, i64)> {
    Ok((row.get(0)?, row.get(1)?))
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

async fn user_in(tx: &mut dyn Tx, tenant_id: &str, id: &str) -> Result<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ?1 AND id = ?2");
    tx.one(&sql, args![tenant_id, id], rows::user).await
}

async fn insert_passkey(tx: &mut dyn Tx, p: &PasskeyRecord, actor: &Actor) -> Result<()> {
    let values = args![
        &p.id,
        &p.tenant_id,
        &p.user_id,
        &p.credential_id,
        &p.name,
        &p.credential,
        p.created_at
    ];
    tx.exec(sql::INSERT_PASSKEY, values)
        .await
        .map_err(|e| renamed_conflict(e, "this passkey is already registered"))?;
    tx.audit(audit_records::passkey_registered(p, actor))
        .await?;
    Ok(())
}

async fn spend_proof(
    tx: &mut dyn Tx,
    s: &Session,
    proof: &SessionProof,
    actor: &Actor,
) -> Result<()> {
    let now = s.created_at;
    match proof {
        SessionProof::Link {
            token_hash,
            kind,
            new_passkey,
        } => {
            let values = args![now, token_hash, kind.as_str(), &s.tenant_id, &s.user_id];
            if tx.exec(sql::SPEND_LOGIN_LINK, values).await? != 1 {
                return Err(dashboard::link_unusable());
            }
            tx.audit(audit_records::login_link_used(s, *kind, actor))
                .await?;
            if let Some(p) = new_passkey {
                if p.user_id != s.user_id || p.tenant_id != s.tenant_id {
                    return Err(Error::invalid("the passkey belongs to another user"));
                }
                insert_passkey(tx, p, actor).await?;
            }
        }
        SessionProof::Passkey {
            credential_id,
            credential,
        } => {
            let values = args![credential, now, credential_id, &s.tenant_id, &s.user_id];
            if tx.exec(sql::REPLACE_PASSKEY_CREDENTIAL, values).await? != 1 {
                return Err(Error::unauthorized("unknown passkey"));
            }
        }
    }
    Ok(())
}

/// The dashboard's part of the contract both backends keep: admins among users, one-time
/// links, sessions, passkeys and WebAuthn ceremony state. Secrets arrive hashed.
#[async_trait]
pub trait DashboardStore: Db {
    /// How many of a tenant's requests are in each status (pending past expiry counts as its
    /// timeout outcome), optionally only those one reviewer may already decide.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, user_id = ?user_id))]
    async fn count_requests(
        &self,
        tenant_id: &str,
        user_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(ApprovalStatus, i64)>> {
        let sql = format!(
            "SELECT {} AS s, COUNT(*) FROM approval_requests WHERE tenant_id = ?1 \
             AND (CAST(?3 AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM approval_reviewers r \
             WHERE r.approval_id = approval_requests.id AND r.user_id = ?3 AND r.since <= ?2)) \
             GROUP BY s",
            listing::status_at_sql("?2")
        );
        let counts = self
            .reader()
            .await?
            .all(&sql, args![tenant_id, now, user_id], status_count)
            .await?;
        Ok(merge_counts(counts))
    }

    /// Makes a user an admin of their tenant, or a reviewer again.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn set_user_admin(
        &self,
        tenant_id: &str,
        id: &str,
        is_admin: bool,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<User> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        write_tx!(self, |tx| {
            let values = args![&tenant_id, &id, is_admin];
            if tx.exec(sql::SET_USER_ADMIN, values).await? == 1 {
                let record =
                    audit_records::user_admin_changed(&tenant_id, &id, is_admin, &actor, at);
                tx.audit(record).await?;
            }
            user_in(tx, &tenant_id, &id)
                .await?
                .ok_or_else(|| not_found("user"))
        })
    }

    /// Stores a one-time link (only its token's hash).
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %new.link.tenant_id))]
    async fn create_login_link(&self, new: NewLink, actor: Actor) -> Result<LoginLink> {
        write_tx!(self, |tx| {
            let l = &new.link;
            match user_in(tx, &l.tenant_id, &l.user_id).await? {
                Some(u) if !u.disabled => {}
                _ => {
                    return Err(Error::NotFound(format!(
                        "no active user {:?} in this tenant",
                        l.user_id
                    )));
                }
            }
            let values = args![
                &l.id,
                &l.tenant_id,
                &l.user_id,
                l.kind.as_str(),
                &new.token_hash,
                l.created_at,
                l.expires_at
            ];
            tx.exec(sql::INSERT_LOGIN_LINK, values).await?;
            tx.audit(audit_records::login_link_created(l, &actor))
                .await?;
            Ok(new.link)
        })
    }

    /// The link with this token hash and its user, whatever its state.
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn find_login_link(&self, token_hash: &str) -> Result<Option<(LoginLink, User)>> {
        let sql = format!(
            "SELECT {}, {} FROM login_links l JOIN users u ON u.id = l.user_id \
             WHERE l.token_hash = ?1",
            prefixed(LINK_COLUMNS, "l"),
            prefixed(USER_COLUMNS, "u")
        );
        self.reader()
            .await?
            .one(&sql, args![token_hash], link_and_user)
            .await
    }

    /// A tenant's links of one kind, newest first.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_login_links(&self, tenant_id: &str, kind: LinkKind) -> Result<Vec<LoginLink>> {
        let sql = format!(
            "SELECT {LINK_COLUMNS} FROM login_links WHERE tenant_id = ?1 AND kind = ?2 \
             ORDER BY id DESC LIMIT 500"
        );
        self.reader()
            .await?
            .all(&sql, args![tenant_id, kind.as_str()], link)
            .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn revoke_login_link(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<LoginLink> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        write_tx!(self, |tx| {
            if tx
                .exec(sql::REVOKE_LOGIN_LINK, args![&tenant_id, &id, at])
                .await?
                == 1
            {
                tx.audit(audit_records::login_link_revoked(
                    &tenant_id, &id, &actor, at,
                ))
                .await?;
            }
            let sql =
                format!("SELECT {LINK_COLUMNS} FROM login_links WHERE tenant_id = ?1 AND id = ?2");
            tx.one(&sql, args![&tenant_id, &id], link)
                .await?
                .ok_or_else(|| not_found("link"))
        })
    }

    /// Spends `proof` and creates the session in one transaction: a link is used at most
    /// once, only before it expires, only by an active user; a passkey must belong to the
    /// session's user. Refusals change nothing.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %new.session.tenant_id))]
    async fn start_session(
        &self,
        new: NewSession,
        proof: SessionProof,
        actor: Actor,
    ) -> Result<()> {
        write_tx!(self, |tx| {
            let s = &new.session;
            match user_in(tx, &s.tenant_id, &s.user_id).await? {
                Some(u) if !u.disabled => {}
                _ => return Err(Error::unauthorized("this account is disabled")),
            }
            spend_proof(tx, s, &proof, &actor).await?;
            let values = args![
                &s.id,
                &s.tenant_id,
                &s.user_id,
                &new.token_hash,
                &s.method,
                &s.user_agent,
                s.created_at,
                s.expires_at
            ];
            tx.exec(sql::INSERT_SESSION, values).await?;
            tx.audit(audit_records::session_created(s, &actor)).await?;
            Ok(())
        })
    }

    /// The session with this cookie hash and its user, whatever their state (the domain
    /// decides whether it is still live).
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn session_by_token(&self, token_hash: &str) -> Result<Option<(Session, User)>> {
        let sql = format!(
            "SELECT {}, {} FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = ?1",
            prefixed(SESSION_COLUMNS, "s"),
            prefixed(USER_COLUMNS, "u")
        );
        self.reader()
            .await?
            .one(&sql, args![token_hash], session_and_user)
            .await
    }

    /// Records activity on a session (idle timeout).
    #[tracing::instrument(skip_all, err(level = "warn"), fields(id = %id))]
    async fn touch_session(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        let id = id.to_owned();
        write_tx!(self, |tx| {
            tx.exec(sql::TOUCH_SESSION, args![&id, at]).await?;
            Ok(())
        })
    }

    /// A user's sessions, newest first.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, user_id = %user_id))]
    async fn list_sessions(&self, tenant_id: &str, user_id: &str) -> Result<Vec<Session>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant_id = ?1 AND user_id = ?2 \
             ORDER BY id DESC LIMIT 200"
        );
        self.reader()
            .await?
            .all(&sql, args![tenant_id, user_id], session)
            .await
    }

    /// Ends one of a user's sessions; false when it was not theirs or already ended.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id, user_id = %user_id))]
    async fn revoke_session(
        &self,
        tenant_id: &str,
        user_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let (tenant_id, user_id, id) = (tenant_id.to_owned(), user_id.to_owned(), id.to_owned());
        write_tx!(self, |tx| {
            let values = args![&tenant_id, &user_id, &id, at];
            if tx.exec(sql::REVOKE_SESSION, values).await? != 1 {
                return Ok(false);
            }
            tx.audit(audit_records::session_revoked(
                &tenant_id, &id, &user_id, &actor, at,
            ))
            .await?;
            Ok(true)
        })
    }

    /// Registers another passkey for a signed-in user.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %passkey.tenant_id))]
    async fn add_passkey(&self, passkey: PasskeyRecord, actor: Actor) -> Result<PasskeyRecord> {
        write_tx!(self, |tx| {
            match user_in(tx, &passkey.tenant_id, &passkey.user_id).await? {
                Some(u) if !u.disabled => {}
                _ => return Err(Error::NotFound("no such user".into())),
            }
            insert_passkey(tx, &passkey, &actor).await?;
            Ok(passkey)
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, user_id = %user_id))]
    async fn list_passkeys(&self, tenant_id: &str, user_id: &str) -> Result<Vec<PasskeyRecord>> {
        let sql = format!(
            "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE tenant_id = ?1 AND user_id = ?2 \
             ORDER BY id"
        );
        self.reader()
            .await?
            .all(&sql, args![tenant_id, user_id], passkey)
            .await
    }

    /// Passkeys of the active users with this email, in every tenant.
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn passkeys_for_email(&self, email: &str) -> Result<Vec<PasskeyRecord>> {
        let sql = format!(
            "SELECT {} FROM passkeys p JOIN users u ON u.id = p.user_id \
             WHERE u.email = ?1 AND NOT u.disabled ORDER BY p.id LIMIT 100",
            prefixed(PASSKEY_COLUMNS, "p")
        );
        self.reader().await?.all(&sql, args![email], passkey).await
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn find_passkey(&self, credential_id: &str) -> Result<Option<PasskeyRecord>> {
        let sql = format!("SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE credential_id = ?1");
        self.reader()
            .await?
            .one(&sql, args![credential_id], passkey)
            .await
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
        let (tenant_id, user_id, id) = (tenant_id.to_owned(), user_id.to_owned(), id.to_owned());
        write_tx!(self, |tx| {
            let values = args![&tenant_id, &user_id, &id];
            if tx.exec(sql::DELETE_PASSKEY, values).await? != 1 {
                return Ok(false);
            }
            tx.audit(audit_records::passkey_removed(
                &tenant_id, &id, &user_id, &actor, at,
            ))
            .await?;
            Ok(true)
        })
    }

    /// Keeps a WebAuthn ceremony's state until `expires_at` (dropping expired ones).
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn put_ceremony(
        &self,
        id_hash: &str,
        state: String,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let id_hash = id_hash.to_owned();
        write_tx!(self, |tx| {
            tx.exec(sql::FORGET_EXPIRED_CEREMONIES, args![now]).await?;
            tx.exec(sql::INSERT_CEREMONY, args![&id_hash, &state, expires_at])
                .await?;
            Ok(())
        })
    }

    /// Removes and returns a ceremony's state, so each challenge is answered at most once.
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn take_ceremony(&self, id_hash: &str, now: DateTime<Utc>) -> Result<Option<String>> {
        let id_hash = id_hash.to_owned();
        write_tx!(self, |tx| {
            let taken = tx
                .one(sql::TAKE_CEREMONY, args![&id_hash], ceremony)
                .await?;
            let now = now.timestamp_millis();
            Ok(taken.filter(|(_, exp)| *exp > now).map(|(s, _)| s))
        })
    }
}

impl DashboardStore for crate::sqlite::SqliteStore {}
impl DashboardStore for crate::postgres::PgStore {}
