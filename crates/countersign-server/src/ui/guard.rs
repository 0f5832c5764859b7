//! The guard's administration for a tenant's admins: policies (with CEL checked as it is
//! typed and a dry run), approval groups, routing rules and tenant settings. Every change goes
//! through the same service functions as the guard API.
use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use countersign_core::Error;
use countersign_proto::guard::{
    ApprovalConfig, EscalationRule, EvaluateRequest, GroupInput, GuardSettings, MemberInput,
    MemberRole, PolicyAction, PolicyInput, RoutingRules, TimeoutOutcome, TrustRule,
};
use serde::Deserialize;

use super::views::Opt;
use super::{Layout, Posted, UiError, render, see_other};
use crate::accounts::Viewer;
use crate::guard;
use crate::state::AppState;

/// What the new-policy form held, to show it again next to its error.
#[derive(Debug, Default, Deserialize)]
pub struct PolicyForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    tool_pattern: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    condition: String,
    #[serde(default)]
    approval_group_id: String,
    #[serde(default)]
    timeout_minutes: String,
    #[serde(default)]
    required_approvals: String,
    #[serde(default)]
    default_on_timeout: String,
    #[serde(default)]
    escalate_to: String,
    #[serde(default)]
    escalate_after: String,
}

pub struct PolicyRow {
    pub id: String,
    pub name: String,
    pub tool_pattern: String,
    pub condition: Option<String>,
    pub action: &'static str,
    pub priority: i64,
    pub active: bool,
    pub approval: String,
}

pub struct GroupRow {
    pub id: String,
    pub name: String,
    pub members: String,
    pub escalation: String,
}

#[derive(Template)]
#[template(path = "admin_guard.html")]
struct GuardPage {
    layout: Layout,
    csrf: String,
    notice: Option<String>,
    policies: Vec<PolicyRow>,
    form: PolicyForm,
    policy_error: Option<String>,
    action_options: Vec<Opt>,
    group_options: Vec<Opt>,
    agent_options: Vec<Opt>,
    try_result: Option<String>,
    groups: Vec<GroupRow>,
    group_error: Option<String>,
    routing_json: String,
    routing_error: Option<String>,
    default_action_options: Vec<Opt>,
    settings_group: String,
    settings_timeout: u32,
    admins_can_decide: bool,
    trust_rules_json: String,
    settings_error: Option<String>,
}

#[derive(Template)]
#[template(path = "guard_try.html")]
struct TryFragment {
    error: Option<String>,
    action: String,
    message: String,
    policy: String,
    risk: String,
    threats: String,
}

#[derive(Template)]
#[template(path = "condition_check.html")]
struct ConditionFragment {
    error: Option<String>,
    empty: bool,
}

const ACTIONS: [PolicyAction; 3] = [
    PolicyAction::RequireApproval,
    PolicyAction::Block,
    PolicyAction::Allow,
];

fn action_options(current: &str) -> Vec<Opt> {
    ACTIONS
        .iter()
        .map(|a| Opt {
            value: a.as_str().to_string(),
            label: a.as_str().replace('_', " "),
            selected: a.as_str() == current,
        })
        .collect()
}

/// Errors the page shows beside the form that caused them.
#[derive(Default)]
struct Errors {
    policy: Option<String>,
    group: Option<String>,
    routing: Option<String>,
    settings: Option<String>,
}

async fn page(
    state: &AppState,
    viewer: &Viewer,
    form: PolicyForm,
    errors: Errors,
    notice: Option<String>,
    try_result: Option<String>,
) -> Result<Response, UiError> {
    let p = &viewer.principal;
    p.require_admin()?;
    let tenant = &p.tenant_id;
    let policies = state.store.list_policies(tenant).await?;
    let groups = state.store.list_groups(tenant).await?;
    let agents = state.store.list_agents(tenant).await?;
    let (settings, routing) = state.store.guard_settings(tenant).await?;
    let group_options = groups
        .iter()
        .map(|g| Opt {
            value: g.id.clone(),
            label: format!("{} ({})", g.name, g.id),
            selected: false,
        })
        .collect();
    let form = PolicyForm {
        action: if form.action.is_empty() {
            "require_approval".into()
        } else {
            form.action
        },
        timeout_minutes: if form.timeout_minutes.is_empty() {
            "30".into()
        } else {
            form.timeout_minutes
        },
        required_approvals: if form.required_approvals.is_empty() {
            "1".into()
        } else {
            form.required_approvals
        },
        priority: if form.priority.is_empty() {
            "0".into()
        } else {
            form.priority
        },
        ..form
    };
    render(&GuardPage {
        layout: Layout::for_viewer(viewer, "Policies", "guard"),
        csrf: viewer.csrf.clone(),
        notice,
        action_options: action_options(&form.action),
        policies: policies
            .into_iter()
            .map(|p| PolicyRow {
                approval: if p.action == PolicyAction::RequireApproval {
                    format!(
                        "{} min, {} approval(s), group {}, on timeout {}",
                        p.approval.timeout_minutes,
                        p.approval.required_approvals,
                        p.approval
                            .approval_group_id
                            .clone()
                            .unwrap_or_else(|| "default".into()),
                        p.approval.default_on_timeout.as_str()
                    )
                } else {
                    String::new()
                },
                id: p.id,
                name: p.name,
                tool_pattern: p.tool_pattern,
                condition: p.condition,
                action: p.action.as_str(),
                priority: p.priority,
                active: p.is_active,
            })
            .collect(),
        form,
        policy_error: errors.policy,
        group_options,
        agent_options: agents
            .into_iter()
            .filter(|a| !a.disabled)
            .map(|a| Opt {
                label: format!("{} ({})", a.name, a.trust_level.as_str()),
                value: a.id,
                selected: false,
            })
            .collect(),
        try_result,
        groups: groups
            .into_iter()
            .map(|g| GroupRow {
                members: g
                    .members
                    .iter()
                    .map(|m| format!("{} ({})", m.email, m.role.as_str()))
                    .collect::<Vec<_>>()
                    .join(", "),
                escalation: g
                    .escalation_minutes
                    .map(|m| format!("{m} min"))
                    .unwrap_or_else(|| "at once".into()),
                id: g.id,
                name: g.name,
            })
            .collect(),
        group_error: errors.group,
        routing_json: serde_json::to_string_pretty(&routing.routing_rules).unwrap_or_default(),
        routing_error: errors.routing,
        default_action_options: action_options(settings.default_action.as_str())
            .into_iter()
            .rev()
            .collect(),
        settings_group: settings.default_approval_group_id.unwrap_or_default(),
        settings_timeout: settings.default_timeout_minutes,
        admins_can_decide: settings.admins_can_decide,
        trust_rules_json: serde_json::to_string_pretty(&settings.trust_rules).unwrap_or_default(),
        settings_error: errors.settings,
    })
}

pub async fn guard_page(
    State(state): State<AppState>,
    viewer: Viewer,
) -> Result<Response, UiError> {
    page(
        &state,
        &viewer,
        PolicyForm::default(),
        Errors::default(),
        None,
        None,
    )
    .await
}

fn number<T: std::str::FromStr>(field: &str, value: &str) -> Result<Option<T>, Error> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| Error::invalid(format!("`{field}` must be a whole number")))
}

fn policy_input(f: &PolicyForm) -> Result<PolicyInput, Error> {
    let action = ACTIONS
        .into_iter()
        .find(|a| a.as_str() == f.action)
        .ok_or_else(|| Error::invalid("choose an action"))?;
    let non_empty = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let approval_config = (action == PolicyAction::RequireApproval)
        .then(|| -> Result<ApprovalConfig, Error> {
            let defaults = ApprovalConfig::default();
            let escalation_rules = match (
                non_empty(&f.escalate_to),
                number::<u32>("escalate_after", &f.escalate_after)?,
            ) {
                (Some(to), Some(after)) => vec![EscalationRule {
                    after_minutes: after,
                    escalate_to: to,
                }],
                (Some(_), None) => {
                    return Err(Error::invalid("say after how many minutes to escalate"));
                }
                _ => Vec::new(),
            };
            Ok(ApprovalConfig {
                timeout_minutes: number("timeout_minutes", &f.timeout_minutes)?
                    .unwrap_or(defaults.timeout_minutes),
                approval_group_id: non_empty(&f.approval_group_id),
                required_approvals: number("required_approvals", &f.required_approvals)?
                    .unwrap_or(1),
                default_on_timeout: if f.default_on_timeout == "approve" {
                    TimeoutOutcome::Approve
                } else {
                    TimeoutOutcome::Reject
                },
                escalation_rules,
                notification_channels: vec!["dashboard".into()],
                ..defaults
            })
        })
        .transpose()?;
    Ok(PolicyInput {
        name: f.name.clone(),
        tool_pattern: f.tool_pattern.clone(),
        action,
        description: None,
        priority: number("priority", &f.priority)?,
        is_active: Some(true),
        condition: non_empty(&f.condition),
        approval_config,
    })
}

pub async fn create_policy(
    State(state): State<AppState>,
    posted: Posted<PolicyForm>,
) -> Result<Response, UiError> {
    posted.viewer.principal.require_admin()?;
    let saved = match policy_input(&posted.form) {
        Ok(input) => guard::save_policy(&state, &posted.viewer.principal, None, input).await,
        Err(e) => Err(e),
    };
    match saved {
        Ok(p) => {
            page(
                &state,
                &posted.viewer,
                PolicyForm::default(),
                Errors::default(),
                Some(format!("Policy {:?} created.", p.name)),
                None,
            )
            .await
        }
        Err(e @ (Error::Invalid { .. } | Error::Conflict { .. } | Error::AlreadyExists(_))) => {
            page(
                &state,
                &posted.viewer,
                posted.form,
                Errors {
                    policy: Some(e.to_string()),
                    ..Errors::default()
                },
                None,
                None,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
pub struct ConditionForm {
    #[serde(default)]
    condition: String,
}

/// Checks a CEL condition as it is typed; changes nothing.
pub async fn check_condition(
    State(state): State<AppState>,
    posted: Posted<ConditionForm>,
) -> Result<Response, UiError> {
    posted.viewer.principal.require_admin()?;
    let source = posted.form.condition.trim();
    let error = if source.is_empty() {
        None
    } else {
        // Checking dry-runs the condition: bounded, but not for the request threads.
        let source = source.to_string();
        state
            .conditions
            .run(move || {
                countersign_core::policy::compile_condition(&source)
                    .err()
                    .map(|e| e.to_string())
            })
            .await?
    };
    render(&ConditionFragment {
        error,
        empty: source.is_empty(),
    })
}

#[derive(Debug, Deserialize)]
pub struct TryForm {
    #[serde(default)]
    tool_call: String,
    #[serde(default)]
    agent_id: String,
    #[serde(default)]
    scope: String,
}

/// Evaluates the policies against a sample tool call, creating nothing.
pub async fn try_policies(
    State(state): State<AppState>,
    posted: Posted<TryForm>,
) -> Result<Response, UiError> {
    posted.viewer.principal.require_admin()?;
    let f = &posted.form;
    let outcome = match serde_json::from_str::<serde_json::Value>(&f.tool_call) {
        Err(e) => Err(Error::invalid(format!("the tool call is not JSON: {e}"))),
        Ok(tool_call) => {
            guard::dry_run(
                &state,
                &posted.viewer.principal,
                EvaluateRequest {
                    tool_call,
                    session_id: None,
                    scope: Some(f.scope.trim().to_string()).filter(|s| !s.is_empty()),
                    agent_id: Some(f.agent_id.clone()).filter(|s| !s.is_empty()),
                    annotations: None,
                    mcp: None,
                },
            )
            .await
        }
    };
    let fragment = match outcome {
        Ok(d) => TryFragment {
            error: None,
            action: d.action.as_str().to_string(),
            message: d.message,
            policy: d
                .policy_matched
                .unwrap_or_else(|| "none (the tenant default decided)".into()),
            risk: format!("{:.2}", d.risk_score),
            threats: d.threats_detected.join(", "),
        },
        Err(e @ (Error::Invalid { .. } | Error::Conflict { .. } | Error::NotFound(_))) => {
            TryFragment {
                error: Some(e.to_string()),
                action: String::new(),
                message: String::new(),
                policy: String::new(),
                risk: String::new(),
                threats: String::new(),
            }
        }
        Err(e) => return Err(e.into()),
    };
    if posted.htmx {
        return render(&fragment);
    }
    let html = fragment
        .render()
        .map_err(|e| UiError::from(Error::internal(e)))?;
    page(
        &state,
        &posted.viewer,
        PolicyForm::default(),
        Errors::default(),
        None,
        Some(html),
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct Empty {}

pub async fn toggle_policy(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    let p = &posted.viewer.principal;
    p.require_admin()?;
    let current = state
        .store
        .get_policy(&p.tenant_id, &id)
        .await?
        .ok_or_else(|| Error::NotFound("no such policy".into()))?;
    let input = PolicyInput {
        name: current.name,
        tool_pattern: current.tool_pattern,
        action: current.action,
        description: current.description,
        priority: Some(current.priority),
        is_active: Some(!current.is_active),
        condition: current.condition,
        approval_config: Some(current.approval),
    };
    guard::save_policy(&state, p, Some(&id), input).await?;
    Ok(see_other("/ui/admin/guard#policies"))
}

pub async fn delete_policy(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    guard::delete_policy(&state, &posted.viewer.principal, &id).await?;
    Ok(see_other("/ui/admin/guard#policies"))
}

#[derive(Debug, Deserialize)]
pub struct GroupForm {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    escalation_minutes: String,
    #[serde(default)]
    members: String,
}

fn group_input(f: &GroupForm) -> Result<GroupInput, Error> {
    let mut members = Vec::new();
    for line in f.members.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut parts = line.split_whitespace();
        let email = parts.next().unwrap_or_default().to_string();
        let role = match parts.next().unwrap_or("primary") {
            "primary" => MemberRole::Primary,
            "backup" => MemberRole::Backup,
            other => {
                return Err(Error::invalid(format!(
                    "member role must be primary or backup, not {other:?}"
                )));
            }
        };
        members.push(MemberInput { email, role });
    }
    Ok(GroupInput {
        id: Some(f.id.trim().to_string()).filter(|s| !s.is_empty()),
        name: f.name.clone(),
        members,
        escalation_minutes: number("escalation_minutes", &f.escalation_minutes)?,
    })
}

pub async fn save_group(
    State(state): State<AppState>,
    posted: Posted<GroupForm>,
) -> Result<Response, UiError> {
    let p = &posted.viewer.principal;
    p.require_admin()?;
    let result = match group_input(&posted.form) {
        Ok(input) => {
            let exists = match &input.id {
                Some(id) => state.store.get_group(&p.tenant_id, id).await?.is_some(),
                None => false,
            };
            let path_id = if exists { input.id.clone() } else { None };
            guard::save_group(&state, p, path_id.as_deref(), input).await
        }
        Err(e) => Err(e),
    };
    after_change(
        &state,
        &posted.viewer,
        result.map(|g| format!("Group {:?} saved.", g.name)),
        |e| Errors {
            group: Some(e),
            ..Errors::default()
        },
    )
    .await
}

pub async fn delete_group(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<Empty>,
) -> Result<Response, UiError> {
    let result = guard::delete_group(&state, &posted.viewer.principal, &id)
        .await
        .map(|()| format!("Group {id:?} deleted."));
    after_change(&state, &posted.viewer, result, |e| Errors {
        group: Some(e),
        ..Errors::default()
    })
    .await
}

#[derive(Debug, Deserialize)]
pub struct RoutingForm {
    #[serde(default)]
    rules: String,
}

pub async fn save_routing(
    State(state): State<AppState>,
    posted: Posted<RoutingForm>,
) -> Result<Response, UiError> {
    let text = posted.form.rules.trim();
    let result = match serde_json::from_str(if text.is_empty() { "[]" } else { text }) {
        Ok(routing_rules) => guard::put_routing(
            &state,
            &posted.viewer.principal,
            RoutingRules { routing_rules },
        )
        .await
        .map(|_| "Routing rules saved.".to_string()),
        Err(e) => Err(Error::invalid(format!("the rules are not valid JSON: {e}"))),
    };
    after_change(&state, &posted.viewer, result, |e| Errors {
        routing: Some(e),
        ..Errors::default()
    })
    .await
}

#[derive(Debug, Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    default_action: String,
    #[serde(default)]
    default_approval_group_id: String,
    #[serde(default)]
    default_timeout_minutes: String,
    #[serde(default)]
    admins_can_decide: Option<String>,
    #[serde(default)]
    trust_rules: String,
}

fn settings_input(f: &SettingsForm) -> Result<GuardSettings, Error> {
    let text = f.trust_rules.trim();
    let trust_rules: Vec<TrustRule> =
        serde_json::from_str(if text.is_empty() { "[]" } else { text })
            .map_err(|e| Error::invalid(format!("the trust rules are not valid JSON: {e}")))?;
    Ok(GuardSettings {
        default_action: ACTIONS
            .into_iter()
            .find(|a| a.as_str() == f.default_action)
            .ok_or_else(|| Error::invalid("choose a default action"))?,
        default_approval_group_id: Some(f.default_approval_group_id.trim().to_string())
            .filter(|s| !s.is_empty()),
        admins_can_decide: f.admins_can_decide.as_deref() == Some("on"),
        trust_rules,
        default_timeout_minutes: number("default_timeout_minutes", &f.default_timeout_minutes)?
            .unwrap_or(30),
        grant_audiences: Vec::new(),
    })
}

pub async fn save_settings(
    State(state): State<AppState>,
    posted: Posted<SettingsForm>,
) -> Result<Response, UiError> {
    let caller = &posted.viewer.principal;
    let result = match settings_input(&posted.form) {
        Ok(mut settings) => {
            // The page does not show the grant audiences; saving it keeps them.
            let current = state.store.guard_settings(&caller.tenant_id).await?.0;
            settings.grant_audiences = current.grant_audiences;
            guard::put_settings(&state, caller, settings)
                .await
                .map(|_| "Settings saved.".to_string())
        }
        Err(e) => Err(e),
    };
    after_change(&state, &posted.viewer, result, |e| Errors {
        settings: Some(e),
        ..Errors::default()
    })
    .await
}

/// The page again, with the notice of a change or the error beside its form.
async fn after_change(
    state: &AppState,
    viewer: &Viewer,
    result: Result<String, Error>,
    place: impl FnOnce(String) -> Errors,
) -> Result<Response, UiError> {
    match result {
        Ok(notice) => {
            page(
                state,
                viewer,
                PolicyForm::default(),
                Errors::default(),
                Some(notice),
                None,
            )
            .await
        }
        Err(
            e @ (Error::Invalid { .. }
            | Error::Conflict { .. }
            | Error::NotFound(_)
            | Error::AlreadyExists(_)),
        ) => {
            page(
                state,
                viewer,
                PolicyForm::default(),
                place(e.to_string()),
                None,
                None,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}
