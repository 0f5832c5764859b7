//! Who is told what, where: the pure planner of a request's deliveries.
use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::approval::{ApprovalRequest, RequestKind};
use crate::clock;
use crate::directory::User;

use super::*;

/// One delivery to put in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub channel: &'static str,
    /// Where it goes, never a secret: an email address, a Slack channel or `dm:<user id>`, a
    /// Teams target, a webhook endpoint id, a push subscription id.
    pub target: String,
    /// The person (user id) or endpoint (webhook id) it is for.
    pub recipient: Option<String>,
    pub event: Event,
    /// What the delivery needs beyond the request: the webhook body, escalation details.
    pub payload: Option<Value>,
    /// Unique per fan-out row, channel and target, so a repeated fan-out adds nothing.
    pub dedupe_key: String,
}

/// What one `notify` row became: its deliveries and the review-link tokens of its emails.
#[derive(Debug, Clone)]
pub struct FanOut {
    pub notify: crate::oidc::OutboxItem,
    pub deliveries: Vec<NewDelivery>,
    pub tokens: Vec<ReviewToken>,
}

/// A delivery as recorded, for the delivery log and for follow-ups.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub tenant_id: String,
    pub approval_id: String,
    pub channel: String,
    pub target: String,
    pub recipient: Option<String>,
    pub event: String,
    pub state: String,
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub status_code: Option<i64>,
    pub external_ref: Option<String>,
    pub payload: Option<Value>,
}

impl Delivery {
    pub fn is_pending(&self) -> bool {
        self.state == "pending"
    }

    pub fn is_delivered(&self) -> bool {
        self.state == "delivered"
    }
}

/// Everything the planner reads about one state change.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    /// The outbox row being fanned out (its id keys the deliveries).
    pub notify_id: i64,
    pub event: Event,
    /// For `Escalated`: the levels before and after.
    pub escalation: Option<(u32, u32)>,
    pub request: &'a ApprovalRequest,
    /// Every reviewer of the request with the moment they may decide.
    pub reviewers: &'a [(String, DateTime<Utc>)],
    /// The tenant's users by id (disabled ones are never told).
    pub users: &'a HashMap<String, User>,
    /// Stored preferences by user id; the others have the defaults.
    pub preferences: &'a HashMap<String, Preferences>,
    pub channels: &'a TenantChannels,
    pub webhooks: &'a [WebhookEndpoint],
    /// Push subscriptions of the tenant's users.
    pub push: &'a [PushSubscription],
    /// Earlier deliveries of this request.
    pub previous: &'a [Delivery],
    /// The webhook body (the request as the API shows it), built by the caller.
    pub webhook_data: &'a Value,
    pub now: DateTime<Utc>,
}

/// The deliveries of one state change and the reviewers who need a review link.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub deliveries: Vec<NewDelivery>,
    /// Users whose email carries one-click links.
    pub review_links: Vec<String>,
}

impl Plan {
    fn add(
        &mut self,
        input: &PlanInput,
        channel: &'static str,
        target: String,
        recipient: Option<String>,
        payload: Option<Value>,
    ) {
        let dedupe_key = format!("{}:{channel}:{target}", input.notify_id);
        if self.deliveries.iter().any(|d| d.dedupe_key == dedupe_key) {
            return;
        }
        self.deliveries.push(NewDelivery {
            channel,
            target,
            recipient,
            event: input.event,
            payload,
            dedupe_key,
        });
    }
}

/// Whether a request may be told on `channel`: a tool call's policy names its channels (none
/// named means all); requests addressed to one person (CIBA) go to that person's own
/// channels only, never to shared ones.
pub(super) fn allowed(request: &ApprovalRequest, channel: &str) -> bool {
    match (&request.tool, request.kind) {
        (Some(tool), _) if !tool.notification_channels.is_empty() => tool
            .notification_channels
            .iter()
            .any(|c| c == channel || (channel == PUSH && c == "dashboard")),
        (_, RequestKind::Tool) => true,
        _ => !matches!(channel, TEAMS),
    }
}

/// The reviewers who become eligible with this change: at creation, those eligible at once;
/// on escalation, those whose turn came with the new steps.
pub(super) fn newly_eligible(input: &PlanInput) -> Vec<String> {
    let r = input.request;
    let (after, until) = match (input.event, input.escalation) {
        (Event::Requested, _) => (None, r.created_at),
        (Event::Escalated, Some((from, to))) => {
            let at = |level: u32| {
                level
                    .checked_sub(1)
                    .and_then(|i| r.rules.escalation_plan.get(i as usize))
                    .map(|s| clock::from_millis(s.at_ms))
            };
            match at(to) {
                Some(until) => (Some(at(from).unwrap_or(r.created_at)), until),
                None => return Vec::new(),
            }
        }
        _ => return Vec::new(),
    };
    let on_behalf_of = r.tool.as_ref().and_then(|t| t.on_behalf_of.as_deref());
    input
        .reviewers
        .iter()
        .filter(|(_, since)| *since <= until && after.is_none_or(|a| *since > a))
        .map(|(user, _)| user.clone())
        // The person the agent acts for cannot approve; asking them would only confuse.
        .filter(|user| r.rules.allow_self_approval || on_behalf_of != Some(user.as_str()))
        .filter(|user| input.users.get(user).is_some_and(|u| !u.disabled))
        .collect()
}

/// The group whose channels an escalation reaches: the last step taken.
pub(super) fn escalation_group<'a>(input: &'a PlanInput) -> Option<&'a str> {
    let (_, to) = input.escalation?;
    let step = input
        .request
        .rules
        .escalation_plan
        .get(to.checked_sub(1)? as usize)?;
    Some(step.group_id.as_str())
}

pub(super) fn preferences(input: &PlanInput, user_id: &str) -> Preferences {
    input.preferences.get(user_id).cloned().unwrap_or_else(|| {
        Preferences::defaults(&input.request.tenant_id, user_id, input.request.created_at)
    })
}

/// Turns one state change into its deliveries.
pub fn plan(input: &PlanInput) -> Plan {
    let mut plan = Plan::default();
    let r = input.request;
    let escalation = input
        .escalation
        .map(|(from, to)| json!({"from_level": from, "to_level": to}));
    // Webhooks hear every event they subscribed to, whatever the request's channels.
    for endpoint in input.webhooks.iter().filter(|w| w.wants(input.event)) {
        let body = json!({
            "type": input.event.webhook_type(),
            "timestamp": input.now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": input.webhook_data,
        });
        plan.add(
            input,
            WEBHOOK,
            endpoint.id.clone(),
            Some(endpoint.id.clone()),
            Some(body),
        );
    }
    match input.event {
        Event::Requested | Event::Escalated => {
            let people = newly_eligible(input);
            for user_id in &people {
                let prefs = preferences(input, user_id);
                let Some(user) = input.users.get(user_id) else {
                    continue;
                };
                if input.channels.email.is_some() && prefs.email && allowed(r, EMAIL) {
                    plan.add(
                        input,
                        EMAIL,
                        user.email.clone(),
                        Some(user_id.clone()),
                        escalation.clone(),
                    );
                    plan.review_links.push(user_id.clone());
                }
                if prefs.push && allowed(r, PUSH) {
                    for sub in input.push.iter().filter(|s| s.user_id == *user_id) {
                        plan.add(
                            input,
                            PUSH,
                            sub.id.clone(),
                            Some(user_id.clone()),
                            escalation.clone(),
                        );
                    }
                }
            }
            if let Some(slack) = input.channels.slack.as_ref().filter(|_| allowed(r, SLACK)) {
                let group = match input.event {
                    Event::Escalated => escalation_group(input),
                    _ => r.rules.approval_group_id.as_deref(),
                };
                // Requests addressed to one person never go to a shared channel.
                let channel = match r.kind {
                    RequestKind::Tool => slack.channel_for(group),
                    _ => None,
                };
                if let Some(channel) = channel {
                    let posted_there = input
                        .previous
                        .iter()
                        .any(|d| d.channel == SLACK && d.target == channel && d.state != "failed");
                    if !posted_there {
                        plan.add(input, SLACK, channel.to_string(), None, escalation.clone());
                    }
                }
                for user_id in &people {
                    // Without a channel everyone is told directly; with one, those who asked.
                    if channel.is_none() || preferences(input, user_id).slack {
                        plan.add(
                            input,
                            SLACK,
                            format!("{SLACK_DM}{user_id}"),
                            Some(user_id.clone()),
                            escalation.clone(),
                        );
                    }
                }
            }
            if let Some(teams) = input.channels.teams.as_ref().filter(|_| allowed(r, TEAMS)) {
                let group = match input.event {
                    Event::Escalated => escalation_group(input),
                    _ => r.rules.approval_group_id.as_deref(),
                };
                if let Some(target) = teams.target_for(group) {
                    plan.add(input, TEAMS, target, None, escalation.clone());
                }
            }
            if input.event == Event::Escalated {
                update_slack(&mut plan, input, escalation.clone());
            }
        }
        Event::Approved | Event::Rejected | Event::Expired | Event::Cancelled => {
            update_slack(&mut plan, input, None);
            // Teams cards cannot change: each webhook that had the request gets the outcome.
            let teams_targets: BTreeSet<&str> = input
                .previous
                .iter()
                .filter(|d| d.channel == TEAMS && d.state != "failed")
                .map(|d| d.target.as_str())
                .collect();
            for target in teams_targets {
                plan.add(input, TEAMS, target.to_string(), None, None);
            }
            let told = |channel: &str| -> BTreeSet<(String, Option<String>)> {
                input
                    .previous
                    .iter()
                    .filter(|d| d.channel == channel && d.state != "failed")
                    .filter(|d| matches!(d.event.as_str(), "requested" | "escalated"))
                    .map(|d| (d.target.clone(), d.recipient.clone()))
                    .collect()
            };
            // A request that nobody decided is followed up where it was announced.
            if matches!(input.event, Event::Expired | Event::Cancelled) {
                for (target, recipient) in told(EMAIL) {
                    plan.add(input, EMAIL, target, recipient, None);
                }
            }
            for (target, recipient) in told(PUSH) {
                plan.add(input, PUSH, target, recipient, None);
            }
        }
    }
    plan
}

/// One delivery that brings every Slack message of the request up to date.
pub(super) fn update_slack(plan: &mut Plan, input: &PlanInput, payload: Option<Value>) {
    let posted = input
        .previous
        .iter()
        .any(|d| d.channel == SLACK && d.target != SLACK_UPDATE && d.state != "failed");
    if posted {
        plan.add(input, SLACK, SLACK_UPDATE.to_string(), None, payload);
    }
}
