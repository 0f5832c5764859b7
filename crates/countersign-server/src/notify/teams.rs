//! Microsoft Teams (a Workflows webhook): an Adaptive Card 1.4 with the request's facts and
//! buttons that open the confirmation pages; a follow-up card reports the outcome.
//!
//! A webhook card cannot call back (no `Action.Submit` or `Action.Execute`): its Approve and
//! Reject buttons are `Action.OpenUrl` links to the shared confirmation page, where the
//! reviewer signs in and decides as themselves. The webhook URLs carry their own signature,
//! so they are secrets: no error or log names them.
use countersign_core::notify::{Event, TEAMS_TENANT};
use countersign_core::oidc::OutboxItem;
use countersign_proto::ApprovalStatus;
use serde_json::{Value, json};

use super::channels;
use super::content::{self, Facts};
use super::outbound::check_target;
use super::worker::{Attempt, AttemptError, http_outcome, send_error};
use crate::state::AppState;

/// The `contentType` of an Adaptive Card attachment.
const CARD_CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";

/// Escapes text for a card's Markdown (`TextBlock`s and fact values render a subset of it:
/// emphasis, lists and links): what an agent or a reviewer wrote shows as typed and can never
/// become a link or emphasis. `_` inside a word (`payment_refund`) is plain text already.
pub fn escape_markdown(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 8);
    let mut line_start = true;
    for (i, &c) in chars.iter().enumerate() {
        let word = |j: Option<usize>| {
            j.and_then(|j| chars.get(j))
                .is_some_and(|c| c.is_alphanumeric())
        };
        let escape = match c {
            '\\' | '`' | '*' | '[' | ']' | '<' | '>' | '~' => true,
            '_' => !(word(i.checked_sub(1)) && word(Some(i + 1))),
            // A list item at the start of a line: `- `, `+ `, `1. `.
            '-' | '+' => line_start && chars.get(i + 1) == Some(&' '),
            '.' | ')' if chars.get(i + 1) == Some(&' ') => {
                let before = chars[..i].iter().rev().take_while(|c| **c != '\n');
                before.clone().all(|c| c.is_ascii_digit() || *c == ' ')
                    && before.clone().any(char::is_ascii_digit)
            }
            _ => false,
        };
        if escape {
            out.push('\\');
        }
        out.push(c);
        if c == '\n' {
            line_start = true;
        } else if c != ' ' {
            line_start = false;
        }
    }
    out
}

fn text_block(text: &str) -> Value {
    json!({"type": "TextBlock", "text": text, "wrap": true})
}

fn open_url(title: &str, url: &str, style: Option<&str>) -> Value {
    let mut action = json!({"type": "Action.OpenUrl", "title": title, "url": url});
    if let Some(style) = style {
        action["style"] = Value::String(style.to_string());
    }
    action
}

/// An Adaptive Card 1.4 with this body and these actions.
fn card(fallback: &str, body: Vec<Value>, actions: Vec<Value>) -> Value {
    json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "fallbackText": fallback,
        "body": body,
        "actions": actions,
    })
}

/// The message a Workflows webhook takes: one Adaptive Card attachment.
pub fn message(card: Value) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": CARD_CONTENT_TYPE,
            "contentUrl": null,
            "content": card,
        }],
    })
}

fn intro(event: Event, facts: &Facts) -> &'static str {
    let tool = facts.action_label == "Tool";
    match event {
        Event::Requested if tool => "An AI agent asks for approval to run a tool.",
        Event::Requested => "An AI agent asks for approval.",
        Event::Escalated => "Nobody decided in time, so this request was escalated.",
        Event::Expired => "This request expired before anyone decided it.",
        Event::Cancelled => "The agent withdrew this request; nothing is left to decide.",
        Event::Approved | Event::Rejected => "This request was decided.",
    }
}

/// The card of one event, rendered from the server's record as it is now.
pub fn render(state: &AppState, event: Event, facts: &Facts) -> Value {
    let headline = escape_markdown(&facts.headline(event));
    let asks = matches!(event, Event::Requested | Event::Escalated)
        && facts.status == ApprovalStatus::Pending;
    let mut body = vec![json!({
        "type": "TextBlock",
        "text": headline,
        "size": "Medium",
        "weight": "Bolder",
        "wrap": true,
    })];
    body.push(json!({
        "type": "TextBlock",
        "text": intro(event, facts),
        "isSubtle": true,
        "wrap": true,
    }));
    if facts.status != ApprovalStatus::Pending {
        let color = match facts.status {
            ApprovalStatus::Approved => "Good",
            ApprovalStatus::Rejected => "Attention",
            _ => "Warning",
        };
        body.push(json!({
            "type": "TextBlock",
            "text": escape_markdown(&facts.outcome()),
            "weight": "Bolder",
            "color": color,
            "wrap": true,
        }));
        if let Some(comment) = &facts.comment {
            body.push(text_block(&format!(
                "Comment: {}",
                escape_markdown(comment)
            )));
        }
    }
    let mut pairs = facts.pairs();
    pairs.insert(0, ("Request", facts.approval_id.clone()));
    body.push(json!({
        "type": "FactSet",
        "facts": pairs
            .iter()
            .map(|(title, value)| json!({"title": title, "value": escape_markdown(value)}))
            .collect::<Vec<_>>(),
    }));
    if asks {
        let label = if facts.action_label == "Tool" {
            "Arguments"
        } else {
            "Details"
        };
        body.push(json!({"type": "TextBlock", "text": label, "weight": "Bolder", "wrap": true}));
        body.push(json!({
            "type": "TextBlock",
            "text": escape_markdown(&facts.arguments),
            "fontType": "Monospace",
            "wrap": true,
        }));
        if let Some(words) = &facts.agent_words {
            body.push(json!({
                "type": "Container",
                "style": "emphasis",
                "items": [
                    {
                        "type": "TextBlock",
                        "text": "The agent's own words (not verified)",
                        "weight": "Bolder",
                        "size": "Small",
                        "wrap": true,
                    },
                    {"type": "TextBlock", "text": escape_markdown(words), "wrap": true},
                ],
            }));
        }
    }
    let mut actions = Vec::new();
    if asks {
        let id = &facts.approval_id;
        actions.push(open_url(
            "Approve",
            &content::shared_review_url(state, id, "approve", "teams"),
            Some("positive"),
        ));
        actions.push(open_url(
            "Reject",
            &content::shared_review_url(state, id, "reject", "teams"),
            Some("destructive"),
        ));
    }
    actions.push(open_url("View in dashboard", &facts.dashboard_url, None));
    card(&headline, body, actions)
}

/// Posts a message to a Workflows webhook. Its URL is a secret: errors never name it.
async fn post(state: &AppState, url: &str, body: &Value) -> Attempt {
    check_target(url, &state.settings.outbound).map_err(|_| {
        AttemptError::give_up(
            "the Teams webhook URL is not allowed: it must be https on a public address (see outbound.allow_http and outbound.allow_private_networks)",
        )
    })?;
    let response = state
        .notifier
        .http
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(send_error)?;
    // Workflows answer 202 Accepted; any 2xx is delivered.
    http_outcome(&response)
}

/// Posts one delivery's card to the webhook of its target (the tenant's or a group's).
pub async fn deliver(state: &AppState, item: &OutboxItem) -> Attempt {
    let event = Event::parse(&item.event)
        .ok_or_else(|| AttemptError::give_up(format!("unknown event {}", item.event)))?;
    let config = channels::teams_config(state, &item.tenant_id)
        .await?
        .ok_or_else(|| AttemptError::give_up("Teams is no longer set up for this tenant"))?;
    let url = config.url_of(&item.target).ok_or_else(|| {
        AttemptError::give_up(format!(
            "no Teams webhook for {:?} any more",
            if item.target == TEAMS_TENANT {
                "the tenant"
            } else {
                item.target.as_str()
            }
        ))
    })?;
    let facts = content::facts(state, &item.tenant_id, &item.approval_id).await?;
    post(state, url, &message(render(state, event, &facts))).await
}

/// Sends a test message at once (the settings page's "send a test").
pub async fn send_test(state: &AppState, tenant_id: &str) -> Attempt {
    let config = channels::teams_config(state, tenant_id).await?;
    let url = config
        .as_ref()
        .and_then(|c| c.webhook_url.as_deref())
        .ok_or_else(|| AttemptError::give_up("this tenant has no Teams `webhook_url`"))?;
    let headline = "Countersign test message";
    let body = vec![
        json!({"type": "TextBlock", "text": headline, "size": "Medium", "weight": "Bolder", "wrap": true}),
        text_block(&format!(
            "Teams notifications from {} work: approval requests will be posted here.",
            escape_markdown(&state.issuer)
        )),
    ];
    let actions = vec![open_url(
        "Open Countersign",
        &format!("{}/ui/queue", state.issuer),
        None,
    )];
    post(state, url, &message(card(headline, body, actions))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_is_escaped() {
        assert_eq!(
            escape_markdown("[Approve](https://evil.example) **now** <b>"),
            "\\[Approve\\](https://evil.example) \\*\\*now\\*\\* \\<b\\>"
        );
        assert_eq!(
            escape_markdown("_italic_ payment_refund"),
            "\\_italic\\_ payment_refund"
        );
        assert_eq!(
            escape_markdown("- one\n 2. two\na - b 3. c"),
            "\\- one\n 2\\. two\na - b 3. c"
        );
        assert_eq!(
            escape_markdown("amount: 500.00 (USD)"),
            "amount: 500.00 (USD)"
        );
    }
}
