//! The Block Kit message of a request, from the server's own record.
use countersign_core::Error;
use countersign_core::approval::ApprovalRequest;
use countersign_proto::ApprovalStatus;
use serde_json::{Value, json};

use super::super::content::{self, Facts};
use crate::state::AppState;

use super::*;

/// Escapes Slack's mrkdwn control characters.
pub fn escape(text: &str) -> String {
    escape_cut(text, usize::MAX)
}

/// Escapes `&`, `<` and `>` and cuts the result at `max` characters without splitting an
/// escape, marking the cut.
pub(super) fn escape_cut(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut len = 0;
    for c in text.chars() {
        let piece = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            _ => "",
        };
        let width = if piece.is_empty() { 1 } else { piece.len() };
        if len + width > max.saturating_sub(1) {
            out.push('…');
            return out;
        }
        if piece.is_empty() {
            out.push(c);
        } else {
            out.push_str(piece);
        }
        len += width;
    }
    out
}

/// Text in a code block: escaped, and unable to close the block early.
pub(super) fn code_block(text: &str, max: usize) -> String {
    let inner = escape_cut(&text.replace("```", "`\u{200b}``"), max - 8);
    format!("```{inner}```")
}

/// One Slack message: the notification text and its blocks.
#[derive(Debug, Clone)]
pub(super) struct Message {
    pub(super) text: String,
    pub(super) blocks: Vec<Value>,
}

impl Message {
    pub(super) fn body(&self) -> Value {
        json!({
            "text": self.text,
            "blocks": self.blocks,
            "unfurl_links": false,
            "unfurl_media": false,
        })
    }
}

pub(super) fn section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

/// Where an escalated request went, in words ("Managers", "the backups of Finance").
pub(super) async fn escalated_to(
    state: &AppState,
    request: &ApprovalRequest,
    level: u32,
) -> Option<String> {
    let step = request
        .rules
        .escalation_plan
        .get(level.checked_sub(1)? as usize)?;
    let name = match state
        .store
        .get_group(&request.tenant_id, &step.group_id)
        .await
    {
        Ok(Some(g)) => g.name,
        _ => step.group_id.clone(),
    };
    Some(if step.kind == "backups" {
        format!("the backups of {name}")
    } else {
        name
    })
}

/// The message for a request as it is now: the facts, and the buttons while it is pending,
/// or the outcome and who decided once it is over.
pub(super) async fn render(state: &AppState, request: &ApprovalRequest) -> Result<Message, Error> {
    let facts = content::facts_of(state, request).await?;
    let escalation = match facts.escalation_level {
        0 => None,
        level => escalated_to(state, request, level).await,
    };
    Ok(compose(&facts, escalation.as_deref()))
}

pub(super) fn compose(facts: &Facts, escalated_to: Option<&str>) -> Message {
    let pending = facts.status == ApprovalStatus::Pending;
    let headline = if pending {
        let event = if escalated_to.is_some() {
            countersign_core::notify::Event::Escalated
        } else {
            countersign_core::notify::Event::Requested
        };
        facts.headline(event)
    } else {
        format!("{}: {}", facts.outcome(), facts.action)
    };
    let mut blocks = vec![section(format!(
        "*{}*",
        escape_cut(&headline, MAX_SECTION_CHARS - 2)
    ))];
    if pending && let Some(group) = escalated_to {
        blocks.push(section(format!(
            ":arrow_up: Nobody decided in time, so it was escalated to *{}*.",
            escape_cut(group, 500)
        )));
    }
    let fields: Vec<Value> = facts
        .pairs()
        .into_iter()
        .map(|(label, value)| {
            json!({
                "type": "mrkdwn",
                "text": format!("*{label}*\n{}", escape_cut(&value, MAX_FIELD_CHARS - 40)),
            })
        })
        .collect();
    for chunk in fields.chunks(10) {
        blocks.push(json!({"type": "section", "fields": chunk}));
    }
    let arguments_label = if facts.action_label == "Tool" {
        "Arguments"
    } else {
        "Details"
    };
    blocks.push(section(format!(
        "*{arguments_label}*\n{}",
        code_block(&facts.arguments, MAX_SECTION_CHARS - 40)
    )));
    if let Some(words) = &facts.agent_words {
        let quoted = escape_cut(words, MAX_SECTION_CHARS - 200)
            .lines()
            .map(|l| format!(">{l}"))
            .collect::<Vec<_>>()
            .join("\n");
        blocks.push(section(format!(
            "*The agent's own words* (written by the agent, not checked by Countersign):\n{quoted}"
        )));
    }
    if pending {
        blocks.push(json!({
            "type": "actions",
            "block_id": "countersign_decision",
            "elements": [
                {
                    "type": "button",
                    "action_id": APPROVE_ACTION,
                    "style": "primary",
                    "text": {"type": "plain_text", "text": "Approve"},
                    "value": facts.approval_id,
                },
                {
                    "type": "button",
                    "action_id": REJECT_ACTION,
                    "style": "danger",
                    "text": {"type": "plain_text", "text": "Reject"},
                    "value": facts.approval_id,
                },
                {
                    "type": "button",
                    "action_id": DASHBOARD_ACTION,
                    "text": {"type": "plain_text", "text": "View in dashboard"},
                    "url": facts.dashboard_url,
                },
            ],
        }));
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!(
                "Request {} · expires {}", facts.approval_id, escape(&facts.expires_in())
            )}],
        }));
    } else {
        let mut outcome = format!("*{}*", escape(&facts.outcome()));
        if let Some(comment) = &facts.comment {
            outcome.push_str(&format!("\nComment: {}", escape_cut(comment, 1_000)));
        }
        blocks.push(section(outcome));
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!(
                "Request {} · <{}|View in dashboard>", facts.approval_id, facts.dashboard_url
            )}],
        }));
    }
    Message {
        text: escape(&headline),
        blocks,
    }
}

// ----- deliveries -----
