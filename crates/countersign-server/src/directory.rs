//! The directory service: users, agents, API keys and tenants, for the admin API and the
//! admin pages alike. Every function checks that the caller may act, and acts only inside the
//! caller's tenant.
use countersign_core::directory::{self, Agent, ApiKey, MintedKey, Tenant, User};
use countersign_core::{Error, Principal, Result};
use countersign_proto::TrustLevel;
use countersign_proto::admin::KeyRole;

use crate::state::AppState;

/// The tenant whose admins may create other tenants and rotate the server's signing keys.
pub const ROOT_TENANT: &str = "default";

/// Server-wide actions are for admins of the root tenant only.
pub fn require_root_admin(caller: &Principal, what: &str) -> Result<()> {
    caller.require_admin()?;
    if caller.tenant_id != ROOT_TENANT {
        return Err(Error::forbidden(format!(
            "only admins of the `{ROOT_TENANT}` tenant {what}"
        )));
    }
    Ok(())
}

pub async fn create_user(
    state: &AppState,
    caller: &Principal,
    email: &str,
    name: &str,
    is_admin: bool,
) -> Result<User> {
    caller.require_admin()?;
    let mut user = directory::new_user(&caller.tenant_id, email, name, state.clock.now())?;
    user.is_admin = is_admin;
    state.store.create_user(user, caller.actor()).await
}

pub async fn users(state: &AppState, caller: &Principal) -> Result<Vec<User>> {
    caller.require_admin()?;
    state.store.list_users(&caller.tenant_id).await
}

pub async fn user(state: &AppState, caller: &Principal, id: &str) -> Result<User> {
    caller.require_admin()?;
    state
        .store
        .get_user(&caller.tenant_id, id)
        .await?
        .ok_or_else(|| Error::NotFound("no such user".into()))
}

pub async fn disable_user(state: &AppState, caller: &Principal, id: &str) -> Result<User> {
    caller.require_admin()?;
    let now = state.clock.now();
    let user = state
        .store
        .disable_user(&caller.tenant_id, id, caller.actor(), now)
        .await?;
    state.principals.forget_all();
    Ok(user)
}

pub async fn create_agent(
    state: &AppState,
    caller: &Principal,
    name: &str,
    trust_level: TrustLevel,
) -> Result<Agent> {
    caller.require_admin()?;
    let agent = directory::new_agent(&caller.tenant_id, name, trust_level, state.clock.now())?;
    state.store.create_agent(agent, caller.actor()).await
}

pub async fn agents(state: &AppState, caller: &Principal) -> Result<Vec<Agent>> {
    caller.require_admin()?;
    state.store.list_agents(&caller.tenant_id).await
}

pub async fn agent(state: &AppState, caller: &Principal, id: &str) -> Result<Agent> {
    caller.require_admin()?;
    state
        .store
        .get_agent(&caller.tenant_id, id)
        .await?
        .ok_or_else(|| Error::NotFound("no such agent".into()))
}

pub async fn disable_agent(state: &AppState, caller: &Principal, id: &str) -> Result<Agent> {
    caller.require_admin()?;
    let now = state.clock.now();
    let agent = state
        .store
        .disable_agent(&caller.tenant_id, id, caller.actor(), now)
        .await?;
    state.principals.forget_all();
    Ok(agent)
}

/// What a new API key is for.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub role: KeyRole,
    pub user_id: Option<String>,
    pub agent_id: Option<String>,
    pub name: Option<String>,
    /// Executor keys only.
    pub audiences: Vec<String>,
}

/// Mints and stores a key; its secret is in the answer and nowhere else.
pub async fn create_api_key(
    state: &AppState,
    caller: &Principal,
    new: NewKey,
) -> Result<MintedKey> {
    caller.require_admin()?;
    let now = state.clock.now();
    let minted = directory::mint_key(
        &caller.tenant_id,
        new.role,
        new.user_id,
        new.agent_id,
        new.name,
        now,
    )?
    .with_audiences(new.audiences)?;
    state
        .store
        .create_api_key(minted.record.clone(), caller.actor())
        .await?;
    Ok(minted)
}

pub async fn api_keys(state: &AppState, caller: &Principal) -> Result<Vec<ApiKey>> {
    caller.require_admin()?;
    state.store.list_api_keys(&caller.tenant_id).await
}

pub async fn revoke_api_key(state: &AppState, caller: &Principal, id: &str) -> Result<ApiKey> {
    caller.require_admin()?;
    let now = state.clock.now();
    let key = state
        .store
        .revoke_api_key(&caller.tenant_id, id, caller.actor(), now)
        .await?;
    state.principals.forget_all();
    Ok(key)
}

/// Creates another tenant together with its first admin key.
pub async fn create_tenant(
    state: &AppState,
    caller: &Principal,
    id: &str,
    name: Option<&str>,
) -> Result<(Tenant, MintedKey)> {
    require_root_admin(caller, "create tenants")?;
    let now = state.clock.now();
    let tenant = directory::new_tenant(id, name, now)?;
    let name = Some("initial admin key".to_string());
    let key = directory::mint_key(&tenant.id, KeyRole::Admin, None, None, name, now)?;
    state
        .store
        .create_tenant(tenant.clone(), key.clone(), caller.actor())
        .await?;
    Ok((tenant, key))
}
