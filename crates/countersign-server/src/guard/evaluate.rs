//! Tool calls: evaluated against the policies, allowed or blocked at once, or waiting for
//! the approval they open (or find).
use std::collections::BTreeMap;
use std::sync::Arc;

use countersign_core::approval::{self, ToolInfo};
use countersign_core::directory::Agent;
use countersign_core::guard::{self, ApprovalPlan, Blocked, Evaluation};
use countersign_core::idempotency::IdempotencyKey;
use countersign_core::policy::{self, GuardConfig};
use countersign_core::risk::RiskAssessor;
use countersign_core::{Error, Principal, Result, toolcall, validate};
use countersign_proto::TrustLevel;
use countersign_proto::guard::{
    EvaluateRequest, McpOrigin, PolicyAction, ToolAnnotations, ToolDecision, ToolRequest,
};
use countersign_store::SameCall;

use super::{config, unknown};
use crate::after_commit::{Committed, announce};
use crate::conditions::OwnedInput;
use crate::idempotency::{self, Answer, Retry};
use crate::state::AppState;
use crate::workers;

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
    let retry = Retry::for_agent(
        key,
        caller,
        agent_id,
        "POST /v1/guard/{proxyId}/tool",
        &input,
    )?;
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
    let agent = agent(state, &caller.tenant_id, agent_id)
        .await?
        .ok_or_else(|| Error::unauthorized("this agent no longer exists"))?;
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
            workers::sweep_expired(state).await?;
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

/// An agent as the store has it, remembered for a moment (every guard call reads its agent).
async fn agent(state: &AppState, tenant_id: &str, agent_id: &str) -> Result<Option<Agent>> {
    if let Some(agent) = state.principals.agent(tenant_id, agent_id) {
        return Ok(Some(agent));
    }
    let generation = state.principals.generation();
    let agent = state.store.get_agent(tenant_id, agent_id).await?;
    if let Some(agent) = &agent {
        state.principals.remember_agent(agent, generation);
    }
    Ok(agent)
}

/// `POST /policies/evaluate`: what `POST /tool` would answer, creating nothing.
pub async fn dry_run(
    state: &AppState,
    caller: &Principal,
    input: EvaluateRequest,
) -> Result<ToolDecision> {
    caller.require_admin()?;
    let agent = match &input.agent_id {
        Some(id) => agent(state, &caller.tenant_id, id)
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
