//! Notification settings for a tenant's admins: email, Slack and Microsoft Teams, each with a
//! test send, and the tenant's Standard Webhooks endpoints. Changes go through the same
//! services as the API (`notify::channels`, `notify::webhooks_admin`); secrets are write-only:
//! a blank field keeps the stored value and the page only says "set". A webhook's signing
//! secret is shown once, on the page that answers the form that made it.
use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use countersign_core::notify::{EMAIL, SLACK, TEAMS};
use countersign_core::{Error, Principal};
use countersign_proto::notify::{DeliveryView, PutEmailChannel, PutSlackChannel, PutTeamsChannel};
use serde::Deserialize;
use serde_json::json;

use super::views::when;
use super::{Layout, Posted, UiError, render, see_other};
use crate::accounts::Viewer;
use crate::notify::channels;
use crate::notify::worker::{Attempt, AttemptError};
use crate::state::AppState;

mod webhooks;
pub use webhooks::*;

const PAGE: &str = "/ui/admin/notifications";
/// Form fields of a group's Slack channel or Teams webhook: `group:<group id>`.
const GROUP_FIELD: &str = "group:";
/// Form fields that remove a group's Teams webhook: `clear:<group id>`.
const CLEAR_FIELD: &str = "clear:";
/// Event checkboxes of the webhook form: `event:<event type>`.
const EVENT_FIELD: &str = "event:";
/// How many of each endpoint's deliveries the page lists (the API pages through all).
const RECENT_DELIVERIES: u32 = 10;

/// The bot scopes the Slack app needs: post (also to public channels it was not invited
/// to), find reviewers by email, and open direct messages.
pub const SLACK_BOT_SCOPES: [&str; 5] = [
    "chat:write",
    "chat:write.public",
    "users:read",
    "users:read.email",
    "im:write",
];

fn admin(viewer: &Viewer) -> Result<&Principal, Error> {
    viewer.principal.require_admin()?;
    Ok(&viewer.principal)
}

/// A message beside one section: `ok`, `warn` or `error`.
pub struct Notice {
    pub kind: &'static str,
    pub text: String,
}

impl Notice {
    fn ok(text: impl Into<String>) -> Option<Notice> {
        Some(Notice {
            kind: "ok",
            text: text.into(),
        })
    }

    fn warn(text: impl Into<String>) -> Option<Notice> {
        Some(Notice {
            kind: "warn",
            text: text.into(),
        })
    }

    fn error(e: &Error) -> Option<Notice> {
        Some(Notice {
            kind: "error",
            text: e.to_string(),
        })
    }
}

/// What a "send a test" did, as the API's `TestSent` has it.
pub struct TestOutcome {
    pub delivered: bool,
    pub status_code: Option<u16>,
    pub error: Option<String>,
}

impl From<Attempt> for TestOutcome {
    fn from(attempt: Attempt) -> Self {
        match attempt {
            Ok(sent) => TestOutcome {
                delivered: true,
                status_code: sent.status,
                error: None,
            },
            Err(
                AttemptError::Retry { error, status, .. } | AttemptError::GiveUp { error, status },
            ) => TestOutcome {
                delivered: false,
                status_code: status,
                error: Some(error),
            },
        }
    }
}

/// A tenant approval group with its form field.
pub struct GroupField {
    pub id: String,
    pub name: String,
    /// `group:<id>`.
    pub field: String,
    /// The stored (or just typed) value, for fields that are not secret.
    pub value: String,
    /// Whether a secret value is stored (Teams webhooks).
    pub set: bool,
}

pub struct EmailSection {
    pub enabled: bool,
    pub smtp_configured: bool,
    pub from: Option<String>,
    pub risk: String,
    pub test_to: String,
    pub notice: Option<Notice>,
    pub test: Option<TestOutcome>,
}

pub struct SlackSection {
    pub configured: bool,
    pub bot_token_set: bool,
    pub signing_secret_set: bool,
    pub channel: String,
    pub team_id: String,
    pub groups: Vec<GroupField>,
    pub interactivity_url: String,
    pub manifest: String,
    /// Slack sends clicks only to https URLs.
    pub https: bool,
    pub updated: Option<String>,
    pub notice: Option<Notice>,
    pub test: Option<TestOutcome>,
}

pub struct TeamsSection {
    pub configured: bool,
    pub webhook_url_set: bool,
    pub groups: Vec<GroupField>,
    pub updated: Option<String>,
    pub notice: Option<Notice>,
    pub test: Option<TestOutcome>,
}

/// One webhook event type with its checkbox.
pub struct EventChoice {
    /// `approval.requested`, …
    pub name: String,
    /// `event:approval.requested`, …
    pub field: String,
    pub checked: bool,
}

/// One delivery of an endpoint, as its log shows it.
pub struct WebhookDelivery {
    pub id: i64,
    pub approval_id: String,
    pub event: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created: String,
    /// When a pending delivery is tried next.
    pub next_attempt: Option<String>,
    /// Delivered or failed: it can be sent again.
    pub finished: bool,
}

impl From<DeliveryView> for WebhookDelivery {
    fn from(d: DeliveryView) -> Self {
        WebhookDelivery {
            finished: d.state != "pending",
            id: d.id,
            approval_id: d.approval_id,
            event: d.event,
            state: d.state,
            attempts: d.attempts,
            status_code: d.status_code,
            last_error: d.last_error,
            created: when(d.created_at),
            next_attempt: d.next_attempt_at.map(when),
        }
    }
}

/// A tenant's webhook endpoint with its recent deliveries and what the last form did to it.
pub struct WebhookRow {
    pub id: String,
    pub url: String,
    /// Empty: every event.
    pub events: Vec<String>,
    pub description: Option<String>,
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    pub created: String,
    pub updated: String,
    pub deliveries: Vec<WebhookDelivery>,
    /// Older deliveries than those listed exist.
    pub more: bool,
    pub notice: Option<Notice>,
    pub test: Option<TestOutcome>,
    /// The form asked to delete it: the page asks to confirm.
    pub confirm_delete: bool,
}

/// A signing secret just made, shown this once.
pub struct NewSecret {
    pub endpoint_id: String,
    pub url: String,
    pub secret: String,
    /// Rotated (rather than made with a new endpoint).
    pub rotated: bool,
}

pub struct WebhooksSection {
    pub endpoints: Vec<WebhookRow>,
    pub notice: Option<Notice>,
    pub secret: Option<NewSecret>,
    /// The add form: what was typed when it was refused, else empty.
    pub url: String,
    pub description: String,
    pub events: Vec<EventChoice>,
    /// The operator lets endpoints on private networks be used.
    pub private_allowed: bool,
    pub http_allowed: bool,
}

#[derive(Template)]
#[template(path = "admin_notifications.html")]
struct NotificationsPage {
    layout: Layout,
    csrf: String,
    issuer: String,
    email: EmailSection,
    slack: SlackSection,
    teams: TeamsSection,
    webhooks: WebhooksSection,
}

/// What to show beyond the stored settings: notices, test outcomes, and what the admin typed
/// into a form that was refused (never its secrets).
#[derive(Default)]
struct Shown {
    email: Option<Notice>,
    slack: Option<Notice>,
    teams: Option<Notice>,
    email_test: Option<TestOutcome>,
    slack_test: Option<TestOutcome>,
    teams_test: Option<TestOutcome>,
    email_form: Option<EmailForm>,
    slack_form: Option<SlackForm>,
    test_to: Option<String>,
    webhooks: Option<Notice>,
    webhook_form: Option<WebhookForm>,
    webhook_secret: Option<NewSecret>,
    /// What the last form did to one endpoint: `(endpoint id, …)`.
    endpoint_notice: Option<(String, Notice)>,
    endpoint_test: Option<(String, TestOutcome)>,
    confirm_delete: Option<String>,
}

/// The Slack app manifest for this tenant: a bot with the scopes above, and interactivity
/// sent to this server. Paste it at api.slack.com/apps ("From a manifest").
pub fn slack_manifest(interactivity_url: &str) -> String {
    let manifest = json!({
        "display_information": {
            "name": "Countersign",
            "description": "Approve or reject what AI agents ask to do",
            "background_color": "#0f172a"
        },
        "features": {
            "bot_user": {"display_name": "Countersign", "always_online": true}
        },
        "oauth_config": {
            "scopes": {"bot": SLACK_BOT_SCOPES}
        },
        "settings": {
            "interactivity": {"is_enabled": true, "request_url": interactivity_url},
            "org_deploy_enabled": false,
            "socket_mode_enabled": false,
            "token_rotation_enabled": false
        }
    });
    serde_json::to_string_pretty(&manifest).unwrap_or_default()
}

fn with_status(status: StatusCode, response: Response) -> Response {
    let mut response = response;
    *response.status_mut() = status;
    response
}

async fn page(
    state: &AppState,
    viewer: &Viewer,
    shown: Shown,
    status: StatusCode,
) -> Result<Response, UiError> {
    let p = admin(viewer)?;
    let view = channels::view(state, p).await?;
    let groups = state.store.list_groups(&p.tenant_id).await?;
    let interactivity_url = channels::slack_interactivity_url(state, &p.tenant_id);

    let email_form = shown.email_form;
    let email = EmailSection {
        enabled: email_form
            .as_ref()
            .map_or(view.email.enabled, |f| f.enabled.as_deref() == Some("on")),
        smtp_configured: view.email.smtp_configured,
        from: view.email.from,
        risk: match email_form {
            Some(f) => f.require_sign_in_above_risk,
            None => view
                .email
                .require_sign_in_above_risk
                .map(|r| r.to_string())
                .unwrap_or_default(),
        },
        test_to: shown.test_to.unwrap_or_else(|| viewer.user.email.clone()),
        notice: shown.email,
        test: shown.email_test,
    };

    let stored_slack = view.slack;
    let typed = shown.slack_form;
    let slack_groups = groups
        .iter()
        .map(|g| {
            let field = format!("{GROUP_FIELD}{}", g.id);
            let value = match &typed {
                Some(f) => f.fields.get(&field).cloned().unwrap_or_default(),
                None => stored_slack
                    .as_ref()
                    .and_then(|s| s.group_channels.get(&g.id).cloned())
                    .unwrap_or_default(),
            };
            GroupField {
                id: g.id.clone(),
                name: g.name.clone(),
                field,
                set: !value.is_empty(),
                value,
            }
        })
        .collect();
    let slack = SlackSection {
        configured: stored_slack.is_some(),
        bot_token_set: stored_slack.as_ref().is_some_and(|s| s.bot_token_set),
        signing_secret_set: stored_slack.as_ref().is_some_and(|s| s.signing_secret_set),
        channel: match &typed {
            Some(f) => f.channel.clone(),
            None => stored_slack
                .as_ref()
                .and_then(|s| s.channel.clone())
                .unwrap_or_default(),
        },
        team_id: match &typed {
            Some(f) => f.team_id.clone(),
            None => stored_slack
                .as_ref()
                .and_then(|s| s.team_id.clone())
                .unwrap_or_default(),
        },
        groups: slack_groups,
        manifest: slack_manifest(&interactivity_url),
        interactivity_url,
        https: state.issuer.starts_with("https://"),
        updated: stored_slack.as_ref().map(|s| when(s.updated_at)),
        notice: shown.slack,
        test: shown.slack_test,
    };

    let teams = TeamsSection {
        configured: view.teams.is_some(),
        webhook_url_set: view.teams.as_ref().is_some_and(|t| t.webhook_url_set),
        groups: groups
            .iter()
            .map(|g| GroupField {
                id: g.id.clone(),
                name: g.name.clone(),
                field: format!("{GROUP_FIELD}{}", g.id),
                value: String::new(),
                set: view
                    .teams
                    .as_ref()
                    .is_some_and(|t| t.groups_with_webhooks.contains(&g.id)),
            })
            .collect(),
        updated: view.teams.as_ref().map(|t| when(t.updated_at)),
        notice: shown.teams,
        test: shown.teams_test,
    };

    let webhooks = webhooks_section(
        state,
        p,
        WebhooksShown {
            notice: shown.webhooks,
            form: shown.webhook_form,
            secret: shown.webhook_secret,
            endpoint_notice: shown.endpoint_notice,
            endpoint_test: shown.endpoint_test,
            confirm_delete: shown.confirm_delete,
        },
    )
    .await?;

    let response = render(&NotificationsPage {
        layout: Layout::for_viewer(viewer, "Notifications", "notifications"),
        csrf: viewer.csrf.clone(),
        issuer: state.issuer.to_string(),
        email,
        slack,
        teams,
        webhooks,
    })?;
    Ok(with_status(status, response))
}

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    /// What the last form did: `email`, `slack` or `teams` (saved), `<channel>-removed`, or
    /// `webhook-<what>`.
    #[serde(default)]
    done: Option<String>,
    /// The webhook endpoint the last form changed.
    #[serde(default)]
    webhook: Option<String>,
}

pub async fn notifications_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<PageQuery>,
) -> Result<Response, UiError> {
    let mut shown = Shown::default();
    match query.done.as_deref() {
        Some(EMAIL) => shown.email = Notice::ok("Email settings saved."),
        Some(SLACK) => shown.slack = Notice::ok("Slack settings saved."),
        Some(TEAMS) => shown.teams = Notice::ok("Teams settings saved."),
        Some("email-removed") => shown.email = Notice::ok("Email settings reset."),
        Some("slack-removed") => shown.slack = Notice::ok("Slack settings removed."),
        Some("teams-removed") => shown.teams = Notice::ok("Teams settings removed."),
        Some("webhook-deleted") => shown.webhooks = Notice::ok("Webhook endpoint deleted."),
        Some(done) => {
            let text = match done {
                "webhook-enabled" => Some("Enabled: it receives events again."),
                "webhook-disabled" => Some("Disabled: it receives no events until enabled."),
                "webhook-redelivered" => {
                    Some("Sending that delivery again now, with its original webhook-id.")
                }
                _ => None,
            };
            if let (Some(text), Some(id)) = (text, query.webhook) {
                shown.endpoint_notice = Notice::ok(text).map(|n| (id, n));
            }
        }
        None => {}
    }
    page(&state, &viewer, shown, StatusCode::OK).await
}

/// After a change: on to the page with its notice, or the page again with the error beside
/// the form (and the status the API would answer).
async fn after_change(
    state: &AppState,
    viewer: &Viewer,
    channel: &str,
    result: Result<(), Error>,
    on_error: impl FnOnce(Option<Notice>) -> Shown,
) -> Result<Response, UiError> {
    match result {
        Ok(()) => Ok(see_other(&format!("{PAGE}?done={channel}#{channel}"))),
        Err(
            e @ (Error::Invalid { .. }
            | Error::Conflict { .. }
            | Error::NotFound(_)
            | Error::AlreadyExists(_)),
        ) => {
            let status =
                StatusCode::from_u16(e.code().http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            page(state, viewer, on_error(Notice::error(&e)), status).await
        }
        Err(e) => Err(e.into()),
    }
}

fn non_empty(value: &str) -> Option<String> {
    Some(value.trim().to_string()).filter(|v| !v.is_empty())
}

/// The `group:<id>` fields with a value, by group id.
fn group_values(fields: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    fields
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(GROUP_FIELD)?.to_string(), non_empty(v)?)))
        .collect()
}

#[derive(Debug, Default, Deserialize)]
pub struct EmailForm {
    #[serde(default)]
    enabled: Option<String>,
    #[serde(default)]
    require_sign_in_above_risk: String,
}

fn email_input(f: &EmailForm) -> Result<PutEmailChannel, Error> {
    let require_sign_in_above_risk = match non_empty(&f.require_sign_in_above_risk) {
        None => None,
        Some(r) => Some(r.parse::<f64>().map_err(|_| {
            Error::invalid("`require_sign_in_above_risk` must be a number between 0 and 1")
        })?),
    };
    Ok(PutEmailChannel {
        enabled: f.enabled.as_deref() == Some("on"),
        require_sign_in_above_risk,
    })
}

pub async fn save_email(
    State(state): State<AppState>,
    posted: Posted<EmailForm>,
) -> Result<Response, UiError> {
    let p = admin(&posted.viewer)?;
    let result = match email_input(&posted.form) {
        Ok(input) => channels::put_email(&state, p, input).await,
        Err(e) => Err(e),
    };
    let form = posted.form;
    after_change(&state, &posted.viewer, EMAIL, result, |notice| Shown {
        email: notice,
        email_form: Some(form),
        ..Shown::default()
    })
    .await
}

/// The Slack form. Its secrets are never shown again, so it has no `Debug`.
#[derive(Default, Deserialize)]
pub struct SlackForm {
    #[serde(default)]
    bot_token: String,
    #[serde(default)]
    signing_secret: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    team_id: String,
    /// `group:<id>` → that group's channel.
    #[serde(flatten)]
    fields: BTreeMap<String, String>,
}

fn slack_input(f: &SlackForm) -> PutSlackChannel {
    PutSlackChannel {
        bot_token: non_empty(&f.bot_token),
        signing_secret: non_empty(&f.signing_secret),
        channel: non_empty(&f.channel),
        team_id: non_empty(&f.team_id),
        group_channels: group_values(&f.fields),
    }
}

pub async fn save_slack(
    State(state): State<AppState>,
    posted: Posted<SlackForm>,
) -> Result<Response, UiError> {
    let p = admin(&posted.viewer)?;
    let result = channels::put_slack(&state, p, slack_input(&posted.form)).await;
    let form = SlackForm {
        // Typed secrets are not shown again.
        bot_token: String::new(),
        signing_secret: String::new(),
        ..posted.form
    };
    after_change(&state, &posted.viewer, SLACK, result, |notice| Shown {
        slack: notice,
        slack_form: Some(form),
        ..Shown::default()
    })
    .await
}

/// The Teams form: the tenant's webhook and each group's, all write-only.
#[derive(Default, Deserialize)]
pub struct TeamsForm {
    #[serde(default)]
    webhook_url: String,
    /// `group:<id>` → a new webhook for that group; `clear:<id>` removes it.
    #[serde(flatten)]
    fields: BTreeMap<String, String>,
}

/// The change a Teams form asks for: blank fields keep the stored webhooks, typed ones
/// replace them, ticked `clear:` boxes remove them (webhooks of deleted groups go too).
async fn teams_input(
    state: &AppState,
    tenant_id: &str,
    f: &TeamsForm,
) -> Result<PutTeamsChannel, Error> {
    let typed = group_values(&f.fields);
    let cleared: Vec<&str> = f
        .fields
        .keys()
        .filter_map(|k| k.strip_prefix(CLEAR_FIELD))
        .collect();
    let group_webhook_urls = if typed.is_empty() && cleared.is_empty() {
        None
    } else {
        let groups = state.store.list_groups(tenant_id).await?;
        let mut urls: BTreeMap<String, String> = channels::teams_config(state, tenant_id)
            .await?
            .map(|c| c.group_webhook_urls)
            .unwrap_or_default()
            .into_iter()
            .filter(|(g, _)| groups.iter().any(|x| x.id == *g))
            .collect();
        for g in cleared {
            urls.remove(g);
        }
        urls.extend(typed);
        Some(urls)
    };
    Ok(PutTeamsChannel {
        webhook_url: non_empty(&f.webhook_url),
        group_webhook_urls,
    })
}

pub async fn save_teams(
    State(state): State<AppState>,
    posted: Posted<TeamsForm>,
) -> Result<Response, UiError> {
    let p = admin(&posted.viewer)?;
    let result = match teams_input(&state, &p.tenant_id, &posted.form).await {
        Ok(input) => channels::put_teams(&state, p, input).await,
        Err(e) => Err(e),
    };
    after_change(&state, &posted.viewer, TEAMS, result, |notice| Shown {
        teams: notice,
        ..Shown::default()
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
pub struct Empty {}

/// Removes a channel's settings (email goes back to its defaults).
pub async fn remove_channel(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    let p = admin(&posted.viewer)?;
    channels::remove(&state, p, &channel).await?;
    Ok(see_other(&format!(
        "{PAGE}?done={channel}-removed#{channel}"
    )))
}

#[derive(Debug, Default, Deserialize)]
pub struct TestForm {
    /// For email: the address to write to.
    #[serde(default)]
    to: String,
}

/// Sends a test message on a channel at once and shows how it went.
pub async fn test_channel(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    posted: Posted<TestForm>,
) -> Result<Response, UiError> {
    admin(&posted.viewer)?;
    let mut shown = Shown::default();
    if channel == EMAIL {
        shown.test_to = Some(posted.form.to.trim().to_string());
    }
    let sent = match channels::send_test(
        &state,
        &posted.viewer.principal,
        &channel,
        // The form always has the field; only the email test's is filled in.
        Some(posted.form.to.as_str()).filter(|to| !to.trim().is_empty()),
    )
    .await
    {
        Ok(sent) => sent,
        Err(e @ (Error::Invalid { .. } | Error::Conflict { .. })) => {
            shown.email = Notice::error(&e);
            return page(&state, &posted.viewer, shown, StatusCode::BAD_REQUEST).await;
        }
        Err(e) => return Err(e.into()),
    };
    match channel.as_str() {
        EMAIL => shown.email_test = Some(sent.into()),
        SLACK => shown.slack_test = Some(sent.into()),
        _ => shown.teams_test = Some(sent.into()),
    }
    page(&state, &posted.viewer, shown, StatusCode::OK).await
}
