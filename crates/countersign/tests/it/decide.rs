//! What an approval covers and who gives it: numbers that canonical JSON keeps exactly, text
//! that cannot lie visually, who may decide, and through which face.
use countersign_client::Client;
use countersign_proto::admin::CreateInvitation;
use countersign_proto::ciba::{ApproveRequest, TokenResponse};
use countersign_proto::guard::{
    ApprovalConfig, GroupInput, GuardSettings, MemberInput, MemberRole, PolicyAction, PolicyInput,
    ToolRequest,
};
use countersign_proto::oidc::CreateOidcClient;
use countersign_proto::{ApprovalStatus, admin::CreateApiKey, admin::KeyRole};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const P: &str = "default";
const CIBA_GRANT: &str = "urn:openid:params:grant-type:ciba";

/// Posts a raw JSON text (numbers exactly as written) and returns the status and body.
async fn post_raw(app: &TestApp, path: &str, key: &str, body: &str) -> (u16, Value) {
    let res = app
        .http()
        .post(app.url(path))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn error_of(body: &Value) -> (&str, &str) {
    (
        body["error"]["code"].as_str().unwrap_or("<none>"),
        body["error"]["message"].as_str().unwrap_or("<none>"),
    )
}

/// An agent key's secret (the client holds it privately; tests build raw calls with it).
async fn agent_key(app: &TestApp, name: &str) -> (String, String) {
    let (agent_id, _) = app.agent(name).await;
    let key = app
        .admin
        .create_api_key(&CreateApiKey {
            role: KeyRole::Agent,
            user_id: None,
            agent_id: Some(agent_id.clone()),
            name: None,
            audiences: Vec::new(),
        })
        .await
        .unwrap();
    (agent_id, key.key)
}

/// An OpenID client for an existing agent, with `client_secret_basic`.
async fn openid_client(app: &TestApp, agent_id: &str) -> (String, String) {
    let created = app
        .admin
        .create_oidc_client(&CreateOidcClient {
            agent_id: agent_id.to_string(),
            token_endpoint_auth_method: "client_secret_basic".into(),
            jwks: None,
            backchannel_token_delivery_mode: "poll".into(),
            backchannel_client_notification_endpoint: None,
            backchannel_authentication_request_signing_alg: None,
            backchannel_user_code_parameter: false,
            grant_types: None,
        })
        .await
        .unwrap();
    (agent_id.to_string(), created.client_secret.unwrap())
}

async fn bc_authorize(
    app: &TestApp,
    client: &(String, String),
    form: &[(&str, &str)],
) -> (u16, Value) {
    let res = app
        .http()
        .post(app.url("/oidc/bc-authorize"))
        .basic_auth(&client.0, Some(&client.1))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn policy(pattern: &str, config: ApprovalConfig) -> PolicyInput {
    PolicyInput {
        name: format!("approve {pattern}"),
        tool_pattern: pattern.into(),
        action: PolicyAction::RequireApproval,
        description: None,
        priority: None,
        is_active: None,
        condition: None,
        approval_config: Some(config),
    }
}

async fn group(app: &TestApp, id: &str, members: &[&str]) {
    app.admin
        .create_group(
            P,
            &GroupInput {
                id: Some(id.into()),
                name: id.into(),
                members: members
                    .iter()
                    .map(|email| MemberInput {
                        email: email.to_string(),
                        role: MemberRole::Primary,
                    })
                    .collect(),
                escalation_minutes: None,
            },
        )
        .await
        .unwrap();
}

fn call(name: &str, args: Value) -> ToolRequest {
    ToolRequest {
        session_id: "session_1".into(),
        tool_call: json!({"name": name, "arguments": args}),
        scope: None,
        reason: None,
        on_behalf_of: None,
        annotations: None,
        mcp: None,
    }
}

async fn admins_can_decide(app: &TestApp, allowed: bool) {
    app.admin
        .put_guard_settings(
            P,
            &GuardSettings {
                admins_can_decide: allowed,
                ..GuardSettings::default()
            },
        )
        .await
        .unwrap();
}

/// A dashboard admin (a person) signed in.
async fn dashboard_admin(app: &TestApp, email: &str) -> (String, Browser) {
    let invitation = app
        .admin
        .create_invitation(&CreateInvitation {
            email: email.into(),
            name: None,
            is_admin: true,
        })
        .await
        .unwrap();
    (invitation.view.user_id, signed_in(app, email).await)
}

/// Approves from the request page, as its button does; returns the page.
async fn approve_in_dashboard(browser: &mut Browser, id: &str) -> String {
    browser.get(&format!("/ui/requests/{id}")).await;
    let csrf = browser.csrf();
    let (status, _, body) = browser
        .post(
            &format!("/ui/requests/{id}/approve"),
            form(&[("csrf", &csrf), ("comment", "")]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn status_of(app: &TestApp, id: &str) -> ApprovalStatus {
    app.admin.get_approval(id).await.unwrap().status
}

// ----- numbers -----

#[tokio::test]
async fn numbers_canonical_json_cannot_keep_are_refused_on_every_face() {
    let app = spawn_app().await;
    let (user_id, _) = app.reviewer("alice@example.com").await;
    let (agent_id, key) = agent_key(&app, "bot").await;
    let expect = |(status, body): (u16, Value), code: &str, field: &str| {
        assert_eq!(status, 400, "{body}");
        let (c, message) = error_of(&body);
        assert_eq!(c, code, "{body}");
        assert!(message.contains(field), "{message} should name {field}");
    };

    // Guard tool calls, in each shape, and the dry run.
    let tool = format!("/v1/guard/{P}/tool");
    expect(
        post_raw(&app, &tool, &key, r#"{"session_id":"s","tool_call":{"name":"pay","arguments":{"account":1152921504606846977}}}"#).await,
        "invalid_number",
        "`arguments.account`",
    );
    expect(
        post_raw(&app, &tool, &key, r#"{"session_id":"s","tool_call":{"type":"function","function":{"name":"pay","arguments":"{\"to\":[1,{\"id\":-9007199254740993}]}"}}}"#).await,
        "invalid_number",
        "`arguments.to[1].id`",
    );
    expect(
        post_raw(&app, &tool, &key, r#"{"session_id":"s","tool_call":{"type":"tool_use","name":"pay","input":{"amount":1e300}}}"#).await,
        "invalid_number",
        "`arguments.amount`",
    );
    expect(
        post_raw(
            &app,
            &format!("/v1/guard/{P}/policies/evaluate"),
            ADMIN_KEY,
            r#"{"tool_call":{"name":"pay","arguments":{"account":1152921504606846976}}}"#,
        )
        .await,
        "invalid_number",
        "`arguments.account`",
    );
    // Numbers that canonical JSON keeps are fine, up to 2^53 - 1.
    let (status, body) = post_raw(&app, &tool, &key, r#"{"session_id":"s","tool_call":{"name":"pay","arguments":{"account":9007199254740991,"rate":0.1}}}"#).await;
    assert_eq!(status, 200, "{body}");

    // The seed's CIBA context.
    let authorize = |context: &str| {
        format!(
            r#"{{"userId":"{user_id}","scope":"approve:payment","bindingMessage":"Pay?","context":{context}}}"#
        )
    };
    expect(
        post_raw(
            &app,
            "/ciba/authorize",
            &key,
            &authorize(r#"{"items":[{"id":1},{"id":2},{"id":9007199254740993}]}"#),
        )
        .await,
        "invalid_number",
        "`context.items[2].id`",
    );
    let (status, body) = post_raw(
        &app,
        "/ciba/authorize",
        &key,
        &authorize(r#"{"id":9007199254740991}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // OpenID authorization details.
    let client = openid_client(&app, &agent_id).await;
    let (status, body) = bc_authorize(
        &app,
        &client,
        &[
            ("scope", "openid"),
            ("login_hint", &user_id),
            (
                "authorization_details",
                r#"[{"type":"tool_call","tool":"pay","arguments":{"account":1152921504606846976}}]"#,
            ),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_authorization_details", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("`authorization_details[0].arguments.account`"),
        "{body}"
    );
    // Nothing was created by any refusal.
    assert_eq!(
        app.query_i64("SELECT COUNT(*) FROM approval_requests")
            .await,
        1
    );
}

// ----- text that lies visually -----

#[tokio::test]
async fn hidden_characters_in_agent_text_are_refused_on_every_face() {
    let app = spawn_app().await;
    let (user_id, _) = app.reviewer("alice@example.com").await;
    let (agent_id, key) = agent_key(&app, "bot").await;
    let expect = |(status, body): (u16, Value), field: &str, mark: &str| {
        assert_eq!(status, 400, "{body}");
        let (code, message) = error_of(&body);
        assert_eq!(code, "invalid_text", "{body}");
        assert!(message.contains(field), "{message} should name {field}");
        assert!(message.contains(mark), "{message} should name {mark}");
    };
    let tool = format!("/v1/guard/{P}/tool");
    let evaluate = format!("/v1/guard/{P}/policies/evaluate");
    let call = |call: Value, extra: Value| {
        let mut body = json!({"session_id": "s", "tool_call": call});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let authorize = |scope: &str, message: &str, context: Value| json!({"userId": user_id, "scope": scope, "bindingMessage": message, "context": context});
    // (path, key, body, the field the message names, the character it names)
    let cases: Vec<(&str, &str, Value, &str, &str)> = vec![
        (
            &tool,
            &key,
            call(
                json!({"name": "pay\u{202E}fer", "arguments": {}}),
                json!({}),
            ),
            "tool_call.name",
            "U+202E",
        ),
        (
            &tool,
            &key,
            call(
                json!({"name": "pay", "arguments": {"to": [{"acc\u{2066}ount": 1}]}}),
                json!({}),
            ),
            "arguments.to[0]",
            "U+2066",
        ),
        (
            &tool,
            &key,
            call(
                json!({"name": "pay", "arguments": {}}),
                json!({"reason": "routine\u{200B} refund"}),
            ),
            "`reason`",
            "U+200B",
        ),
        (
            &tool,
            &key,
            call(
                json!({"name": "pay", "arguments": {}}),
                json!({"scope": "pay\u{FEFF}ments"}),
            ),
            "`scope`",
            "U+FEFF",
        ),
        (
            &evaluate,
            ADMIN_KEY,
            json!({"tool_call": {"type": "tool_use", "name": "pay\u{061C}", "input": {}}}),
            "tool_call.name",
            "U+061C",
        ),
        (
            "/ciba/authorize",
            &key,
            authorize("approve:payment", "Pay \u{202E}0001$ to Acme", json!({})),
            "bindingMessage",
            "U+202E",
        ),
        (
            "/ciba/authorize",
            &key,
            authorize("approve:\u{2067}payment", "Pay?", json!({})),
            "`scope`",
            "U+2067",
        ),
        (
            "/ciba/authorize",
            &key,
            authorize("approve:payment", "Pay?", json!({"amount\u{202D}": 1})),
            "context",
            "U+202D",
        ),
    ];
    for (path, key, body, field, mark) in cases {
        expect(
            post_raw(&app, path, key, &body.to_string()).await,
            field,
            mark,
        );
    }

    let client = openid_client(&app, &agent_id).await;
    let (status, body) = bc_authorize(
        &app,
        &client,
        &[
            ("scope", "openid"),
            ("login_hint", &user_id),
            ("binding_message", "Pay \u{202E}0001$"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_binding_message", "{body}");
    let details = json!([{"type": "tool_call", "tool": "pay", "arguments": {"to\u{2069}": "x"}}]);
    let (status, body) = bc_authorize(
        &app,
        &client,
        &[
            ("scope", "openid"),
            ("login_hint", &user_id),
            ("authorization_details", &details.to_string()),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_authorization_details", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("U+2069"),
        "{body}"
    );
    assert_eq!(
        app.query_i64("SELECT COUNT(*) FROM approval_requests")
            .await,
        0
    );
}

#[tokio::test]
async fn argument_values_with_right_to_left_text_are_shown_isolated_and_marked() {
    let app = spawn_app().await;
    finance_team(&app, None).await;
    app.admin
        .create_policy(P, &finance_policy(&[]))
        .await
        .unwrap();
    let (_, agent) = app.agent("bot").await;
    let id = agent
        .guard_tool(
            P,
            &call(
                "payment_refund",
                json!({"memo": "invoice \u{202E}fdp.exe", "to": "שלום", "amount": 5}),
            ),
        )
        .await
        .unwrap()
        .approval_id
        .unwrap();
    let mut browser = signed_in(&app, "alice@company.com").await;
    let (status, _, page) = browser.get(&format!("/ui/requests/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains('\u{202E}'), "the override reached the page");
    assert!(
        page.contains(r#"<bdi dir="auto" class="arg">&quot;invoice ⟨U+202E⟩fdp.exe&quot;</bdi>"#),
        "{page}"
    );
    assert!(
        page.contains(r#"<bdi dir="auto" class="arg">&quot;שלום&quot;</bdi>"#),
        "{page}"
    );
    assert!(
        page.contains(r#"<bdi dir="auto" class="arg">5</bdi>"#),
        "{page}"
    );
}

// ----- who may decide -----

#[tokio::test]
async fn openid_requests_are_decided_only_by_the_user_they_name() {
    let app = spawn_app().await;
    let (user_id, alice) = app.reviewer("alice@example.com").await;
    let (agent_id, _) = app.agent("bot").await;
    let client = openid_client(&app, &agent_id).await;
    let (status, body) = bc_authorize(
        &app,
        &client,
        &[("scope", "openid"), ("login_hint", &user_id)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let auth_req_id = body["auth_req_id"].as_str().unwrap().to_string();
    let id = alice
        .list_approvals(&countersign_client::ApprovalFilter::default())
        .await
        .unwrap()
        .approvals[0]
        .id
        .clone();

    // An admin key, on any face: refused, and nothing changes.
    let err = app.admin.approve(&id, None).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    assert!(
        err.to_string().contains("only by the user it names"),
        "{err}"
    );
    assert_eq!(
        code(app.admin.deny(&id, Some("no".into())).await),
        "forbidden"
    );
    // A dashboard admin too.
    let (_, mut ada) = dashboard_admin(&app, "ada@example.com").await;
    let page = approve_in_dashboard(&mut ada, &id).await;
    assert!(page.contains("only by the user it names"), "{page}");
    assert_eq!(status_of(&app, &id).await, ApprovalStatus::Pending);

    // The user it names decides, and the client gets its tokens.
    alice.approve(&id, None).await.unwrap();
    let res = app
        .http()
        .post(app.url("/oidc/token"))
        .basic_auth(&client.0, Some(&client.1))
        .form(&[("grant_type", CIBA_GRANT), ("auth_req_id", &auth_req_id)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn separation_of_duties_binds_admins_too() {
    let app = spawn_app().await;
    let (ada_id, mut ada) = dashboard_admin(&app, "ada@example.com").await;
    app.reviewer("bob@example.com").await;
    group(&app, "group_ops", &["bob@example.com"]).await;
    app.admin
        .create_policy(
            P,
            &policy(
                "payment_*",
                ApprovalConfig {
                    approval_group_id: Some("group_ops".into()),
                    ..ApprovalConfig::default()
                },
            ),
        )
        .await
        .unwrap();
    admins_can_decide(&app, true).await;
    let (_, agent) = app.agent("bot").await;
    for on_behalf_of in [ada_id.clone(), "Ada@Example.com".to_string()] {
        let mut own = call("payment_refund", json!({"amount": ada_id.len()}));
        own.on_behalf_of = Some(on_behalf_of);
        own.session_id = format!("s-{}", own.on_behalf_of.as_deref().unwrap());
        let id = agent
            .guard_tool(P, &own)
            .await
            .unwrap()
            .approval_id
            .unwrap();
        let page = approve_in_dashboard(&mut ada, &id).await;
        assert!(page.contains("acts for"), "{page}");
        assert_eq!(status_of(&app, &id).await, ApprovalStatus::Pending);
        // An admin key names no person, so it still may (admins_can_decide is on).
        app.admin.guard_approve(P, &id, None).await.unwrap();
    }
}

#[tokio::test]
async fn one_person_is_one_voter_in_a_quorum() {
    let app = spawn_app().await;
    let (ada_id, mut ada) = dashboard_admin(&app, "ada@example.com").await;
    // Ada also holds a reviewer key.
    let ada_key = app
        .admin
        .create_api_key(&CreateApiKey {
            role: KeyRole::Reviewer,
            user_id: Some(ada_id.clone()),
            agent_id: None,
            name: None,
            audiences: Vec::new(),
        })
        .await
        .unwrap();
    let ada_api = app.admin.with_key(ada_key.key);
    let (_, bob) = app.reviewer("bob@example.com").await;
    group(&app, "group_board", &["ada@example.com", "bob@example.com"]).await;
    app.admin
        .create_policy(
            P,
            &policy(
                "wire_*",
                ApprovalConfig {
                    approval_group_id: Some("group_board".into()),
                    required_approvals: 2,
                    ..ApprovalConfig::default()
                },
            ),
        )
        .await
        .unwrap();
    admins_can_decide(&app, true).await;
    let (_, agent) = app.agent("bot").await;
    let ask = |amount: u32| {
        let agent = agent.clone();
        async move {
            agent
                .guard_tool(P, &call("wire_transfer", json!({"amount": amount})))
                .await
                .unwrap()
                .approval_id
                .unwrap()
        }
    };

    // Two admin keys name no person: neither counts toward a quorum.
    let second_admin = Client::new(&app.base, None).unwrap().with_key(
        app.admin
            .create_api_key(&CreateApiKey {
                role: KeyRole::Admin,
                user_id: None,
                agent_id: None,
                name: None,
                audiences: Vec::new(),
            })
            .await
            .unwrap()
            .key,
    );
    let id = ask(1).await;
    for admin in [&app.admin, &second_admin] {
        let err = admin.guard_approve(P, &id, None).await.unwrap_err();
        assert_eq!(err.status(), Some(403), "{err}");
    }
    assert_eq!(status_of(&app, &id).await, ApprovalStatus::Pending);
    // An admin key may still reject.
    app.admin.guard_reject(P, &id, Some("no")).await.unwrap();

    // Ada's key and Ada's session are one voter; Bob's approval completes the quorum.
    let id = ask(2).await;
    ada_api.guard_approve(P, &id, None).await.unwrap();
    let page = approve_in_dashboard(&mut ada, &id).await;
    assert!(page.contains("already"), "{page}");
    assert_eq!(status_of(&app, &id).await, ApprovalStatus::Pending);
    let done = bob.guard_approve(P, &id, None).await.unwrap();
    assert_eq!(done.status, ApprovalStatus::Approved);
    assert_eq!(done.decisions.len(), 2);
}

#[tokio::test]
async fn a_dashboard_admin_in_the_group_decides_as_a_member() {
    let app = spawn_app().await;
    let (_, mut ada) = dashboard_admin(&app, "ada@example.com").await;
    group(&app, "group_ops", &["ada@example.com"]).await;
    app.admin
        .create_policy(
            P,
            &policy(
                "payment_*",
                ApprovalConfig {
                    approval_group_id: Some("group_ops".into()),
                    ..ApprovalConfig::default()
                },
            ),
        )
        .await
        .unwrap();
    admins_can_decide(&app, false).await;
    let (_, agent) = app.agent("bot").await;
    let id = agent
        .guard_tool(P, &call("payment_refund", json!({"amount": 5})))
        .await
        .unwrap()
        .approval_id
        .unwrap();
    // The admin key is still refused; Ada, a member, decides.
    assert_eq!(
        app.admin
            .guard_approve(P, &id, None)
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    let (_, _, page) = ada.get(&format!("/ui/requests/{id}")).await;
    assert!(page.contains("/approve"), "the page offers the decision");
    approve_in_dashboard(&mut ada, &id).await;
    assert_eq!(status_of(&app, &id).await, ApprovalStatus::Approved);
}

#[tokio::test]
async fn each_face_acts_only_on_its_own_requests() {
    let app = spawn_app().await;
    let (user_id, alice) = app.reviewer("alice@company.com").await;
    group(&app, "group_ops", &["alice@company.com"]).await;
    app.admin
        .create_policy(
            P,
            &policy(
                "payment_*",
                ApprovalConfig {
                    approval_group_id: Some("group_ops".into()),
                    ..ApprovalConfig::default()
                },
            ),
        )
        .await
        .unwrap();
    let (agent_id, agent) = app.agent("bot").await;

    // A tool call: not on /ciba/*.
    let tool_id = agent
        .guard_tool(P, &call("payment_refund", json!({"amount": 5})))
        .await
        .unwrap()
        .approval_id
        .unwrap();
    let on_ciba = alice
        .ciba_approve(&ApproveRequest {
            auth_req_id: None,
            approval_id: Some(tool_id.clone()),
            comment: None,
        })
        .await;
    assert_eq!(code(on_ciba), "not_found");
    assert_eq!(code(agent.ciba_token(&tool_id, None).await), "not_found");

    // A seed CIBA request: not on the guard routes.
    let seed = agent.ciba_authorize(&payment(&user_id)).await.unwrap();
    let seed_id = alice
        .list_approvals(&countersign_client::ApprovalFilter {
            status: Some("pending".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .approvals
        .into_iter()
        .find(|a| a.id != tool_id)
        .unwrap()
        .id;
    assert_eq!(
        code(alice.guard_approve(P, &seed_id, None).await),
        "not_found"
    );
    assert_eq!(
        code(alice.guard_reject(P, &seed_id, Some("no")).await),
        "not_found"
    );
    assert_eq!(
        code(agent.guard_approval(P, &seed_id, None).await),
        "not_found"
    );
    assert_eq!(code(agent.guard_cancel(P, &seed_id).await), "not_found");
    assert_eq!(code(agent.guard_grant(P, &seed_id).await), "not_found");

    // An OpenID request: neither /ciba/token nor /ciba/approve know it.
    let client = openid_client(&app, &agent_id).await;
    let (status, body) = bc_authorize(
        &app,
        &client,
        &[("scope", "openid"), ("login_hint", &user_id)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let oidc_req = body["auth_req_id"].as_str().unwrap().to_string();
    let on_ciba = alice
        .ciba_approve(&ApproveRequest {
            auth_req_id: Some(oidc_req.clone()),
            approval_id: None,
            comment: None,
        })
        .await;
    assert_eq!(code(on_ciba), "not_found");
    assert_eq!(code(agent.ciba_token(&oidc_req, None).await), "not_found");

    // Each still works through its own face (and the reviewer faces).
    alice.guard_approve(P, &tool_id, None).await.unwrap();
    alice
        .ciba_approve(&ApproveRequest {
            auth_req_id: Some(seed.auth_req_id.clone()),
            approval_id: None,
            comment: None,
        })
        .await
        .unwrap();
    assert!(matches!(
        agent.ciba_token(&seed.auth_req_id, None).await.unwrap(),
        TokenResponse::Approved { .. }
    ));
    // Approved through a reviewer face, the OpenID request is still not redeemable at /ciba/token.
    let oidc_id = alice
        .list_approvals(&countersign_client::ApprovalFilter {
            status: Some("pending".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .approvals[0]
        .id
        .clone();
    alice.approve(&oidc_id, None).await.unwrap();
    assert_eq!(code(agent.ciba_token(&oidc_req, None).await), "not_found");
}

/// A reviewer's queue is read from their own reviewer rows: it holds only what they may
/// decide, newest first, page after page, however many requests others have pending.
#[tokio::test]
async fn a_reviewers_queue_pages_through_their_own_requests_only() {
    let app = spawn_app().await;
    let (alice_id, alice) = app.reviewer("alice@company.com").await;
    let (bob_id, _) = app.reviewer("bob@company.com").await;
    let (_, agent) = app.agent("bot").await;
    for _ in 0..5 {
        agent.ciba_authorize(&payment(&alice_id)).await.unwrap();
        agent.ciba_authorize(&payment(&bob_id)).await.unwrap();
        agent.ciba_authorize(&payment(&bob_id)).await.unwrap();
    }
    let page = |cursor: Option<String>| {
        let alice = &alice;
        async move {
            alice
                .list_approvals(&countersign_client::ApprovalFilter {
                    status: Some("pending".into()),
                    cursor,
                    limit: Some(2),
                })
                .await
                .unwrap()
        }
    };
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let list = page(cursor).await;
        assert!(list.approvals.len() <= 2);
        seen.extend(list.approvals.iter().map(|a| a.id.clone()));
        cursor = list.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(
        seen.len(),
        5,
        "alice's five requests, none of bob's ten: {seen:?}"
    );
    let mut newest_first = seen.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, newest_first);
    for id in &seen {
        let view = alice.get_approval(id).await.unwrap();
        assert_eq!(view.user_id.as_deref(), Some(alice_id.as_str()));
    }
    // Decided requests leave the pending queue.
    alice.approve(&seen[0], None).await.unwrap();
    assert_eq!(page(None).await.approvals[0].id, seen[1]);
}
