//! What the guard API shows of approvals, policies and groups.
use std::collections::HashMap;

use countersign_core::Result;
use countersign_core::approval::{self, ApprovalRequest};
use countersign_core::policy::Policy;
use countersign_core::routing::Group;
use countersign_proto::ApprovalStatus;
use countersign_proto::guard::{
    DecisionView, GroupView, GuardApprovalView, MemberView, PolicyView,
};

use crate::state::AppState;

/// Email addresses of the tenant's users by id, for showing who decided.
pub(super) async fn emails(state: &AppState, tenant_id: &str) -> Result<HashMap<String, String>> {
    Ok(state
        .store
        .list_users(tenant_id)
        .await?
        .into_iter()
        .map(|u| (u.id, u.email))
        .collect())
}

pub(super) fn display(emails: &HashMap<String, String>, who: &Option<String>) -> Option<String> {
    who.as_ref()
        .map(|id| emails.get(id).cloned().unwrap_or_else(|| id.clone()))
}

pub async fn view(state: &AppState, request: ApprovalRequest) -> Result<GuardApprovalView> {
    let now = state.clock.now();
    let emails = emails(state, &request.tenant_id).await?;
    let decisions = state.store.list_decisions(&request.id).await?;
    let status = request.status_at(now);
    let timed_out = request.status == ApprovalStatus::Pending && status != ApprovalStatus::Pending;
    let decided_by = if timed_out && status == ApprovalStatus::Approved {
        Some(approval::TIMEOUT_DECIDER.to_string())
    } else {
        display(&emails, &request.decided_by)
    };
    let decided_at = if timed_out {
        Some(request.expires_at)
    } else {
        request.decided_at
    };
    let tool = request.tool.clone().unwrap_or_default();
    let approved = status == ApprovalStatus::Approved;
    Ok(GuardApprovalView {
        approval_id: request.id.clone(),
        status,
        approved_by: approved.then(|| decided_by.clone()).flatten(),
        approved_at: approved.then_some(decided_at).flatten(),
        comment: approved.then(|| request.comment.clone()).flatten(),
        reason: (status == ApprovalStatus::Rejected)
            .then(|| request.comment.clone())
            .flatten(),
        tool_name: tool.tool_name,
        arguments: request.context.clone(),
        arguments_sha256: request.context_sha256.clone(),
        session_id: Some(tool.session_id).filter(|s| !s.is_empty()),
        agent_reason: tool.reason,
        agent_id: request.agent_id.clone(),
        risk_score: tool.risk_score,
        threats_detected: tool.threats,
        policy_matched: tool.policy_name,
        approval_group: request.rules.approval_group_id.clone(),
        escalation_level: request.rules.level_at(now),
        required_approvals: request.rules.required_approvals,
        decisions: decisions
            .into_iter()
            .map(|d| DecisionView {
                reviewer: d.reviewer,
                verdict: d.verdict.as_str().to_string(),
                comment: d.comment,
                channel: d.channel,
                decided_at: d.decided_at,
            })
            .collect(),
        requested_at: request.created_at,
        decided_at,
        decided_by,
        expires_at: request.expires_at,
        annotations: tool.annotations,
        mcp: tool.mcp,
    })
}

pub fn policy_view(p: Policy) -> PolicyView {
    PolicyView {
        id: p.id,
        name: p.name,
        description: p.description,
        tool_pattern: p.tool_pattern,
        action: p.action,
        priority: p.priority,
        is_active: p.is_active,
        condition: p.condition,
        approval_config: p.approval,
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

pub fn group_view(g: Group) -> GroupView {
    GroupView {
        id: g.id,
        name: g.name,
        members: g
            .members
            .into_iter()
            .map(|m| MemberView {
                user_id: m.user_id,
                email: m.email,
                role: m.role,
            })
            .collect(),
        escalation_minutes: g.escalation_minutes,
        created_at: g.created_at,
        updated_at: g.updated_at,
    }
}
