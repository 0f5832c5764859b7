//! What every message about a request says, from the server's record: the action and its
//! arguments (sanitised and cut to a readable length), risk and threats, session, the agent
//! and its trust level, the agent's own words (labelled as such), expiry, the outcome, and
//! the links. Each channel renders these facts in its own format and escapes them itself.
use chrono::{DateTime, Utc};
use countersign_core::approval::{ApprovalRequest, RequestRef, TIMEOUT_DECIDER};
use countersign_core::notify::{Event, arguments_text, sanitize, truncate};
use countersign_core::{Error, Result};
use countersign_proto::ApprovalStatus;

use crate::state::AppState;

/// Longest arguments text in a message (characters).
pub const MAX_ARGUMENTS_CHARS: usize = 1_500;
/// Longest quote of the agent's words in a message (characters).
pub const MAX_WORDS_CHARS: usize = 500;

#[derive(Debug, Clone)]
pub struct Facts {
    pub approval_id: String,
    pub tenant_id: String,
    /// `Tool`, or `Scope` for CIBA requests.
    pub action_label: &'static str,
    /// The tool name or the scope.
    pub action: String,
    /// The arguments (tool calls) or context (CIBA), pretty JSON, cut.
    pub arguments: String,
    pub risk_score: Option<f64>,
    pub threats: Vec<String>,
    pub session_id: Option<String>,
    pub agent_name: String,
    pub trust_level: String,
    /// The agent's binding message or reason: its words, not the server's.
    pub agent_words: Option<String>,
    pub policy_name: Option<String>,
    pub group_name: Option<String>,
    pub escalation_level: u32,
    pub required_approvals: u32,
    pub expires_at: DateTime<Utc>,
    /// The status now (a pending request past its expiry has timed out).
    pub status: ApprovalStatus,
    /// Who decided (an email), when decided by a person.
    pub decided_by: Option<String>,
    pub comment: Option<String>,
    /// The request's page in the dashboard.
    pub dashboard_url: String,
    pub now: DateTime<Utc>,
}

impl Facts {
    /// "in 30 minutes", "in 45 seconds", "now".
    pub fn expires_in(&self) -> String {
        let secs = (self.expires_at - self.now).num_seconds();
        match secs {
            s if s <= 0 => "now".to_string(),
            s if s < 120 => format!("in {s} seconds"),
            s if s < 2 * 3600 => format!("in {} minutes", s / 60),
            s if s < 2 * 86_400 => format!("in {} hours", s / 3600),
            s => format!("in {} days", s / 86_400),
        }
    }

    /// A short subject or title line for an event.
    pub fn headline(&self, event: Event) -> String {
        match event {
            Event::Requested => format!("Approval required: {}", self.action),
            Event::Escalated => format!("Escalated, approval required: {}", self.action),
            _ => format!("{}: {}", self.outcome(), self.action),
        }
    }

    /// The outcome in words ("Approved by alice@example.com", "Expired", …).
    pub fn outcome(&self) -> String {
        let by = |verb: &str| match &self.decided_by {
            Some(who) => format!("{verb} by {who}"),
            None => verb.to_string(),
        };
        match self.status {
            ApprovalStatus::Pending => "Waiting for a decision".to_string(),
            ApprovalStatus::Approved => by("Approved"),
            ApprovalStatus::Rejected => by("Rejected"),
            ApprovalStatus::Expired => "Expired without a decision".to_string(),
            ApprovalStatus::Cancelled => "Cancelled by the agent".to_string(),
        }
    }

    /// The facts as label/value pairs, for cards and plain text.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![(self.action_label, self.action.clone())];
        if let Some(r) = self.risk_score {
            out.push(("Risk score", format!("{r:.2}")));
        }
        if !self.threats.is_empty() {
            out.push(("Threats", self.threats.join(", ")));
        }
        if let Some(s) = &self.session_id {
            out.push(("Session", s.clone()));
        }
        out.push((
            "Agent",
            format!("{} (trust: {})", self.agent_name, self.trust_level),
        ));
        if let Some(p) = &self.policy_name {
            out.push(("Policy", p.clone()));
        }
        if let Some(g) = &self.group_name {
            out.push(("Approval group", g.clone()));
        }
        if self.required_approvals > 1 {
            out.push(("Approvals needed", self.required_approvals.to_string()));
        }
        out.push((
            "Expires",
            format!(
                "{} ({})",
                self.expires_at.format("%Y-%m-%d %H:%M UTC"),
                self.expires_in()
            ),
        ));
        out
    }
}

/// The facts of a request as they are now.
pub async fn facts(state: &AppState, tenant_id: &str, approval_id: &str) -> Result<Facts> {
    let request = state
        .store
        .find_request(tenant_id, &RequestRef::PublicId(approval_id.to_string()))
        .await?
        .ok_or_else(|| Error::NotFound("the request is gone".into()))?;
    facts_of(state, &request).await
}

pub async fn facts_of(state: &AppState, r: &ApprovalRequest) -> Result<Facts> {
    let now = state.clock.now();
    let agent = state.store.get_agent(&r.tenant_id, &r.agent_id).await?;
    let group_name = match &r.rules.approval_group_id {
        Some(g) => state
            .store
            .get_group(&r.tenant_id, g)
            .await?
            .map(|g| g.name),
        None => None,
    };
    let decided_by = match r.decided_by.as_deref() {
        None | Some(TIMEOUT_DECIDER) => None,
        Some(id) => Some(
            state
                .store
                .get_user(&r.tenant_id, id)
                .await?
                .map(|u| u.email)
                .unwrap_or_else(|| id.to_string()),
        ),
    };
    let tool = r.tool.as_ref();
    let words = tool
        .and_then(|t| t.reason.clone())
        .unwrap_or_else(|| r.binding_message.clone());
    Ok(Facts {
        approval_id: r.id.clone(),
        tenant_id: r.tenant_id.clone(),
        action_label: if tool.is_some() { "Tool" } else { "Scope" },
        action: truncate(&sanitize(r.action_name()), 200),
        // Already shown safely: values isolated, hidden characters made visible.
        arguments: arguments_text(r.arguments(), MAX_ARGUMENTS_CHARS),
        risk_score: tool.map(|t| t.risk_score),
        threats: tool.map(|t| t.threats.clone()).unwrap_or_default(),
        session_id: tool.map(|t| sanitize(&t.session_id)),
        agent_name: agent
            .as_ref()
            .map(|a| sanitize(&a.name))
            .unwrap_or_else(|| r.agent_id.clone()),
        trust_level: agent
            .map(|a| a.trust_level.as_str().to_string())
            .unwrap_or_else(|| "unknown".into()),
        agent_words: (!words.trim().is_empty())
            .then(|| truncate(&sanitize(&words), MAX_WORDS_CHARS)),
        policy_name: tool.and_then(|t| t.policy_name.clone()),
        group_name,
        escalation_level: r.rules.level_at(now),
        required_approvals: r.rules.required_approvals,
        expires_at: r.expires_at,
        status: r.status_at(now),
        decided_by,
        comment: r.comment.as_deref().map(|c| truncate(&sanitize(c), 500)),
        dashboard_url: dashboard_url(state, &r.id),
        now,
    })
}

pub fn dashboard_url(state: &AppState, approval_id: &str) -> String {
    format!("{}/ui/requests/{approval_id}", state.issuer)
}

/// The confirmation page of a personal link (email): the token travels in the query string,
/// which request logs leave out.
pub fn review_url(state: &AppState, token: &str, verdict: &str) -> String {
    format!("{}/ui/review?token={token}&verdict={verdict}", state.issuer)
}

/// The confirmation page for a shared message (Teams): the reviewer signs in first.
pub fn shared_review_url(state: &AppState, approval_id: &str, verdict: &str, via: &str) -> String {
    format!(
        "{}/ui/review?approval={approval_id}&verdict={verdict}&via={via}",
        state.issuer
    )
}
