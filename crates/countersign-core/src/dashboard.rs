//! People at the dashboard: one-time invitation and sign-in links, server-side sessions, and
//! passkeys. Every secret here carries 256 bits, is shown once and stored only as SHA-256.
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

use crate::directory::User;
use crate::{Error, Principal, Result, Role, ids, secret, validate};

/// What a one-time link lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// Register a first passkey (and sign in).
    Invitation,
    /// Sign in once, without a passkey.
    SignIn,
}

impl LinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Invitation => "invitation",
            LinkKind::SignIn => "sign_in",
        }
    }

    pub fn parse(s: &str) -> Option<LinkKind> {
        match s {
            "invitation" => Some(LinkKind::Invitation),
            "sign_in" => Some(LinkKind::SignIn),
            _ => None,
        }
    }
}

/// A one-time link as stored: the hash of its token, never the token.
#[derive(Debug, Clone, PartialEq)]
pub struct LoginLink {
    pub id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub kind: LinkKind,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl LoginLink {
    /// Whether the link can still be used at `now`.
    pub fn usable(&self, now: DateTime<Utc>) -> bool {
        self.used_at.is_none() && self.revoked_at.is_none() && now < self.expires_at
    }

    /// Why the link cannot be used, in words for the person holding it.
    pub fn state(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.used_at.is_some() {
            "used"
        } else if now >= self.expires_at {
            "expired"
        } else {
            "pending"
        }
    }
}

/// A freshly minted link: the record and its secret token (shown once, in the URL).
#[derive(Debug, Clone)]
pub struct NewLink {
    pub link: LoginLink,
    pub token: String,
    pub token_hash: String,
}

pub fn new_link(
    tenant_id: &str,
    user_id: &str,
    kind: LinkKind,
    lifetime: Duration,
    now: DateTime<Utc>,
) -> NewLink {
    let token = secret::random_token();
    NewLink {
        token_hash: secret::hash_secret(&token),
        token,
        link: LoginLink {
            id: ids::new_id(ids::LOGIN_LINK),
            tenant_id: tenant_id.to_string(),
            user_id: user_id.to_string(),
            kind,
            created_at: now,
            expires_at: now + lifetime,
            used_at: None,
            revoked_at: None,
        },
    }
}

/// A dashboard session as stored: the hash of its cookie, never the cookie.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// The absolute end, however active the session is.
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// How the session began: `passkey`, `sign_in_link` or `invitation`.
    pub method: String,
    /// The browser, as it described itself; shown in the session list.
    pub user_agent: String,
}

/// A new session and the cookie value that names it.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub session: Session,
    pub token: String,
    pub token_hash: String,
}

/// How long sessions live.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// A session unused this long ends.
    pub idle: Duration,
    /// A session ends this long after sign-in, however active.
    pub absolute: Duration,
}

pub const MAX_USER_AGENT_CHARS: usize = 300;

pub fn new_session(
    user: &User,
    method: &str,
    user_agent: &str,
    limits: SessionLimits,
    now: DateTime<Utc>,
) -> NewSession {
    let token = secret::random_token();
    let user_agent: String = user_agent
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_USER_AGENT_CHARS)
        .collect();
    NewSession {
        token_hash: secret::hash_secret(&token),
        token,
        session: Session {
            id: ids::new_id(ids::SESSION),
            tenant_id: user.tenant_id.clone(),
            user_id: user.id.clone(),
            created_at: now,
            last_seen_at: now,
            expires_at: now + limits.absolute,
            revoked_at: None,
            method: method.to_string(),
            user_agent,
        },
    }
}

impl Session {
    /// Whether the session still signs its holder in at `now`.
    pub fn live(&self, now: DateTime<Utc>, limits: SessionLimits) -> bool {
        self.revoked_at.is_none() && now < self.expires_at && now < self.last_seen_at + limits.idle
    }

    /// Whether a visit at `now` should be recorded: at most once a minute, so that browsing
    /// does not turn every page view into a write.
    pub fn needs_touch(&self, now: DateTime<Utc>) -> bool {
        now - self.last_seen_at >= Duration::seconds(60)
    }

    /// The principal a session acts as: its user, as a reviewer or as an admin of the tenant.
    pub fn principal(&self, user: &User) -> Principal {
        let role = if user.is_admin {
            Role::Admin
        } else {
            Role::Reviewer {
                user_id: user.id.clone(),
            }
        };
        Principal {
            tenant_id: self.tenant_id.clone(),
            key_id: self.id.clone(),
            role,
            user_id: Some(user.id.clone()),
        }
    }
}

/// The anti-forgery token of a session: derived from the session's secret, so it needs no
/// storage and cannot be computed from what the database holds (the secret's plain hash).
pub fn csrf_token(session_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"countersign csrf\0");
    h.update(session_token.as_bytes());
    hex::encode(h.finalize())
}

/// Compares two tokens in time independent of where they differ.
pub fn tokens_match(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A registered passkey. The credential itself (public key, counter) is the WebAuthn
/// library's JSON, opaque to the domain.
#[derive(Debug, Clone, PartialEq)]
pub struct PasskeyRecord {
    pub id: String,
    pub tenant_id: String,
    pub user_id: String,
    /// The WebAuthn credential id, base64url.
    pub credential_id: String,
    pub name: String,
    pub credential: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

pub const MAX_PASSKEY_NAME_CHARS: usize = 100;

pub fn new_passkey(
    user: &User,
    credential_id: String,
    name: &str,
    credential: String,
    now: DateTime<Utc>,
) -> Result<PasskeyRecord> {
    let name = if name.trim().is_empty() {
        "Passkey"
    } else {
        name.trim()
    };
    validate::text("name", name, MAX_PASSKEY_NAME_CHARS)?;
    if credential_id.is_empty() {
        return Err(Error::invalid("the passkey has no credential id"));
    }
    Ok(PasskeyRecord {
        id: ids::new_id(ids::PASSKEY),
        tenant_id: user.tenant_id.clone(),
        user_id: user.id.clone(),
        credential_id,
        name: name.to_string(),
        credential,
        created_at: now,
        last_used_at: None,
    })
}

/// How a new session was earned. The store checks and spends the proof in the same
/// transaction that creates the session, so a link signs in exactly once.
#[derive(Debug, Clone)]
pub enum SessionProof {
    /// A one-time link; an invitation also registers the passkey made with it.
    Link {
        token_hash: String,
        kind: LinkKind,
        new_passkey: Option<PasskeyRecord>,
    },
    /// A passkey assertion that verified; `credential` is its updated state (counter).
    Passkey {
        credential_id: String,
        credential: String,
    },
}

impl SessionProof {
    pub fn method(&self) -> &'static str {
        match self {
            SessionProof::Link {
                kind: LinkKind::Invitation,
                ..
            } => "invitation",
            SessionProof::Link { .. } => "sign_in_link",
            SessionProof::Passkey { .. } => "passkey",
        }
    }
}

/// The refusal for any link that cannot be used: the same words whether it never existed,
/// was used, expired or was revoked, so the answer tells an attacker nothing.
pub fn link_unusable() -> Error {
    Error::coded(
        countersign_proto::ErrorCode::LinkUnusable,
        "this link is invalid, expired or already used; ask an admin for a new one",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(admin: bool) -> User {
        let mut u = crate::directory::new_user("t", "a@example.com", "A", Utc::now()).unwrap();
        u.is_admin = admin;
        u
    }

    #[test]
    fn links_are_single_use_and_expire() {
        let now = Utc::now();
        let l = new_link("t", "usr_x", LinkKind::Invitation, Duration::hours(1), now);
        assert_eq!(l.token_hash, secret::hash_secret(&l.token));
        assert!(l.link.usable(now));
        assert!(!l.link.usable(now + Duration::hours(1)));
        let mut used = l.link.clone();
        used.used_at = Some(now);
        assert!(!used.usable(now));
        assert_eq!(used.state(now), "used");
    }

    #[test]
    fn sessions_end_when_idle_or_at_their_absolute_limit() {
        let now = Utc::now();
        let limits = SessionLimits {
            idle: Duration::minutes(30),
            absolute: Duration::hours(8),
        };
        let s = new_session(&user(false), "passkey", "UA\u{7}", limits, now).session;
        assert_eq!(s.user_agent, "UA");
        assert!(s.live(now, limits));
        assert!(!s.live(now + Duration::minutes(30), limits));
        let mut active = s.clone();
        active.last_seen_at = now + Duration::hours(7) + Duration::minutes(59);
        assert!(active.live(now + Duration::hours(7) + Duration::minutes(59), limits));
        assert!(!active.live(now + Duration::hours(8), limits));
    }

    #[test]
    fn a_session_acts_as_its_user() {
        let now = Utc::now();
        let limits = SessionLimits {
            idle: Duration::minutes(30),
            absolute: Duration::hours(8),
        };
        let reviewer = user(false);
        let s = new_session(&reviewer, "passkey", "", limits, now).session;
        let p = s.principal(&reviewer);
        assert_eq!(
            p.role,
            Role::Reviewer {
                user_id: reviewer.id.clone()
            }
        );
        let admin = user(true);
        let p = s.principal(&admin);
        assert!(p.is_admin());
        assert_eq!(p.actor().id, admin.id);
    }

    #[test]
    fn csrf_tokens_are_bound_to_the_session_secret() {
        let a = csrf_token("one");
        assert_eq!(a, csrf_token("one"));
        assert_ne!(a, csrf_token("two"));
        assert_ne!(a, secret::hash_secret("one"));
        assert!(tokens_match(&a, &csrf_token("one")));
        assert!(!tokens_match(&a, &csrf_token("two")));
        assert!(!tokens_match(&a, ""));
    }
}
