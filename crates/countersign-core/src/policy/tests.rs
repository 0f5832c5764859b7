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
