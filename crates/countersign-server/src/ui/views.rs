//! What the dashboard's templates show, computed from the server's records.
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use countersign_core::approval::ApprovalRequest;
use countersign_core::directory::{Agent, User};
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
}

pub fn row(r: &ApprovalRequest, names: &Names, now: DateTime<Utc>) -> Row {
    let status = r.status_at(now);
    Row {
        id: r.id.clone(),
        status: status.as_str(),
        title: r.binding_message.clone(),
        what: r.scope.clone(),
        agent_name: names.agent(&r.agent_id),
        created: when(r.created_at),
        expires_at: r.expires_at.to_rfc3339(),
        time_left: time_left(r.expires_at, now),
        decided_by: r.decided_by.as_deref().map(|d| names.actor(d)),
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
}

pub fn detail(r: &ApprovalRequest, names: &Names) -> Detail {
    let agent = names.agents.get(&r.agent_id);
    Detail {
        id: r.id.clone(),
        kind: match r.kind.as_str() {
            "ciba" => "CIBA request (agent API)".into(),
            other => other.to_string(),
        },
        title: r.binding_message.clone(),
        reason: None,
        what: r.scope.clone(),
        what_label: "Scope",
        agent_id: r.agent_id.clone(),
        agent_name: names.agent(&r.agent_id),
        agent_trust: agent
            .map(|a| a.trust_level.as_str().to_string())
            .unwrap_or_else(|| "unknown".into()),
        addressed_to: names.actor(&r.user_id),
        created: when(r.created_at),
        expires: when(r.expires_at),
        risk: "not scored (CIBA requests carry no risk score)".into(),
        policy: "none: the agent asked this reviewer directly".into(),
        routing: "addressed to one reviewer; no group, no escalation, no quorum".into(),
        arguments_label: "Context (the values the approval covers)",
        arguments: serde_json::to_string_pretty(&r.context).unwrap_or_default(),
        arguments_sha256: r.context_sha256.clone(),
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
        decided_by: r.decided_by.as_deref().map(|d| names.actor(d)),
        decided_at: match status {
            ApprovalStatus::Expired => Some(when(r.expires_at)),
            _ => r.decided_at.map(when),
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
