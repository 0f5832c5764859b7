//! The guard: tool calls checked against the tenant's policies, approvals routed to groups,
//! escalated, timed out and decided with a quorum. HTTP-free; the routes only map.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use countersign_core::approval::{self, ApprovalRequest, RequestKind, RequestRef, ToolInfo};
use countersign_core::directory::Agent;
use countersign_core::guard::{self, ApprovalPlan, Blocked, Evaluation};
use countersign_core::idempotency::IdempotencyKey;
use countersign_core::policy::{self, Cached, GuardConfig, Policy, PolicySet};
use countersign_core::principal::executor_only;
use countersign_core::risk::RiskAssessor;
use countersign_core::routing::{self, Group, Member};
use countersign_core::{Error, Principal, Result, Role, ids, toolcall, validate};
use countersign_proto::guard::{
    DecisionView, EvaluateRequest, GrantResponse, GroupInput, GroupView, GuardApprovalView,
    GuardSettings, History, HistoryItem, HistoryQuery, McpOrigin, MemberView, PolicyAction,
    PolicyInput, PolicyView, RoutingRules, ToolAnnotations, ToolDecision, ToolRequest,
};
use countersign_proto::{ApprovalStatus, ErrorCode, TrustLevel};
use countersign_store::{RequestFilter, SameCall};

use crate::after_commit::{Committed, announce};
use crate::conditions::OwnedInput;
use crate::idempotency::{self, Answer, Retry};
use crate::service;
use crate::state::AppState;

/// The guard API's `proxyId` is the tenant; any other value names nothing the caller can see.
pub fn check_proxy(caller: &Principal, proxy_id: &str) -> Result<()> {
    if caller.tenant_id == proxy_id {
        Ok(())
    } else {
        Err(Error::NotFound(format!(
            "no proxy {proxy_id:?} for this key"
        )))
    }
}

/// The tenant's compiled configuration, from the cache or freshly loaded.
pub async fn config(state: &AppState, tenant_id: &str) -> Result<Arc<GuardConfig>> {
    if let Cached::Hit(config) = state.guard.lookup(tenant_id) {
        return Ok(config);
    }
    // One load at a time: whoever waited finds the configuration the first one cached.
    let _loading = state.guard_loading.lock().await;
    let generation = match state.guard.lookup(tenant_id) {
        Cached::Hit(config) => return Ok(config),
        Cached::Miss(generation) => generation,
    };
    let policies = state.store.list_policies(tenant_id).await?;
    let (settings, routing) = state.store.guard_settings(tenant_id).await?;
    // Compiling dry-runs every condition: bounded, but not for the request threads.
    let policies = state
        .conditions
        .run(move || PolicySet::compile(policies))
        .await??;
    let config = Arc::new(GuardConfig {
        policies,
        settings,
        routing,
    });
    state.guard.put(tenant_id, generation, config.clone());
    Ok(config)
}

fn changed(state: &AppState, tenant_id: &str) {
    state.guard.invalidate(tenant_id);
}

// ----- tool calls -----

/// What the call says about itself beyond the tool call: the session, the action category,
/// and where it came from when an MCP gateway sent it.
struct CallContext<'a> {
    session: &'a str,
    scope: Option<&'a str>,
    annotations: Option<&'a ToolAnnotations>,
    mcp: Option<&'a McpOrigin>,
}

async fn evaluate_call(
    state: &AppState,
    config: &Arc<GuardConfig>,
    agent: &Agent,
    raw_call: &serde_json::Value,
    context: CallContext<'_>,
) -> Result<Evaluation> {
    let CallContext {
        session,
        scope,
        annotations,
        mcp,
    } = context;
    if let Some(origin) = mcp {
        countersign_core::mcp::validate_origin(origin)?;
    }
    // Canonicalising and scanning the arguments is linear in their size: small calls (nearly
    // all) stay on the request thread, large ones go to the evaluation threads.
    let understand = |raw_call: &serde_json::Value, assessor: &dyn RiskAssessor| {
        toolcall::normalize(raw_call).map(|call| {
            let risk = assessor.assess(&call);
            (call, risk)
        })
    };
    let (call, risk) = if policy::is_small(raw_call) {
        understand(raw_call, state.risk.as_ref())?
    } else {
        let (raw_call, assessor) = (raw_call.clone(), state.risk.clone());
        state
            .conditions
            .run(move || understand(&raw_call, assessor.as_ref()))
            .await??
    };
    let input = OwnedInput {
        tool: call.name.clone(),
        args: call.arguments.clone(),
        agent_id: agent.id.clone(),
        agent_name: agent.name.clone(),
        trust_level: agent.trust_level.as_str().to_string(),
        session: session.to_string(),
        risk: risk.score,
        threats: risk.threats.clone(),
        scope: scope.unwrap_or_default().to_string(),
        annotations: annotations.copied(),
        mcp_server: mcp.map(|m| m.server.clone()).unwrap_or_default(),
    };
    let matched = match state.conditions.evaluate(config.clone(), input).await? {
        Ok(policy) => Ok(policy),
        Err(stopped) => {
            metrics::counter!("countersign_policy_conditions_stopped_total").increment(1);
            Err(stopped.reason())
        }
    };
    Ok(guard::evaluate(config, agent, call, risk, scope, matched))
}

/// `POST /tool`: allow or block at once, or open (or find) the approval. Under an
/// idempotency key, a retry gets the approval the first call opened or found; `allow` and
/// `block` are not remembered, so a retried call is evaluated under the current policies.
pub async fn check_tool(
    state: &AppState,
    caller: &Principal,
    input: ToolRequest,
    key: Option<IdempotencyKey>,
) -> Result<Answer<ToolDecision>> {
    let agent_id = caller.require_agent()?;
    let retry = match key {
        Some(key) => Some(Retry::new(
            key,
            &caller.tenant_id,
            format!("agent:{agent_id}"),
            "POST /v1/guard/{proxyId}/tool",
            &idempotency::canonical_body(&input)?,
        )),
        None => None,
    };
    if let Some(retry) = &retry
        && let Some(replay) = retry.earlier(state).await?
    {
        return Ok(Answer::Replayed(replay));
    }
    validate::text("session_id", &input.session_id, 200)?;
    if let Some(scope) = &input.scope {
        validate::text("scope", scope, 200)?;
    }
    if let Some(reason) = &input.reason {
        validate::multiline_text("reason", reason, 2_000)?;
    }
    let agent = state
        .store
        .get_agent(&caller.tenant_id, agent_id)
        .await?
        .ok_or_else(|| Error::Unauthorized("this agent no longer exists".into()))?;
    let config = config(state, &caller.tenant_id).await?;
    let e = evaluate_call(
        state,
        &config,
        &agent,
        &input.tool_call,
        CallContext {
            session: &input.session_id,
            scope: input.scope.as_deref(),
            annotations: input.annotations.as_ref(),
            mcp: input.mcp.as_ref(),
        },
    )
    .await?;
    metrics::counter!("countersign_tool_decisions_total", "action" => e.action.as_str())
        .increment(1);
    match e.action {
        PolicyAction::Allow => Ok(Answer::Fresh(
            e.decision(PolicyAction::Allow, format!("allowed: {}", e.message)),
        )),
        PolicyAction::Block => {
            let now = state.clock.now();
            state
                .store
                .append_audit(countersign_core::audit::AuditRecord::new(
                    &caller.tenant_id,
                    now,
                    &caller.actor(),
                    "tool_call.blocked",
                    &e.call.name,
                    with_mcp(
                        serde_json::json!({
                            "arguments_sha256": e.call.arguments_sha256, "session_id": input.session_id,
                            "policy_id": e.policy.as_ref().map(|p| &p.id), "risk_score": e.risk.score,
                            "reason": e.message,
                        }),
                        input.mcp.as_ref(),
                    ),
                ))
                .await?;
            Ok(Answer::Fresh(e.decision(
                PolicyAction::Block,
                format!("blocked: {}", e.message),
            )))
        }
        PolicyAction::RequireApproval => {
            open_approval(state, caller, &agent, &config, e, input, retry.as_ref()).await
        }
    }
}

/// An audit event's details, naming the MCP server when the call came through one.
fn with_mcp(mut details: serde_json::Value, mcp: Option<&McpOrigin>) -> serde_json::Value {
    if let Some(origin) = mcp {
        details["mcp_server"] = serde_json::json!(origin.server);
    }
    details
}

async fn open_approval(
    state: &AppState,
    caller: &Principal,
    agent: &Agent,
    config: &GuardConfig,
    e: Evaluation,
    input: ToolRequest,
    retry: Option<&Retry>,
) -> Result<Answer<ToolDecision>> {
    let now = state.clock.now();
    let tenant = &caller.tenant_id;
    let same_call = SameCall {
        agent_id: &agent.id,
        session_id: &input.session_id,
        tool_name: &e.call.name,
        arguments_sha256: &e.call.arguments_sha256,
        mcp_server: input.mcp.as_ref().map(|m| m.server.as_str()),
    };
    if let Some(existing) = state
        .store
        .find_pending_tool_call(tenant, &same_call, now)
        .await?
    {
        return found_pending(state, retry, e.pending_decision(&existing)).await;
    }
    crate::throttle::check_pending(state, tenant, &agent.id).await?;
    let routed = match guard::route(config, &e) {
        Ok(routed) => routed,
        Err(Blocked(message)) => {
            return Ok(Answer::Fresh(e.decision(PolicyAction::Block, message)));
        }
    };
    let group = state.store.get_group(tenant, &routed.group_id).await?;
    let reviewing = match routed.found(group) {
        Ok(reviewing) => reviewing,
        Err(Blocked(message)) => {
            return Ok(Answer::Fresh(e.decision(PolicyAction::Block, message)));
        }
    };
    let mut groups = BTreeMap::new();
    for id in reviewing.escalation_group_ids() {
        if let Some(g) = state.store.get_group(tenant, id).await? {
            groups.insert(g.id.clone(), g);
        }
    }
    let ApprovalPlan {
        approval,
        rules,
        reviewers: plan,
    } = reviewing.plan(&groups, now);
    let on_behalf_of = match input
        .on_behalf_of
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(who) if who.contains('@') => Some(
            state
                .store
                .find_user_by_email(tenant, &who.to_lowercase())
                .await?
                .map(|u| u.id)
                .unwrap_or_else(|| who.to_lowercase()),
        ),
        other => other.map(str::to_string),
    };
    let tool = ToolInfo {
        tool_name: e.call.name.clone(),
        session_id: input.session_id.clone(),
        reason: input.reason.clone(),
        risk_score: e.risk.score,
        threats: e.risk.threats.clone(),
        policy_id: e.policy.as_ref().map(|p| p.id.clone()),
        policy_name: e.policy.as_ref().map(|p| p.name.clone()),
        notification_channels: approval.notification_channels.clone(),
        on_behalf_of,
        annotations: input.annotations,
        mcp: input.mcp.clone(),
    };
    let mut new = approval::new_tool_request(
        tenant,
        &agent.id,
        approval::ToolCallApproval {
            call: &e.call,
            tool,
            scope: input.scope.as_deref(),
            rules,
            timeout_minutes: approval.timeout_minutes,
        },
        now,
    );
    let answer = e.pending_decision(&new.request);
    if let Some(retry) = retry {
        new.idempotency = Some(retry.remember(200, &answer, now)?);
    }
    let created = match state
        .store
        .create_request(new.clone(), plan.clone(), caller.actor())
        .await
    {
        Ok(r) => r,
        Err(err) if idempotency::is_key_in_use(&err) => match retry {
            Some(retry) => return Ok(Answer::Replayed(retry.after_conflict(state).await?)),
            None => return Err(err),
        },
        // The same call raced us, or an overdue copy awaits its sweep.
        Err(Error::AlreadyExists(_)) => {
            if let Some(existing) = state
                .store
                .find_pending_tool_call(tenant, &same_call, now)
                .await?
            {
                return found_pending(state, retry, e.pending_decision(&existing)).await;
            }
            service::sweep_expired(state).await?;
            state
                .store
                .create_request(new, plan, caller.actor())
                .await?
        }
        Err(other) => return Err(other),
    };
    announce(state, Committed::Created(&created));
    Ok(Answer::Fresh(answer))
}

/// The call is already pending: that approval is the answer, remembered under the key so a
/// retry names it even after it is decided.
async fn found_pending(
    state: &AppState,
    retry: Option<&Retry>,
    answer: ToolDecision,
) -> Result<Answer<ToolDecision>> {
    if let Some(retry) = retry
        && let Some(replay) = retry.remember_alone(state, 200, &answer).await?
    {
        return Ok(Answer::Replayed(replay));
    }
    Ok(Answer::Fresh(answer))
}

/// `POST /policies/evaluate`: what `POST /tool` would answer, creating nothing.
pub async fn dry_run(
    state: &AppState,
    caller: &Principal,
    input: EvaluateRequest,
) -> Result<ToolDecision> {
    caller.require_admin()?;
    let agent = match &input.agent_id {
        Some(id) => state
            .store
            .get_agent(&caller.tenant_id, id)
            .await?
            .ok_or_else(|| unknown(format!("agent {id:?} does not exist in this tenant")))?,
        None => Agent {
            id: "agt_sample".into(),
            tenant_id: caller.tenant_id.clone(),
            name: "sample agent".into(),
            trust_level: TrustLevel::Standard,
            disabled: false,
            created_at: state.clock.now(),
        },
    };
    let config = config(state, &caller.tenant_id).await?;
    let session = input.session_id.unwrap_or_default();
    let e = evaluate_call(
        state,
        &config,
        &agent,
        &input.tool_call,
        CallContext {
            session: &session,
            scope: input.scope.as_deref(),
            annotations: input.annotations.as_ref(),
            mcp: input.mcp.as_ref(),
        },
    )
    .await?;
    let message = e.message.clone();
    Ok(e.decision(e.action, message))
}

fn unknown(message: String) -> Error {
    Error::Invalid {
        code: ErrorCode::UnknownReference,
        message,
    }
}

// ----- approvals -----

fn tool_request(request: ApprovalRequest) -> Result<ApprovalRequest> {
    if request.kind == RequestKind::Tool {
        Ok(request)
    } else {
        Err(Error::NotFound(
            "no such approval (it is not a tool call)".into(),
        ))
    }
}

/// The requesting agent, eligible reviewers and admins may read an approval.
pub async fn visible(state: &AppState, caller: &Principal, id: &str) -> Result<ApprovalRequest> {
    let by = public_ref(id)?;
    let request = tool_request(service::find(state, &caller.tenant_id, &by).await?)?;
    match &caller.role {
        Role::Agent { agent_id } if *agent_id == request.agent_id => Ok(request),
        Role::Agent { .. } => Err(Error::NotFound("no such approval".into())),
        Role::Admin => Ok(request),
        Role::Reviewer { user_id } => {
            let since = state.store.reviewer_since(&request.id, user_id).await?;
            caller.may_view(since, state.clock.now())?;
            Ok(request)
        }
        Role::Executor { .. } => Err(executor_only()),
    }
}

pub fn public_ref(id: &str) -> Result<RequestRef> {
    if ids::is_id(id, ids::APPROVAL) {
        Ok(RequestRef::PublicId(id.to_string()))
    } else {
        Err(Error::NotFound("no such approval".into()))
    }
}

/// Email addresses of the tenant's users by id, for showing who decided.
async fn emails(state: &AppState, tenant_id: &str) -> Result<HashMap<String, String>> {
    Ok(state
        .store
        .list_users(tenant_id)
        .await?
        .into_iter()
        .map(|u| (u.id, u.email))
        .collect())
}

fn display(emails: &HashMap<String, String>, who: &Option<String>) -> Option<String> {
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

/// Withdraws a pending approval: the requesting agent or an admin.
pub async fn cancel(state: &AppState, caller: &Principal, id: &str) -> Result<ApprovalRequest> {
    let request = tool_request(service::find(state, &caller.tenant_id, &public_ref(id)?).await?)?;
    match &caller.role {
        Role::Admin => {}
        Role::Agent { agent_id } if *agent_id == request.agent_id => {}
        Role::Agent { .. } => return Err(Error::NotFound("no such approval".into())),
        Role::Reviewer { .. } => {
            return Err(Error::Forbidden(
                "only the requesting agent or an admin cancels".into(),
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
    let request = tool_request(service::find(state, &caller.tenant_id, &public_ref(id)?).await?)?;
    if request.agent_id != agent_id {
        return Err(Error::NotFound("no such approval".into()));
    }
    let audience = service::grant_audience(state, &request, resource).await?;
    let status = request.status_at(state.clock.now());
    if status != ApprovalStatus::Approved {
        return Err(Error::Invalid {
            code: ErrorCode::NotApproved,
            message: format!(
                "the approval is {}; only approved calls can be redeemed",
                status.as_str()
            ),
        });
    }
    // A timeout approval is recorded by the sweeper; the grant needs it recorded first.
    if request.status == ApprovalStatus::Pending {
        service::sweep_expired(state).await?;
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
            return Err(Error::Forbidden(
                "agent keys cannot read the approval history".into(),
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

/// Records escalation steps that came due; returns how many requests escalated.
pub async fn run_escalations(state: &AppState) -> Result<usize> {
    let escalated = state.store.escalate_due(state.clock.now(), 500).await?;
    for r in &escalated {
        announce(state, Committed::Escalated(r));
    }
    Ok(escalated.len())
}

// ----- configuration -----

async fn group_ids(state: &AppState, tenant_id: &str) -> Result<Vec<String>> {
    Ok(state
        .store
        .list_groups(tenant_id)
        .await?
        .into_iter()
        .map(|g| g.id)
        .collect())
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

pub async fn save_policy(
    state: &AppState,
    caller: &Principal,
    id: Option<&str>,
    input: PolicyInput,
) -> Result<Policy> {
    caller.require_admin()?;
    let tenant = &caller.tenant_id;
    let existing = match id {
        Some(id) => Some(
            state
                .store
                .get_policy(tenant, id)
                .await?
                .ok_or_else(|| Error::NotFound("no such policy".into()))?,
        ),
        None => None,
    };
    let groups = group_ids(state, tenant).await?;
    let now = state.clock.now();
    let created_at = existing.as_ref().map(|p| p.created_at).unwrap_or(now);
    // Checking the condition dry-runs it: bounded, but not for the request threads.
    let (tenant_id, policy_id) = (tenant.clone(), id.map(str::to_string));
    let policy = state
        .conditions
        .run(move || {
            policy::from_input(
                &tenant_id,
                policy_id.as_deref(),
                input,
                |g| groups.iter().any(|x| x == g),
                created_at,
                now,
            )
        })
        .await??;
    let saved = state
        .store
        .put_policy(policy, existing.is_none(), caller.actor())
        .await?;
    changed(state, tenant);
    Ok(saved)
}

pub async fn delete_policy(state: &AppState, caller: &Principal, id: &str) -> Result<()> {
    caller.require_admin()?;
    state
        .store
        .delete_policy(&caller.tenant_id, id, caller.actor(), state.clock.now())
        .await?;
    changed(state, &caller.tenant_id);
    Ok(())
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

pub async fn save_group(
    state: &AppState,
    caller: &Principal,
    id: Option<&str>,
    input: GroupInput,
) -> Result<Group> {
    caller.require_admin()?;
    let tenant = &caller.tenant_id;
    routing::validate_group(&input.name, input.escalation_minutes, input.members.len())?;
    let existing = match id {
        Some(id) => Some(
            state
                .store
                .get_group(tenant, id)
                .await?
                .ok_or_else(|| Error::NotFound("no such approval group".into()))?,
        ),
        None => None,
    };
    let group_id = match (id, &input.id) {
        (Some(path), Some(body)) if path != body => {
            return Err(Error::invalid("`id` in the body differs from the path"));
        }
        (Some(path), _) => path.to_string(),
        (None, given) => routing::group_id(given.as_deref())?,
    };
    let mut members: Vec<Member> = Vec::with_capacity(input.members.len());
    for m in &input.members {
        let email = validate::email(&m.email)?;
        let user = state
            .store
            .find_user_by_email(tenant, &email)
            .await?
            .filter(|u| !u.disabled)
            .ok_or_else(|| {
                unknown(format!(
                    "no active user with email {email:?} in this tenant"
                ))
            })?;
        if members.iter().any(|x| x.user_id == user.id) {
            return Err(Error::invalid(format!("{email:?} is listed twice")));
        }
        members.push(Member {
            user_id: user.id,
            email,
            role: m.role,
        });
    }
    let now = state.clock.now();
    let group = Group {
        id: group_id,
        tenant_id: tenant.clone(),
        name: input.name.trim().to_string(),
        escalation_minutes: input.escalation_minutes,
        members,
        created_at: existing.as_ref().map(|g| g.created_at).unwrap_or(now),
        updated_at: now,
    };
    let saved = state
        .store
        .put_group(group, existing.is_none(), caller.actor())
        .await?;
    changed(state, tenant);
    Ok(saved)
}

/// Deletes a group unless a policy, a routing rule or a setting still refers to it.
pub async fn delete_group(state: &AppState, caller: &Principal, id: &str) -> Result<()> {
    caller.require_admin()?;
    let tenant = &caller.tenant_id;
    let in_use = |what: String| Error::Invalid {
        code: ErrorCode::InUse,
        message: format!("approval group {id:?} is still used by {what}"),
    };
    for p in state.store.list_policies(tenant).await? {
        let a = &p.approval;
        if a.approval_group_id.as_deref() == Some(id)
            || a.escalation_rules.iter().any(|r| r.escalate_to == id)
        {
            return Err(in_use(format!("policy {:?}", p.name)));
        }
    }
    let (settings, routing) = state.store.guard_settings(tenant).await?;
    if routing.routing_rules.iter().any(|r| r.approval_group == id) {
        return Err(in_use("a routing rule".into()));
    }
    if settings.default_approval_group_id.as_deref() == Some(id)
        || settings
            .trust_rules
            .iter()
            .any(|r| r.approval_group_id.as_deref() == Some(id))
    {
        return Err(in_use("the guard settings".into()));
    }
    state
        .store
        .delete_group(tenant, id, caller.actor(), state.clock.now())
        .await?;
    changed(state, tenant);
    Ok(())
}

pub async fn put_routing(
    state: &AppState,
    caller: &Principal,
    rules: RoutingRules,
) -> Result<RoutingRules> {
    caller.require_admin()?;
    let groups = group_ids(state, &caller.tenant_id).await?;
    routing::validate_rules(&rules.routing_rules, |g| groups.iter().any(|x| x == g))?;
    let (_, saved) = state
        .store
        .put_guard_settings(
            &caller.tenant_id,
            None,
            Some(rules),
            caller.actor(),
            state.clock.now(),
        )
        .await?;
    changed(state, &caller.tenant_id);
    Ok(saved)
}

pub async fn put_settings(
    state: &AppState,
    caller: &Principal,
    settings: GuardSettings,
) -> Result<GuardSettings> {
    caller.require_admin()?;
    let groups = group_ids(state, &caller.tenant_id).await?;
    policy::validate_settings(&settings, |g| groups.iter().any(|x| x == g))?;
    let (saved, _) = state
        .store
        .put_guard_settings(
            &caller.tenant_id,
            Some(settings),
            None,
            caller.actor(),
            state.clock.now(),
        )
        .await?;
    changed(state, &caller.tenant_id);
    Ok(saved)
}

/// How long approvals may wait at most, for `wait` long-polls.
pub fn max_wait(state: &AppState, wait: Option<u64>) -> std::time::Duration {
    std::time::Duration::from_secs(wait.unwrap_or(0).min(state.settings.requests.max_wait_secs))
}
