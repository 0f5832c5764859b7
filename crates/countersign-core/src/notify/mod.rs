//! Who is told what, on which channel, when an approval request changes. A state change
//! writes one `notify` row in the outbox in its own transaction; the delivery worker reads
//! what the plan needs and [`plan`] turns that row into one delivery per recipient and
//! channel. Deliveries render their message when they are sent, from the server's record.
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result, ids, validate};

mod plan;
pub use plan::*;

/// The outbox channel of a state change not yet fanned out.
pub const NOTIFY: &str = "notify";
pub const EMAIL: &str = "email";
pub const SLACK: &str = "slack";
pub const TEAMS: &str = "teams";
pub const WEBHOOK: &str = "webhook";
pub const PUSH: &str = "push";

/// The Slack target that updates every message already posted for a request.
pub const SLACK_UPDATE: &str = "update";
/// Prefix of a Slack target that is a direct message to a reviewer (`dm:<user id>`).
pub const SLACK_DM: &str = "dm:";
/// The Teams target of the tenant's own webhook (otherwise a group id).
pub const TEAMS_TENANT: &str = "tenant";

pub const WEBHOOK_ID: &str = "whk";
pub const PUSH_SUBSCRIPTION_ID: &str = "psh";

/// What happened to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    Requested,
    Escalated,
    Approved,
    Rejected,
    Expired,
    Cancelled,
}

impl Event {
    pub const ALL: [Event; 6] = [
        Event::Requested,
        Event::Escalated,
        Event::Approved,
        Event::Rejected,
        Event::Expired,
        Event::Cancelled,
    ];

    /// The word stored in the outbox.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Requested => "requested",
            Event::Escalated => "escalated",
            Event::Approved => "approved",
            Event::Rejected => "rejected",
            Event::Expired => "expired",
            Event::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// The webhook event type (`approval.requested`, …).
    pub fn webhook_type(self) -> String {
        format!("approval.{}", self.as_str())
    }

    pub fn from_webhook_type(s: &str) -> Option<Event> {
        s.strip_prefix("approval.").and_then(Event::parse)
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, Event::Requested | Event::Escalated)
    }
}

/// How a person wants to be told. Without a stored choice: email and push on, Slack direct
/// messages off (a tenant's Slack channel already carries its requests).
#[derive(Debug, Clone, PartialEq)]
pub struct Preferences {
    pub tenant_id: String,
    pub user_id: String,
    pub email: bool,
    pub slack: bool,
    pub push: bool,
    /// The person's Slack user id (set by an admin, or found by email on first use).
    pub slack_user_id: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl Preferences {
    pub fn defaults(tenant_id: &str, user_id: &str, at: DateTime<Utc>) -> Preferences {
        Preferences {
            tenant_id: tenant_id.to_string(),
            user_id: user_id.to_string(),
            email: true,
            slack: false,
            push: true,
            slack_user_id: None,
            updated_at: at,
        }
    }
}

/// Checks a Slack user id as Slack writes them (`U…` or `W…`, letters and digits).
pub fn validate_slack_user_id(id: &str) -> Result<()> {
    if (2..=32).contains(&id.len())
        && (id.starts_with('U') || id.starts_with('W'))
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        Ok(())
    } else {
        Err(Error::invalid(
            "`slack_user_id` must be a Slack user id such as U024BE7LH",
        ))
    }
}

/// A tenant's email settings (the SMTP server is the operator's, in the server settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailConfig {
    pub enabled: bool,
    /// Requests with a higher risk score are decided from an email link only after a
    /// dashboard sign-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_sign_in_above_risk: Option<f64>,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            enabled: true,
            require_sign_in_above_risk: None,
        }
    }
}

/// A tenant's Slack app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlackConfig {
    pub bot_token: String,
    pub signing_secret: String,
    /// Where requests are posted unless their group has its own channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The Slack workspace (team) clicks must come from, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// Approval group id → channel.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group_channels: BTreeMap<String, String>,
}

impl SlackConfig {
    /// The channel of a group's requests, if any.
    pub fn channel_for(&self, group_id: Option<&str>) -> Option<&str> {
        group_id
            .and_then(|g| self.group_channels.get(g))
            .or(self.channel.as_ref())
            .map(String::as_str)
    }
}

/// A tenant's Microsoft Teams Workflows webhooks (the URLs are secrets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Approval group id → that group's webhook.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group_webhook_urls: BTreeMap<String, String>,
}

impl TeamsConfig {
    /// The Teams target of a group's requests: the group's own webhook, else the tenant's.
    pub fn target_for(&self, group_id: Option<&str>) -> Option<String> {
        match group_id {
            Some(g) if self.group_webhook_urls.contains_key(g) => Some(g.to_string()),
            _ => self.webhook_url.as_ref().map(|_| TEAMS_TENANT.to_string()),
        }
    }

    /// The URL behind a target.
    pub fn url_of(&self, target: &str) -> Option<&str> {
        if target == TEAMS_TENANT {
            self.webhook_url.as_deref()
        } else {
            self.group_webhook_urls.get(target).map(String::as_str)
        }
    }
}

/// The channel settings of a tenant, as the planner needs them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantChannels {
    /// Present when the tenant has email on and the server has an SMTP server.
    pub email: Option<EmailConfig>,
    pub slack: Option<SlackConfig>,
    pub teams: Option<TeamsConfig>,
}

/// A Standard Webhooks endpoint of a tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEndpoint {
    pub id: String,
    pub tenant_id: String,
    pub url: String,
    /// Event types (`approval.requested`, …); empty means every event.
    pub events: Vec<String>,
    /// `whsec_` and base64 of the signing key.
    pub secret: String,
    pub description: Option<String>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl WebhookEndpoint {
    pub fn wants(&self, event: Event) -> bool {
        self.disabled_at.is_none()
            && (self.events.is_empty() || self.events.iter().any(|e| *e == event.webhook_type()))
    }
}

/// Checks the event types of a webhook endpoint and puts them in a stable order.
pub fn webhook_events(events: &[String]) -> Result<Vec<String>> {
    let mut out = BTreeSet::new();
    for e in events {
        if Event::from_webhook_type(e).is_none() {
            return Err(Error::invalid(format!(
                "`events`: unknown event {e:?}; use {}",
                Event::ALL
                    .iter()
                    .map(|e| e.webhook_type())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        out.insert(e.clone());
    }
    Ok(out.into_iter().collect())
}

/// A new signing secret: `whsec_` and 32 random bytes in base64, as Standard Webhooks has it.
pub fn new_webhook_secret() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// A webhook endpoint with a fresh id and secret.
pub fn new_webhook(
    tenant_id: &str,
    url: &str,
    events: &[String],
    description: Option<String>,
    now: DateTime<Utc>,
) -> Result<WebhookEndpoint> {
    validate_endpoint_url("url", url)?;
    if let Some(d) = &description {
        validate::text("description", d, 500)?;
    }
    Ok(WebhookEndpoint {
        id: ids::new_id(WEBHOOK_ID),
        tenant_id: tenant_id.to_string(),
        url: url.to_string(),
        events: webhook_events(events)?,
        secret: new_webhook_secret(),
        description,
        disabled_at: None,
        disabled_reason: None,
        created_at: now,
        updated_at: now,
    })
}

/// An http(s) URL with a host, no credentials, and at most 2,000 characters.
pub fn validate_endpoint_url(field: &str, raw: &str) -> Result<()> {
    let bad = |why: &str| Error::invalid(format!("`{field}` {why}"));
    if raw.chars().count() > 2000 {
        return Err(bad("must be at most 2000 characters"));
    }
    let scheme_ok = raw.starts_with("https://") || raw.starts_with("http://");
    if !scheme_ok {
        return Err(bad("must be an http or https URL"));
    }
    let rest = raw.split_once("://").map(|(_, r)| r).unwrap_or_default();
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(bad("must name a host"));
    }
    if authority.contains('@') {
        return Err(bad("must not carry credentials"));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain spaces"));
    }
    Ok(())
}

/// A device of a reviewer subscribed to Web Push.
#[derive(Debug, Clone, PartialEq)]
pub struct PushSubscription {
    pub id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub endpoint: String,
    /// The device's P-256 public key, base64url.
    pub p256dh: String,
    /// The device's authentication secret, base64url.
    pub auth: String,
    pub user_agent: String,
    pub created_at: DateTime<Utc>,
}

/// A one-click review link's token: one per (request, reviewer), stored hashed.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewToken {
    pub token_hash: String,
    pub tenant_id: String,
    pub approval_id: String,
    pub user_id: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// Backoff before attempt `attempt + 1` of a webhook, on Svix's schedule: 5 s, 5 min,
/// 30 min, 2 h, 5 h, 10 h, 10 h; `None` when the schedule is spent.
pub fn webhook_backoff(attempt: i64) -> Option<Duration> {
    const SCHEDULE: [i64; 7] = [5, 300, 1800, 7200, 18_000, 36_000, 36_000];
    usize::try_from(attempt - 1)
        .ok()
        .and_then(|i| SCHEDULE.get(i))
        .map(|s| Duration::seconds(*s))
}

/// Exponential backoff with ±20 % jitter (so retries of a burst spread out): about 1 s,
/// 2 s, 4 s, … capped at 5 minutes. `unit` in [0, 1) picks the jitter.
pub fn jittered_backoff(attempt: i64, unit: f64) -> Duration {
    let base = crate::oidc::backoff(attempt).num_milliseconds() as f64;
    let factor = 0.8 + 0.4 * unit.clamp(0.0, 1.0);
    Duration::milliseconds((base * factor) as i64)
}

/// Text for a message: JSON of the arguments, pretty, each value isolated and hidden
/// characters made visible (see [`crate::display`]), cut at `max` characters.
pub fn arguments_text(arguments: &Value, max: usize) -> String {
    crate::display::json_text(arguments, max)
}

/// Cuts text at `max` characters (on a character boundary), marking the cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Agent-supplied text for a message: control, bidirectional and other invisible formatting
/// characters (except newlines and tabs) shown as visible marks, so that they can neither hide
/// nor reorder what a reviewer reads.
pub fn sanitize(text: &str) -> String {
    crate::display::visible(text)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;
    use crate::approval::{ApprovalRequest, DecisionRules, RequestKind, ToolInfo};
    use crate::clock;
    use crate::directory::User;
    use crate::routing::EscalationStep;
    use countersign_proto::ApprovalStatus;
    use countersign_proto::guard::TimeoutOutcome;

    fn user(id: &str) -> User {
        User {
            id: id.into(),
            tenant_id: "t".into(),
            email: format!("{id}@example.com"),
            name: id.into(),
            disabled: false,
            is_admin: false,
            created_at: Utc::now(),
        }
    }

    fn request(now: DateTime<Utc>, channels: &[&str]) -> ApprovalRequest {
        ApprovalRequest {
            id: "apr_1".into(),
            tenant_id: "t".into(),
            kind: RequestKind::Tool,
            agent_id: "agt_1".into(),
            user_id: None,
            scope: "tool:payment_refund".into(),
            binding_message: String::new(),
            context: json!({"amount": 500}),
            context_sha256: String::new(),
            status: ApprovalStatus::Pending,
            created_at: now,
            expires_at: now + Duration::minutes(30),
            decided_at: None,
            decided_by: None,
            comment: None,
            token_issued_at: None,
            tool: Some(ToolInfo {
                tool_name: "payment_refund".into(),
                notification_channels: channels.iter().map(|c| c.to_string()).collect(),
                ..ToolInfo::default()
            }),
            rules: DecisionRules {
                approval_group_id: Some("finance".into()),
                required_approvals: 1,
                allow_self_approval: false,
                default_on_timeout: TimeoutOutcome::Reject,
                escalation_level: 0,
                escalation_plan: vec![EscalationStep {
                    at_ms: (now + Duration::minutes(15)).timestamp_millis(),
                    kind: "group".into(),
                    group_id: "managers".into(),
                }],
            },
        }
    }

    struct World {
        users: HashMap<String, User>,
        prefs: HashMap<String, Preferences>,
        channels: TenantChannels,
        reviewers: Vec<(String, DateTime<Utc>)>,
    }

    fn world(now: DateTime<Utc>) -> World {
        let users = ["alice", "bob", "carol"]
            .into_iter()
            .map(|u| (u.to_string(), user(u)))
            .collect();
        let mut slack = SlackConfig {
            bot_token: "xoxb".into(),
            signing_secret: "s".into(),
            channel: Some("C_DEFAULT".into()),
            team_id: None,
            group_channels: BTreeMap::new(),
        };
        slack
            .group_channels
            .insert("managers".into(), "C_MANAGERS".into());
        World {
            users,
            prefs: HashMap::new(),
            channels: TenantChannels {
                email: Some(EmailConfig::default()),
                slack: Some(slack),
                teams: Some(TeamsConfig {
                    webhook_url: Some("https://teams.example/hook".into()),
                    group_webhook_urls: BTreeMap::new(),
                }),
            },
            reviewers: vec![
                ("alice".into(), now),
                ("bob".into(), now),
                ("carol".into(), now + Duration::minutes(15)),
            ],
        }
    }

    fn run(
        w: &World,
        r: &ApprovalRequest,
        event: Event,
        escalation: Option<(u32, u32)>,
        previous: &[Delivery],
    ) -> Plan {
        plan(&PlanInput {
            notify_id: 7,
            event,
            escalation,
            request: r,
            reviewers: &w.reviewers,
            users: &w.users,
            preferences: &w.prefs,
            channels: &w.channels,
            webhooks: &[],
            push: &[],
            previous,
            webhook_data: &Value::Null,
            now: r.created_at,
        })
    }

    fn targets(p: &Plan, channel: &str) -> Vec<String> {
        p.deliveries
            .iter()
            .filter(|d| d.channel == channel)
            .map(|d| d.target.clone())
            .collect()
    }

    fn delivered(p: &Plan) -> Vec<Delivery> {
        p.deliveries
            .iter()
            .enumerate()
            .map(|(i, d)| Delivery {
                id: i as i64,
                tenant_id: "t".into(),
                approval_id: "apr_1".into(),
                channel: d.channel.into(),
                target: d.target.clone(),
                recipient: d.recipient.clone(),
                event: d.event.as_str().into(),
                state: "delivered".into(),
                attempts: 1,
                created_at: Utc::now(),
                next_attempt_at: Utc::now(),
                delivered_at: Some(Utc::now()),
                last_error: None,
                status_code: Some(200),
                external_ref: None,
                payload: None,
            })
            .collect()
    }

    #[test]
    fn a_new_request_tells_the_primaries_on_the_policys_channels() {
        let now = Utc::now();
        let w = world(now);
        let r = request(now, &["email", "slack"]);
        let p = run(&w, &r, Event::Requested, None, &[]);
        assert_eq!(
            targets(&p, EMAIL),
            vec!["alice@example.com", "bob@example.com"]
        );
        assert_eq!(p.review_links, vec!["alice", "bob"]);
        assert_eq!(
            targets(&p, SLACK),
            vec!["C_DEFAULT"],
            "one channel post, no DMs by default"
        );
        assert!(targets(&p, TEAMS).is_empty(), "teams is not in the policy");
    }

    #[test]
    fn preferences_and_disabled_users_are_respected() {
        let now = Utc::now();
        let mut w = world(now);
        let mut bob = Preferences::defaults("t", "bob", now);
        bob.email = false;
        bob.slack = true;
        w.prefs.insert("bob".into(), bob);
        w.users.get_mut("alice").unwrap().disabled = true;
        let r = request(now, &[]);
        let p = run(&w, &r, Event::Requested, None, &[]);
        assert!(targets(&p, EMAIL).is_empty());
        assert_eq!(targets(&p, SLACK), vec!["C_DEFAULT", "dm:bob"]);
        assert_eq!(targets(&p, TEAMS), vec![TEAMS_TENANT]);
    }

    #[test]
    fn escalation_tells_the_next_group_and_updates_slack() {
        // Stored times have millisecond precision.
        let now = clock::from_millis(Utc::now().timestamp_millis());
        let w = world(now);
        let r = request(now, &["email", "slack"]);
        let first = run(&w, &r, Event::Requested, None, &[]);
        let previous = delivered(&first);
        let p = run(&w, &r, Event::Escalated, Some((0, 1)), &previous);
        assert_eq!(targets(&p, EMAIL), vec!["carol@example.com"]);
        assert_eq!(targets(&p, SLACK), vec!["C_MANAGERS", SLACK_UPDATE]);
        assert!(p.deliveries.iter().all(|d| d.dedupe_key.starts_with("7:")));
    }

    #[test]
    fn outcomes_update_and_follow_up_where_the_request_went() {
        let now = Utc::now();
        let w = world(now);
        let r = request(now, &[]);
        let previous = delivered(&run(&w, &r, Event::Requested, None, &[]));
        let approved = run(&w, &r, Event::Approved, None, &previous);
        assert_eq!(targets(&approved, SLACK), vec![SLACK_UPDATE]);
        assert_eq!(targets(&approved, TEAMS), vec![TEAMS_TENANT]);
        assert!(
            targets(&approved, EMAIL).is_empty(),
            "decisions send no email"
        );
        let expired = run(&w, &r, Event::Expired, None, &previous);
        assert_eq!(
            targets(&expired, EMAIL),
            vec!["alice@example.com", "bob@example.com"]
        );
        assert!(expired.review_links.is_empty());
    }

    #[test]
    fn ciba_requests_reach_only_their_user_and_never_shared_channels() {
        let now = Utc::now();
        let mut w = world(now);
        w.reviewers = vec![("alice".into(), now)];
        let mut r = request(now, &[]);
        r.kind = RequestKind::Ciba;
        r.tool = None;
        r.user_id = Some("alice".into());
        let p = run(&w, &r, Event::Requested, None, &[]);
        assert_eq!(targets(&p, EMAIL), vec!["alice@example.com"]);
        assert_eq!(targets(&p, SLACK), vec!["dm:alice"]);
        assert!(targets(&p, TEAMS).is_empty());
    }

    #[test]
    fn the_person_acted_for_is_not_asked() {
        let now = Utc::now();
        let w = world(now);
        let mut r = request(now, &["email"]);
        if let Some(t) = r.tool.as_mut() {
            t.on_behalf_of = Some("alice".into());
        }
        let p = run(&w, &r, Event::Requested, None, &[]);
        assert_eq!(targets(&p, EMAIL), vec!["bob@example.com"]);
    }

    #[test]
    fn webhooks_get_the_events_they_subscribed_to() {
        let now = Utc::now();
        let w = world(now);
        let r = request(now, &["email"]);
        let hook = new_webhook(
            "t",
            "https://hooks.example/x",
            &["approval.approved".into()],
            None,
            now,
        )
        .unwrap();
        let mut input = PlanInput {
            notify_id: 1,
            event: Event::Requested,
            escalation: None,
            request: &r,
            reviewers: &w.reviewers,
            users: &w.users,
            preferences: &w.prefs,
            channels: &w.channels,
            webhooks: std::slice::from_ref(&hook),
            push: &[],
            previous: &[],
            webhook_data: &json!({"approval_id": "apr_1"}),
            now,
        };
        assert!(targets(&plan(&input), WEBHOOK).is_empty());
        input.event = Event::Approved;
        let p = plan(&input);
        assert_eq!(targets(&p, WEBHOOK), vec![hook.id.clone()]);
        let body = p.deliveries[0].payload.clone().unwrap();
        assert_eq!(body["type"], "approval.approved");
        assert_eq!(body["data"]["approval_id"], "apr_1");
        let mut disabled = hook.clone();
        disabled.disabled_at = Some(now);
        input.webhooks = std::slice::from_ref(&disabled);
        assert!(targets(&plan(&input), WEBHOOK).is_empty());
    }

    #[test]
    fn schedules_and_text_helpers() {
        assert_eq!(webhook_backoff(1), Some(Duration::seconds(5)));
        assert_eq!(webhook_backoff(2), Some(Duration::minutes(5)));
        assert_eq!(webhook_backoff(8), None);
        let d = jittered_backoff(3, 0.5);
        assert_eq!(d, Duration::seconds(4));
        assert!(jittered_backoff(3, 0.0) < jittered_backoff(3, 0.99));
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(sanitize("a\u{202E}b\u{7}c\nd"), "a⟨U+202E⟩b⟨U+0007⟩c\nd");
        assert!(webhook_events(&["approval.nope".into()]).is_err());
        assert!(validate_endpoint_url("url", "ftp://x").is_err());
        assert!(validate_endpoint_url("url", "https://u:p@x/").is_err());
        assert!(validate_endpoint_url("url", "https://hooks.example/x").is_ok());
        assert!(validate_slack_user_id("U024BE7LH").is_ok());
        assert!(validate_slack_user_id("alice").is_err());
    }
}
