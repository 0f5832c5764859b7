//! What the dashboard's templates show, computed from the server's records.
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use countersign_core::approval::{ApprovalRequest, DecisionRecord, RequestKind, TIMEOUT_DECIDER};
use countersign_core::directory::{Agent, User};
use countersign_core::display::{self, Piece};
use countersign_core::mcp::EffectiveAnnotations;
use countersign_core::notify::{self, Delivery};
use countersign_proto::ApprovalStatus;

/// A time as people read it, in UTC.
pub fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub fn time_left(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (expires_at - now).num_seconds();
    if s <= 0 {
        return "expired".into();
    }
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    if h > 0 {
        format!("{h} h {m} min left")
    } else if m > 0 {
        format!("{m} min {sec} s left")
    } else {
        format!("{sec} s left")
    }
}

/// Names for the ids that appear on requests: agents and people.
pub struct Names {
    pub agents: HashMap<String, Agent>,
    pub users: HashMap<String, User>,
}

impl Names {
    pub fn agent(&self, id: &str) -> String {
        self.agents
            .get(id)
            .map(|a| a.name.clone())
            .unwrap_or_else(|| id.to_string())
    }

    /// Who decided: a person's email, or the credential id when it was an API key.
    pub fn actor(&self, id: &str) -> String {
        match self.users.get(id) {
            Some(u) => u.email.clone(),
            None if id.starts_with("key_") => format!("admin API key {id}"),
            None => id.to_string(),
        }
    }
}

/// One line of the queue or the history.
pub struct Row {
    pub id: String,
    pub status: &'static str,
    /// The agent's binding message.
    pub title: String,
    /// The scope (or tool) asked for.
    pub what: String,
    pub agent_name: String,
    pub created: String,
    pub expires_at: String,
    pub time_left: String,
    pub decided_by: Option<String>,
    pub mcp: Option<McpView>,
}

/// How a tool call that came through an MCP gateway is shown: "via MCP · server · client"
/// and badges for the hints that matter to a reviewer. The names are the gateway's words,
/// shown with hidden characters made visible and isolated in the template (`<bdi>`).
pub struct McpView {
    pub server: Option<String>,
    pub client: Option<String>,
    pub hints: Vec<Hint>,
}

pub struct Hint {
    /// `destructive`, `read-only` or `open-world` (a CSS class and a test hook).
    pub class: &'static str,
    pub label: &'static str,
}

pub fn mcp_view(r: &ApprovalRequest) -> Option<McpView> {
    let tool = r.tool.as_ref()?;
    if tool.mcp.is_none() && tool.annotations.is_none() {
        return None;
    }
    let hints = EffectiveAnnotations::of(tool.annotations.as_ref());
    let mut shown = Vec::new();
    if hints.destructive {
        shown.push(Hint {
            class: "destructive",
            label: "destructive",
        });
    }
    if hints.read_only {
        shown.push(Hint {
            class: "read-only",
            label: "read-only",
        });
    }
    if hints.open_world {
        shown.push(Hint {
            class: "open-world",
            label: "open world",
        });
    }
    Some(McpView {
        server: tool.mcp.as_ref().map(|m| display::visible(&m.server)),
        client: tool
            .mcp
            .as_ref()
            .and_then(|m| m.client.as_deref())
            .map(display::visible),
        hints: shown,
    })
}

/// What a request asks for, in a word: the tool for tool calls, the scope for CIBA.
pub fn what(r: &ApprovalRequest) -> String {
    display::visible(match &r.tool {
        Some(t) if r.kind == RequestKind::Tool => &t.tool_name,
        _ => &r.scope,
    })
}

/// The agent's words about a request: the binding message (CIBA) or its reason (tool calls).
pub fn agent_words(r: &ApprovalRequest) -> String {
    if r.binding_message.trim().is_empty() {
        format!("{} (the agent gave no reason)", what(r))
    } else {
        display::visible(&r.binding_message)
    }
}

/// Pretty JSON as HTML for the request page: every value in its own `<bdi dir="auto">`, so
/// that right-to-left text in it cannot reorder the keys and values around it, and hidden
/// characters shown as marks (`⟨U+202E⟩`). Everything is escaped here.
pub fn arguments_html(value: &serde_json::Value) -> String {
    let mut out = String::new();
    for piece in display::json_pieces(value) {
        match piece {
            Piece::Syntax(text) => out.push_str(&escape_html(&text)),
            Piece::Value(text) => {
                out.push_str("<bdi dir=\"auto\" class=\"arg\">");
                out.push_str(&escape_html(&text));
                out.push_str("</bdi>");
            }
        }
    }
    out
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Who decided, as people read it; a timeout that approved is named as such.
fn decider(r: &ApprovalRequest, names: &Names, now: DateTime<Utc>) -> Option<String> {
    let timed_out =
        r.status == ApprovalStatus::Pending && r.status_at(now) != ApprovalStatus::Pending;
    if timed_out {
        return Some(format!("{TIMEOUT_DECIDER} (nobody decided in time)"));
    }
    r.decided_by.as_deref().map(|d| names.actor(d))
}

pub fn row(r: &ApprovalRequest, names: &Names, now: DateTime<Utc>) -> Row {
    let status = r.status_at(now);
    Row {
        id: r.id.clone(),
        status: status.as_str(),
        title: agent_words(r),
        what: what(r),
        agent_name: names.agent(&r.agent_id),
        created: when(r.created_at),
        expires_at: r.expires_at.to_rfc3339(),
        time_left: time_left(r.expires_at, now),
        decided_by: decider(r, names, now),
        mcp: mcp_view(r),
    }
}

/// Everything the request page shows about what the agent wants.
pub struct Detail {
    pub id: String,
    pub kind: String,
    pub title: String,
    /// An agent-supplied reason, when the face has one.
    pub reason: Option<String>,
    pub what: String,
    pub what_label: &'static str,
    pub agent_id: String,
    pub agent_name: String,
    pub agent_trust: String,
    pub addressed_to: String,
    pub created: String,
    pub expires: String,
    pub risk: String,
    pub policy: String,
    pub routing: String,
    pub arguments_label: &'static str,
    pub arguments: String,
    pub arguments_sha256: String,
    pub session: Option<String>,
    /// Decisions so far (a quorum collects several).
    pub decisions: Vec<DecisionRow>,
    pub required_approvals: u32,
    /// What happens when nobody decides in time.
    pub timeout_outcome: &'static str,
    pub mcp: Option<McpView>,
}

pub struct DecisionRow {
    pub reviewer: String,
    pub verdict: String,
    pub comment: Option<String>,
    pub channel: String,
    pub at: String,
}

pub fn detail(
    r: &ApprovalRequest,
    names: &Names,
    decisions: &[DecisionRecord],
    group_name: Option<String>,
    now: DateTime<Utc>,
) -> Detail {
    let agent = names.agents.get(&r.agent_id);
    let rules = &r.rules;
    let (kind, what_label, risk, policy, reason, arguments_label) = match (&r.tool, r.kind) {
        (Some(t), RequestKind::Tool) => (
            "Tool call (guard API)".to_string(),
            "Tool",
            if t.threats.is_empty() {
                format!("{:.2}, no threats detected", t.risk_score)
            } else {
                format!("{:.2}; threats: {}", t.risk_score, t.threats.join(", "))
            },
            t.policy_name
                .clone()
                .unwrap_or_else(|| "none matched: the tenant default applied".into()),
            t.reason
                .as_deref()
                .filter(|x| !x.trim().is_empty())
                .map(display::visible),
            "Arguments (the values the approval covers)",
        ),
        _ => (
            "CIBA request (agent API)".to_string(),
            "Scope",
            "not scored (CIBA requests carry no risk score)".to_string(),
            "none: the agent asked this reviewer directly".to_string(),
            None,
            "Context (the values the approval covers)",
        ),
    };
    let routing = match (&rules.approval_group_id, r.kind) {
        (Some(g), _) => format!(
            "group {}, escalation level {}, {} approval{} needed",
            group_name.unwrap_or_else(|| g.clone()),
            rules.level_at(now),
            rules.required_approvals.max(1),
            if rules.required_approvals.max(1) == 1 {
                ""
            } else {
                "s"
            }
        ),
        (None, RequestKind::Ciba) => {
            "addressed to one reviewer; no group, no escalation, no quorum".to_string()
        }
        (None, _) => format!(
            "no group; {} approval{} needed",
            rules.required_approvals.max(1),
            if rules.required_approvals.max(1) == 1 {
                ""
            } else {
                "s"
            }
        ),
    };
    let on_behalf = r.tool.as_ref().and_then(|t| t.on_behalf_of.clone());
    Detail {
        id: r.id.clone(),
        kind,
        title: agent_words(r),
        // The reason of a tool call is already the headline; CIBA has none.
        reason: reason.filter(|x| *x != display::visible(&r.binding_message)),
        what: what(r),
        what_label,
        agent_id: r.agent_id.clone(),
        agent_name: names.agent(&r.agent_id),
        agent_trust: agent
            .map(|a| a.trust_level.as_str().to_string())
            .unwrap_or_else(|| "unknown".into()),
        addressed_to: match (&r.user_id, on_behalf) {
            (Some(u), _) => names.actor(u),
            (None, Some(who)) => format!("the routed reviewers (acting for {who})"),
            (None, None) => "the routed reviewers".into(),
        },
        created: when(r.created_at),
        expires: when(r.expires_at),
        risk,
        policy,
        routing,
        arguments_label,
        arguments: arguments_html(&r.context),
        arguments_sha256: r.context_sha256.clone(),
        session: r
            .tool
            .as_ref()
            .map(|t| t.session_id.clone())
            .filter(|x| !x.is_empty()),
        decisions: decisions
            .iter()
            .map(|d| DecisionRow {
                reviewer: d.reviewer.clone(),
                verdict: d.verdict.as_str().to_string(),
                comment: d.comment.clone(),
                channel: d.channel.clone(),
                at: when(d.decided_at),
            })
            .collect(),
        required_approvals: rules.required_approvals.max(1),
        timeout_outcome: match r.timeout_status() {
            ApprovalStatus::Approved => "approved",
            _ => "expired (rejected)",
        },
        mcp: mcp_view(r),
    }
}

/// The decision panel of a request page.
pub struct Panel {
    pub id: String,
    pub status: &'static str,
    pub expires_at: String,
    pub time_left: String,
    pub may_decide: bool,
    pub csrf: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub comment: Option<String>,
    pub comment_label: &'static str,
    /// A message about what just happened: (`ok` | `error` | `warn`, text).
    pub notice: Option<(&'static str, String)>,
}

pub fn panel(
    r: &ApprovalRequest,
    names: &Names,
    may_decide: bool,
    csrf: &str,
    now: DateTime<Utc>,
) -> Panel {
    let status = r.status_at(now);
    Panel {
        id: r.id.clone(),
        status: status.as_str(),
        expires_at: r.expires_at.to_rfc3339(),
        time_left: time_left(r.expires_at, now),
        may_decide,
        csrf: csrf.to_string(),
        decided_by: decider(r, names, now),
        decided_at: if r.status == ApprovalStatus::Pending && status != ApprovalStatus::Pending {
            Some(when(r.expires_at))
        } else {
            r.decided_at.map(when)
        },
        comment: r.comment.clone(),
        comment_label: if status == ApprovalStatus::Rejected {
            "Reason"
        } else {
            "Comment"
        },
        notice: None,
    }
}

/// A choice in a filter.
pub struct Opt {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

/// A status and how many requests are in it.
pub struct Count {
    pub status: &'static str,
    pub label: &'static str,
    pub count: i64,
    pub current: bool,
}

pub fn status_label(s: &str) -> &'static str {
    match s {
        "pending" => "Pending",
        "approved" => "Approved",
        "rejected" => "Rejected",
        "expired" => "Expired",
        "cancelled" => "Cancelled",
        "decided" => "All decided",
        _ => "All",
    }
}

/// What the delivery log needs to name targets: groups, devices and webhook endpoints.
#[derive(Default)]
pub struct Targets {
    /// Group id → name.
    pub groups: HashMap<String, String>,
    /// Push subscription id → (user id, browser).
    pub devices: HashMap<String, (String, String)>,
    /// Webhook endpoint id → its description.
    pub webhooks: HashMap<String, Option<String>>,
}

/// One line of a request's delivery log.
pub struct DeliveryRow {
    pub id: i64,
    pub channel: String,
    pub channel_label: &'static str,
    /// Who or where, in words: an email address, a Slack channel, a Teams workflow, a
    /// webhook endpoint, a person's device.
    pub to: String,
    pub event: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created: String,
    pub delivered: Option<String>,
    /// When a pending delivery is tried next.
    pub next_attempt: Option<String>,
}

fn channel_label(channel: &str) -> &'static str {
    match channel {
        notify::EMAIL => "Email",
        notify::SLACK => "Slack",
        notify::TEAMS => "Microsoft Teams",
        notify::WEBHOOK => "Webhook",
        notify::PUSH => "Web Push",
        _ => "Other",
    }
}

/// Names a delivery's target from the server's records.
fn delivery_target(d: &Delivery, names: &Names, targets: &Targets) -> String {
    let person = |id: &Option<String>| id.as_deref().map(|u| names.actor(u));
    match d.channel.as_str() {
        notify::EMAIL => d.target.clone(),
        notify::SLACK if d.target == notify::SLACK_UPDATE => {
            "the messages already posted (updated)".to_string()
        }
        notify::SLACK => match d.target.strip_prefix(notify::SLACK_DM) {
            Some(user) => format!("direct message to {}", names.actor(user)),
            None => format!("channel {}", d.target),
        },
        notify::TEAMS if d.target == notify::TEAMS_TENANT => "the tenant's workflow".to_string(),
        notify::TEAMS => format!(
            "the workflow of group {}",
            targets
                .groups
                .get(&d.target)
                .cloned()
                .unwrap_or_else(|| d.target.clone())
        ),
        notify::WEBHOOK => match targets.webhooks.get(&d.target) {
            Some(Some(description)) => format!("endpoint {} ({description})", d.target),
            _ => format!("endpoint {}", d.target),
        },
        notify::PUSH => {
            let (owner, browser) = match targets.devices.get(&d.target) {
                Some((user, browser)) => (Some(names.actor(user)), Some(browser.clone())),
                None => (person(&d.recipient), None),
            };
            let mut text = format!("device {}", d.target);
            if let Some(owner) = owner {
                text.push_str(&format!(" of {owner}"));
            }
            if let Some(browser) = browser.filter(|b| !b.is_empty()) {
                text.push_str(&format!(" ({})", notify::truncate(&browser, 80)));
            }
            text
        }
        _ => d.target.clone(),
    }
}

pub fn delivery_row(d: Delivery, names: &Names, targets: &Targets) -> DeliveryRow {
    DeliveryRow {
        to: delivery_target(&d, names, targets),
        channel_label: channel_label(&d.channel),
        next_attempt: d.is_pending().then(|| when(d.next_attempt_at)),
        id: d.id,
        channel: d.channel,
        event: d.event,
        state: d.state,
        attempts: d.attempts,
        status_code: d.status_code,
        last_error: d.last_error,
        created: when(d.created_at),
        delivered: d.delivered_at.map(when),
    }
}
