use chrono::{Duration, TimeZone};
use countersign_proto::TrustLevel;
use countersign_proto::guard::{
    EscalationRule, GuardSettings, MemberRole, RoutingCondition, RoutingRule, RoutingRules,
    TrustRule,
};
use serde_json::{Value, json};

use super::*;
use crate::policy::{Budget, EvalInput, PolicySet};
use crate::routing::{EscalationStep, Member};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

fn policy(name: &str, pattern: &str, action: PolicyAction, condition: Option<&str>) -> Policy {
    Policy {
        id: format!("pol_{name}"),
        tenant_id: "t".into(),
        name: name.into(),
        description: None,
        tool_pattern: pattern.into(),
        action,
        priority: 0,
        is_active: true,
        condition: condition.map(str::to_string),
        approval: ApprovalConfig::default(),
        created_at: now(),
        updated_at: now(),
    }
}

fn config(policies: Vec<Policy>, settings: GuardSettings, rules: Vec<RoutingRule>) -> GuardConfig {
    GuardConfig {
        policies: PolicySet::compile(policies).unwrap(),
        settings,
        routing: RoutingRules {
            routing_rules: rules,
        },
    }
}

fn agent(trust_level: TrustLevel) -> Agent {
    Agent {
        id: "agt_1".into(),
        tenant_id: "t".into(),
        name: "bot".into(),
        trust_level,
        disabled: false,
        created_at: now(),
    }
}

fn call(name: &str, arguments: Value) -> ToolCall {
    ToolCall {
        name: name.into(),
        arguments,
        arguments_sha256: "0".repeat(64),
    }
}

/// Runs the conditions the way the server does (within a step budget), then the verdict.
fn judge(
    config: &GuardConfig,
    agent: &Agent,
    call: ToolCall,
    risk: f64,
    scope: Option<&str>,
    max_steps: u64,
) -> Evaluation {
    let risk = RiskAssessment {
        score: risk,
        threats: Vec::new(),
    };
    let trust = agent.trust_level.as_str().to_string();
    let input = EvalInput {
        tool: &call.name,
        args: &call.arguments,
        agent_id: &agent.id,
        agent_name: &agent.name,
        trust_level: &trust,
        session: "s",
        risk: risk.score,
        threats: &risk.threats,
        scope: scope.unwrap_or_default(),
        annotations: None,
        mcp_server: "",
    };
    let matched = config
        .policies
        .evaluate(
            &input,
            &Budget::new(max_steps, std::time::Duration::from_secs(30)),
        )
        .map(|p| p.cloned())
        .map_err(|over| over.reason());
    evaluate(config, agent, call, risk, scope, matched)
}

fn simple(config: &GuardConfig, tool: &str) -> Evaluation {
    judge(
        config,
        &agent(TrustLevel::Standard),
        call(tool, json!({})),
        0.1,
        None,
        100_000,
    )
}

fn group(id: &str, escalation_minutes: Option<u32>, members: &[(&str, MemberRole)]) -> Group {
    Group {
        id: id.into(),
        tenant_id: "t".into(),
        name: id.into(),
        escalation_minutes,
        members: members
            .iter()
            .map(|(user, role)| Member {
                user_id: (*user).into(),
                email: format!("{user}@example.com"),
                role: *role,
            })
            .collect(),
        created_at: now(),
        updated_at: now(),
    }
}

fn rule(tool_pattern: Option<&str>, risk_score_min: Option<f64>, group: &str) -> RoutingRule {
    RoutingRule {
        condition: RoutingCondition {
            risk_score_min,
            tool_pattern: tool_pattern.map(str::to_string),
        },
        approval_group: group.into(),
    }
}

fn needs_approval(group: Option<&str>) -> Policy {
    let mut p = policy("review", "*", PolicyAction::RequireApproval, None);
    p.approval.approval_group_id = group.map(str::to_string);
    p
}

#[test]
fn a_matching_policy_decides_and_otherwise_the_tenant_default() {
    let settings = GuardSettings {
        default_action: PolicyAction::Block,
        ..GuardSettings::default()
    };
    let config = config(
        vec![policy("reads", "read_*", PolicyAction::Allow, None)],
        settings,
        Vec::new(),
    );
    let read = simple(&config, "read_file");
    assert_eq!(read.action, PolicyAction::Allow);
    assert_eq!(read.message, "decided by policy \"reads\"");
    let write = simple(&config, "write_file");
    assert_eq!(write.action, PolicyAction::Block);
    assert!(write.policy.is_none());
    assert_eq!(
        write.message,
        "no policy matched; the tenant default applies"
    );
}

#[test]
fn conditions_that_cannot_finish_block_the_call() {
    let config = config(
        vec![policy(
            "pairs",
            "*",
            PolicyAction::Allow,
            Some("args.items.all(x, args.items.exists(y, x == y))"),
        )],
        GuardSettings::default(),
        Vec::new(),
    );
    let items = json!({"items": (0..1_000).collect::<Vec<_>>()});
    let e = judge(
        &config,
        &agent(TrustLevel::Standard),
        call("t", items),
        0.1,
        None,
        1_000,
    );
    assert_eq!(e.action, PolicyAction::Block);
    assert!(e.policy.is_none());
    assert!(e.message.contains("budget"), "{}", e.message);
    // A trust rule does not turn the block into an approval.
    assert_eq!(e.fallback, ApprovalConfig::default());
}

#[test]
fn a_condition_that_fails_to_evaluate_fails_closed() {
    // `args.missing.size()` is an error on these arguments: a block policy matches, an
    // allow policy does not.
    let failing = Some("args.missing.size() > 0");
    let config = config(
        vec![
            policy("maybe allow", "safe_*", PolicyAction::Allow, failing),
            policy("maybe block", "pay*", PolicyAction::Block, failing),
        ],
        GuardSettings {
            default_action: PolicyAction::RequireApproval,
            ..GuardSettings::default()
        },
        Vec::new(),
    );
    let pay = simple(&config, "payout");
    assert_eq!(pay.action, PolicyAction::Block);
    assert_eq!(pay.policy.map(|p| p.name).as_deref(), Some("maybe block"));
    let safe = simple(&config, "safe_read");
    assert_eq!(safe.action, PolicyAction::RequireApproval);
    assert!(safe.policy.is_none());
}

#[test]
fn trust_rules_turn_allowed_calls_into_approvals() {
    let settings = GuardSettings {
        default_approval_group_id: Some("grp_default".into()),
        default_timeout_minutes: 45,
        trust_rules: vec![
            TrustRule {
                trust_levels: vec![TrustLevel::Restricted],
                tool_patterns: vec!["deploy_*".into()],
                scopes: Vec::new(),
                approval_group_id: Some("grp_ops".into()),
            },
            TrustRule {
                trust_levels: vec![TrustLevel::Restricted, TrustLevel::Development],
                tool_patterns: Vec::new(),
                scopes: vec!["payments".into()],
                approval_group_id: None,
            },
        ],
        ..GuardSettings::default()
    };
    let config = config(
        vec![policy("no deletes", "delete_*", PolicyAction::Block, None)],
        settings,
        Vec::new(),
    );
    let restricted = agent(TrustLevel::Restricted);
    let run = |tool: &str, who: &Agent, scope: Option<&str>| {
        judge(&config, who, call(tool, json!({})), 0.1, scope, 100_000)
    };
    // The first rule that applies names its group.
    let deploy = run("deploy_app", &restricted, None);
    assert_eq!(deploy.action, PolicyAction::RequireApproval);
    assert_eq!(
        deploy.message,
        "agents of trust level restricted always need approval for this"
    );
    assert_eq!(
        deploy.fallback.approval_group_id.as_deref(),
        Some("grp_ops")
    );
    assert_eq!(deploy.fallback.timeout_minutes, 45);
    // A rule without a group keeps the tenant's default group; scopes match too.
    let pay = run("charge", &restricted, Some("payments"));
    assert_eq!(pay.action, PolicyAction::RequireApproval);
    assert_eq!(
        pay.fallback.approval_group_id.as_deref(),
        Some("grp_default")
    );
    // Other trust levels, tools and scopes are left alone.
    assert_eq!(
        run("deploy_app", &agent(TrustLevel::Standard), None).action,
        PolicyAction::Allow
    );
    assert_eq!(
        run("charge", &restricted, Some("reports")).action,
        PolicyAction::Allow
    );
    // A block stays a block.
    assert_eq!(
        run("delete_all", &restricted, Some("payments")).action,
        PolicyAction::Block
    );
}

#[test]
fn a_policy_asking_for_approval_brings_its_own_configuration() {
    let mut own = needs_approval(Some("grp_policy"));
    own.approval.required_approvals = 2;
    let with_policy = config(
        vec![own],
        GuardSettings {
            default_approval_group_id: Some("grp_default".into()),
            ..GuardSettings::default()
        },
        Vec::new(),
    );
    let e = simple(&with_policy, "anything");
    assert_eq!(
        e.approval_config().approval_group_id.as_deref(),
        Some("grp_policy")
    );
    assert_eq!(e.approval_config().required_approvals, 2);
    // The tenant default applies when no policy asks.
    let config = config(
        Vec::new(),
        GuardSettings {
            default_action: PolicyAction::RequireApproval,
            default_approval_group_id: Some("grp_default".into()),
            ..GuardSettings::default()
        },
        Vec::new(),
    );
    let e = simple(&config, "anything");
    assert_eq!(
        e.approval_config().approval_group_id.as_deref(),
        Some("grp_default")
    );
}

#[test]
fn the_first_matching_routing_rule_wins_else_the_policys_group() {
    let config = config(
        vec![needs_approval(Some("grp_policy"))],
        GuardSettings::default(),
        vec![
            rule(Some("pay*"), Some(0.8), "grp_risky_payments"),
            rule(Some("pay*"), None, "grp_payments"),
            rule(None, Some(0.5), "grp_risky"),
        ],
    );
    let routed = |tool: &str, risk: f64| {
        let e = judge(
            &config,
            &agent(TrustLevel::Standard),
            call(tool, json!({})),
            risk,
            None,
            100_000,
        );
        route(&config, &e).map(|r| r.group_id)
    };
    assert_eq!(routed("payout", 0.9).as_deref(), Ok("grp_risky_payments"));
    assert_eq!(routed("payout", 0.6).as_deref(), Ok("grp_payments"));
    assert_eq!(routed("search", 0.6).as_deref(), Ok("grp_risky"));
    assert_eq!(routed("search", 0.1).as_deref(), Ok("grp_policy"));
}

#[test]
fn an_approval_without_a_group_is_a_block() {
    let config = config(
        vec![needs_approval(None)],
        GuardSettings::default(),
        vec![rule(Some("pay*"), None, "grp_payments")],
    );
    let e = simple(&config, "search");
    assert_eq!(
        route(&config, &e),
        Err(Blocked(
            "blocked: approval is required but no approval group is configured".into()
        ))
    );
    // A routing rule still routes what it matches.
    assert!(route(&config, &simple(&config, "payout")).is_ok());
}

#[test]
fn an_approval_routed_to_a_missing_group_is_a_block() {
    let config = config(
        vec![needs_approval(Some("grp_gone"))],
        GuardSettings::default(),
        Vec::new(),
    );
    let routed = route(&config, &simple(&config, "search")).unwrap();
    assert_eq!(
        routed.found(None),
        Err(Blocked(
            "blocked: approval is required but approval group \"grp_gone\" no longer exists".into()
        ))
    );
}

#[test]
fn escalation_makes_backups_and_other_groups_eligible_later() {
    let mut p = needs_approval(Some("grp_main"));
    p.approval.required_approvals = 2;
    p.approval.allow_self_approval = true;
    p.approval.escalation_rules = vec![
        EscalationRule {
            after_minutes: 30,
            escalate_to: "grp_leads".into(),
        },
        EscalationRule {
            after_minutes: 5,
            escalate_to: "grp_deleted".into(),
        },
    ];
    let config = config(vec![p], GuardSettings::default(), Vec::new());
    let main = group(
        "grp_main",
        Some(10),
        &[
            ("usr_primary", MemberRole::Primary),
            ("usr_backup", MemberRole::Backup),
        ],
    );
    // A lead who is also a backup becomes eligible at the earlier of the two.
    let leads = group(
        "grp_leads",
        None,
        &[
            ("usr_lead", MemberRole::Primary),
            ("usr_backup", MemberRole::Primary),
        ],
    );
    let reviewing = route(&config, &simple(&config, "deploy"))
        .unwrap()
        .found(Some(main))
        .unwrap();
    assert_eq!(
        reviewing.escalation_group_ids().collect::<Vec<_>>(),
        ["grp_leads", "grp_deleted"]
    );
    let groups = BTreeMap::from([("grp_leads".to_string(), leads)]);
    let plan = reviewing.plan(&groups, now());
    assert_eq!(
        plan.reviewers.reviewers,
        vec![
            ("usr_backup".to_string(), now() + Duration::minutes(10)),
            ("usr_lead".to_string(), now() + Duration::minutes(30)),
            ("usr_primary".to_string(), now()),
        ]
    );
    let at = |minutes: i64| (now() + Duration::minutes(minutes)).timestamp_millis();
    let steps = vec![
        EscalationStep {
            at_ms: at(5),
            kind: "group".into(),
            group_id: "grp_deleted".into(),
        },
        EscalationStep {
            at_ms: at(10),
            kind: "backups".into(),
            group_id: "grp_main".into(),
        },
        EscalationStep {
            at_ms: at(30),
            kind: "group".into(),
            group_id: "grp_leads".into(),
        },
    ];
    assert_eq!(plan.reviewers.steps, steps);
    assert_eq!(
        plan.rules,
        DecisionRules {
            approval_group_id: Some("grp_main".into()),
            required_approvals: 2,
            allow_self_approval: true,
            default_on_timeout: Default::default(),
            escalation_level: 0,
            escalation_plan: steps,
        }
    );
}

#[test]
fn backups_without_a_delay_are_eligible_at_once_and_nothing_escalates() {
    let config = config(
        vec![needs_approval(Some("grp_main"))],
        GuardSettings::default(),
        Vec::new(),
    );
    let main = group(
        "grp_main",
        None,
        &[
            ("usr_a", MemberRole::Primary),
            ("usr_b", MemberRole::Backup),
        ],
    );
    let plan = route(&config, &simple(&config, "deploy"))
        .unwrap()
        .found(Some(main))
        .unwrap()
        .plan(&BTreeMap::new(), now());
    assert_eq!(
        plan.reviewers.reviewers,
        vec![("usr_a".to_string(), now()), ("usr_b".to_string(), now())]
    );
    assert!(plan.reviewers.steps.is_empty());
    assert!(plan.rules.escalation_plan.is_empty());
}

#[test]
fn decisions_name_the_policy_and_the_risk() {
    let config = config(
        vec![policy("reads", "read_*", PolicyAction::Allow, None)],
        GuardSettings::default(),
        Vec::new(),
    );
    let e = simple(&config, "read_file");
    let d = e.decision(PolicyAction::Allow, "allowed".into());
    assert_eq!(d.policy_matched.as_deref(), Some("reads"));
    assert_eq!(d.risk_score, 0.1);
    assert!(d.approval_id.is_none());
}
