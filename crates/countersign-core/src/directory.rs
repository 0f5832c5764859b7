//! Tenants and the principals that live in them: users (reviewers), agents and API keys.
use chrono::{DateTime, Utc};
use countersign_proto::TrustLevel;
use countersign_proto::admin::KeyRole;

use crate::{Error, Result, ids, secret, validate};

#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: String,
    pub tenant_id: String,
    pub email: String,
    pub name: String,
    pub disabled: bool,
    /// Signs in to the dashboard as an admin of the tenant (API keys carry their own role).
    pub is_admin: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub trust_level: TrustLevel,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

/// An API key as stored: only the hash of the secret.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub key_hash: String,
    pub prefix: String,
    pub role: KeyRole,
    pub user_id: Option<String>,
    pub agent_id: Option<String>,
    pub name: Option<String>,
    /// An executor key's grant audiences (empty for the other roles).
    pub audiences: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A freshly minted key: the record to store and the secret to show once.
#[derive(Debug, Clone)]
pub struct MintedKey {
    pub record: ApiKey,
    pub secret: String,
}

pub const MAX_NAME_CHARS: usize = 200;

pub fn new_tenant(id: &str, name: Option<&str>, now: DateTime<Utc>) -> Result<Tenant> {
    validate::tenant_slug(id)?;
    let name = name.unwrap_or(id);
    validate::text("name", name, MAX_NAME_CHARS)?;
    Ok(Tenant {
        id: id.to_string(),
        name: name.to_string(),
        created_at: now,
    })
}

pub fn new_user(tenant_id: &str, email: &str, name: &str, now: DateTime<Utc>) -> Result<User> {
    let email = validate::email(email)?;
    validate::text("name", name, MAX_NAME_CHARS)?;
    Ok(User {
        id: ids::new_id(ids::USER),
        tenant_id: tenant_id.to_string(),
        email,
        name: name.trim().to_string(),
        disabled: false,
        is_admin: false,
        created_at: now,
    })
}

pub fn new_agent(
    tenant_id: &str,
    name: &str,
    trust_level: TrustLevel,
    now: DateTime<Utc>,
) -> Result<Agent> {
    validate::text("name", name, MAX_NAME_CHARS)?;
    Ok(Agent {
        id: ids::new_id(ids::AGENT),
        tenant_id: tenant_id.to_string(),
        name: name.trim().to_string(),
        trust_level,
        disabled: false,
        created_at: now,
    })
}

/// Mints a key for a role; the owner must match the role (checked again by the store, which
/// also checks that the owner exists in the tenant).
pub fn mint_key(
    tenant_id: &str,
    role: KeyRole,
    user_id: Option<String>,
    agent_id: Option<String>,
    name: Option<String>,
    now: DateTime<Utc>,
) -> Result<MintedKey> {
    let (user_id, agent_id) = match (role, user_id, agent_id) {
        (KeyRole::Admin | KeyRole::Executor, None, None) => (None, None),
        (KeyRole::Reviewer, Some(u), None) => (Some(u), None),
        (KeyRole::Agent, None, Some(a)) => (None, Some(a)),
        (KeyRole::Executor, _, _) => {
            return Err(Error::invalid(
                "an executor key takes neither `user_id` nor `agent_id`",
            ));
        }
        (KeyRole::Admin, _, _) => {
            return Err(Error::invalid(
                "an admin key takes neither `user_id` nor `agent_id`",
            ));
        }
        (KeyRole::Reviewer, _, _) => {
            return Err(Error::invalid(
                "a reviewer key needs `user_id` (and no `agent_id`)",
            ));
        }
        (KeyRole::Agent, _, _) => {
            return Err(Error::invalid(
                "an agent key needs `agent_id` (and no `user_id`)",
            ));
        }
    };
    if let Some(n) = &name {
        validate::text("name", n, MAX_NAME_CHARS)?;
    }
    let secret = secret::new_api_key();
    Ok(MintedKey {
        record: ApiKey {
            id: ids::new_id(ids::API_KEY),
            tenant_id: tenant_id.to_string(),
            key_hash: secret::hash_secret(&secret),
            prefix: secret::display_prefix(&secret),
            role,
            user_id,
            agent_id,
            name,
            audiences: Vec::new(),
            created_at: now,
            revoked_at: None,
        },
        secret,
    })
}

impl MintedKey {
    /// Binds an executor key to the grant audiences it verifies (at least one); the other
    /// roles take none.
    pub fn with_audiences(mut self, audiences: Vec<String>) -> Result<MintedKey> {
        if self.record.role == KeyRole::Executor {
            if audiences.is_empty() {
                return Err(Error::invalid(
                    "an executor key needs `audiences`: the grant audiences it verifies",
                ));
            }
            crate::grant::check_audiences("audiences", &audiences)?;
        } else if !audiences.is_empty() {
            return Err(Error::invalid("only executor keys take `audiences`"));
        }
        self.record.audiences = audiences;
        Ok(self)
    }
}

/// Parses a bootstrap admin key given by the operator; it must be long enough to be a secret.
pub fn operator_key(secret: &str) -> Result<()> {
    if secret.len() < 32 || secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(
            "the bootstrap admin key must be at least 32 characters without whitespace",
        ));
    }
    Ok(())
}
