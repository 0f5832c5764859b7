//! Grants are bound to a tenant and an audience, and can be introspected (RFC 7662), consumed
//! once and revoked (RFC 7009).
use countersign_client::Client;
use countersign_proto::admin::{CreateApiKey, CreateTenant, KeyRole};
use countersign_proto::ciba::{ApproveRequest, TokenResponse};
use countersign_proto::guard::{
    ApprovalConfig, GroupInput, GuardSettings, MemberInput, MemberRole, ToolRequest,
};
use serde_json::{Value, json};

use crate::support::*;

const P: &str = "default";
const PAYMENTS: &str = "https://payments.example.com";
const LEDGER: &str = "https://ledger.example.com";

struct Setup {
    agent: Client,
    agent_id: String,
    alice: Client,
}

/// An agent whose `payment_*` calls alice approves; the tenant allows grants for PAYMENTS.
async fn setup(app: &TestApp) -> Setup {
    let (agent_id, agent) = app.agent("bot").await;
    let (_, alice) = app.reviewer("alice@company.com").await;
    app.admin
        .create_group(
            P,
            &GroupInput {
                id: Some("group_finance".into()),
                name: "Finance".into(),
                members: vec![MemberInput {
                    email: "alice@company.com".into(),
                    role: MemberRole::Primary,
                }],
                escalation_minutes: None,
            },
        )
        .await
        .unwrap();
    app.admin
        .create_policy(P, &finance_policy(&[]))
        .await
        .unwrap();
    allow_audiences(app, &[PAYMENTS]).await;
    Setup {
        agent,
        agent_id,
        alice,
    }
}

async fn allow_audiences(app: &TestApp, audiences: &[&str]) {
    app.admin
        .put_guard_settings(
            P,
            &GuardSettings {
                grant_audiences: audiences.iter().map(|a| a.to_string()).collect(),
                ..GuardSettings::default()
            },
        )
        .await
        .unwrap();
}

fn call(amount: i64) -> ToolRequest {
    ToolRequest {
        session_id: "s1".into(),
        tool_call: json!({"name": "payment_refund", "arguments": {"amount": amount}}),
        scope: None,
        reason: None,
        on_behalf_of: None,
        annotations: None,
        mcp: None,
    }
}

/// An approved tool call's id.
async fn approved(s: &Setup, amount: i64) -> String {
    let id = s
        .agent
        .guard_tool(P, &call(amount))
        .await
        .unwrap()
        .approval_id
        .unwrap();
    s.alice.guard_approve(P, &id, None).await.unwrap();
    id
}

/// A grant for PAYMENTS of a freshly approved call.
async fn payment_grant(s: &Setup, amount: i64) -> String {
    let id = approved(s, amount).await;
    s.agent
        .guard_grant_for(P, &id, Some(PAYMENTS))
        .await
        .unwrap()
        .access_token
}

async fn executor(app: &TestApp, admin: &Client, audiences: &[&str]) -> Client {
    let key = admin
        .create_api_key(&CreateApiKey {
            role: KeyRole::Executor,
            user_id: None,
            agent_id: None,
            name: Some("payments service".into()),
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
        })
        .await
        .unwrap();
    app.client(&key.key)
}

async fn other_tenant(app: &TestApp) -> Client {
    let created = app
        .admin
        .create_tenant(&CreateTenant {
            id: "globex".into(),
            name: None,
        })
        .await
        .unwrap();
    app.client(&created.admin_key.key)
}

fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn inactive() -> Value {
    json!({"active": false})
}

#[tokio::test]
async fn grants_carry_the_tenant_and_by_default_the_tenant_audience() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let id = approved(&s, 5).await;
    let token = s.agent.guard_grant(P, &id).await.unwrap().access_token;
    let guard = claims(&token);
    assert_eq!(guard["tid"], "default");
    assert_eq!(guard["aud"], "urn:countersign:tenant:default");

    // The seed's CIBA token too, and with a resource the tenant allows.
    let (user, reviewer) = app.reviewer("rita@example.com").await;
    let asked = s.agent.ciba_authorize(&payment(&user)).await.unwrap();
    reviewer
        .ciba_approve(&ApproveRequest {
            auth_req_id: Some(asked.auth_req_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let TokenResponse::Approved {
        access_token: Some(token),
        ..
    } = s
        .agent
        .ciba_token_for(&asked.auth_req_id, None, Some(PAYMENTS))
        .await
        .unwrap()
    else {
        panic!("expected a token");
    };
    let ciba = claims(&token);
    assert_eq!(ciba["tid"], "default");
    assert_eq!(ciba["aud"], PAYMENTS);
}

#[tokio::test]
async fn a_resource_outside_the_allow_list_is_an_invalid_target_and_changes_nothing() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let id = approved(&s, 5).await;
    let refused = s
        .agent
        .guard_grant_for(P, &id, Some("https://evil.example.com"))
        .await;
    assert_eq!(refused.as_ref().unwrap_err().status(), Some(400));
    assert_eq!(code(refused), "invalid_target");
    assert_eq!(
        code(s.agent.guard_grant_for(P, &id, Some("not a uri")).await),
        "invalid_target"
    );
    // Nothing was issued: the grant is still there to redeem.
    let token = s
        .agent
        .guard_grant_for(P, &id, Some(PAYMENTS))
        .await
        .unwrap()
        .access_token;
    assert_eq!(claims(&token)["aud"], PAYMENTS);

    // A policy's own audiences replace the tenant's for its approvals.
    let mut policy = finance_policy(&[]);
    policy.approval_config = Some(ApprovalConfig {
        audiences: vec![LEDGER.into()],
        ..policy.approval_config.unwrap()
    });
    let saved = app.admin.list_policies(P).await.unwrap().policies[0]
        .id
        .clone();
    app.admin.update_policy(P, &saved, &policy).await.unwrap();
    let id = approved(&s, 6).await;
    assert_eq!(
        code(s.agent.guard_grant_for(P, &id, Some(PAYMENTS)).await),
        "invalid_target"
    );
    let token = s
        .agent
        .guard_grant_for(P, &id, Some(LEDGER))
        .await
        .unwrap()
        .access_token;
    assert_eq!(claims(&token)["aud"], LEDGER);

    // The seed's poll refuses it too, before anything is issued.
    let (user, reviewer) = app.reviewer("rita@example.com").await;
    let asked = s.agent.ciba_authorize(&payment(&user)).await.unwrap();
    reviewer
        .ciba_approve(&ApproveRequest {
            auth_req_id: Some(asked.auth_req_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        code(
            s.agent
                .ciba_token_for(&asked.auth_req_id, None, Some(LEDGER))
                .await
        ),
        "invalid_target"
    );
    assert!(matches!(
        s.agent.ciba_token(&asked.auth_req_id, None).await.unwrap(),
        TokenResponse::Approved {
            access_token: Some(_),
            ..
        }
    ));

    // Allow-lists hold absolute URIs only.
    let bad = GuardSettings {
        grant_audiences: vec!["payments".into()],
        ..GuardSettings::default()
    };
    assert_eq!(
        code(app.admin.put_guard_settings(P, &bad).await),
        "invalid_request"
    );
}

#[tokio::test]
async fn introspection_answers_only_for_the_grants_tenant_and_audience() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let token = payment_grant(&s, 5).await;
    let payments = executor(&app, &app.admin, &[PAYMENTS]).await;
    let ledger = executor(&app, &app.admin, &[LEDGER]).await;
    let globex_admin = other_tenant(&app).await;
    let globex_payments = executor(&app, &globex_admin, &[PAYMENTS]).await;

    let answer = payments.introspect(&token, false).await.unwrap();
    assert_eq!(answer["active"], true);
    assert_eq!(answer["aud"], PAYMENTS);
    assert_eq!(answer["tid"], "default");
    assert_eq!(answer["client_id"], s.agent_id.as_str());
    assert_eq!(answer["iss"], app.base.as_str());
    assert_eq!(answer["authorization_details"][0]["tool"], "payment_refund");
    assert_eq!(
        app.admin.introspect(&token, false).await.unwrap()["active"],
        true
    );

    // Another audience, another tenant (its executor or its admin): exactly inactive.
    assert_eq!(ledger.introspect(&token, false).await.unwrap(), inactive());
    assert_eq!(
        globex_payments.introspect(&token, false).await.unwrap(),
        inactive()
    );
    assert_eq!(
        globex_admin.introspect(&token, false).await.unwrap(),
        inactive()
    );
    // Not a grant of ours.
    let mut forged: Vec<&str> = token.split('.').collect();
    let other = payment_grant(&s, 6).await;
    forged[1] = other.split('.').nth(1).unwrap();
    assert_eq!(
        payments.introspect(&forged.join("."), false).await.unwrap(),
        inactive()
    );
    assert_eq!(
        payments.introspect("garbage", false).await.unwrap(),
        inactive()
    );

    // Only executors and admins introspect.
    assert_eq!(code(s.agent.introspect(&token, false).await), "forbidden");
    assert_eq!(code(s.alice.introspect(&token, false).await), "forbidden");
    assert_eq!(
        code(app.anonymous().introspect(&token, false).await),
        "unauthorized"
    );
    let res = app
        .http()
        .post(app.url("/oauth/introspect"))
        .bearer_auth(payments.key().unwrap())
        .form(&[("consume", "true")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = app
        .http()
        .post(app.url("/oauth/introspect"))
        .bearer_auth(payments.key().unwrap())
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
}

#[tokio::test]
async fn a_grant_expires_for_introspection() {
    let app = spawn_with_clock().await;
    let s = setup(&app).await;
    let token = payment_grant(&s, 5).await;
    let payments = executor(&app, &app.admin, &[PAYMENTS]).await;
    assert_eq!(
        payments.introspect(&token, false).await.unwrap()["active"],
        true
    );
    let clock = app.clock.clone().unwrap();
    clock.advance(chrono::Duration::seconds(301));
    assert_eq!(
        payments.introspect(&token, false).await.unwrap(),
        inactive()
    );
}

#[tokio::test]
async fn a_consumed_grant_is_inactive_from_then_on() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let token = payment_grant(&s, 5).await;
    let payments = executor(&app, &app.admin, &[PAYMENTS]).await;
    // Only a verifier that may see it consumes it.
    let ledger = executor(&app, &app.admin, &[LEDGER]).await;
    assert_eq!(ledger.introspect(&token, true).await.unwrap(), inactive());

    let first = payments.introspect(&token, true).await.unwrap();
    assert_eq!(first["active"], true);
    assert_eq!(payments.introspect(&token, true).await.unwrap(), inactive());
    assert_eq!(
        payments.introspect(&token, false).await.unwrap(),
        inactive()
    );
    assert_eq!(
        app.admin.introspect(&token, false).await.unwrap(),
        inactive()
    );
    assert_eq!(
        audited(&app, "grant.consumed", first["approval_id"].as_str()).await,
        1
    );
}

#[tokio::test]
async fn of_concurrent_consumers_exactly_one_sees_the_grant_active() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let token = payment_grant(&s, 5).await;
    let payments = executor(&app, &app.admin, &[PAYMENTS]).await;
    let attempts = (0..8).map(|_| {
        let (client, token) = (payments.clone(), token.clone());
        tokio::spawn(async move { client.introspect(&token, true).await.unwrap() })
    });
    let mut active = 0;
    for attempt in attempts.collect::<Vec<_>>() {
        if attempt.await.unwrap()["active"] == true {
            active += 1;
        }
    }
    assert_eq!(active, 1);
}

#[tokio::test]
async fn a_revoked_grant_is_inactive() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let payments = executor(&app, &app.admin, &[PAYMENTS]).await;
    let ledger = executor(&app, &app.admin, &[LEDGER]).await;
    let (_, other_agent) = app.agent("other").await;

    // The agent it was issued to revokes it.
    let token = payment_grant(&s, 5).await;
    assert_eq!(code(other_agent.revoke_grant(&token).await), "forbidden");
    assert_eq!(code(ledger.revoke_grant(&token).await), "forbidden");
    assert_eq!(code(s.alice.revoke_grant(&token).await), "forbidden");
    assert_eq!(
        payments.introspect(&token, false).await.unwrap()["active"],
        true
    );
    s.agent.revoke_grant(&token).await.unwrap();
    assert_eq!(
        payments.introspect(&token, false).await.unwrap(),
        inactive()
    );
    assert_eq!(payments.introspect(&token, true).await.unwrap(), inactive());
    // Again, or an unknown token: still 200.
    s.agent.revoke_grant(&token).await.unwrap();
    s.agent.revoke_grant("not-a-token").await.unwrap();
    let approval_id = claims(&token)["approval_id"].as_str().unwrap().to_string();
    assert_eq!(audited(&app, "grant.revoked", Some(&approval_id)).await, 1);

    // An executor of its audience, and an admin of its tenant, revoke too.
    let token = payment_grant(&s, 6).await;
    payments.revoke_grant(&token).await.unwrap();
    assert_eq!(
        app.admin.introspect(&token, false).await.unwrap(),
        inactive()
    );
    let token = payment_grant(&s, 7).await;
    // Another tenant's admin cannot: for them the token is unknown.
    let globex_admin = other_tenant(&app).await;
    globex_admin.revoke_grant(&token).await.unwrap();
    assert_eq!(
        payments.introspect(&token, false).await.unwrap()["active"],
        true
    );
    app.admin.revoke_grant(&token).await.unwrap();
    assert_eq!(
        payments.introspect(&token, false).await.unwrap(),
        inactive()
    );
}

#[tokio::test]
async fn executor_keys_only_introspect_and_revoke() {
    let app = spawn_app().await;
    let s = setup(&app).await;
    let payments = executor(&app, &app.admin, &[PAYMENTS]).await;
    let (user, _) = app.reviewer("rita@example.com").await;
    assert_eq!(
        code(payments.ciba_authorize(&payment(&user)).await),
        "forbidden"
    );
    assert_eq!(code(payments.guard_tool(P, &call(5)).await), "forbidden");
    let id = s
        .agent
        .guard_tool(P, &call(5))
        .await
        .unwrap()
        .approval_id
        .unwrap();
    assert_eq!(
        code(payments.guard_approve(P, &id, None).await),
        "forbidden"
    );
    assert_eq!(code(payments.approve(&id, None).await), "forbidden");
    assert_eq!(
        code(payments.guard_approval(P, &id, None).await),
        "forbidden"
    );
    assert_eq!(
        code(payments.list_approvals(&Default::default()).await),
        "forbidden"
    );
    assert_eq!(code(payments.list_users().await), "forbidden");

    // An executor key needs audiences; other keys take none.
    let key = |role, audiences: Vec<String>| CreateApiKey {
        role,
        user_id: None,
        agent_id: None,
        name: None,
        audiences,
    };
    let none = app
        .admin
        .create_api_key(&key(KeyRole::Executor, vec![]))
        .await;
    assert_eq!(code(none), "invalid_request");
    let not_uri = key(KeyRole::Executor, vec!["payments".into()]);
    assert_eq!(
        code(app.admin.create_api_key(&not_uri).await),
        "invalid_request"
    );
    let admin_with = key(KeyRole::Admin, vec![PAYMENTS.into()]);
    assert_eq!(
        code(app.admin.create_api_key(&admin_with).await),
        "invalid_request"
    );
    let listed = app.admin.list_api_keys().await.unwrap().api_keys;
    let exec = listed.iter().find(|k| k.role == KeyRole::Executor).unwrap();
    assert_eq!(exec.audiences, vec![PAYMENTS.to_string()]);
}

#[tokio::test]
async fn the_grant_endpoints_are_described_with_form_bodies_and_every_status() {
    let app = spawn_app().await;
    let doc: Value = app.openapi().await;
    for path in ["/oauth/introspect", "/oauth/revoke"] {
        let op = &doc["paths"][path]["post"];
        assert!(
            op["requestBody"]["content"]["application/x-www-form-urlencoded"].is_object(),
            "{path}"
        );
        for status in ["200", "400", "401", "403", "415"] {
            assert!(op["responses"][status].is_object(), "{path} {status}");
        }
    }
    let resource =
        doc["paths"]["/v1/guard/{proxy_id}/approvals/{approval_id}/grant"]["post"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "resource");
    assert!(resource);
}
