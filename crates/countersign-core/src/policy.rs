//! Policies: which tool calls are allowed, blocked, or need a person. Patterns of all active
//! policies are compiled into one glob set, so finding the candidates costs the same with ten
//! policies or ten thousand; CEL conditions run only for the candidates, highest priority first.
use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use countersign_proto::ErrorCode;
use countersign_proto::guard::{ApprovalConfig, PolicyAction, PolicyInput, ToolAnnotations};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::{Value, json};

use crate::mcp::EffectiveAnnotations;
use crate::{Error, Result, ids, validate};

mod cache;
mod cost;
mod settings;
pub use cache::{Cached, Generation, GuardCache, GuardConfig};
pub use cost::{
    Budget, MAX_COMPREHENSION_NESTING, MAX_DEPTH, MAX_LITERAL_CHARS, MAX_LITERAL_ELEMENTS,
};
pub use settings::{trust_rule, validate_settings};

pub const POLICY: &str = "pol";
const MAX_CONDITION_CHARS: usize = 4_000;
const MAX_REQUIRED_APPROVALS: u32 = 20;
pub const CHANNELS: [&str; 6] = ["email", "slack", "teams", "webhook", "push", "dashboard"];
/// The names a condition may use.
pub const CONDITION_VARIABLES: [&str; 7] = [
    "tool", "args", "agent", "session", "risk", "threats", "scope",
];
/// What the dry run of a condition being saved may spend: far more than a condition within
/// the shape limits needs on the sample call.
const SAVE_STEPS: u64 = 20_000;
const SAVE_TIME: std::time::Duration = std::time::Duration::from_millis(200);

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
        Error::coded(
            ErrorCode::InvalidPattern,
            format!("`{field}` is not a valid glob: {e}"),
        )
    })
}

/// A compiled condition: the program, and its expression with a budget step in every
/// comprehension iteration (what is run).
#[derive(Debug)]
pub struct Condition {
    metered: cel::IdedExpr,
    /// Whether it has a comprehension, whose cost grows with the call's arguments.
    iterates: bool,
}

/// A condition ran out of its step budget or its deadline: the call is blocked.
#[derive(Debug, Clone, PartialEq)]
pub struct OverBudget {
    pub policy_id: String,
    pub policy_name: String,
}

impl OverBudget {
    pub fn reason(&self) -> String {
        format!(
            "the condition of policy {:?} ran out of its evaluation budget on this call",
            self.policy_name
        )
    }
}

/// Compiles a condition, reporting syntax errors with their position, unknown variables,
/// shapes too costly to run (deep nesting, nested comprehensions, large literals), and type
/// errors found by a dry run.
pub fn compile_condition(source: &str) -> Result<Condition> {
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
    cost::check_shape(program.expression())
        .map_err(|why| invalid_condition(format!("`condition` {why}")))?;
    let references = program.references();
    if references.has_function(cost::STEP_FUNCTION) {
        return Err(invalid_condition(format!(
            "`condition` may not call {}",
            cost::STEP_FUNCTION
        )));
    }
    let mut bound = BTreeSet::new();
    cost::bound_names(program.expression(), &mut bound);
    // `tool` was the name string before MCP annotations came; such a condition would now
    // compare a map with a string and quietly never match.
    if !bound.contains("tool") && cost::bare_use(program.expression(), "tool") {
        return Err(invalid_condition(
            "`condition` uses `tool` on its own: `tool` is a map now; use `tool.name` for the tool's name (also `tool.annotations.destructiveHint`, `tool.mcp_server`, …)".to_string(),
        ));
    }
    let unknown: BTreeSet<&str> = references
        .variables()
        .into_iter()
        .filter(|v| !CONDITION_VARIABLES.contains(v) && !bound.contains(*v))
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
        annotations: None,
        mcp_server: "",
    };
    let condition = Condition {
        metered: cost::metered(program.expression()),
        iterates: cost::iterates(program.expression()),
    };
    match run(&condition, &sample, &Budget::new(SAVE_STEPS, SAVE_TIME)) {
        Ok(Value::Bool(_)) => Ok(condition),
        Ok(other) => Err(invalid_condition(format!(
            "`condition` must evaluate to true or false, not {other}"
        ))),
        Err(ConditionError::MissingData) => Ok(condition),
        Err(ConditionError::Type(e)) => Err(invalid_condition(format!(
            "`condition` has a type error: {e}"
        ))),
        Err(ConditionError::OverBudget) => Err(invalid_condition(
            "`condition` costs too much to evaluate even on a sample call".to_string(),
        )),
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
    crate::grant::check_audiences("approval_config.audiences", &approval.audiences)?;
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
    /// The tool's name (what `tool_pattern` matches; `tool.name` in a condition).
    pub tool: &'a str,
    pub args: &'a Value,
    pub agent_id: &'a str,
    pub agent_name: &'a str,
    pub trust_level: &'a str,
    pub session: &'a str,
    pub risk: f64,
    pub threats: &'a [String],
    pub scope: &'a str,
    /// The MCP tool's annotations as given (a condition sees them with MCP's defaults).
    pub annotations: Option<&'a ToolAnnotations>,
    /// The MCP server the call came through; empty when it did not come through MCP.
    pub mcp_server: &'a str,
}

impl EvalInput<'_> {
    /// `tool` as a condition sees it: `{name, annotations: {readOnlyHint, destructiveHint,
    /// idempotentHint, openWorldHint}, mcp_server}`.
    fn tool_value(&self) -> Value {
        json!({
            "name": self.tool,
            "annotations": EffectiveAnnotations::of(self.annotations).to_json(),
            "mcp_server": self.mcp_server,
        })
    }
}

enum ConditionError {
    /// A key the expression reads is absent from this call.
    MissingData,
    Type(String),
    /// The budget ran out (steps or time).
    OverBudget,
}

fn run(
    condition: &Condition,
    input: &EvalInput,
    budget: &Arc<Budget>,
) -> std::result::Result<Value, ConditionError> {
    let mut context = cel::Context::default();
    let type_error = |e: &dyn std::fmt::Display| ConditionError::Type(e.to_string());
    budget.install(&mut context).map_err(|e| type_error(&e))?;
    context
        .add_variable("tool", input.tool_value())
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
    let result = cel::Value::resolve(&condition.metered, &context);
    if budget.ran_out() {
        return Err(ConditionError::OverBudget);
    }
    match result {
        Ok(value) => value.json().map_err(|e| type_error(&e)),
        Err(cel::ExecutionError::NoSuchKey(_)) => Err(ConditionError::MissingData),
        Err(e) => Err(type_error(&e)),
    }
}

struct Compiled {
    policy: Policy,
    /// `Err` for a stored condition this version no longer accepts (one saved before a
    /// limit existed): it fails closed like a condition that fails to evaluate.
    condition: Option<std::result::Result<Condition, Error>>,
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
            let condition = policy.condition.as_deref().map(compile_condition);
            ordered.push(Compiled { policy, condition });
        }
        let globs = builder
            .build()
            .map_err(|e| Error::internal_msg(format!("cannot compile policy patterns: {e}")))?;
        Ok(PolicySet { globs, ordered })
    }

    pub fn len(&self) -> usize {
        self.ordered.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }

    /// Whether any active policy has a condition (only those cost anything to evaluate).
    pub fn has_conditions(&self) -> bool {
        self.ordered.iter().any(|c| c.condition.is_some())
    }

    /// Whether evaluating these conditions on `args` may cost more than a request thread
    /// should spend: only comprehensions grow with the arguments (everything else is linear
    /// in a body the size limit bounds), and over a few dozen values even two nested ones
    /// stay within a few thousand steps.
    pub fn may_be_costly(&self, args: &Value) -> bool {
        let iterates = self
            .ordered
            .iter()
            .any(|c| matches!(&c.condition, Some(Ok(condition)) if condition.iterates));
        iterates && !is_small(args)
    }

    /// The highest-priority policy whose pattern and condition match. A condition that fails
    /// to evaluate fails closed: it counts as matching for block and require_approval, and
    /// as not matching for allow. A condition that runs out of the budget (shared by all the
    /// conditions of one call) stops the evaluation: the caller blocks the call.
    pub fn evaluate(
        &self,
        input: &EvalInput,
        budget: &Arc<Budget>,
    ) -> std::result::Result<Option<&Policy>, OverBudget> {
        // Indices come back in ascending order, which is priority order.
        for index in self.globs.matches(input.tool) {
            let compiled = &self.ordered[index];
            let applies = match &compiled.condition {
                None => true,
                Some(Err(_)) => compiled.policy.action != PolicyAction::Allow,
                Some(Ok(condition)) => match run(condition, input, budget) {
                    Ok(Value::Bool(b)) => b,
                    Err(ConditionError::OverBudget) => {
                        return Err(OverBudget {
                            policy_id: compiled.policy.id.clone(),
                            policy_name: compiled.policy.name.clone(),
                        });
                    }
                    _ => compiled.policy.action != PolicyAction::Allow,
                },
            };
            if applies {
                return Ok(Some(&compiled.policy));
            }
        }
        Ok(None)
    }
}

/// How many JSON values (objects, arrays and scalars alike) a call's arguments may hold for its
/// conditions (and its canonicalisation) to run on a request thread.
pub const INLINE_VALUES: usize = 128;

/// Whether `value` holds at most [`INLINE_VALUES`] values; stops counting past the limit.
pub fn is_small(value: &Value) -> bool {
    fn count(value: &Value, left: &mut usize) -> bool {
        if *left == 0 {
            return false;
        }
        *left -= 1;
        match value {
            Value::Array(items) => items.iter().all(|item| count(item, left)),
            Value::Object(map) => map.values().all(|item| count(item, left)),
            _ => true,
        }
    }
    count(value, &mut { INLINE_VALUES })
}

#[cfg(test)]
mod tests;
