//! Notification settings for a tenant's admins: email, Slack and Microsoft Teams, each with a
//! test send. Changes go through the same services as the API (`notify::channels`); secrets
//! are write-only: a blank field keeps the stored value and the page only says "set".
use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use countersign_core::notify::{EMAIL, SLACK, TEAMS};
use countersign_core::{Error, Principal, validate};
use countersign_proto::notify::{PutEmailChannel, PutSlackChannel, PutTeamsChannel};
use serde::Deserialize;
use serde_json::json;

use super::views::when;
use super::{Layout, Posted, UiError, render, see_other};
use crate::accounts::Viewer;
use crate::notify::channels;
use crate::notify::worker::{Attempt, AttemptError};
use crate::state::AppState;

const PAGE: &str = "/ui/admin/notifications";
/// Form fields of a group's Slack channel or Teams webhook: `group:<group id>`.
const GROUP_FIELD: &str = "group:";
/// Form fields that remove a group's Teams webhook: `clear:<group id>`.
const CLEAR_FIELD: &str = "clear:";

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

#[derive(Template)]
#[template(path = "admin_notifications.html")]
struct NotificationsPage {
    layout: Layout,
    csrf: String,
    issuer: String,
    email: EmailSection,
    slack: SlackSection,
    teams: TeamsSection,
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

    let response = render(&NotificationsPage {
        layout: Layout::for_viewer(viewer, "Notifications", "notifications"),
        csrf: viewer.csrf.clone(),
        issuer: state.issuer.to_string(),
        email,
        slack,
        teams,
    })?;
    Ok(with_status(status, response))
}

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    /// What the last form did: `email`, `slack` or `teams` (saved), or `<channel>-removed`.
    #[serde(default)]
    done: Option<String>,
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
        _ => {}
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
        Err(e @ (Error::Invalid { .. } | Error::NotFound(_) | Error::AlreadyExists(_))) => {
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
    let p = admin(&posted.viewer)?;
    channels::check_channel(&channel)?;
    let mut shown = Shown::default();
    match channel.as_str() {
        EMAIL => {
            shown.test_to = Some(posted.form.to.trim().to_string());
            match validate::email(&posted.form.to) {
                Ok(to) => {
                    shown.email_test =
                        Some(crate::notify::email::send_test(&state, &to).await.into());
                }
                Err(e) => {
                    shown.email = Notice::error(&e);
                    return page(&state, &posted.viewer, shown, StatusCode::BAD_REQUEST).await;
                }
            }
        }
        SLACK => {
            shown.slack_test = Some(
                crate::notify::slack::send_test(&state, &p.tenant_id)
                    .await
                    .into(),
            );
        }
        _ => {
            shown.teams_test = Some(
                crate::notify::teams::send_test(&state, &p.tenant_id)
                    .await
                    .into(),
            );
        }
    }
    page(&state, &posted.viewer, shown, StatusCode::OK).await
}
