//! Safe retries: `Idempotency-Key` on the calls that create requests.
use countersign_client::Client;
use countersign_proto::guard::{PolicyAction, PolicyInput};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::support::*;

struct Reply {
    status: u16,
    replayed: bool,
    body: Value,
}

async fn post_json(
    app: &TestApp,
    as_: &Client,
    path: &str,
    key: Option<&str>,
    body: &Value,
) -> Reply {
    let mut request = app
        .http()
        .post(app.url(path))
        .bearer_auth(as_.key().unwrap())
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    Reply {
        status: response.status().as_u16(),
        replayed: response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true"),
        body: response.json().await.unwrap_or(Value::Null),
    }
}

async fn requests(app: &TestApp) -> i64 {
    app.query_i64("SELECT COUNT(*) FROM approval_requests")
        .await
}

fn ask(user: &str) -> Value {
    serde_json::to_value(payment(user)).unwrap()
}

#[tokio::test]
async fn a_retried_authorize_gets_the_first_answer_and_a_reused_key_is_refused() {
    let app = spawn_app().await;
    let (user, _) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("bot").await;
    let (_, other_agent) = app.agent("other-bot").await;
    let key = "8e03978e-40d5-43e8-bc93-6894a57f9324";

    let first = post_json(&app, &agent, "/ciba/authorize", Some(key), &ask(&user)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(!first.replayed);
    // The same body in another member order is the same call.
    let mut reordered = serde_json::Map::new();
    for (k, v) in ask(&user).as_object().unwrap().iter().rev() {
        reordered.insert(k.clone(), v.clone());
    }
    let again = post_json(
        &app,
        &agent,
        "/ciba/authorize",
        Some(key),
        &Value::Object(reordered),
    )
    .await;
    assert_eq!(again.status, 200);
    assert!(again.replayed);
    assert_eq!(
        again.body, first.body,
        "the same answer, the same authReqId"
    );
    assert_eq!(requests(&app).await, 1);

    // The same key for another call is refused and creates nothing.
    let mut changed = ask(&user);
    changed["bindingMessage"] = json!("Approve payment of $5,000 to Acme Corp?");
    let reused = post_json(&app, &agent, "/ciba/authorize", Some(key), &changed).await;
    assert_eq!(reused.status, 422, "{}", reused.body);
    assert_eq!(reused.body["error"]["code"], "idempotency_key_reused");
    assert_eq!(requests(&app).await, 1);

    // Keys belong to their caller: another agent's identical key is its own.
    let theirs = post_json(
        &app,
        &other_agent,
        "/ciba/authorize",
        Some(key),
        &ask(&user),
    )
    .await;
    assert_eq!(theirs.status, 200);
    assert!(!theirs.replayed);
    assert_ne!(theirs.body["authReqId"], first.body["authReqId"]);

    // Without a key every call is a new request; a malformed key is a 400 that changes nothing.
    for bad in ["", &"k".repeat(256), "caf\u{e9}"] {
        let refused = post_json(&app, &agent, "/ciba/authorize", Some(bad), &ask(&user)).await;
        assert_eq!(refused.status, 400, "{bad:?}: {}", refused.body);
        assert_eq!(refused.body["error"]["code"], "invalid_idempotency_key");
    }
    assert_eq!(requests(&app).await, 2);
    post_json(&app, &agent, "/ciba/authorize", None, &ask(&user)).await;
    post_json(&app, &agent, "/ciba/authorize", None, &ask(&user)).await;
    assert_eq!(requests(&app).await, 4);

    // The replayed authReqId is the live one: the agent can poll it.
    let polled = agent
        .ciba_token(first.body["authReqId"].as_str().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(polled, countersign_proto::ciba::TokenResponse::Pending);
    // The stored answer does not reveal it.
    let leaked = app
        .query_i64(&format!(
            "SELECT COUNT(*) FROM idempotency_keys WHERE answer LIKE '%{}%' OR key_hash = '{key}'",
            first.body["authReqId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(leaked, 0);
}

#[tokio::test]
async fn a_call_whose_answer_was_lost_is_learned_by_retrying() {
    let app = spawn_app().await;
    let (user, _) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("bot").await;
    let body = serde_json::to_string(&ask(&user)).unwrap();
    let key = "lost-answer-1";
    // The first call is sent and the connection dropped without reading the answer.
    let mut socket = tokio::net::TcpStream::connect(app.server.addr)
        .await
        .unwrap();
    let raw = format!(
        "POST /ciba/authorize HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nIdempotency-Key: {key}\r\nContent-Length: {}\r\n\r\n{body}",
        agent.key().unwrap(),
        body.len()
    );
    socket.write_all(raw.as_bytes()).await.unwrap();
    socket.flush().await.unwrap();
    drop(socket);
    // Whenever the retry lands (before, during or after the first write), there is one
    // request, and the retry names it.
    let retried = post_json(&app, &agent, "/ciba/authorize", Some(key), &ask(&user)).await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while requests(&app).await == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(requests(&app).await, 1);
    let again = post_json(&app, &agent, "/ciba/authorize", Some(key), &ask(&user)).await;
    assert!(again.replayed);
    assert_eq!(again.body, retried.body);
    let polled = agent
        .ciba_token(retried.body["authReqId"].as_str().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(polled, countersign_proto::ciba::TokenResponse::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_with_one_key_create_one_request() {
    let app = spawn_app().await;
    let (user, _) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("bot").await;
    let app = std::sync::Arc::new(app);
    let mut calls = Vec::new();
    for _ in 0..8 {
        let (app, agent, user) = (app.clone(), agent.clone(), user.clone());
        calls.push(tokio::spawn(async move {
            post_json(
                &app,
                &agent,
                "/ciba/authorize",
                Some("together"),
                &ask(&user),
            )
            .await
        }));
    }
    let mut answers = Vec::new();
    for call in calls {
        let reply = call.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        answers.push(reply.body);
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert_eq!(requests(&app).await, 1);
}

#[tokio::test]
async fn a_retried_tool_call_names_the_first_approval_and_allow_is_evaluated_again() {
    let app = spawn_app().await;
    use countersign_proto::guard::{GroupInput, MemberInput, MemberRole};
    let (_, reviewer) = app.reviewer("alice@company.com").await;
    app.admin
        .create_group(
            "default",
            &GroupInput {
                id: Some("group_finance".into()),
                name: "Finance Team".into(),
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
        .create_policy("default", &finance_policy(&[]))
        .await
        .unwrap();
    let (_, agent) = app.agent("bot").await;
    let path = "/v1/guard/default/tool";
    let call = |amount: i64| json!({"session_id": "s1", "tool_call": {"name": "payment_refund", "arguments": {"amount": amount}}});

    let first = post_json(&app, &agent, path, Some("refund-1"), &call(500)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["action"], "require_approval");
    let approval_id = first.body["approval_id"].as_str().unwrap().to_string();
    reviewer
        .guard_reject("default", &approval_id, None)
        .await
        .unwrap();
    // Decided since: a fresh call would open a new approval, the retry still names the first.
    let retried = post_json(&app, &agent, path, Some("refund-1"), &call(500)).await;
    assert!(retried.replayed);
    assert_eq!(retried.body, first.body);
    let fresh = post_json(&app, &agent, path, Some("refund-2"), &call(500)).await;
    assert!(!fresh.replayed);
    assert_ne!(fresh.body["approval_id"], first.body["approval_id"]);
    let reused = post_json(&app, &agent, path, Some("refund-1"), &call(501)).await;
    assert_eq!(reused.status, 422);
    assert_eq!(reused.body["error"]["code"], "idempotency_key_reused");
    // The MCP origin and annotations are part of the call: the same key with them is another call.
    for extra in [
        json!({"mcp": {"server": "payments"}}),
        json!({"annotations": {"destructiveHint": true}}),
    ] {
        let mut body = call(500);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let reused = post_json(&app, &agent, path, Some("refund-1"), &body).await;
        assert_eq!(reused.status, 422, "{extra}");
        assert_eq!(reused.body["error"]["code"], "idempotency_key_reused");
    }

    // A call that found its approval already pending is remembered too.
    let found = post_json(&app, &agent, path, Some("refund-3"), &call(500)).await;
    assert_eq!(found.body["approval_id"], fresh.body["approval_id"]);
    reviewer
        .guard_reject("default", fresh.body["approval_id"].as_str().unwrap(), None)
        .await
        .unwrap();
    let found_again = post_json(&app, &agent, path, Some("refund-3"), &call(500)).await;
    assert!(found_again.replayed);
    assert_eq!(found_again.body["approval_id"], fresh.body["approval_id"]);

    // Allow and block create nothing and are not remembered: a retry meets today's policies.
    let read = json!({"session_id": "s1", "tool_call": {"name": "read_file", "arguments": {}}});
    let allowed = post_json(&app, &agent, path, Some("read-1"), &read).await;
    assert_eq!(allowed.body["action"], "allow", "{}", allowed.body);
    app.admin
        .create_policy(
            "default",
            &PolicyInput {
                name: "No reading".into(),
                tool_pattern: "read_*".into(),
                action: PolicyAction::Block,
                description: None,
                priority: None,
                is_active: None,
                condition: None,
                approval_config: None,
            },
        )
        .await
        .unwrap();
    let retried = post_json(&app, &agent, path, Some("read-1"), &read).await;
    assert!(!retried.replayed);
    assert_eq!(retried.body["action"], "block", "{}", retried.body);
}

#[tokio::test]
async fn a_retried_backchannel_request_gets_the_first_auth_req_id() {
    let app = spawn_app().await;
    app.reviewer("alice@example.com").await;
    let (agent_id, _) = app.agent("rp").await;
    let created = app
        .admin
        .create_oidc_client(&countersign_proto::oidc::CreateOidcClient {
            agent_id: agent_id.clone(),
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
    let secret = created.client_secret.unwrap();
    let bc = |key: &'static str, message: &'static str| {
        let request = app
            .http()
            .post(app.url("/oidc/bc-authorize"))
            .basic_auth(&agent_id, Some(&secret))
            .header("Idempotency-Key", key)
            .form(&[
                ("scope", "openid"),
                ("login_hint", "alice@example.com"),
                ("binding_message", message),
            ]);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let replayed = response.headers().contains_key("idempotent-replayed");
            let cache = response.headers()["cache-control"].clone();
            assert_eq!(cache, "no-store");
            (status, replayed, response.json::<Value>().await.unwrap())
        }
    };
    let (status, replayed, first) = bc("bc-1", "W4SCT").await;
    assert_eq!(status, 200, "{first}");
    assert!(!replayed);
    let (status, replayed, again) = bc("bc-1", "W4SCT").await;
    assert_eq!((status, replayed), (200, true));
    assert_eq!(again, first);
    let (status, _, reused) = bc("bc-1", "OTHER").await;
    assert_eq!(status, 422, "{reused}");
    assert_eq!(reused["error"], "idempotency_key_reused");
    assert_eq!(requests(&app).await, 1);
}

#[tokio::test]
async fn the_api_document_declares_the_idempotency_key() {
    let app = spawn_app().await;
    let doc: Value = app.openapi().await;
    for path in [
        "/ciba/authorize",
        "/v1/guard/{proxy_id}/tool",
        "/oidc/bc-authorize",
    ] {
        let op = &doc["paths"][path]["post"];
        let param = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "Idempotency-Key")
            .unwrap_or_else(|| panic!("{path} does not declare Idempotency-Key"));
        assert_eq!(param["in"], "header");
        assert_eq!(param["required"], false);
        assert_eq!(param["schema"]["maxLength"], 255);
        assert!(op["responses"]["409"].is_object(), "{path}");
        assert!(op["responses"]["422"].is_object(), "{path}");
    }
}
