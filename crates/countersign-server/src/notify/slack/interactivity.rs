//! Button clicks: the signature, the clicker, the decision, and what Slack is told after.
use aws_lc_rs::hmac;
use chrono::{DateTime, Utc};
use countersign_core::approval::{ApprovalRequest, RequestRef, Verdict};
use countersign_core::notify::SlackConfig;
use countersign_core::{Error, Principal};
use countersign_proto::{ApprovalStatus, ErrorCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::channels;
use super::super::outbound::check_target;
use super::super::worker::{AttemptError, send_error};
use crate::service;
use crate::state::AppState;

use super::*;

/// Checks a request from Slack: `X-Slack-Signature` must be `v0=` and the hex HMAC-SHA256,
/// keyed with the signing secret, of `v0:{X-Slack-Request-Timestamp}:{raw body}`, and the
/// timestamp within five minutes of `now`.
pub fn verify_signature(
    signing_secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let refused = |why: &str| Error::coded(ErrorCode::InvalidSignature, why.to_string());
    let timestamp = timestamp
        .map(str::trim)
        .ok_or_else(|| refused("the request has no X-Slack-Request-Timestamp"))?;
    let seconds: i64 = timestamp
        .parse()
        .map_err(|_| refused("X-Slack-Request-Timestamp is not a Unix time"))?;
    if (now.timestamp() - seconds).abs() > MAX_SKEW_SECS {
        return Err(refused(
            "X-Slack-Request-Timestamp is more than five minutes away from the server's clock",
        ));
    }
    let given = signature
        .and_then(|s| s.trim().strip_prefix("v0="))
        .and_then(|hex_sig| hex::decode(hex_sig).ok())
        .ok_or_else(|| refused("X-Slack-Signature is missing or malformed"))?;
    let mut signed = format!("v0:{timestamp}:").into_bytes();
    signed.extend_from_slice(body);
    let key = hmac::Key::new(hmac::HMAC_SHA256, signing_secret.as_bytes());
    hmac::verify(&key, &signed, &given)
        .map_err(|_| refused("X-Slack-Signature does not match the request"))
}

/// What Countersign reads of Slack's `block_actions` payload.
#[derive(Debug, Clone, Deserialize)]
pub struct Interaction {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub team: Option<Named>,
    #[serde(default)]
    pub user: Option<Named>,
    #[serde(default)]
    pub actions: Vec<Action>,
    #[serde(default)]
    pub container: Option<Container>,
    #[serde(default)]
    pub response_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Named {
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Action {
    #[serde(default)]
    pub action_id: String,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Container {
    #[serde(default)]
    pub channel_id: Option<String>,
    #[serde(default)]
    pub message_ts: Option<String>,
}

/// The verified tenant's click to act on, if the payload holds one.
pub fn decision_of(interaction: &Interaction) -> Option<(Verdict, String)> {
    if interaction.kind != "block_actions" {
        return None;
    }
    interaction.actions.iter().find_map(|a| {
        let verdict = match a.action_id.as_str() {
            APPROVE_ACTION => Verdict::Approve,
            REJECT_ACTION => Verdict::Reject,
            _ => return None,
        };
        Some((verdict, a.value.clone()?))
    })
}

/// What a click asks Slack to show.
pub enum ClickAnswer {
    /// Replace the clicked message with the request's outcome.
    Replace(Box<ApprovalRequest>),
    /// A reply only the clicker sees.
    Ephemeral(String),
    Nothing,
}

/// Acts on a verified click: finds the reviewer behind the Slack user and decides as them.
/// The decision is durable when this returns, so the 200 Slack gets means it happened.
pub async fn decide_click(
    state: &AppState,
    tenant_id: &str,
    config: &SlackConfig,
    interaction: &Interaction,
) -> ClickAnswer {
    let Some((verdict, approval_id)) = decision_of(interaction) else {
        return ClickAnswer::Nothing;
    };
    let api = Api::new(state, config);
    let reply = |text: &str| ClickAnswer::Ephemeral(text.to_string());
    let team = interaction.team.as_ref().map(|t| t.id.as_str());
    if let Some(expected) = &config.team_id
        && team != Some(expected.as_str())
    {
        return reply(
            "This Slack workspace is not the one connected to Countersign, so your click changed nothing.",
        );
    }
    let Some(slack_user) = interaction.user.as_ref().map(|u| u.id.as_str()) else {
        return ClickAnswer::Nothing;
    };
    let user = match reviewer_of(state, &api, tenant_id, slack_user).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            return reply(
                "Your Slack account is not linked to a Countersign reviewer, so your click changed nothing. Ask an admin to link it, or decide in the dashboard.",
            );
        }
        Err(e) => {
            tracing::warn!(error = ?e, "finding the reviewer behind a Slack click failed");
            return reply(
                "Countersign could not check who you are just now; nothing changed. Try again, or decide in the dashboard.",
            );
        }
    };
    let principal = Principal::reviewer(tenant_id, &user, "slack");
    let outcome = service::decide(
        state,
        &principal,
        countersign_core::approval::Face::Review,
        &RequestRef::PublicId(approval_id.clone()),
        verdict,
        None,
        countersign_core::notify::SLACK,
    )
    .await;
    let now = state.clock.now();
    match outcome {
        Ok(decided) if decided.status_at(now) == ApprovalStatus::Pending => {
            reply("Your approval is recorded; the request needs more approvals.")
        }
        Ok(decided) => ClickAnswer::Replace(Box::new(decided)),
        Err(Error::AlreadyDecided { status }) => {
            let words = match status {
                ApprovalStatus::Expired => {
                    "This request expired before anyone decided it; your click changed nothing."
                        .to_string()
                }
                ApprovalStatus::Cancelled => {
                    "The agent withdrew this request; your click changed nothing.".to_string()
                }
                s => format!(
                    "This request was already decided (it is {}); your click changed nothing.",
                    s.as_str()
                ),
            };
            ClickAnswer::Ephemeral(words)
        }
        Err(
            e @ (Error::Forbidden { .. }
            | Error::Invalid { .. }
            | Error::Conflict { .. }
            | Error::NotFound(_)),
        ) => ClickAnswer::Ephemeral(format!(
            "You cannot decide this request: {e}. Nothing changed."
        )),
        Err(e) => {
            tracing::warn!(error = %e, "a Slack decision failed");
            reply(
                "Countersign could not record your decision just now; nothing changed. Try again, or decide in the dashboard.",
            )
        }
    }
}

/// Shows Slack what a click did (after the click was answered).
pub async fn answer_click(
    state: &AppState,
    config: &SlackConfig,
    interaction: &Interaction,
    answer: ClickAnswer,
) {
    match answer {
        ClickAnswer::Replace(decided) => {
            let api = Api::new(state, config);
            replace_clicked(state, &api, interaction, &decided).await;
        }
        ClickAnswer::Ephemeral(text) => {
            if let Some(url) = &interaction.response_url {
                ephemeral(state, url, &text).await;
            }
        }
        ClickAnswer::Nothing => {}
    }
}

/// Longest a click waits for Slack to say who the clicker is.
pub(super) const USER_LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The active reviewer behind a Slack user: by the id an admin set or a past lookup
/// remembered, else by the email of their Slack profile (then remembered).
pub(super) async fn reviewer_of(
    state: &AppState,
    api: &Api<'_>,
    tenant_id: &str,
    slack_user: &str,
) -> Result<Option<String>, AttemptError> {
    if let Some(user) = state
        .store
        .find_user_by_slack_id(tenant_id, slack_user)
        .await?
    {
        return Ok(Some(user.id));
    }
    // Slack wants its answer within three seconds; the lookup may not take them all.
    let lookup = tokio::time::timeout(USER_LOOKUP_TIMEOUT, api.user_email(slack_user))
        .await
        .map_err(|_| AttemptError::retry("users.info timed out"))?;
    let Some(email) = lookup? else {
        return Ok(None);
    };
    let Some(user) = state
        .store
        .find_user_by_email(tenant_id, &email)
        .await?
        .filter(|u| !u.disabled)
    else {
        return Ok(None);
    };
    if let Err(e) = channels::remember_slack_user(state, tenant_id, &user.id, slack_user).await {
        tracing::warn!(error = %e, "remembering a reviewer's Slack user failed");
    }
    Ok(Some(user.id))
}

/// Replaces the clicked message with the request's outcome.
pub(super) async fn replace_clicked(
    state: &AppState,
    api: &Api<'_>,
    interaction: &Interaction,
    request: &ApprovalRequest,
) {
    let message = match render(state, request).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "rendering a Slack message failed");
            return;
        }
    };
    let container = interaction.container.as_ref();
    if let (Some(channel), Some(ts)) = (
        container.and_then(|c| c.channel_id.as_deref()),
        container.and_then(|c| c.message_ts.as_deref()),
    ) {
        match api.update(channel, ts, &message).await {
            Ok(_) => return,
            Err(e) => {
                tracing::info!(error = ?e, "updating the clicked Slack message failed; replacing it through response_url")
            }
        }
    }
    if let Some(url) = &interaction.response_url {
        let mut body = message.body();
        body["replace_original"] = json!(true);
        respond(state, url, &body).await;
    }
}

/// A reply only the clicker sees.
pub(super) async fn ephemeral(state: &AppState, response_url: &str, text: &str) {
    let body = json!({
        "response_type": "ephemeral",
        "replace_original": false,
        "text": escape(text),
    });
    respond(state, response_url, &body).await;
}

pub(super) async fn respond(state: &AppState, response_url: &str, body: &Value) {
    if let Err(e) = check_target(response_url, &state.settings.outbound) {
        tracing::warn!(error = %e, "Slack's response_url is not reachable");
        return;
    }
    match state
        .notifier
        .http
        .post(response_url)
        .json(body)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::info!(status = %r.status(), "Slack's response_url refused a reply"),
        Err(e) => {
            tracing::info!(error = ?send_error(e), "Slack's response_url could not be reached")
        }
    }
}
