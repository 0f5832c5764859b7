//! The guard: the seed's tool-call approvals, then beyond it.
use std::time::{Duration, Instant};

use countersign_client::Client;
use countersign_proto::ApprovalStatus;
use countersign_proto::guard::{
    ApprovalConfig, EscalationRule, GroupInput, GuardSettings, HistoryQuery, MemberInput,
    MemberRole, PolicyAction, PolicyInput, RoutingCondition, RoutingRule, RoutingRules,
    TimeoutOutcome, ToolRequest, TrustRule,
};
use serde_json::{Value, json};

use crate::support::*;

const P: &str = "default";

struct People {
    agent: Client,
    agent_id: String,
    alice: Client,
    bob: Client,
    carol: Client,
    dave: Client,
    alice_id: String,
}

async fn people(app: &TestApp) -> People {
    let (alice_id, alice) = app.reviewer("alice@company.com").await;
    let (_, bob) = app.reviewer("bob@company.com").await;
    let (_, carol) = app.reviewer("carol@company.com").await;
    let (_, dave) = app.reviewer("dave@company.com").await;
    let (agent_id, agent) = app.agent("support-bot").await;
    People {
        agent,
        agent_id,
        alice,
        bob,
        carol,
        dave,
        alice_id,
    }
}

fn member(email: &str, role: MemberRole) -> MemberInput {
    MemberInput {
        email: email.into(),
        role,
    }
}

async fn group(app: &TestApp, id: &str, members: Vec<MemberInput>, escalation: Option<u32>) {
    app.admin
        .create_group(
            P,
            &GroupInput {
                id: Some(id.into()),
                name: id.into(),
                members,
                escalation_minutes: escalation,
            },
        )
        .await
        .unwrap();
}

fn policy(name: &str, pattern: &str, action: PolicyAction, config: ApprovalConfig) -> PolicyInput {
    PolicyInput {
        name: name.into(),
        tool_pattern: pattern.into(),
        action,
        description: None,
        priority: None,
        is_active: None,
        condition: None,
        approval_config: Some(config),
    }
}

fn approval(group: &str) -> ApprovalConfig {
    ApprovalConfig {
        approval_group_id: Some(group.into()),
        ..ApprovalConfig::default()
    }
}

fn call(name: &str, args: Value) -> ToolRequest {
    ToolRequest {
        session_id: "session_123".into(),
        tool_call: json!({"name": name, "arguments": args}),
        scope: None,
        reason: None,
        on_behalf_of: None,
        annotations: None,
        mcp: None,
    }
}

async fn finance(app: &TestApp) -> People {
    let p = people(app).await;
    group(
        app,
        "group_finance",
        vec![
            member("alice@company.com", MemberRole::Primary),
            member("bob@company.com", MemberRole::Backup),
        ],
        Some(15),
    )
    .await;
    app.admin
        .create_policy(
            P,
            &policy(
                "Approve Financial Operations",
                "payment_*",
                PolicyAction::RequireApproval,
                approval("group_finance"),
            ),
        )
        .await
        .unwrap();
    p
}

#[tokio::test]
async fn the_seed_examples_work_as_written() {
    let app = spawn_app().await;
    let _people = people(&app).await;
    let http = app.http();
    let post = |path: &str, key: &str, body: Value| {
        http.post(app.url(path))
            .bearer_auth(key.to_string())
            .json(&body)
            .send()
    };
    // 3. Set up approval groups (the seed's body, with the id the seed's policy refers to).
    let res = post(
        "/v1/guard/default/approval-groups",
        ADMIN_KEY,
        json!({"id": "group_finance", "name": "Finance Team",
               "members": [{"email": "alice@company.com", "role": "primary"}, {"email": "bob@company.com", "role": "backup"}],
               "escalation_minutes": 15}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 201);
    let group: Value = res.json().await.unwrap();
    assert_eq!(group["members"].as_array().unwrap().len(), 2);
    // 1. Create a policy with approval, exactly the seed's body.
    let res = post(
        "/v1/guard/default/policies",
        ADMIN_KEY,
        json!({"name": "Approve Financial Operations", "tool_pattern": "payment_*", "action": "require_approval",
               "approval_config": {"timeout_minutes": 30, "notification_channels": ["email"], "approval_group_id": "group_finance"}}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    assert!(created["id"].as_str().unwrap().starts_with("pol_"));
    assert_eq!(created["approval_config"]["default_on_timeout"], "reject");

    // The agent validates a tool call.
    let agent_key = _people.agent.key().unwrap().to_string();
    let res = post(
        "/v1/guard/default/tool",
        &agent_key,
        json!({"session_id": "session_123", "tool_call": {"name": "payment_refund", "arguments": {"amount": 500, "customer_id": "cust_123"}}}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let decision: Value = res.json().await.unwrap();
    assert_eq!(decision["action"], "require_approval");
    assert_eq!(decision["message"], "This operation requires approval");
    let approval_id = decision["approval_id"].as_str().unwrap().to_string();
    assert!(approval_id.starts_with("apr_"));
    assert!(decision["expires_at"].is_string());
    assert!(decision["risk_score"].is_number());
    assert!(decision["threats_detected"].is_array());
    assert_eq!(decision["policy_matched"], "Approve Financial Operations");

    // Poll for the decision.
    let poll = || {
        http.get(app.url(&format!("/v1/guard/default/approvals/{approval_id}")))
            .bearer_auth(agent_key.clone())
            .send()
    };
    let pending: Value = poll().await.unwrap().json().await.unwrap();
    assert_eq!(pending["status"], "pending");

    // Programmatic approval, the seed's body.
    let alice_key = _people.alice.key().unwrap().to_string();
    let res = post(
        &format!("/v1/guard/default/approvals/{approval_id}/approve"),
        &alice_key,
        json!({"comment": "Verified with customer support ticket #1234"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let approved: Value = poll().await.unwrap().json().await.unwrap();
    assert_eq!(approved["approval_id"], approval_id.as_str());
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["approved_by"], "alice@company.com");
    assert!(approved["approved_at"].is_string());
    assert_eq!(
        approved["comment"],
        "Verified with customer support ticket #1234"
    );

    // Reject, the seed's body, on a second call.
    let res = post(
        "/v1/guard/default/tool",
        &agent_key,
        json!({"session_id": "session_123", "tool_call": {"name": "payment_refund", "arguments": {"amount": 900}}}),
    )
    .await
    .unwrap();
    let second: Value = res.json().await.unwrap();
    let second_id = second["approval_id"].as_str().unwrap();
    let res = post(
        &format!("/v1/guard/default/approvals/{second_id}/reject"),
        &alice_key,
        json!({"reason": "Suspicious activity detected"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let rejected: Value = res.json().await.unwrap();
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(rejected["reason"], "Suspicious activity detected");

    // The audit trail of approvals, the seed's shape.
    let history: Value = http
        .get(app.url("/v1/guard/default/approvals/history"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = history["approvals"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let first = items
        .iter()
        .find(|i| i["approval_id"] == approval_id.as_str())
        .unwrap();
    assert_eq!(first["tool_name"], "payment_refund");
    assert_eq!(first["status"], "approved");
    assert_eq!(first["decided_by"], "alice@company.com");
    assert_eq!(
        first["comment"],
        "Verified with customer support ticket #1234"
    );
    assert!(first["requested_at"].is_string() && first["decided_at"].is_string());
}

#[tokio::test]
async fn each_tool_call_shape_is_understood_and_resubmission_is_idempotent() {
    let app = spawn_app().await;
    let p = finance(&app).await;
    let shapes = [
        json!({"name": "payment_refund", "arguments": {"amount": 500, "customer_id": "c1"}}),
        json!({"id": "call_1", "type": "function", "function": {"name": "payment_refund", "arguments": "{\"customer_id\":\"c1\",\"amount\":500}"}}),
        json!({"type": "tool_use", "id": "toolu_1", "name": "payment_refund", "input": {"customer_id": "c1", "amount": 500}}),
    ];
    let mut ids = Vec::new();
    for shape in shapes {
        let d = p
            .agent
            .guard_tool(
                P,
                &ToolRequest {
                    tool_call: shape,
                    ..call("x", json!({}))
                },
            )
            .await
            .unwrap();
        assert_eq!(d.action, PolicyAction::RequireApproval);
        ids.push(d.approval_id.unwrap());
    }
    // The same canonical call from the same session is one pending approval.
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    // Different arguments, or another session, are another approval.
    let other = p
        .agent
        .guard_tool(
            P,
            &call(
                "payment_refund",
                json!({"amount": 501, "customer_id": "c1"}),
            ),
        )
        .await
        .unwrap();
    assert_ne!(other.approval_id.unwrap(), ids[0]);
    let mut elsewhere = call(
        "payment_refund",
        json!({"amount": 500, "customer_id": "c1"}),
    );
    elsewhere.session_id = "session_456".into();
    assert_ne!(
        p.agent
            .guard_tool(P, &elsewhere)
            .await
            .unwrap()
            .approval_id
            .unwrap(),
        ids[0]
    );
    // Once decided, the same call opens a new approval.
    p.alice.guard_approve(P, &ids[0], None).await.unwrap();
    let again = p
        .agent
        .guard_tool(
            P,
            &call(
                "payment_refund",
                json!({"amount": 500, "customer_id": "c1"}),
            ),
        )
        .await
        .unwrap();
    assert_ne!(again.approval_id.unwrap(), ids[0]);
    // Bad shapes are explained.
    for bad in [
        json!({"type": "function", "function": {"name": "x", "arguments": "{oops"}}),
        json!({"arguments": {}}),
        json!([1]),
    ] {
        let err = p
            .agent
            .guard_tool(
                P,
                &ToolRequest {
                    tool_call: bad,
                    ..call("x", json!({}))
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("invalid_request"), "{err}");
    }
}

#[tokio::test]
async fn patterns_priorities_conditions_and_trust_levels_decide() {
    let app = spawn_app().await;
    let p = finance(&app).await;
    let admin = &app.admin;
    let mut big = policy(
        "Block big refunds",
        "payment_refund",
        PolicyAction::Block,
        ApprovalConfig::default(),
    );
    big.priority = Some(100);
    big.condition = Some("args.amount > 10000".into());
    admin.create_policy(P, &big).await.unwrap();
    let mut reads = policy(
        "Reads are fine",
        "get_*",
        PolicyAction::Allow,
        ApprovalConfig::default(),
    );
    reads.priority = Some(5);
    admin.create_policy(P, &reads).await.unwrap();
    let mut inactive = policy(
        "Inactive",
        "*",
        PolicyAction::Block,
        ApprovalConfig::default(),
    );
    inactive.priority = Some(1000);
    inactive.is_active = Some(false);
    admin.create_policy(P, &inactive).await.unwrap();

    let d = p
        .agent
        .guard_tool(P, &call("payment_refund", json!({"amount": 50000})))
        .await
        .unwrap();
    assert_eq!(
        (d.action, d.policy_matched.as_deref()),
        (PolicyAction::Block, Some("Block big refunds"))
    );
    assert!(
        d.threats_detected
            .contains(&"financial_operation".to_string())
    );
    let d = p
        .agent
        .guard_tool(P, &call("payment_refund", json!({"amount": 50})))
        .await
        .unwrap();
    assert_eq!(d.action, PolicyAction::RequireApproval);
    let d = p
        .agent
        .guard_tool(P, &call("get_customer", json!({"id": 1})))
        .await
        .unwrap();
    assert_eq!(
        (d.action, d.policy_matched.as_deref()),
        (PolicyAction::Allow, Some("Reads are fine"))
    );
    // No policy: the tenant default (allow), then a stricter default.
    let d = p
        .agent
        .guard_tool(P, &call("search_docs", json!({})))
        .await
        .unwrap();
    assert_eq!((d.action, d.policy_matched), (PolicyAction::Allow, None));
    admin
        .put_guard_settings(
            P,
            &GuardSettings {
                default_action: PolicyAction::Block,
                ..GuardSettings::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        p.agent
            .guard_tool(P, &call("search_docs", json!({})))
            .await
            .unwrap()
            .action,
        PolicyAction::Block
    );

    // Critical agents always need approval for chosen tools, even where a policy allows.
    admin
        .put_guard_settings(
            P,
            &GuardSettings {
                default_approval_group_id: Some("group_finance".into()),
                trust_rules: vec![TrustRule {
                    trust_levels: vec![countersign_proto::TrustLevel::Critical],
                    tool_patterns: vec!["get_*".into()],
                    scopes: vec!["payments".into()],
                    approval_group_id: None,
                }],
                ..GuardSettings::default()
            },
        )
        .await
        .unwrap();
    let critical = app
        .admin
        .create_agent(&countersign_proto::admin::CreateAgent {
            name: "root-bot".into(),
            trust_level: countersign_proto::TrustLevel::Critical,
        })
        .await
        .unwrap();
    let key = app
        .admin
        .create_api_key(&countersign_proto::admin::CreateApiKey {
            role: countersign_proto::admin::KeyRole::Agent,
            agent_id: Some(critical.id.clone()),
            user_id: None,
            name: None,
            audiences: Vec::new(),
        })
        .await
        .unwrap();
    let critical = app.client(&key.key);
    assert_eq!(
        critical
            .guard_tool(P, &call("get_customer", json!({})))
            .await
            .unwrap()
            .action,
        PolicyAction::RequireApproval
    );
    let mut scoped = call("search_docs", json!({}));
    scoped.scope = Some("payments".into());
    assert_eq!(
        critical.guard_tool(P, &scoped).await.unwrap().action,
        PolicyAction::RequireApproval
    );
    // The standard agent is unaffected.
    assert_eq!(
        p.agent
            .guard_tool(P, &call("get_customer", json!({})))
            .await
            .unwrap()
            .action,
        PolicyAction::Allow
    );
    // A condition on the agent's trust level.
    let mut by_trust = policy(
        "Critical agents may not delete",
        "delete_*",
        PolicyAction::Block,
        ApprovalConfig::default(),
    );
    by_trust.condition = Some("agent.trust_level == 'critical'".into());
    admin.create_policy(P, &by_trust).await.unwrap();
    assert_eq!(
        critical
            .guard_tool(P, &call("delete_user", json!({})))
            .await
            .unwrap()
            .action,
        PolicyAction::Block
    );
    assert_eq!(
        p.agent
            .guard_tool(P, &call("delete_user", json!({})))
            .await
            .unwrap()
            .action,
        PolicyAction::Allow
    );

    // The dry run answers the same without creating anything.
    let dry = admin
        .guard_evaluate(
            P,
            &countersign_proto::guard::EvaluateRequest {
                tool_call: json!({"name": "payment_refund", "arguments": {"amount": 50000}}),
                session_id: None,
                scope: None,
                agent_id: None,
                annotations: None,
                mcp: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(dry.action, PolicyAction::Block);
}

#[tokio::test]
async fn invalid_policies_get_4xx_with_codes_and_change_nothing() {
    let app = spawn_app().await;
    let _p = finance(&app).await;
    let http = app.http();
    let cases = [
        (
            json!({"name": "x", "tool_pattern": "*", "action": "allow", "condition": "args.amount >"}),
            422,
            "invalid_condition",
        ),
        (
            json!({"name": "x", "tool_pattern": "*", "action": "allow", "condition": "nope == 1"}),
            422,
            "invalid_condition",
        ),
        (
            json!({"name": "x", "tool_pattern": "*", "action": "allow", "condition": "risk + 'a' == 1"}),
            422,
            "invalid_condition",
        ),
        (
            json!({"name": "x", "tool_pattern": "*", "action": "explode"}),
            422,
            "invalid_body",
        ),
        (
            json!({"name": 5, "tool_pattern": "*", "action": "allow"}),
            422,
            "invalid_body",
        ),
        (
            json!({"name": "x", "tool_pattern": "*", "action": "require_approval",
                "approval_config": {"timeout_minutes": 0, "approval_group_id": "group_finance"}}),
            400,
            "invalid_request",
        ),
        (
            json!({"name": "x", "tool_pattern": "*", "action": "require_approval",
                "approval_config": {"timeout_minutes": 1441, "approval_group_id": "group_finance"}}),
            400,
            "invalid_request",
        ),
        (
            json!({"name": "x", "tool_pattern": "*", "action": "require_approval",
                "approval_config": {"approval_group_id": "group_missing"}}),
            422,
            "unknown_reference",
        ),
        (
            json!({"name": "x", "tool_pattern": "*", "action": "require_approval"}),
            400,
            "invalid_request",
        ),
        (
            json!({"name": "x", "tool_pattern": "*", "action": "require_approval",
                "approval_config": {"approval_group_id": "group_finance", "notification_channels": ["pigeon"]}}),
            400,
            "invalid_request",
        ),
        (
            json!({"name": "x", "tool_pattern": "*", "action": "require_approval",
                "approval_config": {"approval_group_id": "group_finance", "escalation_rules": [{"after_minutes": 5, "escalate_to": "nobody"}]}}),
            422,
            "unknown_reference",
        ),
        (
            json!({"name": "x", "tool_pattern": "[", "action": "allow"}),
            400,
            "invalid_pattern",
        ),
        (
            json!({"name": "x", "tool_pattern": "*", "action": "allow", "approval_config": {"timeout_minutes": "soon"}}),
            422,
            "invalid_body",
        ),
    ];
    for (body, status, code) in cases {
        let res = http
            .post(app.url("/v1/guard/default/policies"))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        let got = res.status().as_u16();
        let err: Value = res.json().await.unwrap();
        assert_eq!(
            (got, err["error"]["code"].as_str().unwrap()),
            (status, code),
            "{body}: {err}"
        );
    }
    let msg = http
        .post(app.url("/v1/guard/default/policies"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "x", "tool_pattern": "*", "action": "allow", "condition": "args.amount >"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert!(
        msg["error"]["message"].as_str().unwrap().contains("1:"),
        "the position is named: {msg}"
    );
    assert_eq!(app.admin.list_policies(P).await.unwrap().policies.len(), 1);

    // Groups and routing rules too.
    let bad_group = app
        .admin
        .create_group(
            P,
            &GroupInput {
                id: None,
                name: "x".into(),
                members: vec![member("stranger@nowhere.com", MemberRole::Primary)],
                escalation_minutes: None,
            },
        )
        .await;
    assert_eq!(code(bad_group), "unknown_reference");
    let bad_rules = app
        .admin
        .put_routing_rules(
            P,
            &RoutingRules {
                routing_rules: vec![RoutingRule {
                    condition: RoutingCondition {
                        risk_score_min: Some(2.0),
                        tool_pattern: None,
                    },
                    approval_group: "group_finance".into(),
                }],
            },
        )
        .await;
    assert_eq!(code(bad_rules), "invalid_request");
    // A group in use cannot be deleted.
    assert_eq!(
        code(app.admin.delete_group(P, "group_finance").await),
        "in_use"
    );
}

#[tokio::test]
async fn routing_sends_calls_to_the_first_matching_group() {
    let app = spawn_app().await;
    let p = finance(&app).await;
    group(
        &app,
        "group_security",
        vec![member("carol@company.com", MemberRole::Primary)],
        None,
    )
    .await;
    group(
        &app,
        "group_general",
        vec![member("dave@company.com", MemberRole::Primary)],
        None,
    )
    .await;
    app.admin
        .create_policy(
            P,
            &policy(
                "Everything else",
                "*",
                PolicyAction::RequireApproval,
                approval("group_finance"),
            ),
        )
        .await
        .unwrap();
    app.admin
        .put_routing_rules(
            P,
            &RoutingRules {
                routing_rules: vec![
                    RoutingRule {
                        condition: RoutingCondition {
                            risk_score_min: Some(0.8),
                            tool_pattern: None,
                        },
                        approval_group: "group_security".into(),
                    },
                    RoutingRule {
                        condition: RoutingCondition {
                            risk_score_min: None,
                            tool_pattern: Some("payment_*".into()),
                        },
                        approval_group: "group_finance".into(),
                    },
                    RoutingRule {
                        condition: RoutingCondition {
                            risk_score_min: None,
                            tool_pattern: Some("*".into()),
                        },
                        approval_group: "group_general".into(),
                    },
                ],
            },
        )
        .await
        .unwrap();
    let risky = p
        .agent
        .guard_tool(
            P,
            &call("payment_delete", json!({"sql": "DROP TABLE users; --"})),
        )
        .await
        .unwrap();
    let payment = p
        .agent
        .guard_tool(P, &call("payment_refund", json!({"amount": 5})))
        .await
        .unwrap();
    let other = p
        .agent
        .guard_tool(P, &call("send_email", json!({"to": "x"})))
        .await
        .unwrap();
    let group_of = |id: &Option<String>| {
        let id = id.clone().unwrap();
        let admin = app.admin.clone();
        async move {
            admin
                .guard_approval(P, &id, None)
                .await
                .unwrap()
                .approval_group
                .unwrap()
        }
    };
    assert_eq!(group_of(&risky.approval_id).await, "group_security");
    assert_eq!(group_of(&payment.approval_id).await, "group_finance");
    assert_eq!(group_of(&other.approval_id).await, "group_general");
    // Only the routed group's members decide.
    assert_eq!(
        p.alice
            .guard_approve(P, risky.approval_id.as_ref().unwrap(), None)
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    p.carol
        .guard_approve(P, risky.approval_id.as_ref().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(
        p.dave
            .guard_approve(P, payment.approval_id.as_ref().unwrap(), None)
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
}

#[tokio::test]
async fn escalation_widens_reviewers_on_time_and_is_recorded() {
    let app = spawn_with_clock().await;
    let clock = app.clock.clone().unwrap();
    let p = people(&app).await;
    group(
        &app,
        "group_finance",
        vec![
            member("alice@company.com", MemberRole::Primary),
            member("bob@company.com", MemberRole::Backup),
        ],
        Some(10),
    )
    .await;
    group(
        &app,
        "group_managers",
        vec![member("carol@company.com", MemberRole::Primary)],
        None,
    )
    .await;
    group(
        &app,
        "group_executives",
        vec![member("dave@company.com", MemberRole::Primary)],
        None,
    )
    .await;
    let config = ApprovalConfig {
        approval_group_id: Some("group_finance".into()),
        timeout_minutes: 30,
        escalation_rules: vec![
            EscalationRule {
                after_minutes: 15,
                escalate_to: "group_managers".into(),
            },
            EscalationRule {
                after_minutes: 25,
                escalate_to: "group_executives".into(),
            },
        ],
        ..ApprovalConfig::default()
    };
    app.admin
        .create_policy(
            P,
            &policy(
                "payments",
                "payment_*",
                PolicyAction::RequireApproval,
                config,
            ),
        )
        .await
        .unwrap();
    let id = p
        .agent
        .guard_tool(P, &call("payment_refund", json!({"amount": 1})))
        .await
        .unwrap()
        .approval_id
        .unwrap();

    let state = &app.server.state;
    // At first only the primary: the backup, managers and executives wait.
    for who in [&p.bob, &p.carol, &p.dave] {
        let err = who.guard_approval(P, &id, None).await.unwrap_err();
        assert_eq!(err.status(), Some(404), "not visible yet");
    }
    assert_eq!(
        p.bob
            .guard_approve(P, &id, None)
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );

    clock.advance(chrono::Duration::minutes(10));
    countersign_server::workers::run_escalations(state)
        .await
        .unwrap();
    assert_eq!(
        app.admin
            .guard_approval(P, &id, None)
            .await
            .unwrap()
            .escalation_level,
        1
    );
    p.bob.guard_approval(P, &id, None).await.unwrap();
    assert_eq!(
        p.carol
            .guard_approve(P, &id, None)
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );

    clock.advance(chrono::Duration::minutes(5));
    countersign_server::workers::run_escalations(state)
        .await
        .unwrap();
    assert_eq!(
        app.admin
            .guard_approval(P, &id, None)
            .await
            .unwrap()
            .escalation_level,
        2
    );
    clock.advance(chrono::Duration::minutes(10));
    countersign_server::workers::run_escalations(state)
        .await
        .unwrap();
    let view = app.admin.guard_approval(P, &id, None).await.unwrap();
    assert_eq!(view.escalation_level, 3);
    let events = app.admin.audit_page(None, Some(500)).await.unwrap().events;
    let escalations: Vec<_> = events
        .iter()
        .filter(|e| e.action == "approval.escalated" && e.subject == id)
        .collect();
    assert_eq!(escalations.len(), 3, "each step recorded once");
    assert_eq!(escalations[2].details["group_id"], "group_executives");
    // The executive may now decide.
    let decided = p
        .dave
        .guard_approve(P, &id, Some("escalated to me"))
        .await
        .unwrap();
    assert_eq!(decided.status, ApprovalStatus::Approved);
    assert_eq!(decided.approved_by.as_deref(), Some("dave@company.com"));
}

#[tokio::test]
async fn timeouts_reject_or_approve_as_configured_and_survive_a_restart() {
    let app = spawn_with_clock().await;
    let clock = app.clock.clone().unwrap();
    let p = finance(&app).await;
    let approve_on_timeout = ApprovalConfig {
        approval_group_id: Some("group_finance".into()),
        timeout_minutes: 5,
        default_on_timeout: TimeoutOutcome::Approve,
        ..ApprovalConfig::default()
    };
    app.admin
        .create_policy(
            P,
            &policy(
                "low risk",
                "notify_*",
                PolicyAction::RequireApproval,
                approve_on_timeout,
            ),
        )
        .await
        .unwrap();
    let rejected = p
        .agent
        .guard_tool(P, &call("payment_refund", json!({"amount": 1})))
        .await
        .unwrap()
        .approval_id
        .unwrap();
    let approved = p
        .agent
        .guard_tool(P, &call("notify_customer", json!({"msg": "hi"})))
        .await
        .unwrap()
        .approval_id
        .unwrap();

    // The server restarts while they wait; the timeouts fire on time after it.
    let app = app.restart().await;
    let agent = app.client(p.agent.key().unwrap());
    clock.advance(chrono::Duration::minutes(31));
    // Before any sweep, reads already show the outcome.
    assert_eq!(
        agent
            .guard_approval(P, &rejected, None)
            .await
            .unwrap()
            .status,
        ApprovalStatus::Expired
    );
    let by_timeout = agent.guard_approval(P, &approved, None).await.unwrap();
    assert_eq!(by_timeout.status, ApprovalStatus::Approved);
    assert_eq!(by_timeout.approved_by.as_deref(), Some("timeout"));
    countersign_server::workers::sweep_expired(&app.server.state)
        .await
        .unwrap();
    assert_eq!(audited(&app, "approval.expired", Some(&rejected)).await, 1);
    assert_eq!(
        audited(&app, "approval.approved_by_timeout", Some(&approved)).await,
        1
    );
    // Deciding afterwards is a conflict; the timeout approval can be redeemed.
    let alice = app.client(p.alice.key().unwrap());
    assert_eq!(
        code(alice.guard_approve(P, &rejected, None).await),
        "already_decided"
    );
    agent.guard_grant(P, &approved).await.unwrap();
    assert_eq!(code(agent.guard_grant(P, &rejected).await), "not_approved");
}

#[tokio::test]
async fn quorum_two_of_three_with_approvals_and_with_a_rejection() {
    let app = spawn_app().await;
    let p = people(&app).await;
    group(
        &app,
        "group_board",
        vec![
            member("alice@company.com", MemberRole::Primary),
            member("bob@company.com", MemberRole::Primary),
            member("carol@company.com", MemberRole::Primary),
        ],
        None,
    )
    .await;
    let config = ApprovalConfig {
        required_approvals: 2,
        ..approval("group_board")
    };
    app.admin
        .create_policy(
            P,
            &policy(
                "two of three",
                "wire_*",
                PolicyAction::RequireApproval,
                config,
            ),
        )
        .await
        .unwrap();

    let first = p
        .agent
        .guard_tool(P, &call("wire_transfer", json!({"amount": 1})))
        .await
        .unwrap()
        .approval_id
        .unwrap();
    let after_one = p
        .alice
        .guard_approve(P, &first, Some("ok by me"))
        .await
        .unwrap();
    assert_eq!(after_one.status, ApprovalStatus::Pending);
    assert_eq!(after_one.decisions.len(), 1);
    assert_eq!(
        code(p.alice.guard_approve(P, &first, None).await),
        "already_voted"
    );
    let after_two = p.bob.guard_approve(P, &first, None).await.unwrap();
    assert_eq!(after_two.status, ApprovalStatus::Approved);
    assert_eq!(after_two.decisions.len(), 2);
    assert_eq!(after_two.decisions[0].reviewer, "alice@company.com");
    assert_eq!(
        code(p.carol.guard_approve(P, &first, None).await),
        "already_decided"
    );

    let second = p
        .agent
        .guard_tool(P, &call("wire_transfer", json!({"amount": 2})))
        .await
        .unwrap()
        .approval_id
        .unwrap();
    p.alice.guard_approve(P, &second, None).await.unwrap();
    let rejected = p
        .carol
        .guard_reject(P, &second, Some("not this one"))
        .await
        .unwrap();
    assert_eq!(rejected.status, ApprovalStatus::Rejected);
    assert_eq!(rejected.reason.as_deref(), Some("not this one"));
    assert_eq!(rejected.decisions.len(), 2);
}

#[tokio::test]
async fn separation_of_duties_eligibility_and_agents_never_decide() {
    let app = spawn_app().await;
    let p = finance(&app).await;
    let mut own = call("payment_refund", json!({"amount": 5}));
    own.on_behalf_of = Some("alice@company.com".into());
    let id = p
        .agent
        .guard_tool(P, &own)
        .await
        .unwrap()
        .approval_id
        .unwrap();
    let err = p.alice.guard_approve(P, &id, None).await.unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert!(err.to_string().contains("acts for"), "{err}");
    // Not a member: 403. The agent: 403. An admin: only if the tenant allows it.
    assert_eq!(
        p.dave
            .guard_approve(P, &id, None)
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    assert_eq!(
        p.agent
            .guard_approve(P, &id, None)
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    assert_eq!(
        app.admin
            .guard_approve(P, &id, None)
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    app.admin
        .put_guard_settings(
            P,
            &GuardSettings {
                admins_can_decide: true,
                ..GuardSettings::default()
            },
        )
        .await
        .unwrap();
    app.admin
        .guard_reject(P, &id, Some("admin says no"))
        .await
        .unwrap();

    // When the policy allows self-approval, the requester may approve.
    let self_ok = ApprovalConfig {
        allow_self_approval: true,
        ..approval("group_finance")
    };
    app.admin
        .create_policy(
            P,
            &policy(
                "self service",
                "expense_*",
                PolicyAction::RequireApproval,
                self_ok,
            ),
        )
        .await
        .unwrap();
    let mut own = call("expense_submit", json!({"amount": 5}));
    own.on_behalf_of = Some(p.alice_id.clone());
    let id = p
        .agent
        .guard_tool(P, &own)
        .await
        .unwrap()
        .approval_id
        .unwrap();
    p.alice.guard_approve(P, &id, None).await.unwrap();
    // Reviewers decide guard approvals through /v1/approvals too (and the CLI uses that).
    let id = p
        .agent
        .guard_tool(P, &call("payment_refund", json!({"amount": 77})))
        .await
        .unwrap()
        .approval_id
        .unwrap();
    let listed = p
        .alice
        .list_approvals(&countersign_client::ApprovalFilter {
            status: Some("pending".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let view = listed
        .approvals
        .iter()
        .find(|a| a.id == id)
        .expect("the reviewer sees it");
    assert_eq!(view.tool_name.as_deref(), Some("payment_refund"));
    assert_eq!(view.context["amount"], 77);
    assert_eq!(view.session_id.as_deref(), Some("session_123"));
    p.alice
        .approve(&id, Some("via the reviewer API".into()))
        .await
        .unwrap();
    let decided = p.agent.guard_approval(P, &id, None).await.unwrap();
    assert_eq!(decided.status, ApprovalStatus::Approved);
    assert_eq!(decided.decisions[0].channel, "api");
}

#[tokio::test]
async fn agents_long_poll_cancel_and_redeem_a_grant_bound_to_the_arguments() {
    let app = spawn_app().await;
    let p = finance(&app).await;
    let args = json!({"amount": 500, "customer_id": "cust_123"});
    let id = p
        .agent
        .guard_tool(P, &call("payment_refund", args.clone()))
        .await
        .unwrap()
        .approval_id
        .unwrap();
    assert_eq!(code(p.agent.guard_grant(P, &id).await), "not_approved");

    let poller = p.agent.clone();
    let pid = id.clone();
    let waiting = tokio::spawn(async move {
        let start = Instant::now();
        (
            poller.guard_approval(P, &pid, Some(20)).await.unwrap(),
            start.elapsed(),
        )
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.alice.guard_approve(P, &id, None).await.unwrap();
    let (view, waited) = waiting.await.unwrap();
    assert_eq!(view.status, ApprovalStatus::Approved);
    assert!(waited < Duration::from_secs(10));

    let grant = p.agent.guard_grant(P, &id).await.unwrap();
    assert_eq!(
        code(p.agent.guard_grant(P, &id).await),
        "already_exists",
        "redeemable once"
    );
    let payload = grant.access_token.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let detail = &claims["authorization_details"][0];
    assert_eq!(detail["type"], "countersign_tool_call");
    assert_eq!(detail["tool"], "payment_refund");
    assert_eq!(
        detail["arguments_sha256"],
        countersign_core::canonical::canonical_sha256(&args)
            .unwrap()
            .as_str()
    );
    assert_eq!(claims["approval_id"], id.as_str());
    assert_eq!(claims["client_id"], p.agent_id.as_str());

    // Cancel: the agent (or an admin) withdraws a pending call; reviewers cannot.
    let id = p
        .agent
        .guard_tool(P, &call("payment_refund", json!({"amount": 1})))
        .await
        .unwrap()
        .approval_id
        .unwrap();
    assert_eq!(
        p.alice.guard_cancel(P, &id).await.unwrap_err().status(),
        Some(403)
    );
    assert_eq!(
        p.agent.guard_cancel(P, &id).await.unwrap().status,
        ApprovalStatus::Cancelled
    );
    assert_eq!(code(p.agent.guard_cancel(P, &id).await), "already_decided");
    assert_eq!(
        code(p.alice.guard_approve(P, &id, None).await),
        "already_decided"
    );
}

#[tokio::test]
async fn history_filters_and_pages_newest_first() {
    let app = spawn_app().await;
    let p = finance(&app).await;
    app.admin
        .create_policy(
            P,
            &policy(
                "emails",
                "send_*",
                PolicyAction::RequireApproval,
                approval("group_finance"),
            ),
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            p.agent
                .guard_tool(P, &call("payment_refund", json!({"n": i})))
                .await
                .unwrap()
                .approval_id
                .unwrap(),
        );
    }
    let email = p
        .agent
        .guard_tool(P, &call("send_email", json!({"to": "x"})))
        .await
        .unwrap()
        .approval_id
        .unwrap();
    p.alice
        .guard_approve(P, &ids[0], Some("fine"))
        .await
        .unwrap();
    p.alice.guard_reject(P, &ids[1], Some("no")).await.unwrap();

    let all = app
        .admin
        .guard_history(P, &HistoryQuery::default())
        .await
        .unwrap();
    assert_eq!(all.approvals.len(), 6);
    assert_eq!(all.approvals[0].approval_id, email, "newest first");
    let q = |f: fn(&mut HistoryQuery)| {
        let mut query = HistoryQuery::default();
        f(&mut query);
        let admin = app.admin.clone();
        async move { admin.guard_history(P, &query).await.unwrap().approvals }
    };
    assert_eq!(q(|q| q.status = Some("approved".into())).await.len(), 1);
    assert_eq!(q(|q| q.status = Some("pending".into())).await.len(), 4);
    assert_eq!(q(|q| q.tool = Some("send_email".into())).await.len(), 1);
    let by_alice = q(|q| q.decided_by = Some("alice@company.com".into())).await;
    assert_eq!(by_alice.len(), 2);
    assert!(
        by_alice
            .iter()
            .all(|h| h.decided_by.as_deref() == Some("alice@company.com"))
    );
    assert!(
        q(|q| q.to = Some(chrono::Utc::now() - chrono::Duration::hours(1)))
            .await
            .is_empty()
    );
    assert_eq!(
        q(|q| q.from = Some(chrono::Utc::now() - chrono::Duration::hours(1)))
            .await
            .len(),
        6
    );

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = app
            .admin
            .guard_history(
                P,
                &HistoryQuery {
                    limit: Some(4),
                    cursor: cursor.clone(),
                    ..HistoryQuery::default()
                },
            )
            .await
            .unwrap();
        seen.extend(page.approvals.into_iter().map(|a| a.approval_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6);
    // Reviewers see only what they may decide; agents do not read history.
    assert_eq!(
        p.dave
            .guard_history(P, &HistoryQuery::default())
            .await
            .unwrap()
            .approvals
            .len(),
        0
    );
    assert_eq!(
        p.alice
            .guard_history(P, &HistoryQuery::default())
            .await
            .unwrap()
            .approvals
            .len(),
        6
    );
    assert_eq!(
        p.agent
            .guard_history(P, &HistoryQuery::default())
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    let bad = app
        .http()
        .get(app.url("/v1/guard/default/approvals/history?from=yesterday"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn tenants_are_isolated_on_every_guard_path() {
    let app = spawn_app().await;
    let p = finance(&app).await;
    let id = p
        .agent
        .guard_tool(P, &call("payment_refund", json!({"amount": 5})))
        .await
        .unwrap()
        .approval_id
        .unwrap();
    let policy_id = app.admin.list_policies(P).await.unwrap().policies[0]
        .id
        .clone();
    let acme = app
        .admin
        .create_tenant(&countersign_proto::admin::CreateTenant {
            id: "acme".into(),
            name: None,
        })
        .await
        .unwrap();
    let acme_admin = app.client(&acme.admin_key.key);
    let (_, acme_agent) = agent_in(&acme_admin, "bot").await;
    // Through the other tenant's proxy id: nothing exists.
    for client in [&acme_admin, &acme_agent] {
        assert_eq!(
            client
                .guard_tool(P, &call("x", json!({})))
                .await
                .unwrap_err()
                .status(),
            Some(404)
        );
        assert_eq!(
            client
                .guard_approval(P, &id, None)
                .await
                .unwrap_err()
                .status(),
            Some(404)
        );
        assert_eq!(
            client.list_policies(P).await.unwrap_err().status(),
            Some(404)
        );
    }
    // Through its own proxy id: still nothing of ours.
    assert_eq!(
        acme_admin
            .guard_approval("acme", &id, None)
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
    assert_eq!(
        acme_admin
            .guard_approve("acme", &id, None)
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
    assert_eq!(
        acme_agent
            .guard_cancel("acme", &id)
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
    assert_eq!(
        acme_agent
            .guard_grant("acme", &id)
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
    assert_eq!(
        acme_admin
            .get_policy("acme", &policy_id)
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
    assert_eq!(
        acme_admin
            .delete_policy("acme", &policy_id)
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
    assert_eq!(
        acme_admin
            .get_group("acme", "group_finance")
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
    assert!(
        acme_admin
            .list_policies("acme")
            .await
            .unwrap()
            .policies
            .is_empty()
    );
    assert!(
        acme_admin
            .guard_history("acme", &HistoryQuery::default())
            .await
            .unwrap()
            .approvals
            .is_empty()
    );
    // Our members are not theirs.
    let foreign = acme_admin
        .create_group(
            "acme",
            &GroupInput {
                id: None,
                name: "g".into(),
                members: vec![member("alice@company.com", MemberRole::Primary)],
                escalation_minutes: None,
            },
        )
        .await;
    assert_eq!(code(foreign), "unknown_reference");
    // Their policies do not apply to us.
    acme_admin
        .put_guard_settings(
            "acme",
            &GuardSettings {
                default_action: PolicyAction::Block,
                ..GuardSettings::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        p.agent
            .guard_tool(P, &call("search", json!({})))
            .await
            .unwrap()
            .action,
        PolicyAction::Allow
    );
    assert_eq!(
        acme_agent
            .guard_tool("acme", &call("search", json!({})))
            .await
            .unwrap()
            .action,
        PolicyAction::Block
    );
}

#[tokio::test]
async fn policies_groups_and_settings_have_full_crud() {
    let app = spawn_app().await;
    let _p = finance(&app).await;
    let admin = &app.admin;
    let list = admin.list_policies(P).await.unwrap().policies;
    let id = list[0].id.clone();
    let mut update = policy(
        "Renamed",
        "payment_*",
        PolicyAction::Block,
        ApprovalConfig::default(),
    );
    update.description = Some("now a block".into());
    let updated = admin.update_policy(P, &id, &update).await.unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.action),
        ("Renamed", PolicyAction::Block)
    );
    assert_eq!(updated.created_at, list[0].created_at);
    assert_eq!(
        admin
            .get_policy(P, &id)
            .await
            .unwrap()
            .description
            .as_deref(),
        Some("now a block")
    );
    admin.delete_policy(P, &id).await.unwrap();
    assert_eq!(code(admin.get_policy(P, &id).await), "not_found");
    assert_eq!(code(admin.delete_policy(P, &id).await), "not_found");

    let g = admin.get_group(P, "group_finance").await.unwrap();
    assert_eq!(g.members.len(), 2);
    let g = admin
        .update_group(
            P,
            "group_finance",
            &GroupInput {
                id: None,
                name: "Finance".into(),
                members: vec![member("carol@company.com", MemberRole::Primary)],
                escalation_minutes: None,
            },
        )
        .await
        .unwrap();
    assert_eq!((g.name.as_str(), g.members.len()), ("Finance", 1));
    assert_eq!(admin.list_groups(P).await.unwrap().approval_groups.len(), 1);
    assert_eq!(
        code(
            admin
                .create_group(
                    P,
                    &GroupInput {
                        id: Some("group_finance".into()),
                        name: "dup".into(),
                        members: vec![member("carol@company.com", MemberRole::Primary)],
                        escalation_minutes: None
                    }
                )
                .await
        ),
        "already_exists"
    );
    admin.delete_group(P, "group_finance").await.unwrap();
    assert!(
        admin
            .list_groups(P)
            .await
            .unwrap()
            .approval_groups
            .is_empty()
    );
    assert_eq!(
        admin.guard_settings(P).await.unwrap(),
        GuardSettings::default()
    );
    // Reviewers and agents do not configure.
    let (_, reviewer) = app.reviewer("eve@company.com").await;
    assert_eq!(
        reviewer.list_policies(P).await.unwrap_err().status(),
        Some(403)
    );
    assert_eq!(
        reviewer
            .create_policy(P, &update)
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
}

fn via_mcp(name: &str, args: Value, server: &str, annotations: Value) -> ToolRequest {
    serde_json::from_value(json!({
        "session_id": "session_123",
        "tool_call": {"name": name, "arguments": args},
        "annotations": annotations,
        "mcp": {"server": server, "client": "claude-desktop 1.2.0"},
    }))
    .unwrap()
}

#[tokio::test]
async fn mcp_annotations_and_origin_reach_conditions_views_history_and_audit() {
    let app = spawn_app().await;
    let p = people(&app).await;
    group(
        &app,
        "group_ops",
        vec![member("alice@company.com", MemberRole::Primary)],
        None,
    )
    .await;
    // Every destructive tool needs approval: one policy over the annotations.
    let mut destructive = policy(
        "destructive tools",
        "*",
        PolicyAction::RequireApproval,
        approval("group_ops"),
    );
    destructive.condition = Some("tool.annotations.destructiveHint".into());
    app.admin.create_policy(P, &destructive).await.unwrap();
    // Nothing at all through the production file server.
    let mut prod = policy(
        "no prod files",
        "*",
        PolicyAction::Block,
        ApprovalConfig::default(),
    );
    prod.condition = Some("tool.mcp_server == 'files-prod' && tool.name != 'list_files'".into());
    prod.priority = Some(10);
    app.admin.create_policy(P, &prod).await.unwrap();

    // A tool that declares itself destructive needs approval.
    let asked = p
        .agent
        .guard_tool(
            P,
            &via_mcp(
                "delete_file",
                json!({"path": "/srv/a.txt"}),
                "files",
                json!({"destructiveHint": true}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(asked.action, PolicyAction::RequireApproval);
    assert_eq!(asked.policy_matched.as_deref(), Some("destructive tools"));
    let id = asked.approval_id.unwrap();
    // One that declares itself read-only (so not destructive by MCP's defaults) is allowed.
    let read = p
        .agent
        .guard_tool(
            P,
            &via_mcp(
                "read_file",
                json!({"path": "/srv/a.txt"}),
                "files",
                json!({"readOnlyHint": true}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(read.action, PolicyAction::Allow);
    // Without hints MCP's defaults apply: not read-only, so destructive.
    let unhinted = p
        .agent
        .guard_tool(P, &call("rename_file", json!({"from": "a", "to": "b"})))
        .await
        .unwrap();
    assert_eq!(unhinted.action, PolicyAction::RequireApproval);
    // A condition on the server blocks, and the audit event names the server.
    let blocked = p
        .agent
        .guard_tool(
            P,
            &via_mcp(
                "read_file",
                json!({"path": "/etc/passwd"}),
                "files-prod",
                json!({"readOnlyHint": true}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(blocked.action, PolicyAction::Block);
    assert_eq!(
        audited(&app, "tool_call.blocked", Some("read_file")).await,
        1
    );
    let events = app.admin.audit_page(None, Some(500)).await.unwrap().events;
    let block = events
        .iter()
        .find(|e| e.action == "tool_call.blocked")
        .unwrap();
    assert_eq!(block.details["mcp_server"], "files-prod");
    let created = events
        .iter()
        .find(|e| e.action == "approval.created" && e.subject == id)
        .unwrap();
    assert_eq!(created.details["mcp_server"], "files");

    // The approval shows the annotations as sent and where the call came from.
    let view = p.agent.guard_approval(P, &id, None).await.unwrap();
    let annotations = view.annotations.unwrap();
    assert_eq!(annotations.destructive_hint, Some(true));
    assert_eq!(annotations.read_only_hint, None);
    let origin = view.mcp.unwrap();
    assert_eq!(origin.server, "files");
    assert_eq!(origin.client.as_deref(), Some("claude-desktop 1.2.0"));
    let (status, raw): (u16, Value) = {
        let res = app
            .http()
            .get(app.url(&format!("/v1/guard/{P}/approvals/{id}")))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    };
    assert_eq!(status, 200);
    assert_eq!(raw["annotations"], json!({"destructiveHint": true}));
    assert_eq!(
        raw["mcp"],
        json!({"server": "files", "client": "claude-desktop 1.2.0"})
    );
    // A call that did not come through MCP has neither field.
    let plain = p
        .agent
        .guard_approval(P, unhinted.approval_id.as_deref().unwrap(), None)
        .await
        .unwrap();
    assert!(plain.annotations.is_none() && plain.mcp.is_none());
    // The reviewer API and the history carry them too.
    let listed = p.alice.list_approvals(&Default::default()).await.unwrap();
    let item = listed.approvals.iter().find(|a| a.id == id).unwrap();
    assert_eq!(item.mcp.as_ref().unwrap().server, "files");
    assert_eq!(item.annotations.unwrap().destructive_hint, Some(true));
    let history = app
        .admin
        .guard_history(P, &HistoryQuery::default())
        .await
        .unwrap();
    let item = history
        .approvals
        .iter()
        .find(|a| a.approval_id == id)
        .unwrap();
    assert_eq!(item.mcp.as_ref().unwrap().server, "files");

    // The same call through the same server finds the same approval; through another server
    // it is another action, with its own approval.
    let again = p
        .agent
        .guard_tool(
            P,
            &via_mcp(
                "delete_file",
                json!({"path": "/srv/a.txt"}),
                "files",
                json!({"destructiveHint": true}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(again.approval_id.as_deref(), Some(id.as_str()));
    let elsewhere = p
        .agent
        .guard_tool(
            P,
            &via_mcp(
                "delete_file",
                json!({"path": "/srv/a.txt"}),
                "files-staging",
                json!({"destructiveHint": true}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(elsewhere.action, PolicyAction::RequireApproval);
    assert_ne!(elsewhere.approval_id.as_deref(), Some(id.as_str()));

    // A dry run sees what a real call sees.
    let dry = |annotations: Value| {
        serde_json::from_value::<countersign_proto::guard::EvaluateRequest>(json!({
            "tool_call": {"name": "delete_file", "arguments": {}},
            "annotations": annotations,
            "mcp": {"server": "files"},
        }))
        .unwrap()
    };
    assert_eq!(
        app.admin
            .guard_evaluate(P, &dry(json!({"destructiveHint": true})))
            .await
            .unwrap()
            .action,
        PolicyAction::RequireApproval
    );
    assert_eq!(
        app.admin
            .guard_evaluate(P, &dry(json!({"readOnlyHint": true})))
            .await
            .unwrap()
            .action,
        PolicyAction::Allow
    );
}

#[tokio::test]
async fn bad_mcp_fields_and_conditions_on_tool_as_a_string_are_refused() {
    let app = spawn_app().await;
    let (agent_id, _) = app.agent("bot").await;
    let agent_key = app
        .admin
        .create_api_key(&countersign_proto::admin::CreateApiKey {
            role: countersign_proto::admin::KeyRole::Agent,
            agent_id: Some(agent_id),
            user_id: None,
            name: None,
            audiences: Vec::new(),
        })
        .await
        .unwrap()
        .key;
    let post = |body: Value| {
        let app = &app;
        let key = agent_key.clone();
        async move {
            let res = app
                .http()
                .post(app.url(&format!("/v1/guard/{P}/tool")))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    let base = |extra: Value| {
        let mut body = json!({"session_id": "s", "tool_call": {"name": "t", "arguments": {}}});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    for (extra, status, code) in [
        (
            json!({"mcp": {"server": "fi\u{202e}les"}}),
            400,
            "invalid_text",
        ),
        (
            json!({"mcp": {"server": "files", "client": "a\u{200b}b"}}),
            400,
            "invalid_text",
        ),
        (json!({"mcp": {"server": " "}}), 400, "invalid_request"),
        (
            json!({"mcp": {"server": "x".repeat(201)}}),
            400,
            "invalid_request",
        ),
        (json!({"mcp": {"client": "c"}}), 422, "invalid_body"),
        (
            json!({"mcp": {"server": "s", "extra": 1}}),
            422,
            "invalid_body",
        ),
        (
            json!({"annotations": {"title": "Delete"}}),
            422,
            "invalid_body",
        ),
        (
            json!({"annotations": {"destructiveHint": "yes"}}),
            422,
            "invalid_body",
        ),
        (
            json!({"annotations": {"destructive_hint": true}}),
            422,
            "invalid_body",
        ),
        (json!({"annotations": [null, null]}), 422, "invalid_body"),
        (json!({"annotations": []}), 422, "invalid_body"),
        (json!({"mcp": ["files", "client"]}), 422, "invalid_body"),
    ] {
        let (got, v) = post(base(extra.clone())).await;
        assert_eq!(got, status, "{extra} → {v}");
        assert_eq!(v["error"]["code"], code, "{extra} → {v}");
    }
    let (got, v) = post(base(json!({"annotations": {}, "mcp": {"server": "files"}}))).await;
    assert_eq!(got, 200, "{v}");
    // `tool` is a map now: a condition using it as the name is refused with a hint.
    let mut old = policy("old", "*", PolicyAction::Block, ApprovalConfig::default());
    old.condition = Some("tool == 'delete_file'".into());
    let err = app.admin.create_policy(P, &old).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_condition"));
    assert!(err.to_string().contains("tool.name"), "{err}");
}
