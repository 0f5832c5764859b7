//! Policies: which tool calls are allowed, blocked, or need a person. Patterns of all active
//! policies are compiled into one glob set, so finding the candidates costs the same with ten
//! policies or ten thousand; CEL conditions run only for the candidates, highest priority first.
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use countersign_proto::ErrorCode;
use countersign_proto::guard::{ApprovalConfig, PolicyAction, PolicyInput, ToolAnnotations};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::{Value, json};

use crate::mcp::EffectiveAnnotations;
use crate::{Error, Result, ids, validate};

mod cost;
pub use cost::{
    Budget, MAX_COMPREHENSION_NESTING, MAX_DEPTH, MAX_LITERAL_CHARS, MAX_LITERAL_ELEMENTS,
};

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
        Error::invalid_with(
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
            .map_err(|e| Error::Internal(format!("cannot compile policy patterns: {e}")))?;
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

/// A tenant's guard configuration, compiled for evaluation.
#[derive(Debug)]
pub struct GuardConfig {
    pub policies: PolicySet,
    pub settings: countersign_proto::guard::GuardSettings,
    pub routing: countersign_proto::guard::RoutingRules,
}

/// Compiled configurations per tenant, dropped when a tenant's configuration changes (here,
/// or on another replica: its change hint reaches this one).
///
/// Loading is not atomic with caching: a change can land after a reader loaded the old
/// configuration and before it stores what it loaded. Every change therefore bumps the
/// tenant's generation, and a load is cached only if the generation it started under is still
/// current; otherwise the stale load is used once and dropped.
#[derive(Debug, Default)]
pub struct GuardCache {
    tenants: parking_lot::Mutex<HashMap<String, CacheSlot>>,
}

#[derive(Debug, Default)]
struct CacheSlot {
    generation: u64,
    config: Option<Arc<GuardConfig>>,
}

/// What a reader takes before loading a tenant's configuration from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Generation(u64);

/// Either the cached configuration, or the generation to load under.
#[derive(Debug)]
pub enum Cached {
    Hit(Arc<GuardConfig>),
    Miss(Generation),
}

impl GuardCache {
    /// The cached configuration, or the generation a fresh load must be stored with. Take it
    /// before reading the store, so a change committed meanwhile makes the load stale.
    pub fn lookup(&self, tenant_id: &str) -> Cached {
        let mut tenants = self.tenants.lock();
        let slot = tenants.entry(tenant_id.to_string()).or_default();
        match &slot.config {
            Some(config) => Cached::Hit(config.clone()),
            None => Cached::Miss(Generation(slot.generation)),
        }
    }

    /// Caches a configuration loaded under `generation`, unless a change arrived since;
    /// returns whether it was cached.
    pub fn put(&self, tenant_id: &str, generation: Generation, config: Arc<GuardConfig>) -> bool {
        let mut tenants = self.tenants.lock();
        let slot = tenants.entry(tenant_id.to_string()).or_default();
        if slot.generation != generation.0 {
            return false;
        }
        slot.config = Some(config);
        true
    }

    /// The tenant's configuration changed: drop it, and make every load in flight stale.
    pub fn invalidate(&self, tenant_id: &str) {
        let mut tenants = self.tenants.lock();
        let slot = tenants.entry(tenant_id.to_string()).or_default();
        slot.generation += 1;
        slot.config = None;
    }

    /// Every tenant may have changed (change hints were lost).
    pub fn clear(&self) {
        for slot in self.tenants.lock().values_mut() {
            slot.generation += 1;
            slot.config = None;
        }
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
    crate::grant::check_audiences("grant_audiences", &settings.grant_audiences)?;
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
            annotations: None,
            mcp_server: "",
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
            eval(&set, &input("payment_refund", &small, "standard"))
                .unwrap()
                .name,
            "payments"
        );
        assert_eq!(
            eval(&set, &input("payment_refund", &big, "standard"))
                .unwrap()
                .name,
            "big refunds"
        );
        assert_eq!(
            eval(&set, &input("search", &small, "standard"))
                .unwrap()
                .name,
            "all"
        );
        assert_eq!(
            eval(&set, &input("search", &small, "critical"))
                .unwrap()
                .name,
            "critical agents"
        );
        // A missing key: the block condition fails closed, so the refund is blocked.
        assert_eq!(
            eval(&set, &input("payment_refund", &json!({}), "standard"))
                .unwrap()
                .name,
            "big refunds"
        );
    }

    #[test]
    fn conditions_are_checked_when_saved() {
        assert!(compile_condition("args.amount > 100 && tool.name.startsWith('pay')").is_ok());
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
            compile_condition("tool.annotations")
                .unwrap_err()
                .to_string()
                .contains("true or false")
        );
    }

    #[test]
    fn conditions_see_tool_as_a_map() {
        let set = |condition: &str| {
            PolicySet::compile(vec![policy(
                "p",
                "*",
                PolicyAction::RequireApproval,
                0,
                Some(condition),
            )])
            .unwrap()
        };
        let args = json!({});
        let plain = input("delete_file", &args, "standard");
        let destructive = ToolAnnotations {
            destructive_hint: Some(true),
            ..ToolAnnotations::default()
        };
        let read_only = ToolAnnotations {
            read_only_hint: Some(true),
            ..ToolAnnotations::default()
        };
        let via_mcp = |annotations| EvalInput {
            annotations: Some(annotations),
            mcp_server: "files",
            ..plain
        };
        let by_name = set("tool.name == 'delete_file'");
        assert!(eval(&by_name, &plain).is_some());
        assert!(eval(&by_name, &input("read_file", &args, "standard")).is_none());
        let by_hint = set("tool.annotations.destructiveHint");
        assert!(eval(&by_hint, &via_mcp(&destructive)).is_some());
        assert!(eval(&by_hint, &via_mcp(&read_only)).is_none());
        // Without annotations MCP's defaults apply: destructive, not read-only, open world.
        assert!(eval(&by_hint, &plain).is_some());
        let defaults = set(
            "!tool.annotations.readOnlyHint && !tool.annotations.idempotentHint && tool.annotations.openWorldHint",
        );
        assert!(eval(&defaults, &plain).is_some());
        let by_server = set("tool.mcp_server == 'files'");
        assert!(eval(&by_server, &via_mcp(&read_only)).is_some());
        assert!(eval(&by_server, &plain).is_none());
        assert!(eval(&set("tool.mcp_server == ''"), &plain).is_some());
    }

    #[test]
    fn conditions_using_tool_as_the_name_are_refused() {
        for old in [
            "tool == 'delete_file'",
            "tool.startsWith('pay')",
            "tool in ['a', 'b']",
            "args.items.exists(x, x == tool)",
        ] {
            assert!(condition_error(old).contains("tool.name"), "{old}");
        }
        // A comprehension may bind its own `tool`.
        assert!(compile_condition("args.items.exists(tool, tool == 'x')").is_ok());
        // Stored before the change, such a condition fails closed (block applies, allow does
        // not) instead of quietly never matching.
        let set = PolicySet::compile(vec![
            policy(
                "old allow",
                "*",
                PolicyAction::Allow,
                20,
                Some("tool == 'search'"),
            ),
            policy(
                "old block",
                "pay*",
                PolicyAction::Block,
                10,
                Some("tool == 'x'"),
            ),
        ])
        .unwrap();
        let args = json!({});
        assert_eq!(
            eval(&set, &input("payout", &args, "standard"))
                .unwrap()
                .name,
            "old block"
        );
        assert!(eval(&set, &input("search", &args, "standard")).is_none());
    }

    fn eval<'a>(set: &'a PolicySet, input: &EvalInput) -> Option<&'a Policy> {
        set.evaluate(
            input,
            &Budget::new(1_000_000, std::time::Duration::from_secs(10)),
        )
        .unwrap()
    }

    fn condition_error(source: &str) -> String {
        let e = compile_condition(source).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidCondition, "{e}");
        e.to_string()
    }

    #[test]
    fn costly_shapes_are_refused_when_saved() {
        // Two nested comprehensions are fine; three are not.
        assert!(compile_condition("args.a.all(x, args.b.exists(y, x == y))").is_ok());
        let nested = "args.a.all(x, args.b.all(y, args.c.exists(z, x == y && y == z)))";
        assert!(condition_error(nested).contains("comprehensions"));
        // A comprehension over another's result runs after it, not inside it.
        assert!(compile_condition("args.a.map(x, x).filter(y, y > 1).all(z, z < 9)").is_ok());
        let deep = format!(
            "{}risk{} > 0.0",
            "(risk + ".repeat(MAX_DEPTH),
            ")".repeat(MAX_DEPTH)
        );
        let e = compile_condition(&deep).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidCondition);
        let fine = format!("{}risk{} > 0.0", "(risk + ".repeat(20), ")".repeat(20));
        assert!(compile_condition(&fine).is_ok());
        let list = (0..=MAX_LITERAL_ELEMENTS)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert!(condition_error(&format!("risk in [{list}]")).contains("list literal"));
        let text = "x".repeat(MAX_LITERAL_CHARS + 1);
        assert!(condition_error(&format!("tool.name == '{text}'")).contains("string literal"));
        assert!(condition_error("__countersign_step()").contains("may not call"));
    }

    #[test]
    fn only_comprehensions_over_large_arguments_are_costly() {
        let plain = PolicySet::compile(vec![policy(
            "big amounts",
            "*",
            PolicyAction::Block,
            1,
            Some("args.amount > 100 && tool.name.startsWith('pay')"),
        )])
        .unwrap();
        let iterating = PolicySet::compile(vec![policy(
            "pairs",
            "*",
            PolicyAction::Allow,
            1,
            Some("args.items.all(x, x > 0)"),
        )])
        .unwrap();
        let small = json!({"items": (0..10).collect::<Vec<_>>()});
        let large = json!({"items": (0..INLINE_VALUES).collect::<Vec<_>>()});
        assert!(is_small(&small));
        assert!(!is_small(&large));
        assert!(!plain.may_be_costly(&large));
        assert!(!iterating.may_be_costly(&small));
        assert!(iterating.may_be_costly(&large));
    }

    #[test]
    fn quadratic_conditions_run_out_of_budget_and_block() {
        let set = PolicySet::compile(vec![
            policy(
                "pairs",
                "*",
                PolicyAction::Allow,
                10,
                Some("args.items.all(x, args.items.exists(y, x == y))"),
            ),
            policy("rest", "*", PolicyAction::RequireApproval, 0, None),
        ])
        .unwrap();
        let small = json!({"items": (0..10).collect::<Vec<_>>()});
        assert_eq!(
            eval(&set, &input("t", &small, "standard")).unwrap().name,
            "pairs"
        );
        // 30,000 elements: about 450 million steps; the budget stops it after 100,000.
        let big = json!({"items": (0..30_000).collect::<Vec<_>>()});
        let started = std::time::Instant::now();
        let over = set
            .evaluate(
                &input("t", &big, "standard"),
                &Budget::new(100_000, std::time::Duration::from_secs(30)),
            )
            .unwrap_err();
        assert_eq!(over.policy_name, "pairs");
        assert!(over.reason().contains("budget"));
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        // The deadline stops it too, however many steps are left.
        let started = std::time::Instant::now();
        let over = set.evaluate(
            &input("t", &big, "standard"),
            &Budget::new(u64::MAX, std::time::Duration::from_millis(50)),
        );
        assert!(over.is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // A linear condition over the same input fits the budget.
        let linear = PolicySet::compile(vec![policy(
            "bounded",
            "*",
            // Allow: a condition that fails to evaluate would not match.
            PolicyAction::Allow,
            0,
            Some("args.items.exists(x, x < 0) || args.items.map(x, double(x) * 2.0).filter(x, x > 59990.0).size() > 0"),
        )])
        .unwrap();
        assert_eq!(
            linear
                .evaluate(
                    &input("t", &big, "standard"),
                    &Budget::new(100_000, std::time::Duration::from_secs(30)),
                )
                .unwrap()
                .unwrap()
                .name,
            "bounded"
        );
    }

    #[test]
    fn a_stored_condition_over_the_limits_fails_closed() {
        // Saved before the limits existed: the set still compiles, and the condition fails
        // closed (block matches, allow does not).
        let too_nested = "args.a.all(x, args.a.all(y, args.a.all(z, x == y && y == z)))";
        let set = PolicySet::compile(vec![
            policy("old allow", "*", PolicyAction::Allow, 20, Some(too_nested)),
            policy(
                "old block",
                "pay*",
                PolicyAction::Block,
                10,
                Some(too_nested),
            ),
        ])
        .unwrap();
        let args = json!({"a": [1]});
        assert_eq!(
            eval(&set, &input("payout", &args, "standard"))
                .unwrap()
                .name,
            "old block"
        );
        assert!(eval(&set, &input("search", &args, "standard")).is_none());
    }

    #[test]
    fn every_kind_of_comprehension_draws_from_the_budget() {
        let items = json!({"items": (0..1_000).collect::<Vec<_>>()});
        for condition in [
            "args.items.all(x, x >= 0)",
            "!args.items.exists(x, x < 0)",
            "!args.items.exists_one(x, x == -1.0)",
            "args.items.map(x, string(x)).size() > 0",
            "args.items.filter(x, x > -1).size() > 0",
            "args.items.map(x, x > 0, x).size() > 0",
        ] {
            let set = PolicySet::compile(vec![policy(
                "p",
                "*",
                PolicyAction::Allow,
                0,
                Some(condition),
            )])
            .unwrap();
            let budget = Budget::new(500, std::time::Duration::from_secs(30));
            assert!(
                set.evaluate(&input("t", &items, "standard"), &budget)
                    .is_err(),
                "{condition} did not draw from the budget"
            );
            let budget = Budget::new(5_000, std::time::Duration::from_secs(30));
            let matched = set.evaluate(&input("t", &items, "standard"), &budget);
            assert!(
                matches!(matched, Ok(Some(_))),
                "{condition} drew too much or failed: {matched:?}"
            );
        }
    }

    fn config(policies: Vec<Policy>) -> Arc<GuardConfig> {
        Arc::new(GuardConfig {
            policies: PolicySet::compile(policies).unwrap(),
            settings: Default::default(),
            routing: Default::default(),
        })
    }

    fn miss(cache: &GuardCache, tenant: &str) -> Generation {
        match cache.lookup(tenant) {
            Cached::Miss(generation) => generation,
            Cached::Hit(_) => panic!("expected nothing cached for {tenant}"),
        }
    }

    #[test]
    fn a_load_that_a_change_overtook_is_not_cached() {
        let cache = GuardCache::default();
        // A reader loads the old configuration (no policies)...
        let generation = miss(&cache, "t");
        let stale = config(vec![]);
        // ...a block policy lands and invalidates before the reader stores its load.
        cache.invalidate("t");
        assert!(!cache.put("t", generation, stale));
        // The next reader loads afresh and sees the block policy.
        let generation = miss(&cache, "t");
        let fresh = config(vec![policy("stop", "*", PolicyAction::Block, 0, None)]);
        assert!(cache.put("t", generation, fresh));
        match cache.lookup("t") {
            Cached::Hit(c) => assert_eq!(c.policies.len(), 1),
            Cached::Miss(_) => panic!("the fresh load should be cached"),
        }
        // Another tenant's change does not make this tenant's loads stale.
        cache.invalidate("t");
        let generation = miss(&cache, "t");
        cache.invalidate("other");
        assert!(cache.put("t", generation, config(vec![])));
    }

    #[test]
    fn a_resync_makes_every_load_in_flight_stale() {
        let cache = GuardCache::default();
        let a = miss(&cache, "a");
        let b = miss(&cache, "b");
        cache.clear();
        assert!(!cache.put("a", a, config(vec![])));
        assert!(!cache.put("b", b, config(vec![])));
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
            eval(&set, &input("tool_7_x", &json!({}), "standard"))
                .unwrap()
                .name,
            "p7"
        );
        assert!(eval(&set, &input("other", &json!({}), "standard")).is_none());
    }
}
