//! People and their ways in: invitations and one-time sign-in links, passkey ceremonies and
//! dashboard sessions. HTTP-free: the admin API and the dashboard's handlers both call this.
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Duration;
use countersign_core::audit::{Actor, ActorKind};
use countersign_core::dashboard::{
    self, LinkKind, LoginLink, NewSession, PasskeyRecord, Session, SessionLimits, SessionProof,
};
use countersign_core::directory::{self, User};
use countersign_core::{Error, Principal, Result, ids, secret, validate};
use countersign_proto::ErrorCode;
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    CreationChallengeResponse, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Url,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};

use crate::state::AppState;

/// How long a passkey ceremony may take between its two steps.
const CEREMONY_SECS: i64 = 300;

/// The passkey relying party for the public URL: its host is the relying party id. Browsers
/// refuse passkeys on bare IP addresses, so those get none (sign-in links still work).
pub fn relying_party(public_url: &str) -> anyhow::Result<Option<Webauthn>> {
    let origin = Url::parse(public_url)?;
    let Some(host) = origin.domain().map(str::to_string) else {
        return Ok(None);
    };
    let webauthn = WebauthnBuilder::new(&host, &origin)?
        .rp_name("Countersign")
        .build()?;
    Ok(Some(webauthn))
}

pub fn session_limits(state: &AppState) -> SessionLimits {
    let d = &state.settings.dashboard;
    SessionLimits {
        idle: Duration::seconds(d.session_idle_secs.max(60)),
        absolute: Duration::seconds(d.session_absolute_secs.max(60)),
    }
}

fn webauthn(state: &AppState) -> Result<&Arc<Webauthn>> {
    state.webauthn.as_ref().ok_or_else(|| {
        Error::invalid(
            "passkeys need the server's public URL to have a domain name (for example \
             http://localhost:8080); use a sign-in link meanwhile",
        )
    })
}

fn webauthn_error(e: impl std::fmt::Display) -> Error {
    Error::invalid(format!("the passkey could not be verified: {e}"))
}

/// The URL a one-time link opens. The token travels in the query string, which request logs
/// leave out.
pub fn link_url(state: &AppState, kind: LinkKind, token: &str) -> String {
    let path = match kind {
        LinkKind::Invitation => "/ui/invite",
        LinkKind::SignIn => "/ui/sign-in/link",
    };
    format!("{}{path}?token={token}", state.issuer)
}

/// A fresh link and its URL.
pub struct IssuedLink {
    pub link: LoginLink,
    pub user: User,
    pub url: String,
}

/// Invites `email` to the dashboard: the user is created when the tenant has none with this
/// address; `is_admin` also makes an existing user an admin.
pub async fn invite(
    state: &AppState,
    caller: &Principal,
    email: &str,
    name: Option<&str>,
    is_admin: bool,
) -> Result<IssuedLink> {
    caller.require_admin()?;
    let email = validate::email(email)?;
    let now = state.clock.now();
    let mut user = match state
        .store
        .find_user_by_email(&caller.tenant_id, &email)
        .await?
    {
        Some(u) => u,
        None => {
            let default_name = email.split('@').next().unwrap_or(&email).to_string();
            let name = name
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .unwrap_or(&default_name);
            let mut user = directory::new_user(&caller.tenant_id, &email, name, now)?;
            user.is_admin = is_admin;
            state.store.create_user(user, caller.actor()).await?
        }
    };
    if user.disabled {
        return Err(Error::coded(
            ErrorCode::Disabled,
            format!("the user {email} is disabled; invitations go to active users only"),
        ));
    }
    if is_admin && !user.is_admin {
        user = state
            .store
            .set_user_admin(&caller.tenant_id, &user.id, true, caller.actor(), now)
            .await?;
    }
    issue(state, caller.actor(), user, LinkKind::Invitation).await
}

/// A one-time sign-in link for an existing user (by id or email).
pub async fn sign_in_link(
    state: &AppState,
    caller: &Principal,
    user_id: Option<&str>,
    email: Option<&str>,
) -> Result<IssuedLink> {
    caller.require_admin()?;
    let user = match (user_id, email) {
        (Some(id), None) => state.store.get_user(&caller.tenant_id, id).await?,
        (None, Some(email)) => {
            let email = validate::email(email)?;
            state
                .store
                .find_user_by_email(&caller.tenant_id, &email)
                .await?
        }
        _ => return Err(Error::invalid("give either `user_id` or `email`")),
    }
    .ok_or_else(|| Error::NotFound("no such user".into()))?;
    if user.disabled {
        return Err(Error::coded(ErrorCode::Disabled, "the user is disabled"));
    }
    issue(state, caller.actor(), user, LinkKind::SignIn).await
}

/// A fresh one-time link for `user`, recorded as made by `actor`; it works once and expires
/// as the settings say.
pub(crate) async fn issue(
    state: &AppState,
    actor: Actor,
    user: User,
    kind: LinkKind,
) -> Result<IssuedLink> {
    let ttl = match kind {
        LinkKind::Invitation => state.settings.dashboard.invitation_ttl_secs,
        LinkKind::SignIn => state.settings.dashboard.sign_in_link_ttl_secs,
    };
    let new = dashboard::new_link(
        &user.tenant_id,
        &user.id,
        kind,
        Duration::seconds(ttl.max(60)),
        state.clock.now(),
    );
    let url = link_url(state, kind, &new.token);
    let link = state.store.create_login_link(new, actor).await?;
    Ok(IssuedLink { link, user, url })
}

/// The link a token names, if it can still be used for `kind`.
pub async fn usable_link(
    state: &AppState,
    token: &str,
    kind: LinkKind,
) -> Result<(LoginLink, User)> {
    if !secret::looks_like_token(token) {
        return Err(dashboard::link_unusable());
    }
    match state
        .store
        .find_login_link(&secret::hash_secret(token))
        .await?
    {
        Some((link, user))
            if link.kind == kind && link.usable(state.clock.now()) && !user.disabled =>
        {
            Ok((link, user))
        }
        _ => Err(dashboard::link_unusable()),
    }
}

fn user_actor(user: &User) -> Actor {
    let kind = if user.is_admin {
        ActorKind::Admin
    } else {
        ActorKind::Reviewer
    };
    Actor::new(kind, &user.id)
}

async fn begin_session(
    state: &AppState,
    user: &User,
    proof: SessionProof,
    user_agent: &str,
) -> Result<NewSession> {
    let new = dashboard::new_session(
        user,
        proof.method(),
        user_agent,
        session_limits(state),
        state.clock.now(),
    );
    state
        .store
        .start_session(new.clone(), proof, user_actor(user))
        .await?;
    Ok(new)
}

/// Signs in with a one-time sign-in link; the link is spent.
pub async fn redeem_sign_in_link(
    state: &AppState,
    token: &str,
    user_agent: &str,
) -> Result<NewSession> {
    let (_, user) = usable_link(state, token, LinkKind::SignIn).await?;
    let proof = SessionProof::Link {
        token_hash: secret::hash_secret(token),
        kind: LinkKind::SignIn,
        new_passkey: None,
    };
    begin_session(state, &user, proof, user_agent).await
}

/// What a ceremony remembers between its two steps.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Ceremony {
    Register {
        tenant_id: String,
        user_id: String,
        state: PasskeyRegistration,
    },
    Authenticate {
        state: PasskeyAuthentication,
    },
}

/// The first step of a passkey ceremony: what the browser needs, and the id that names the
/// server-side state for the second step.
#[derive(Debug, Serialize)]
pub struct Challenge<T> {
    pub ceremony: String,
    pub options: T,
}

async fn put_ceremony(state: &AppState, ceremony: &Ceremony) -> Result<String> {
    let id = secret::random_token();
    let now = state.clock.now();
    let json = serde_json::to_string(ceremony).map_err(Error::internal)?;
    state
        .store
        .put_ceremony(
            &secret::hash_secret(&id),
            json,
            now + Duration::seconds(CEREMONY_SECS),
            now,
        )
        .await?;
    Ok(id)
}

async fn take_ceremony(state: &AppState, id: &str) -> Result<Ceremony> {
    let expired = || Error::invalid("the passkey ceremony expired or was already used; try again");
    if !secret::looks_like_token(id) {
        return Err(expired());
    }
    let json = state
        .store
        .take_ceremony(&secret::hash_secret(id), state.clock.now())
        .await?
        .ok_or_else(expired)?;
    serde_json::from_str(&json).map_err(Error::internal)
}

fn parse_passkey(record: &PasskeyRecord) -> Result<Passkey> {
    serde_json::from_str(&record.credential).map_err(Error::internal)
}

async fn begin_registration(
    state: &AppState,
    user: &User,
) -> Result<Challenge<CreationChallengeResponse>> {
    let webauthn = webauthn(state)?;
    let handle = ids::uuid_of(&user.id).ok_or_else(|| Error::internal_msg("malformed user id"))?;
    let existing = state
        .store
        .list_passkeys(&user.tenant_id, &user.id)
        .await?
        .iter()
        .map(|p| parse_passkey(p).map(|k| k.cred_id().clone()))
        .collect::<Result<Vec<_>>>()?;
    let exclude = (!existing.is_empty()).then_some(existing);
    let (options, registration) = webauthn
        .start_passkey_registration(handle, &user.email, &user.name, exclude)
        .map_err(webauthn_error)?;
    let ceremony = put_ceremony(
        state,
        &Ceremony::Register {
            tenant_id: user.tenant_id.clone(),
            user_id: user.id.clone(),
            state: registration,
        },
    )
    .await?;
    Ok(Challenge { ceremony, options })
}

async fn finish_registration(
    state: &AppState,
    user: &User,
    ceremony: &str,
    credential: &RegisterPublicKeyCredential,
    name: &str,
) -> Result<PasskeyRecord> {
    let webauthn = webauthn(state)?;
    let Ceremony::Register {
        tenant_id,
        user_id,
        state: registration,
    } = take_ceremony(state, ceremony).await?
    else {
        return Err(Error::invalid("this is not a passkey registration"));
    };
    if tenant_id != user.tenant_id || user_id != user.id {
        return Err(Error::invalid(
            "this passkey ceremony belongs to another user",
        ));
    }
    let passkey = webauthn
        .finish_passkey_registration(credential, &registration)
        .map_err(webauthn_error)?;
    let credential_id = URL_SAFE_NO_PAD.encode(AsRef::<[u8]>::as_ref(passkey.cred_id()));
    let json = serde_json::to_string(&passkey).map_err(Error::internal)?;
    dashboard::new_passkey(user, credential_id, name, json, state.clock.now())
}

/// Step one of accepting an invitation: the passkey to create.
pub async fn begin_invitation(
    state: &AppState,
    token: &str,
) -> Result<Challenge<CreationChallengeResponse>> {
    let (_, user) = usable_link(state, token, LinkKind::Invitation).await?;
    begin_registration(state, &user).await
}

/// Step two: the passkey is registered, the invitation spent and a session begins, all in one
/// transaction.
pub async fn finish_invitation(
    state: &AppState,
    token: &str,
    ceremony: &str,
    credential: &RegisterPublicKeyCredential,
    passkey_name: &str,
    user_agent: &str,
) -> Result<NewSession> {
    let (_, user) = usable_link(state, token, LinkKind::Invitation).await?;
    let passkey = finish_registration(state, &user, ceremony, credential, passkey_name).await?;
    let proof = SessionProof::Link {
        token_hash: secret::hash_secret(token),
        kind: LinkKind::Invitation,
        new_passkey: Some(passkey),
    };
    begin_session(state, &user, proof, user_agent).await
}

/// A signed-in person adds another passkey: step one.
pub async fn begin_add_passkey(
    state: &AppState,
    user: &User,
) -> Result<Challenge<CreationChallengeResponse>> {
    begin_registration(state, user).await
}

/// A signed-in person adds another passkey: step two.
pub async fn finish_add_passkey(
    state: &AppState,
    user: &User,
    ceremony: &str,
    credential: &RegisterPublicKeyCredential,
    name: &str,
) -> Result<PasskeyRecord> {
    let passkey = finish_registration(state, user, ceremony, credential, name).await?;
    state.store.add_passkey(passkey, user_actor(user)).await
}

/// Passkey sign-in, step one: the passkeys registered for this email (in any tenant).
pub async fn begin_passkey_sign_in(
    state: &AppState,
    email: &str,
) -> Result<Challenge<RequestChallengeResponse>> {
    let webauthn = webauthn(state)?;
    let email = validate::email(email)?;
    let passkeys = state
        .store
        .passkeys_for_email(&email)
        .await?
        .iter()
        .map(parse_passkey)
        .collect::<Result<Vec<_>>>()?;
    if passkeys.is_empty() {
        return Err(Error::invalid(
            "no passkey is registered for this address; ask an admin for a sign-in link",
        ));
    }
    let (options, authentication) = webauthn
        .start_passkey_authentication(&passkeys)
        .map_err(webauthn_error)?;
    let ceremony = put_ceremony(
        state,
        &Ceremony::Authenticate {
            state: authentication,
        },
    )
    .await?;
    Ok(Challenge { ceremony, options })
}

/// Passkey sign-in, step two: the assertion is verified and a session begins.
pub async fn finish_passkey_sign_in(
    state: &AppState,
    ceremony: &str,
    credential: &PublicKeyCredential,
    user_agent: &str,
) -> Result<NewSession> {
    let webauthn = webauthn(state)?;
    let Ceremony::Authenticate {
        state: authentication,
    } = take_ceremony(state, ceremony).await?
    else {
        return Err(Error::invalid("this is not a passkey sign-in"));
    };
    let credential_id = URL_SAFE_NO_PAD.encode(credential.get_credential_id());
    let record = state
        .store
        .find_passkey(&credential_id)
        .await?
        .ok_or_else(|| Error::unauthorized("unknown passkey"))?;
    let result = webauthn
        .finish_passkey_authentication(credential, &authentication)
        .map_err(webauthn_error)?;
    let mut passkey = parse_passkey(&record)?;
    passkey.update_credential(&result);
    let user = state
        .store
        .get_user(&record.tenant_id, &record.user_id)
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(|| Error::unauthorized("this account is disabled"))?;
    let proof = SessionProof::Passkey {
        credential_id,
        credential: serde_json::to_string(&passkey).map_err(Error::internal)?,
    };
    begin_session(state, &user, proof, user_agent).await
}

/// A signed-in person: their session, their user and the principal they act as.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub session: Session,
    pub user: User,
    pub principal: Principal,
    pub csrf: String,
}

/// The person a session cookie signs in, if the session is live and its user active.
pub async fn viewer(state: &AppState, token: &str) -> Result<Option<Viewer>> {
    if !secret::looks_like_token(token) {
        return Ok(None);
    }
    let Some((session, user)) = state
        .store
        .session_by_token(&secret::hash_secret(token))
        .await?
    else {
        return Ok(None);
    };
    let now = state.clock.now();
    if user.disabled || !session.live(now, session_limits(state)) {
        return Ok(None);
    }
    if session.needs_touch(now) {
        state.store.touch_session(&session.id, now).await?;
    }
    let principal = session.principal(&user);
    crate::auth::record_tenant(&principal.tenant_id);
    Ok(Some(Viewer {
        principal,
        csrf: dashboard::csrf_token(token),
        session,
        user,
    }))
}

/// Ends one of the viewer's own sessions (sign-out is ending the current one).
pub async fn end_session(state: &AppState, viewer: &Viewer, session_id: &str) -> Result<bool> {
    state
        .store
        .revoke_session(
            &viewer.session.tenant_id,
            &viewer.user.id,
            session_id,
            viewer.principal.actor(),
            state.clock.now(),
        )
        .await
}
