//! Signing in and out: passkeys, one-time links, invitations, and the account page where a
//! person sees and ends their sessions, manages their passkeys, chooses how they are notified
//! and which of their devices get Web Push.
use askama::Template;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::header::SET_COOKIE;
use axum::response::{IntoResponse, Response};
use countersign_core::Error;
use countersign_core::dashboard::LinkKind;
use countersign_proto::notify::PutNotificationPreferences;
use serde::Deserialize;
use serde_json::{Value, json};
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use super::views::when;
use super::{
    Layout, Posted, PostedJson, PublicForm, PublicJson, UiError, render, safe_next, see_other,
    session_cookie, signed_in, user_agent,
};
use crate::accounts::{self, Viewer};
use crate::error::ApiResult;
use crate::notify::{channels, push};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    layout: Layout,
    passkeys: bool,
    next: String,
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    next: Option<String>,
}

pub async fn sign_in_page(
    State(state): State<AppState>,
    Query(query): Query<NextQuery>,
) -> Result<Response, UiError> {
    render(&SignInPage {
        layout: Layout::public("Sign in"),
        passkeys: state.webauthn.is_some(),
        next: safe_next(query.next.as_deref()),
    })
}

#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

#[derive(Template)]
#[template(path = "link.html")]
struct LinkPage {
    layout: Layout,
    name: String,
    email: String,
    expires: String,
    token: String,
}

/// The landing page of a sign-in link: it shows whom the link signs in and asks for a
/// click, because opening a link (mail scanners do) must never sign anyone in.
pub async fn link_page(
    State(state): State<AppState>,
    Query(query): Query<TokenQuery>,
) -> Result<Response, UiError> {
    let (link, user) = accounts::usable_link(&state, &query.token, LinkKind::SignIn).await?;
    render(&LinkPage {
        layout: Layout::public("Sign in"),
        name: user.name,
        email: user.email,
        expires: when(link.expires_at),
        token: query.token,
    })
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    token: String,
}

pub async fn redeem_link(
    State(state): State<AppState>,
    headers: HeaderMap,
    PublicForm(form): PublicForm<TokenForm>,
) -> Result<Response, UiError> {
    let new = accounts::redeem_sign_in_link(&state, &form.token, &user_agent(&headers)).await?;
    Ok(signed_in(&state, &new, "/ui/queue"))
}

#[derive(Template)]
#[template(path = "invite.html")]
struct InvitePage {
    layout: Layout,
    name: String,
    email: String,
    is_admin: bool,
    expires: String,
    token: String,
    passkeys: bool,
}

pub async fn invite_page(
    State(state): State<AppState>,
    Query(query): Query<TokenQuery>,
) -> Result<Response, UiError> {
    let (link, user) = accounts::usable_link(&state, &query.token, LinkKind::Invitation).await?;
    render(&InvitePage {
        layout: Layout::public("Invitation"),
        name: user.name,
        email: user.email,
        is_admin: user.is_admin,
        expires: when(link.expires_at),
        token: query.token,
        passkeys: state.webauthn.is_some(),
    })
}

#[derive(Debug, Deserialize)]
pub struct InviteBegin {
    token: String,
}

pub async fn invite_begin(
    State(state): State<AppState>,
    PublicJson(body): PublicJson<InviteBegin>,
) -> ApiResult<Json<Value>> {
    let challenge = accounts::begin_invitation(&state, &body.token).await?;
    Ok(Json(json!(challenge)))
}

#[derive(Debug, Deserialize)]
pub struct InviteFinish {
    token: String,
    ceremony: String,
    credential: RegisterPublicKeyCredential,
    #[serde(default)]
    name: Option<String>,
}

/// The passkey is registered and the invitation spent; the answer carries the session
/// cookie and where to go next.
pub async fn invite_finish(
    State(state): State<AppState>,
    headers: HeaderMap,
    PublicJson(body): PublicJson<InviteFinish>,
) -> ApiResult<Response> {
    let new = accounts::finish_invitation(
        &state,
        &body.token,
        &body.ceremony,
        &body.credential,
        body.name.as_deref().unwrap_or_default(),
        &user_agent(&headers),
    )
    .await?;
    Ok(json_signed_in(&state, &new, "/ui/queue"))
}

fn json_signed_in(
    state: &AppState,
    new: &countersign_core::dashboard::NewSession,
    next: &str,
) -> Response {
    let max_age = (new.session.expires_at - new.session.created_at).num_seconds();
    let mut response = Json(json!({"next": next})).into_response();
    response
        .headers_mut()
        .insert(SET_COOKIE, session_cookie(state, &new.token, max_age));
    response
}

#[derive(Debug, Deserialize)]
pub struct PasskeyBegin {
    email: String,
}

pub async fn passkey_begin(
    State(state): State<AppState>,
    PublicJson(body): PublicJson<PasskeyBegin>,
) -> ApiResult<Json<Value>> {
    let challenge = accounts::begin_passkey_sign_in(&state, &body.email).await?;
    Ok(Json(json!(challenge)))
}

#[derive(Debug, Deserialize)]
pub struct PasskeyFinish {
    ceremony: String,
    credential: PublicKeyCredential,
    #[serde(default)]
    next: Option<String>,
}

pub async fn passkey_finish(
    State(state): State<AppState>,
    headers: HeaderMap,
    PublicJson(body): PublicJson<PasskeyFinish>,
) -> ApiResult<Response> {
    let new = accounts::finish_passkey_sign_in(
        &state,
        &body.ceremony,
        &body.credential,
        &user_agent(&headers),
    )
    .await?;
    Ok(json_signed_in(
        &state,
        &new,
        &safe_next(body.next.as_deref()),
    ))
}

#[derive(Debug, Deserialize)]
pub struct Empty {}

pub async fn sign_out(
    State(state): State<AppState>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    let viewer = &posted.viewer;
    accounts::end_session(&state, viewer, &viewer.session.id).await?;
    let mut response = see_other("/ui/sign-in");
    response
        .headers_mut()
        .insert(SET_COOKIE, session_cookie(&state, "", 0));
    Ok(response)
}

pub struct SessionRow {
    pub id: String,
    pub user_agent: String,
    pub created: String,
    pub last_seen: String,
    pub method: String,
    pub current: bool,
}

pub struct PasskeyRow {
    pub id: String,
    pub name: String,
    pub created: String,
    pub last_used: Option<String>,
}

/// A device subscribed to Web Push (its endpoint is not shown: only its push service).
pub struct DeviceRow {
    pub id: String,
    pub user_agent: String,
    pub service: String,
    pub added: String,
}

/// The person's channels as the Notifications form shows them.
pub struct NotificationsView {
    pub email: bool,
    pub slack: bool,
    pub push: bool,
    pub slack_user_id: Option<String>,
    /// Whether this server and tenant send email at all.
    pub email_available: bool,
    /// Whether the tenant connected Slack.
    pub slack_available: bool,
    pub devices: Vec<DeviceRow>,
    /// The server's VAPID public key (`applicationServerKey`).
    pub vapid_key: String,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    layout: Layout,
    notice: Option<String>,
    name: String,
    email: String,
    is_admin: bool,
    tenant: String,
    csrf: String,
    sessions: Vec<SessionRow>,
    passkeys: Vec<PasskeyRow>,
    passkeys_available: bool,
    notifications: NotificationsView,
}

#[derive(Debug, Deserialize)]
pub struct NoticeQuery {
    #[serde(default)]
    done: Option<String>,
}

pub async fn account(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<NoticeQuery>,
) -> Result<Response, UiError> {
    let now = state.clock.now();
    let limits = accounts::session_limits(&state);
    let sessions = state
        .store
        .list_sessions(&viewer.user.tenant_id, &viewer.user.id)
        .await?
        .into_iter()
        .filter(|s| s.live(now, limits))
        .map(|s| SessionRow {
            current: s.id == viewer.session.id,
            id: s.id,
            user_agent: s.user_agent,
            created: when(s.created_at),
            last_seen: when(s.last_seen_at),
            method: s.method.replace('_', " "),
        })
        .collect();
    let passkeys = state
        .store
        .list_passkeys(&viewer.user.tenant_id, &viewer.user.id)
        .await?
        .into_iter()
        .map(|p| PasskeyRow {
            id: p.id,
            name: p.name,
            created: when(p.created_at),
            last_used: p.last_used_at.map(when),
        })
        .collect();
    let notice = match query.done.as_deref() {
        Some("revoked") => Some("The session was signed out.".to_string()),
        Some("revoked-others") => Some("All your other sessions were signed out.".to_string()),
        Some("passkey-removed") => Some("The passkey was removed.".to_string()),
        Some("notifications-saved") => Some("Your notification choices were saved.".to_string()),
        Some("device-added") => Some("This device will be notified.".to_string()),
        Some("device-removed") => Some("The device will no longer be notified.".to_string()),
        _ => None,
    };
    let notifications = notifications_view(&state, &viewer).await?;
    render(&AccountPage {
        layout: Layout::for_viewer(&viewer, "Account", "account"),
        notice,
        name: viewer.user.name.clone(),
        email: viewer.user.email.clone(),
        is_admin: viewer.principal.is_admin(),
        tenant: viewer.user.tenant_id.clone(),
        csrf: viewer.csrf.clone(),
        sessions,
        passkeys,
        passkeys_available: state.webauthn.is_some(),
        notifications,
    })
}

async fn notifications_view(state: &AppState, viewer: &Viewer) -> Result<NotificationsView, Error> {
    let (tenant, user) = (&viewer.user.tenant_id, &viewer.user.id);
    let prefs = channels::preferences(state, tenant, user).await?;
    let available = channels::tenant_channels(state, tenant).await?;
    let devices = push::devices(state, tenant, user)
        .await?
        .into_iter()
        .map(|d| DeviceRow {
            service: push::service_host(&d.endpoint),
            id: d.id,
            user_agent: d.user_agent,
            added: when(d.created_at),
        })
        .collect();
    Ok(NotificationsView {
        email: prefs.email,
        slack: prefs.slack,
        push: prefs.push,
        slack_user_id: prefs.slack_user_id,
        email_available: available.email.is_some(),
        slack_available: available.slack.is_some(),
        devices,
        vapid_key: state.notifier.vapid.public_key().to_string(),
    })
}

/// The Notifications form: a checkbox is sent only when it is ticked.
#[derive(Debug, Deserialize)]
pub struct NotificationsForm {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    slack: Option<String>,
    #[serde(default)]
    push: Option<String>,
}

pub async fn save_notifications(
    State(state): State<AppState>,
    posted: Posted<NotificationsForm>,
) -> Result<Response, UiError> {
    let form = posted.form;
    channels::put_preferences(
        &state,
        &posted.viewer.principal,
        None,
        PutNotificationPreferences {
            email: Some(form.email.is_some()),
            slack: Some(form.slack.is_some()),
            push: Some(form.push.is_some()),
            slack_user_id: None,
        },
    )
    .await?;
    Ok(see_other(
        "/ui/account?done=notifications-saved#notifications",
    ))
}

/// A browser's `PushSubscription.toJSON()`.
#[derive(Debug, Deserialize)]
pub struct PostedSubscription {
    endpoint: String,
    keys: PostedSubscriptionKeys,
    /// When the push service will end the subscription (unused: a 404 or 410 ends it).
    #[serde(default, rename = "expirationTime")]
    _expiration_time: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct PostedSubscriptionKeys {
    p256dh: String,
    auth: String,
}

/// Subscribes the browser that posts (the "Notify this device" button).
pub async fn add_push_subscription(
    State(state): State<AppState>,
    headers: HeaderMap,
    posted: PostedJson<PostedSubscription>,
) -> ApiResult<Json<Value>> {
    let body = posted.body;
    let sub = push::subscribe(
        &state,
        &posted.viewer.principal,
        push::NewSubscription {
            endpoint: body.endpoint,
            p256dh: body.keys.p256dh,
            auth: body.keys.auth,
            user_agent: user_agent(&headers),
        },
    )
    .await?;
    Ok(Json(
        json!({"id": sub.id, "next": "/ui/account?done=device-added#notifications"}),
    ))
}

pub async fn remove_push_subscription(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    push::unsubscribe(&state, &posted.viewer.principal, &id).await?;
    Ok(see_other("/ui/account?done=device-removed#notifications"))
}

pub async fn revoke_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    if !accounts::end_session(&state, &posted.viewer, &id).await? {
        return Err(Error::NotFound("no such session of yours".into()).into());
    }
    Ok(see_other("/ui/account?done=revoked"))
}

pub async fn revoke_other_sessions(
    State(state): State<AppState>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    let viewer = &posted.viewer;
    let sessions = state
        .store
        .list_sessions(&viewer.user.tenant_id, &viewer.user.id)
        .await?;
    for s in sessions
        .iter()
        .filter(|s| s.id != viewer.session.id && s.revoked_at.is_none())
    {
        accounts::end_session(&state, viewer, &s.id).await?;
    }
    Ok(see_other("/ui/account?done=revoked-others"))
}

pub async fn add_passkey_begin(
    State(state): State<AppState>,
    posted: PostedJson<serde_json::Value>,
) -> ApiResult<Json<Value>> {
    let challenge = accounts::begin_add_passkey(&state, &posted.viewer.user).await?;
    Ok(Json(json!(challenge)))
}

#[derive(Debug, Deserialize)]
pub struct AddPasskeyFinish {
    ceremony: String,
    credential: RegisterPublicKeyCredential,
    #[serde(default)]
    name: Option<String>,
}

pub async fn add_passkey_finish(
    State(state): State<AppState>,
    posted: PostedJson<AddPasskeyFinish>,
) -> ApiResult<Json<Value>> {
    let body = posted.body;
    accounts::finish_add_passkey(
        &state,
        &posted.viewer.user,
        &body.ceremony,
        &body.credential,
        body.name.as_deref().unwrap_or_default(),
    )
    .await?;
    Ok(Json(json!({"next": "/ui/account"})))
}

pub async fn remove_passkey(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    let viewer = &posted.viewer;
    let removed = state
        .store
        .delete_passkey(
            &viewer.user.tenant_id,
            &viewer.user.id,
            &id,
            viewer.principal.actor(),
            state.clock.now(),
        )
        .await?;
    if !removed {
        return Err(Error::NotFound("no such passkey of yours".into()).into());
    }
    Ok(see_other("/ui/account?done=passkey-removed"))
}
