//! The guard's planning: what a tenant's configuration says about a tool call, and for an
//! approval, which group reviews it, who may decide from when, and the rules the decision
//! follows. Pure: the server loads the inputs (the configuration, the agent, the groups),
//! runs the conditions on its evaluation threads, calls these, and stores the result.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use countersign_proto::guard::{ApprovalConfig, PolicyAction, ToolDecision};

use crate::approval::{ApprovalRequest, DecisionRules};
use crate::directory::Agent;
use crate::policy::{self, GuardConfig, Policy};
use crate::risk::RiskAssessment;
use crate::routing::{self, Group, ReviewerPlan};
use crate::toolcall::ToolCall;

/// What the policies say about a call, before anything is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub call: ToolCall,
    pub risk: RiskAssessment,
    pub action: PolicyAction,
    pub policy: Option<Policy>,
    /// For approvals the tenant default or a trust rule requires.
    pub fallback: ApprovalConfig,
    pub message: String,
}

/// The verdict on a call. `matched` is what the conditions found: the first matching policy
/// (or none), or, when they could not finish, why.
pub fn evaluate(
    config: &GuardConfig,
    agent: &Agent,
    call: ToolCall,
    risk: RiskAssessment,
    scope: Option<&str>,
    matched: Result<Option<Policy>, String>,
) -> Evaluation {
    let policy = match matched {
        Ok(policy) => policy,
        // Conditions that could not finish fail closed: the call is blocked.
        Err(reason) => {
            return Evaluation {
                call,
                risk,
                action: PolicyAction::Block,
                policy: None,
                fallback: ApprovalConfig::default(),
                message: reason,
            };
        }
    };
    let mut action = policy
        .as_ref()
        .map(|p| p.action)
        .unwrap_or(config.settings.default_action);
    let mut message = match &policy {
        Some(p) => format!("decided by policy {:?}", p.name),
        None => "no policy matched; the tenant default applies".to_string(),
    };
    let mut fallback = ApprovalConfig {
        timeout_minutes: config.settings.default_timeout_minutes,
        approval_group_id: config.settings.default_approval_group_id.clone(),
        ..ApprovalConfig::default()
    };
    // A trust rule turns an allowed call into an approval (never a block into one).
    let forcing_rule = (action == PolicyAction::Allow)
        .then(|| policy::trust_rule(&config.settings, agent.trust_level, &call.name, scope))
        .flatten();
    if let Some(rule) = forcing_rule {
        action = PolicyAction::RequireApproval;
        message = format!(
            "agents of trust level {} always need approval for this",
            agent.trust_level.as_str()
        );
        if rule.approval_group_id.is_some() {
            fallback.approval_group_id = rule.approval_group_id.clone();
        }
    }
    Evaluation {
        call,
        risk,
        action,
        policy,
        fallback,
        message,
    }
}

impl Evaluation {
    /// The answer to the agent, without an approval.
    pub fn decision(&self, action: PolicyAction, message: String) -> ToolDecision {
        ToolDecision {
            action,
            approval_id: None,
            message,
            expires_at: None,
            risk_score: self.risk.score,
            threats_detected: self.risk.threats.clone(),
            policy_matched: self.policy.as_ref().map(|p| p.name.clone()),
        }
    }

    /// The answer to the agent when `request` is the approval the call waits for.
    pub fn pending_decision(&self, request: &ApprovalRequest) -> ToolDecision {
        ToolDecision {
            action: PolicyAction::RequireApproval,
            approval_id: Some(request.id.clone()),
            message: "This operation requires approval".into(),
            expires_at: Some(request.expires_at),
            risk_score: self.risk.score,
            threats_detected: self.risk.threats.clone(),
            policy_matched: self.policy.as_ref().map(|p| p.name.clone()),
        }
    }

    /// The approval configuration the call follows: a policy that asks for approval brings
    /// its own; approvals the tenant default or a trust rule require use the tenant's.
    pub fn approval_config(&self) -> &ApprovalConfig {
        match &self.policy {
            Some(p) if p.action == PolicyAction::RequireApproval => &p.approval,
            _ => &self.fallback,
        }
    }
}

/// An approval nobody could give: the call is blocked with this message instead.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocked(pub String);

/// The group an approval is routed to, before the group is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub approval: ApprovalConfig,
    pub group_id: String,
}

/// Routes an approval: the first routing rule that matches, else the approval
/// configuration's group. Fails closed when neither names a group.
pub fn route(config: &GuardConfig, e: &Evaluation) -> Result<Routed, Blocked> {
    let approval = e.approval_config().clone();
    let group_id = routing::route(
        &config.routing.routing_rules,
        &e.call.name,
        e.risk.score,
        approval.approval_group_id.as_deref(),
    );
    match group_id {
        Some(group_id) => Ok(Routed { approval, group_id }),
        None => Err(Blocked(
            "blocked: approval is required but no approval group is configured".into(),
        )),
    }
}

impl Routed {
    /// The routed group as loaded; fails closed when it no longer exists.
    pub fn found(self, group: Option<Group>) -> Result<Reviewing, Blocked> {
        match group {
            Some(group) => Ok(Reviewing {
                approval: self.approval,
                group,
            }),
            None => Err(Blocked(format!(
                "blocked: approval is required but approval group {:?} no longer exists",
                self.group_id
            ))),
        }
    }
}

/// An approval with its reviewing group loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Reviewing {
    pub approval: ApprovalConfig,
    pub group: Group,
}

/// What to store for a new approval: its configuration, its decision rules and who may
/// decide from when.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalPlan {
    pub approval: ApprovalConfig,
    pub rules: DecisionRules,
    pub reviewers: ReviewerPlan,
}

impl Reviewing {
    /// The groups the escalation rules name, for the caller to load.
    pub fn escalation_group_ids(&self) -> impl Iterator<Item = &str> {
        self.approval
            .escalation_rules
            .iter()
            .map(|r| r.escalate_to.as_str())
    }

    /// The plan for an approval opened at `now`. `escalation_groups` holds the escalation
    /// groups that still exist; a rule naming one that does not adds nobody.
    pub fn plan(
        self,
        escalation_groups: &BTreeMap<String, Group>,
        now: DateTime<Utc>,
    ) -> ApprovalPlan {
        let reviewers = routing::plan(
            &self.group,
            &self.approval.escalation_rules,
            escalation_groups,
            now,
        );
        let rules = DecisionRules {
            approval_group_id: Some(self.group.id.clone()),
            required_approvals: self.approval.required_approvals,
            allow_self_approval: self.approval.allow_self_approval,
            default_on_timeout: self.approval.default_on_timeout,
            escalation_level: 0,
            escalation_plan: reviewers.steps.clone(),
        };
        ApprovalPlan {
            approval: self.approval,
            rules,
            reviewers,
        }
    }
}

#[cfg(test)]
mod tests;
