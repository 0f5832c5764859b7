//! Tool-call approvals as the agent and the reviewers see them: reading, cancelling,
//! redeeming for a grant, the history, and escalation as it comes due.
use countersign_core::approval::{ApprovalRequest, Face, RequestKind, RequestRef};
use countersign_core::principal::executor_only;
use countersign_core::{Error, Principal, Result, Role, ids};
use countersign_proto::guard::{GrantResponse, History, HistoryItem, HistoryQuery};
use countersign_proto::{ApprovalStatus, ErrorCode};
use countersign_store::RequestFilter;

use super::views::{display, emails};
use crate::after_commit::{Committed, announce};
use crate::state::AppState;
use crate::{service, workers};

/// Withdraws a pending approval: the requesting agent or an admin.
pub async fn cancel(state: &AppState, caller: &Principal, id: &str) -> Result<ApprovalRequest> {
    let request = Face::Guard
        .check(service::find(state, &caller.tenant_id, &service::public_ref(id)?).await?)?;
    match &caller.role {
        Role::Admin => {}
        Role::Agent { agent_id } if *agent_id == request.agent_id => {}
        Role::Agent { .. } => return Err(Error::NotFound("no such approval request".into())),
        Role::Reviewer { .. } => {
            return Err(Error::forbidden(
                "only the requesting agent or an admin cancels",
            ));
        }
        Role::Executor { .. } => return Err(executor_only()),
    }
    let cancelled = state
        .store
        .cancel_request(
            &caller.tenant_id,
            &request.id,
            caller.actor(),
            state.clock.now(),
        )
        .await?;
    announce(state, Committed::Cancelled(&cancelled));
    Ok(cancelled)
}

/// Redeems an approved tool call, once, for the signed grant bound to its arguments and to
/// the audience `resource` names.
pub async fn grant(
    state: &AppState,
    caller: &Principal,
    id: &str,
    resource: Option<&str>,
) -> Result<GrantResponse> {
    let agent_id = caller.require_agent()?;
    let request = Face::Guard
        .check(service::find(state, &caller.tenant_id, &service::public_ref(id)?).await?)?;
    if request.agent_id != agent_id {
        return Err(Error::NotFound("no such approval request".into()));
    }
    let audience = service::grant_audience(state, &request, resource).await?;
    let status = request.status_at(state.clock.now());
    if status != ApprovalStatus::Approved {
        return Err(Error::Conflict {
            code: ErrorCode::NotApproved,
            message: format!(
                "the approval is {}; only approved calls can be redeemed",
                status.as_str()
            ),
        });
    }
    // A timeout approval is recorded by the sweeper; the grant needs it recorded first.
    if request.status == ApprovalStatus::Pending {
        workers::sweep_expired(state).await?;
    }
    let request = service::find(
        state,
        &caller.tenant_id,
        &RequestRef::PublicId(request.id.clone()),
    )
    .await?;
    match service::issue_grant(state, caller, &request, audience).await? {
        Some((access_token, expires_in)) => Ok(GrantResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_in,
        }),
        None => Err(Error::Invalid {
            code: ErrorCode::AlreadyExists,
            message: "the grant of this approval was already issued".into(),
        }),
    }
}

/// `GET /approvals/history`: decided and pending tool-call approvals, newest first.
pub async fn history(state: &AppState, caller: &Principal, query: HistoryQuery) -> Result<History> {
    let now = state.clock.now();
    let mut filter = RequestFilter::new(now, query.limit.unwrap_or(50));
    if !(1..=200).contains(&filter.limit) {
        return Err(Error::invalid("`limit` must be between 1 and 200"));
    }
    filter.kind = Some(RequestKind::Tool);
    filter.status = match query.status.as_deref() {
        None | Some("") | Some("all") => None,
        Some(s) => Some(ApprovalStatus::parse(s).ok_or_else(|| {
            Error::invalid(format!(
                "`status` must be pending, approved, rejected, expired or cancelled; got {s:?}"
            ))
        })?),
    };
    filter.tool_name = query.tool.filter(|t| !t.is_empty());
    filter.decided_by = query.decided_by.filter(|d| !d.is_empty());
    filter.created_from = query.from;
    filter.created_before = query.to;
    if query
        .cursor
        .as_deref()
        .is_some_and(|c| !ids::is_id(c, ids::APPROVAL))
    {
        return Err(Error::invalid(
            "`cursor` is not a cursor this server gave out",
        ));
    }
    filter.before_id = query.cursor;
    match &caller.role {
        Role::Admin => {}
        Role::Reviewer { user_id } => filter.user_id = Some(user_id.clone()),
        Role::Agent { .. } => {
            return Err(Error::forbidden(
                "agent keys cannot read the approval history",
            ));
        }
        Role::Executor { .. } => return Err(executor_only()),
    }
    let page = state
        .store
        .list_requests(&caller.tenant_id, &filter)
        .await?;
    let emails = emails(state, &caller.tenant_id).await?;
    let next_cursor = if page.has_more {
        page.items.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(History {
        approvals: page
            .items
            .into_iter()
            .map(|r| HistoryItem {
                approval_id: r.id.clone(),
                tool_name: r.action_name().to_string(),
                status: r.status_at(now),
                requested_at: r.created_at,
                decided_at: r.decided_at,
                decided_by: display(&emails, &r.decided_by),
                annotations: r.tool.as_ref().and_then(|t| t.annotations),
                mcp: r.tool.as_ref().and_then(|t| t.mcp.clone()),
                comment: r.comment,
            })
            .collect(),
        next_cursor,
    })
}
