//! Slack (a Slack app with a bot token): Block Kit messages with Approve and Reject buttons,
//! posted to a channel or as direct messages, and kept up to date as the request changes.
//! Button clicks come back to `/integrations/slack/{tenant}/interactivity`, signed with the
//! app's signing secret; [`verify_signature`] checks them and [`decide_click`] decides as the
//! reviewer behind the Slack user.
use countersign_core::approval::{ApprovalRequest, RequestRef};
use countersign_core::notify::{SLACK_DM, SLACK_UPDATE, SlackConfig};
use countersign_core::oidc::OutboxItem;
use serde::Deserialize;
use serde_json::{Value, json};

use super::channels;
use super::outbound::check_target;
use super::worker::{Attempt, AttemptError, Sent, retry_after, send_error};
use crate::service;
use crate::state::AppState;

mod interactivity;
mod message;

pub use interactivity::*;
use message::*;

/// The action ids of the buttons.
pub const APPROVE_ACTION: &str = "approve";
pub const REJECT_ACTION: &str = "reject";
const DASHBOARD_ACTION: &str = "open_dashboard";

/// How far a request's timestamp may be from the server's clock (Slack's five minutes).
const MAX_SKEW_SECS: i64 = 300;
/// Slack's limits: a section's text and a field's text.
const MAX_SECTION_CHARS: usize = 3_000;
const MAX_FIELD_CHARS: usize = 2_000;

// ----- Slack's Web API -----

/// The few Web API methods Countersign calls, with the tenant's bot token, through the one
/// outgoing client. Errors name the method and Slack's error code, never the token.
struct Api<'a> {
    state: &'a AppState,
    token: &'a str,
}

/// Slack's error codes that are worth another try.
fn transient(error: &str) -> bool {
    matches!(
        error,
        "ratelimited"
            | "rate_limited"
            | "internal_error"
            | "fatal_error"
            | "service_unavailable"
            | "request_timeout"
    )
}

/// What an operator should do about a Slack error that will not go away by itself.
fn advice(error: &str) -> &'static str {
    match error {
        "invalid_auth"
        | "not_authed"
        | "token_revoked"
        | "token_expired"
        | "account_inactive"
        | "no_permission"
        | "missing_scope"
        | "not_allowed_token_type"
        | "ekm_access_denied" => ": check the tenant's Slack bot token and its scopes",
        "channel_not_found" | "not_in_channel" | "is_archived" | "restricted_action" => {
            ": check the Slack channel and invite the app to it"
        }
        "users_not_found" | "user_not_found" => ": no Slack user matches this reviewer",
        "invalid_blocks" | "invalid_arguments" | "msg_too_long" => ": Slack refused the message",
        _ => "",
    }
}

/// Slack's error code, kept to the characters such codes use.
fn error_code(body: &Value) -> String {
    let raw = body
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("unknown_error");
    raw.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect()
}

impl<'a> Api<'a> {
    fn new(state: &'a AppState, config: &'a SlackConfig) -> Api<'a> {
        Api {
            state,
            token: &config.bot_token,
        }
    }

    fn url(&self, method: &str) -> Result<String, AttemptError> {
        let base = self
            .state
            .settings
            .notifications
            .slack
            .api_base_url
            .trim_end_matches('/');
        let url = format!("{base}/{method}");
        check_target(&url, &self.state.settings.outbound)
            .map_err(|e| AttemptError::give_up(format!("Slack {method}: {e}")))?;
        Ok(url)
    }

    /// A method that takes a JSON body (`chat.postMessage`, `chat.update`).
    async fn post(&self, method: &str, body: &Value) -> Result<(u16, Value), AttemptError> {
        let response = self
            .state
            .notifier
            .http
            .post(self.url(method)?)
            .bearer_auth(self.token)
            .json(body)
            .send()
            .await
            .map_err(send_error)?;
        read(method, response).await
    }

    /// A method that reads (`users.info`, `users.lookupByEmail`), with its arguments in the
    /// query string as Slack's read methods take them.
    async fn get(
        &self,
        method: &str,
        query: &[(&str, &str)],
    ) -> Result<(u16, Value), AttemptError> {
        let response = self
            .state
            .notifier
            .http
            .get(self.url(method)?)
            .bearer_auth(self.token)
            .query(query)
            .send()
            .await
            .map_err(send_error)?;
        read(method, response).await
    }

    /// Posts a message; answers where it went (`{"channel","ts"}`) for later updates.
    async fn post_message(&self, channel: &str, message: &Message) -> Attempt {
        let mut body = message.body();
        body["channel"] = json!(channel);
        let (status, answer) = self.post("chat.postMessage", &body).await?;
        let posted = json!({
            "channel": answer.get("channel").and_then(Value::as_str).unwrap_or(channel),
            "ts": answer.get("ts").and_then(Value::as_str).unwrap_or_default(),
        });
        Ok(Sent {
            status: Some(status),
            external_ref: Some(posted.to_string()),
        })
    }

    async fn update(&self, channel: &str, ts: &str, message: &Message) -> Attempt {
        let mut body = message.body();
        body["channel"] = json!(channel);
        body["ts"] = json!(ts);
        let (status, _) = self.post("chat.update", &body).await?;
        Ok(Sent::status(status))
    }

    /// The Slack user with this email, if there is one.
    async fn lookup_by_email(&self, email: &str) -> Result<Option<String>, AttemptError> {
        match self.get("users.lookupByEmail", &[("email", email)]).await {
            Ok((_, answer)) => Ok(answer
                .pointer("/user/id")
                .and_then(Value::as_str)
                .map(str::to_string)),
            Err(AttemptError::GiveUp { error, .. }) if error.contains("users_not_found") => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The email of a Slack user's profile (needs the `users:read.email` scope).
    async fn user_email(&self, slack_user_id: &str) -> Result<Option<String>, AttemptError> {
        let answer = match self.get("users.info", &[("user", slack_user_id)]).await {
            Ok((_, answer)) => answer,
            Err(AttemptError::GiveUp { error, .. }) if error.contains("user_not_found") => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let user = answer.get("user");
        let active = user.and_then(|u| u.get("deleted")).and_then(Value::as_bool) != Some(true);
        Ok(user
            .and_then(|u| u.pointer("/profile/email"))
            .and_then(Value::as_str)
            .filter(|_| active)
            .map(str::to_lowercase))
    }
}

/// Reads a Web API answer: HTTP 429 and 5xx are retried (honouring `Retry-After`); an
/// `{"ok": false}` answer is retried when Slack says it is transient, else given up.
async fn read(method: &str, response: reqwest::Response) -> Result<(u16, Value), AttemptError> {
    let status = response.status();
    let code = Some(status.as_u16());
    if !status.is_success() {
        let error = format!("Slack {method} answered {status}");
        return Err(
            if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                AttemptError::Retry {
                    error,
                    status: code,
                    after: retry_after(response.headers()),
                }
            } else {
                AttemptError::GiveUp {
                    error,
                    status: code,
                }
            },
        );
    }
    let after = retry_after(response.headers());
    let body: Value = response.json().await.map_err(|_| AttemptError::Retry {
        error: format!("Slack {method}: the answer is not JSON"),
        status: code,
        after: None,
    })?;
    if body.get("ok").and_then(Value::as_bool) == Some(true) {
        return Ok((status.as_u16(), body));
    }
    let slack_error = error_code(&body);
    let error = format!("Slack {method}: {slack_error}{}", advice(&slack_error));
    Err(if transient(&slack_error) {
        AttemptError::Retry {
            error,
            status: code,
            after,
        }
    } else {
        AttemptError::GiveUp {
            error,
            status: code,
        }
    })
}

// ----- messages -----

async fn config(state: &AppState, tenant_id: &str) -> Result<SlackConfig, AttemptError> {
    channels::slack_config(state, tenant_id)
        .await?
        .ok_or_else(|| AttemptError::give_up("the tenant has no Slack settings"))
}

/// Where a posted message is, as kept in the delivery log.
#[derive(Debug, Deserialize)]
struct Posted {
    channel: String,
    ts: String,
}

/// Sends one Slack delivery: a post to a channel, a direct message, or the update of every
/// message already posted for the request.
pub async fn deliver(state: &AppState, item: &OutboxItem) -> Attempt {
    let config = config(state, &item.tenant_id).await?;
    let api = Api::new(state, &config);
    let request = service::find(
        state,
        &item.tenant_id,
        &RequestRef::PublicId(item.approval_id.clone()),
    )
    .await?;
    if item.target == SLACK_UPDATE {
        return update_all(state, &api, item, &request).await;
    }
    let message = render(state, &request).await?;
    let channel = match item.target.strip_prefix(SLACK_DM) {
        Some(user_id) => direct_channel(state, &api, &item.tenant_id, user_id).await?,
        None => item.target.clone(),
    };
    api.post_message(&channel, &message).await
}

/// The Slack user a reviewer's direct messages go to: the one in their preferences, else the
/// Slack user with their email (then remembered).
async fn direct_channel(
    state: &AppState,
    api: &Api<'_>,
    tenant_id: &str,
    user_id: &str,
) -> Result<String, AttemptError> {
    let user = state
        .store
        .get_user(tenant_id, user_id)
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(|| AttemptError::give_up("the recipient is no longer an active user"))?;
    let prefs = channels::preferences(state, tenant_id, user_id).await?;
    if let Some(id) = prefs.slack_user_id {
        return Ok(id);
    }
    let Some(found) = api.lookup_by_email(&user.email).await? else {
        return Err(AttemptError::give_up(
            "Slack users.lookupByEmail: users_not_found: no Slack user has this reviewer's email",
        ));
    };
    if let Err(e) = channels::remember_slack_user(state, tenant_id, user_id, &found).await {
        tracing::warn!(error = %e, "remembering a reviewer's Slack user failed");
    }
    Ok(found)
}

/// Brings every delivered message of the request up to date. While a post of the request is
/// still on its way, waits for it, so the update comes after it.
async fn update_all(
    state: &AppState,
    api: &Api<'_>,
    item: &OutboxItem,
    request: &ApprovalRequest,
) -> Attempt {
    let deliveries = state
        .store
        .list_deliveries(&item.tenant_id, &item.approval_id)
        .await?;
    let posts: Vec<_> = deliveries
        .iter()
        .filter(|d| d.channel == countersign_core::notify::SLACK && d.target != SLACK_UPDATE)
        .collect();
    if posts.iter().any(|d| d.is_pending()) {
        return Err(AttemptError::retry(
            "a Slack message of this request is still being posted",
        ));
    }
    let message = render(state, request).await?;
    let mut retry = None;
    let mut updated = 0;
    for d in posts.iter().filter(|d| d.is_delivered()) {
        let Some(posted) = d
            .external_ref
            .as_deref()
            .and_then(|r| serde_json::from_str::<Posted>(r).ok())
        else {
            continue;
        };
        match api.update(&posted.channel, &posted.ts, &message).await {
            Ok(_) => updated += 1,
            Err(e @ AttemptError::Retry { .. }) => retry = Some(e),
            Err(AttemptError::GiveUp { error, status }) => {
                let settings_problem = ["invalid_auth", "not_authed", "token_", "account_inactive"]
                    .iter()
                    .any(|c| error.contains(c));
                if settings_problem {
                    return Err(AttemptError::GiveUp { error, status });
                }
                // That message is gone or can no longer change; the others still can.
                tracing::info!(approval_id = %item.approval_id, %error, "a Slack message could not be updated");
            }
        }
    }
    match retry {
        Some(e) => Err(e),
        None => {
            tracing::debug!(approval_id = %item.approval_id, updated, "Slack messages updated");
            Ok(Sent::status(200))
        }
    }
}

/// Sends a test message at once (the settings page's "send a test").
pub async fn send_test(state: &AppState, tenant_id: &str) -> Attempt {
    let config = config(state, tenant_id).await?;
    let channel = config.channel.clone().ok_or_else(|| {
        AttemptError::give_up("the Slack settings name no default `channel` to post the test to")
    })?;
    let text = format!(
        "This is a test message from Countersign at {}. Slack notifications work.",
        escape(&state.issuer)
    );
    let message = Message {
        blocks: vec![section(text.clone())],
        text,
    };
    let sent = Api::new(state, &config)
        .post_message(&channel, &message)
        .await?;
    Ok(Sent {
        status: sent.status,
        external_ref: None,
    })
}

// ----- button clicks -----

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};
    use countersign_core::approval::Verdict;
    use countersign_proto::ErrorCode;

    // Slack's worked example ("Verifying requests from Slack").
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn at(offset_secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_531_420_618 + offset_secs, 0).unwrap()
    }

    fn check(secret: &str, ts: Option<&str>, sig: Option<&str>, body: &str, now: i64) -> bool {
        verify_signature(secret, ts, sig, body.as_bytes(), at(now)).is_ok()
    }

    #[test]
    fn slacks_test_vector_verifies() {
        assert!(check(SECRET, Some(TIMESTAMP), Some(SIGNATURE), BODY, 0));
        assert!(check(SECRET, Some(TIMESTAMP), Some(SIGNATURE), BODY, 299));
        assert!(check(SECRET, Some(TIMESTAMP), Some(SIGNATURE), BODY, -299));
    }

    #[test]
    fn anything_else_is_refused() {
        // Another body, secret or timestamp.
        assert!(!check(
            SECRET,
            Some(TIMESTAMP),
            Some(SIGNATURE),
            &BODY.replace("foobar", "foobaz"),
            0
        ));
        assert!(!check(
            "another-secret",
            Some(TIMESTAMP),
            Some(SIGNATURE),
            BODY,
            0
        ));
        assert!(!check(SECRET, Some("1531420619"), Some(SIGNATURE), BODY, 0));
        // Stale or from the future.
        assert!(!check(SECRET, Some(TIMESTAMP), Some(SIGNATURE), BODY, 301));
        assert!(!check(SECRET, Some(TIMESTAMP), Some(SIGNATURE), BODY, -301));
        // Missing or malformed headers.
        assert!(!check(SECRET, None, Some(SIGNATURE), BODY, 0));
        assert!(!check(SECRET, Some(TIMESTAMP), None, BODY, 0));
        assert!(!check(
            SECRET,
            Some(TIMESTAMP),
            Some(&SIGNATURE.replace("v0=", "v1=")),
            BODY,
            0
        ));
        assert!(!check(SECRET, Some(TIMESTAMP), Some("v0=zz"), BODY, 0));
        assert!(!check(SECRET, Some("soon"), Some(SIGNATURE), BODY, 0));
        let err = verify_signature(SECRET, None, None, b"", at(0)).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidSignature);
        assert_eq!(err.code().http_status(), 401);
    }

    #[test]
    fn mrkdwn_control_characters_are_escaped_and_cut_whole() {
        assert_eq!(
            escape("<!channel> & <@U1>"),
            "&lt;!channel&gt; &amp; &lt;@U1&gt;"
        );
        assert_eq!(escape_cut("abcdef", 4), "abc…");
        // A cut never splits an escape.
        assert_eq!(escape_cut("a<<<", 7), "a&lt;…");
        assert_eq!(code_block("x```y", 100), "```x`\u{200b}``y```");
    }

    #[test]
    fn clicks_name_a_verdict_and_a_request() {
        let payload: Interaction = serde_json::from_value(json!({
            "type": "block_actions",
            "team": {"id": "T1"},
            "user": {"id": "U1", "name": "someone"},
            "actions": [{"action_id": "reject", "value": "apr_1", "type": "button"}],
        }))
        .unwrap();
        assert!(matches!(decision_of(&payload), Some((Verdict::Reject, id)) if id == "apr_1"));
        let dashboard: Interaction = serde_json::from_value(json!({
            "type": "block_actions",
            "actions": [{"action_id": "open_dashboard"}],
        }))
        .unwrap();
        assert!(decision_of(&dashboard).is_none());
        let other: Interaction =
            serde_json::from_value(json!({"type": "view_submission"})).unwrap();
        assert!(decision_of(&other).is_none());
    }
}
