//! Administration for a tenant's admins: people and invitations, agents and their keys, and
//! the audit trail with its chain status.
use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use countersign_core::audit::ChainVerifier;
use countersign_core::dashboard::LinkKind;

use countersign_core::{Error, Principal};
use countersign_proto::TrustLevel;
use countersign_proto::admin::KeyRole;
use serde::Deserialize;

use super::queue::trust_levels;
use super::views::when;
use super::{Layout, Posted, UiError, render, see_other};
use crate::accounts::{self, IssuedLink, Viewer};
use crate::directory::{self, NewKey};
use crate::state::AppState;

fn admin(viewer: &Viewer) -> Result<&Principal, Error> {
    viewer.principal.require_admin()?;
    Ok(&viewer.principal)
}

#[derive(Debug, Deserialize)]
pub struct Empty {}

#[derive(Template)]
#[template(path = "secret.html")]
struct SecretPage {
    layout: Layout,
    heading: String,
    explanation: String,
    label: String,
    secret: String,
    back: String,
}

fn show_link(viewer: &Viewer, issued: &IssuedLink) -> Result<Response, UiError> {
    let (heading, what) = match issued.link.kind {
        LinkKind::Invitation => ("Invitation link", "registers a passkey and signs in, once"),
        LinkKind::SignIn => ("Sign-in link", "signs in once, without a passkey"),
    };
    render(&SecretPage {
        layout: Layout::for_viewer(viewer, heading, "users"),
        heading: heading.into(),
        explanation: format!(
            "Send this link to {} yourself (e-mail delivery is not configured). It {what} and expires {}.",
            issued.user.email,
            when(issued.link.expires_at)
        ),
        label: "Link".into(),
        secret: issued.url.clone(),
        back: "/ui/admin/users".into(),
    })
}

pub struct UserRow {
    pub id: String,
    pub name: String,
    pub email: String,
    pub is_admin: bool,
    pub disabled: bool,
}

pub struct InvitationRow {
    pub id: String,
    pub email: String,
    pub state: &'static str,
    pub created: String,
    pub expires: String,
}

#[derive(Template)]
#[template(path = "admin_users.html")]
struct UsersPage {
    layout: Layout,
    csrf: String,
    self_id: String,
    users: Vec<UserRow>,
    invitations: Vec<InvitationRow>,
}

pub async fn users(State(state): State<AppState>, viewer: Viewer) -> Result<Response, UiError> {
    let p = admin(&viewer)?;
    let now = state.clock.now();
    let users = directory::users(&state, p).await?;
    let emails: HashMap<String, String> = users
        .iter()
        .map(|u| (u.id.clone(), u.email.clone()))
        .collect();
    let invitations = state
        .store
        .list_login_links(&p.tenant_id, LinkKind::Invitation)
        .await?
        .into_iter()
        .map(|l| InvitationRow {
            email: emails.get(&l.user_id).cloned().unwrap_or_default(),
            state: l.state(now),
            created: when(l.created_at),
            expires: when(l.expires_at),
            id: l.id,
        })
        .collect();
    render(&UsersPage {
        layout: Layout::for_viewer(&viewer, "People", "users"),
        csrf: viewer.csrf.clone(),
        self_id: viewer.user.id.clone(),
        users: users
            .into_iter()
            .map(|u| UserRow {
                id: u.id,
                name: u.name,
                email: u.email,
                is_admin: u.is_admin,
                disabled: u.disabled,
            })
            .collect(),
        invitations,
    })
}

#[derive(Debug, Deserialize)]
pub struct InviteForm {
    email: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    is_admin: Option<String>,
}

pub async fn invite(
    State(state): State<AppState>,
    posted: Posted<InviteForm>,
) -> Result<Response, UiError> {
    let p = admin(&posted.viewer)?;
    let f = &posted.form;
    let issued = accounts::invite(
        &state,
        p,
        &f.email,
        f.name.as_deref(),
        f.is_admin.as_deref() == Some("on"),
    )
    .await?;
    show_link(&posted.viewer, &issued)
}

pub async fn reinvite(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    let p = admin(&posted.viewer)?;
    let user = state
        .store
        .get_user(&p.tenant_id, &id)
        .await?
        .ok_or_else(|| Error::NotFound("no such user".into()))?;
    let issued = accounts::invite(&state, p, &user.email, None, false).await?;
    show_link(&posted.viewer, &issued)
}

pub async fn sign_in_link(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    let p = admin(&posted.viewer)?;
    let issued = accounts::sign_in_link(&state, p, Some(&id), None).await?;
    show_link(&posted.viewer, &issued)
}

pub async fn revoke_invitation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    let p = admin(&posted.viewer)?;
    state
        .store
        .revoke_login_link(&p.tenant_id, &id, p.actor(), state.clock.now())
        .await?;
    Ok(see_other("/ui/admin/users"))
}

#[derive(Debug, Deserialize)]
pub struct RoleForm {
    is_admin: String,
}

pub async fn set_role(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<RoleForm>,
) -> Result<Response, UiError> {
    let p = admin(&posted.viewer)?;
    if id == posted.viewer.user.id {
        return Err(Error::invalid("you cannot change your own role; ask another admin").into());
    }
    state
        .store
        .set_user_admin(
            &p.tenant_id,
            &id,
            posted.form.is_admin == "true",
            p.actor(),
            state.clock.now(),
        )
        .await?;
    Ok(see_other("/ui/admin/users"))
}

pub async fn disable_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    let p = admin(&posted.viewer)?;
    if id == posted.viewer.user.id {
        return Err(Error::invalid("you cannot disable yourself; ask another admin").into());
    }
    directory::disable_user(&state, p, &id).await?;
    Ok(see_other("/ui/admin/users"))
}

pub struct AgentRow {
    pub id: String,
    pub name: String,
    pub trust_level: &'static str,
    pub disabled: bool,
}

pub struct KeyRow {
    pub id: String,
    pub prefix: String,
    pub name: Option<String>,
    pub role: &'static str,
    pub owner: String,
    pub created: String,
    pub revoked: bool,
}

#[derive(Template)]
#[template(path = "admin_agents.html")]
struct AgentsPage {
    layout: Layout,
    csrf: String,
    trust_levels: Vec<&'static str>,
    agents: Vec<AgentRow>,
    keys: Vec<KeyRow>,
}

pub async fn agents(State(state): State<AppState>, viewer: Viewer) -> Result<Response, UiError> {
    let p = admin(&viewer)?;
    let agents = directory::agents(&state, p).await?;
    let users = directory::users(&state, p).await?;
    let mut owners: HashMap<String, String> = agents
        .iter()
        .map(|a| (a.id.clone(), format!("agent {}", a.name)))
        .collect();
    owners.extend(users.into_iter().map(|u| (u.id, u.email)));
    let keys = directory::api_keys(&state, p)
        .await?
        .into_iter()
        .rev()
        .map(|k| KeyRow {
            owner: k
                .agent_id
                .as_ref()
                .or(k.user_id.as_ref())
                .map(|id| owners.get(id).cloned().unwrap_or_else(|| id.clone()))
                .unwrap_or_else(|| "the tenant".into()),
            id: k.id,
            prefix: k.prefix,
            name: k.name,
            role: k.role.as_str(),
            created: when(k.created_at),
            revoked: k.revoked_at.is_some(),
        })
        .collect();
    render(&AgentsPage {
        layout: Layout::for_viewer(&viewer, "Agents", "agents"),
        csrf: viewer.csrf.clone(),
        trust_levels: trust_levels(),
        agents: agents
            .into_iter()
            .map(|a| AgentRow {
                id: a.id,
                name: a.name,
                trust_level: a.trust_level.as_str(),
                disabled: a.disabled,
            })
            .collect(),
        keys,
    })
}

#[derive(Debug, Deserialize)]
pub struct AgentForm {
    name: String,
    trust_level: String,
}

pub async fn create_agent(
    State(state): State<AppState>,
    posted: Posted<AgentForm>,
) -> Result<Response, UiError> {
    let p = admin(&posted.viewer)?;
    let trust = TrustLevel::parse(&posted.form.trust_level).ok_or_else(|| {
        Error::invalid(
            "the trust level must be development, standard, elevated, restricted or critical",
        )
    })?;
    directory::create_agent(&state, p, &posted.form.name, trust).await?;
    Ok(see_other("/ui/admin/agents"))
}

async fn show_new_key(
    state: &AppState,
    viewer: &Viewer,
    role: KeyRole,
    agent_id: Option<String>,
) -> Result<Response, UiError> {
    let p = admin(viewer)?;
    let new = NewKey {
        role,
        user_id: None,
        agent_id,
        name: Some(format!("made by {} in the dashboard", viewer.user.email)),
        audiences: Vec::new(),
    };
    let key = directory::create_api_key(state, p, new).await?;
    render(&SecretPage {
        layout: Layout::for_viewer(viewer, "New API key", "agents"),
        heading: "New API key".into(),
        explanation: format!(
            "A {} key. Put it where the {} reads its secrets.",
            role.as_str(),
            if role == KeyRole::Agent {
                "agent"
            } else {
                "tool"
            }
        ),
        label: "API key".into(),
        secret: key.secret,
        back: "/ui/admin/agents".into(),
    })
}

pub async fn create_agent_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    show_new_key(&state, &posted.viewer, KeyRole::Agent, Some(id)).await
}

pub async fn create_admin_key(
    State(state): State<AppState>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    show_new_key(&state, &posted.viewer, KeyRole::Admin, None).await
}

pub async fn disable_agent(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    let p = admin(&posted.viewer)?;
    directory::disable_agent(&state, p, &id).await?;
    Ok(see_other("/ui/admin/agents"))
}

pub async fn revoke_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    let p = admin(&posted.viewer)?;
    directory::revoke_api_key(&state, p, &id).await?;
    Ok(see_other("/ui/admin/agents"))
}

pub struct EventRow {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub details: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    layout: Layout,
    chain_ok: bool,
    checked: i64,
    broken_seq: i64,
    broken_reason: String,
    events: Vec<EventRow>,
    prev_after: Option<i64>,
    next_after: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    after: Option<i64>,
}

const AUDIT_PAGE: u32 = 100;

pub async fn audit(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<AuditQuery>,
) -> Result<Response, UiError> {
    let p = admin(&viewer)?;
    // The chain is verified whole each time: its status is the point of this page.
    let mut verifier = ChainVerifier::default();
    let mut last = 0;
    'pages: loop {
        let batch = state.store.list_audit(&p.tenant_id, last, 1000).await?;
        let Some(tail) = batch.last() else { break };
        last = tail.seq;
        for e in &batch {
            if !verifier.check(e)? {
                break 'pages;
            }
        }
    }
    // Without a position, show the latest page.
    let after = query
        .after
        .unwrap_or_else(|| (last - i64::from(AUDIT_PAGE)).max(0))
        .max(0);
    let events = state
        .store
        .list_audit(&p.tenant_id, after, AUDIT_PAGE)
        .await?;
    let next_after = events.last().filter(|e| e.seq < last).map(|e| e.seq);
    let prev_after = (after > 0).then(|| (after - i64::from(AUDIT_PAGE)).max(0));
    let (broken_seq, broken_reason) = verifier.first_broken.clone().unwrap_or_default();
    render(&AuditPage {
        layout: Layout::for_viewer(&viewer, "Audit", "audit"),
        chain_ok: verifier.first_broken.is_none(),
        checked: verifier.checked,
        broken_seq,
        broken_reason,
        events: events
            .into_iter()
            .rev()
            .map(|e| EventRow {
                seq: e.seq,
                at: when(e.record.at),
                actor: format!("{} {}", e.record.actor_type, e.record.actor_id),
                action: e.record.action,
                subject: e.record.subject,
                details: e.record.details.to_string(),
            })
            .collect(),
        prev_after,
        next_after,
    })
}
