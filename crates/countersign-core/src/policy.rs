//! Policies: which tool calls are allowed, blocked, or need a person. Patterns of all active
//! policies are compiled into one glob set, so finding the candidates costs the same with ten
//! policies or ten thousand; CEL conditions run only for the candidates, highest priority first.
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use countersign_proto::ErrorCode;
use countersign_proto::guard::{ApprovalConfig, PolicyAction, PolicyInput};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::{Value, json};

use crate::{Error, Result, ids, validate};

pub const POLICY: &str = "pol";
const MAX_CONDITION_CHARS: usize = 4_000;
const MAX_REQUIRED_APPROVALS: u32 = 20;
pub const CHANNELS: [&str; 6] = ["email", "slack", "teams", "webhook", "push", "dashboard"];
/// The names a condition may use.
pub const CONDITION_VARIABLES: [&str; 7] = [
    "tool", "args", "agent", "session", "risk", "threats", "scope",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub description: Option<String>,
    pub tool_pattern: String,
    pub action: PolicyAction,
    pub priority: i64,
    pub is_active: bool,
    pub condition: Option<String>,
    pub approval: ApprovalConfig,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid(message)
}

fn glob(field: &str, pattern: &str) -> Result<Glob> {
    validate::text(field, pattern, 200)?;
    Glob::new(pattern.trim()).map_err(|e| {
        Error::invalid_with(
            ErrorCode::InvalidPattern,
            format!("`{field}` is not a valid glob: {e}"),
        )
    })
}

/// Compiles a condition, reporting syntax errors with their position, unknown variables, and
/// type errors found by a dry run.
pub fn compile_condition(source: &str) -> Result<cel::Program> {
    let invalid_condition = |message: String| Error::Invalid {
        code: ErrorCode::InvalidCondition,
        message,
    };
    if source.chars().count() > MAX_CONDITION_CHARS {
        return Err(invalid_condition(format!(
            "`condition` is longer than {MAX_CONDITION_CHARS} characters"
        )));
    }
    let program = cel::Program::compile(source)
        .map_err(|e| invalid_condition(format!("`condition` is not valid CEL: {e}")))?;
    let references = program.references();
    let unknown: BTreeSet<&str> = references
        .variables()
        .into_iter()
        .filter(|v| !CONDITION_VARIABLES.contains(v))
        .collect();
    if !unknown.is_empty() {
        return Err(invalid_condition(format!(
            "`condition` uses unknown variable(s) {}; it may use {}",
            unknown.into_iter().collect::<Vec<_>>().join(", "),
            CONDITION_VARIABLES.join(", ")
        )));
    }
    // A dry run on a sample call finds type errors; a missing argument key is not an error
    // here, since real calls carry their own arguments.
    let sample = EvalInput {
        tool: "sample_tool",
        args: &json!({}),
        agent_id: "agt_sample",
        agent_name: "sample",
        trust_level: "standard",
        session: "session",
        risk: 0.5,
        threats: &[],
        scope: "",
    };
    match run(&program, &sample) {
        Ok(Value::Bool(_)) => Ok(program),
        Ok(other) => Err(invalid_condition(format!(
            "`condition` must evaluate to true or false, not {other}"
        ))),
        Err(ConditionError::MissingData) => Ok(program),
        Err(ConditionError::Type(e)) => Err(invalid_condition(format!(
            "`condition` has a type error: {e}"
        ))),
    }
}

/// Validates a policy body against the tenant's groups and builds the policy.
pub fn from_input(
    tenant_id: &str,
    id: Option<&str>,
    input: PolicyInput,
    group_exists: impl Fn(&str) -> bool,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Policy> {
    validate::text("name", &input.name, 200)?;
    glob("tool_pattern", &input.tool_pattern)?;
    let priority = input.priority.unwrap_or(0);
    if !(-1_000_000..=1_000_000).contains(&priority) {
        return Err(invalid("`priority` must be between -1000000 and 1000000"));
    }
    if let Some(d) = &input.description {
        validate::multiline_text("description", d, 2_000)?;
    }
    let condition = input.condition.filter(|c| !c.trim().is_empty());
    if let Some(c) = &condition {
        compile_condition(c)?;
    }
    let approval = input.approval_config.unwrap_or_default();
    if !(1..=1440).contains(&approval.timeout_minutes) {
        return Err(invalid(format!(
            "`approval_config.timeout_minutes` must be between 1 and 1440; got {}",
            approval.timeout_minutes
        )));
    }
    if !(1..=MAX_REQUIRED_APPROVALS).contains(&approval.required_approvals) {
        return Err(invalid(format!(
            "`approval_config.required_approvals` must be between 1 and {MAX_REQUIRED_APPROVALS}"
        )));
    }
    for channel in &approval.notification_channels {
        if !CHANNELS.contains(&channel.as_str()) {
            return Err(invalid(format!(
                "`approval_config.notification_channels`: unknown channel {channel:?}; use {}",
                CHANNELS.join(", ")
            )));
        }
    }
    let unknown_group = |id: &str| Error::Invalid {
        code: ErrorCode::UnknownReference,
        message: format!("approval group {id:?} does not exist in this tenant"),
    };
    match (&approval.approval_group_id, input.action) {
        (Some(g), _) if !group_exists(g) => return Err(unknown_group(g)),
        (None, PolicyAction::RequireApproval) => {
            return Err(invalid(
                "`approval_config.approval_group_id` is required when `action` is require_approval",
            ));
        }
        _ => {}
    }
    for rule in &approval.escalation_rules {
        if !group_exists(&rule.escalate_to) {
            return Err(unknown_group(&rule.escalate_to));
        }
        if rule.after_minutes == 0 || rule.after_minutes >= approval.timeout_minutes {
            return Err(invalid(format!(
                "`escalation_rules.after_minutes` must be between 1 and timeout_minutes - 1 ({}); got {}",
                approval.timeout_minutes - 1,
                rule.after_minutes
            )));
        }
    }
    Ok(Policy {
        id: id
            .map(str::to_string)
            .unwrap_or_else(|| ids::new_id(POLICY)),
        tenant_id: tenant_id.to_string(),
        name: input.name.trim().to_string(),
        description: input.description,
        tool_pattern: input.tool_pattern.trim().to_string(),
        action: input.action,
        priority,
        is_active: input.is_active.unwrap_or(true),
        condition,
        approval,
        created_at,
        updated_at: now,
    })
}

/// What a condition sees.
#[derive(Debug, Clone, Copy)]
pub struct EvalInput<'a> {
    pub tool: &'a str,
    pub args: &'a Value,
    pub agent_id: &'a str,
    pub agent_name: &'a str,
    pub trust_level: &'a str,
    pub session: &'a str,
    pub risk: f64,
    pub threats: &'a [String],
    pub scope: &'a str,
}

enum ConditionError {
    /// A key the expression reads is absent from this call.
    MissingData,
    Type(String),
}

fn run(program: &cel::Program, input: &EvalInput) -> std::result::Result<Value, ConditionError> {
    let mut context = cel::Context::default();
    let type_error = |e: &dyn std::fmt::Display| ConditionError::Type(e.to_string());
    context
        .add_variable("tool", input.tool)
        .map_err(|e| type_error(&e))?;
    context
        .add_variable("args", input.args)
        .map_err(|e| type_error(&e))?;
    context
        .add_variable(
            "agent",
            json!({"id": input.agent_id, "name": input.agent_name, "trust_level": input.trust_level}),
        )
        .map_err(|e| type_error(&e))?;
    context
        .add_variable("session", input.session)
        .map_err(|e| type_error(&e))?;
    context
        .add_variable("risk", input.risk)
        .map_err(|e| type_error(&e))?;
    context
        .add_variable("threats", input.threats)
        .map_err(|e| type_error(&e))?;
    context
        .add_variable("scope", input.scope)
        .map_err(|e| type_error(&e))?;
    match program.execute(&context) {
        Ok(value) => value.json().map_err(|e| type_error(&e)),
        Err(cel::ExecutionError::NoSuchKey(_)) => Err(ConditionError::MissingData),
        Err(e) => Err(type_error(&e)),
    }
}

struct Compiled {
    policy: Policy,
    program: Option<cel::Program>,
}

/// A tenant's active policies, ready to evaluate.
pub struct PolicySet {
    globs: GlobSet,
    /// Highest priority first; ties go to the older policy.
    ordered: Vec<Compiled>,
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("policies", &self.ordered.len())
            .finish()
    }
}

impl PolicySet {
    pub fn compile(mut policies: Vec<Policy>) -> Result<PolicySet> {
        policies.retain(|p| p.is_active);
        policies.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
        let mut builder = GlobSetBuilder::new();
        let mut ordered = Vec::with_capacity(policies.len());
        for policy in policies {
            builder.add(glob("tool_pattern", &policy.tool_pattern)?);
            let program = match &policy.condition {
                Some(c) => Some(compile_condition(c)?),
                None => None,
            };
            ordered.push(Compiled { policy, program });
        }
        let globs = builder
            .build()
            .map_err(|e| Error::Internal(format!("cannot compile policy patterns: {e}")))?;
        Ok(PolicySet { globs, ordered })
    }

    pub fn len(&self) -> usize {
        self.ordered.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }

    /// The highest-priority policy whose pattern and condition match. A condition that fails
    /// to evaluate fails closed: it counts as matching for block and require_approval, and
    /// as not matching for allow.
    pub fn evaluate(&self, input: &EvalInput) -> Option<&Policy> {
        // Indices come back in ascending order, which is priority order.
        for index in self.globs.matches(input.tool) {
            let compiled = &self.ordered[index];
            let applies = match &compiled.program {
                None => true,
                Some(program) => match run(program, input) {
                    Ok(Value::Bool(b)) => b,
                    _ => compiled.policy.action != PolicyAction::Allow,
                },
            };
            if applies {
                return Some(&compiled.policy);
            }
        }
        None
    }
}

/// A tenant's guard configuration, compiled for evaluation.
#[derive(Debug)]
pub struct GuardConfig {
    pub policies: PolicySet,
    pub settings: countersign_proto::guard::GuardSettings,
    pub routing: countersign_proto::guard::RoutingRules,
}

/// Compiled configurations per tenant, dropped when a tenant's configuration changes (here,
/// or on another replica: its change hint reaches this one).
#[derive(Debug, Default)]
pub struct GuardCache {
    sets: parking_lot::RwLock<HashMap<String, Arc<GuardConfig>>>,
}

impl GuardCache {
    pub fn get(&self, tenant_id: &str) -> Option<Arc<GuardConfig>> {
        self.sets.read().get(tenant_id).cloned()
    }

    pub fn put(&self, tenant_id: &str, config: Arc<GuardConfig>) {
        self.sets.write().insert(tenant_id.to_string(), config);
    }

    pub fn invalidate(&self, tenant_id: &str) {
        self.sets.write().remove(tenant_id);
    }

    pub fn clear(&self) {
        self.sets.write().clear();
    }
}

/// The first trust rule that applies: the agent's trust level is listed, and the tool matches
/// one of its patterns or the call's scope is one of its scopes.
pub fn trust_rule<'a>(
    settings: &'a countersign_proto::guard::GuardSettings,
    trust: countersign_proto::TrustLevel,
    tool: &str,
    scope: Option<&str>,
) -> Option<&'a countersign_proto::guard::TrustRule> {
    settings.trust_rules.iter().find(|rule| {
        rule.trust_levels.contains(&trust)
            && (rule
                .tool_patterns
                .iter()
                .any(|p| Glob::new(p).is_ok_and(|g| g.compile_matcher().is_match(tool)))
                || scope.is_some_and(|s| rule.scopes.iter().any(|r| r == s)))
    })
}

/// Checks guard settings: patterns compile, groups exist, timeouts are in range.
pub fn validate_settings(
    settings: &countersign_proto::guard::GuardSettings,
    group_exists: impl Fn(&str) -> bool,
) -> Result<()> {
    if !(1..=1440).contains(&settings.default_timeout_minutes) {
        return Err(invalid(
            "`default_timeout_minutes` must be between 1 and 1440",
        ));
    }
    let unknown_group = |id: &str| Error::Invalid {
        code: ErrorCode::UnknownReference,
        message: format!("approval group {id:?} does not exist in this tenant"),
    };
    if let Some(g) = settings
        .default_approval_group_id
        .as_deref()
        .filter(|g| !group_exists(g))
    {
        return Err(unknown_group(g));
    }
    for (i, rule) in settings.trust_rules.iter().enumerate() {
        if rule.trust_levels.is_empty() || (rule.tool_patterns.is_empty() && rule.scopes.is_empty())
        {
            return Err(invalid(format!(
                "trust_rules[{i}] needs trust_levels and at least one tool pattern or scope"
            )));
        }
        for p in &rule.tool_patterns {
            glob(&format!("trust_rules[{i}].tool_patterns"), p)?;
        }
        if let Some(g) = rule
            .approval_group_id
            .as_deref()
            .filter(|g| !group_exists(g))
        {
            return Err(unknown_group(g));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(
        name: &str,
        pattern: &str,
        action: PolicyAction,
        priority: i64,
        condition: Option<&str>,
    ) -> Policy {
        let now = Utc::now();
        Policy {
            id: ids::new_id(POLICY),
            tenant_id: "t".into(),
            name: name.into(),
            description: None,
            tool_pattern: pattern.into(),
            action,
            priority,
            is_active: true,
            condition: condition.map(str::to_string),
            approval: ApprovalConfig::default(),
            created_at: now,
            updated_at: now,
        }
    }

    fn input<'a>(tool: &'a str, args: &'a Value, trust: &'a str) -> EvalInput<'a> {
        EvalInput {
            tool,
            args,
            agent_id: "agt_1",
            agent_name: "bot",
            trust_level: trust,
            session: "s",
            risk: 0.2,
            threats: &[],
            scope: "",
        }
    }

    #[test]
    fn priority_pattern_and_condition_decide() {
        let set = PolicySet::compile(vec![
            policy("all", "*", PolicyAction::Allow, 0, None),
            policy(
                "payments",
                "payment_*",
                PolicyAction::RequireApproval,
                10,
                None,
            ),
            policy(
                "big refunds",
                "payment_refund",
                PolicyAction::Block,
                20,
                Some("args.amount > 10000"),
            ),
            policy(
                "critical agents",
                "*",
                PolicyAction::Block,
                30,
                Some("agent.trust_level == 'critical'"),
            ),
        ])
        .unwrap();
        let small = json!({"amount": 500});
        let big = json!({"amount": 50000});
        assert_eq!(
            set.evaluate(&input("payment_refund", &small, "standard"))
                .unwrap()
                .name,
            "payments"
        );
        assert_eq!(
            set.evaluate(&input("payment_refund", &big, "standard"))
                .unwrap()
                .name,
            "big refunds"
        );
        assert_eq!(
            set.evaluate(&input("search", &small, "standard"))
                .unwrap()
                .name,
            "all"
        );
        assert_eq!(
            set.evaluate(&input("search", &small, "critical"))
                .unwrap()
                .name,
            "critical agents"
        );
        // A missing key: the block condition fails closed, so the refund is blocked.
        assert_eq!(
            set.evaluate(&input("payment_refund", &json!({}), "standard"))
                .unwrap()
                .name,
            "big refunds"
        );
    }

    #[test]
    fn conditions_are_checked_when_saved() {
        assert!(compile_condition("args.amount > 100 && tool.startsWith('pay')").is_ok());
        let syntax = compile_condition("args.amount >").unwrap_err();
        assert_eq!(syntax.code(), ErrorCode::InvalidCondition);
        assert!(
            compile_condition("foo == 1")
                .unwrap_err()
                .to_string()
                .contains("foo")
        );
        assert!(
            compile_condition("risk + 'x'")
                .unwrap_err()
                .to_string()
                .contains("type")
        );
        assert!(
            compile_condition("tool")
                .unwrap_err()
                .to_string()
                .contains("true or false")
        );
    }

    #[test]
    fn many_policies_compile_into_one_set() {
        let policies: Vec<Policy> = (0..1000)
            .map(|i| {
                policy(
                    &format!("p{i}"),
                    &format!("tool_{i}_*"),
                    PolicyAction::Block,
                    i,
                    None,
                )
            })
            .collect();
        let set = PolicySet::compile(policies).unwrap();
        assert_eq!(set.len(), 1000);
        assert_eq!(
            set.evaluate(&input("tool_7_x", &json!({}), "standard"))
                .unwrap()
                .name,
            "p7"
        );
        assert!(
            set.evaluate(&input("other", &json!({}), "standard"))
                .is_none()
        );
    }
}
