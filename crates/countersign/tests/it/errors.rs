//! Bad input gets a clear 4xx with a stable code, changes nothing and never crashes the server.
use crate::support::*;

async fn post_raw(
    app: &TestApp,
    path: &str,
    key: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, serde_json::Value) {
    let res = app
        .http()
        .post(app.url(path))
        .bearer_auth(key)
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body = res
        .json::<serde_json::Value>()
        .await
        .unwrap_or(serde_json::Value::Null);
    (status, body)
}

fn code_of(body: &serde_json::Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn malformed_bodies_get_4xx_with_codes() {
    let app = spawn_app().await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("bot").await;
    let key = agent.key().unwrap().to_string();
    let json = "application/json";

    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("bad json", "{\"userId\":".into(), 400, "invalid_json"),
        ("not json at all", "hello".into(), 400, "invalid_json"),
        (
            "missing scope",
            format!("{{\"userId\":\"{user}\",\"bindingMessage\":\"m\"}}"),
            422,
            "invalid_body",
        ),
        (
            "wrong type",
            format!("{{\"userId\":\"{user}\",\"scope\":1,\"bindingMessage\":\"m\"}}"),
            422,
            "invalid_body",
        ),
        (
            "expiry as string",
            format!(
                "{{\"userId\":\"{user}\",\"scope\":\"s\",\"bindingMessage\":\"m\",\"requestedExpiry\":\"300\"}}"
            ),
            422,
            "invalid_body",
        ),
        (
            "unknown field",
            format!(
                "{{\"userId\":\"{user}\",\"scope\":\"s\",\"bindingMessage\":\"m\",\"amount\":5}}"
            ),
            422,
            "invalid_body",
        ),
        ("array", "[]".into(), 422, "invalid_body"),
    ];
    for (name, body, status, code) in cases {
        let (got_status, got) = post_raw(&app, "/ciba/authorize", &key, json, body).await;
        assert_eq!((got_status, code_of(&got)), (status, code), "{name}: {got}");
        assert!(
            got["error"]["message"].as_str().unwrap().len() > 5,
            "{name} has a helpful message"
        );
    }
    let (status, body) = post_raw(&app, "/ciba/authorize", &key, "text/plain", "{}").await;
    assert_eq!((status, code_of(&body)), (415, "unsupported_media_type"));

    let huge = format!(
        "{{\"userId\":\"{user}\",\"scope\":\"s\",\"bindingMessage\":\"m\",\"context\":{{\"x\":\"{}\"}}}}",
        "a".repeat(200 * 1024)
    );
    let (status, body) = post_raw(&app, "/ciba/authorize", &key, json, huge).await;
    assert_eq!((status, code_of(&body)), (413, "payload_too_large"));

    // Decisions: missing id, wrong types, garbage.
    let rkey = reviewer.key().unwrap().to_string();
    let (status, body) = post_raw(&app, "/ciba/approve", &rkey, json, "{}").await;
    assert_eq!((status, code_of(&body)), (422, "invalid_body"));
    let (status, body) = post_raw(&app, "/ciba/approve", &rkey, json, "{\"authReqId\":5}").await;
    assert_eq!((status, code_of(&body)), (422, "invalid_body"));
    let (status, body) = post_raw(
        &app,
        "/ciba/deny",
        &rkey,
        json,
        "{\"authReqId\":\"x\",\"reason\":[]}",
    )
    .await;
    assert_eq!((status, code_of(&body)), (422, "invalid_body"));

    // Admin bodies.
    let (status, body) = post_raw(
        &app,
        "/v1/admin/agents",
        ADMIN_KEY,
        json,
        "{\"name\":\"b\",\"trust_level\":\"godlike\"}",
    )
    .await;
    assert_eq!((status, code_of(&body)), (422, "invalid_body"));
    let (status, body) = post_raw(
        &app,
        "/v1/admin/users",
        ADMIN_KEY,
        json,
        "{\"email\":\"nope\",\"name\":\"x\"}",
    )
    .await;
    assert_eq!((status, code_of(&body)), (400, "invalid_request"));
    let (status, body) = post_raw(
        &app,
        "/v1/admin/api-keys",
        ADMIN_KEY,
        json,
        "{\"role\":\"root\"}",
    )
    .await;
    assert_eq!((status, code_of(&body)), (422, "invalid_body"));

    // Bad query strings.
    let res = app
        .http()
        .get(app.url("/ciba/token"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = app
        .http()
        .get(app.url("/ciba/token?authReqId=x&waitSeconds=-1"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = app
        .http()
        .get(app.url("/v1/approvals?status=maybe"))
        .bearer_auth(&rkey)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = app
        .http()
        .get(app.url("/v1/approvals?limit=1000"))
        .bearer_auth(&rkey)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    // Nothing was created, and the server is still up.
    assert!(
        app.admin
            .list_approvals(&Default::default())
            .await
            .unwrap()
            .approvals
            .is_empty()
    );
    assert_eq!(app.admin.list_agents().await.unwrap().agents.len(), 1);
    app.anonymous().health().await.unwrap();
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_the_error_shape() {
    let app = spawn_app().await;
    let res = app.http().get(app.url("/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(code_of(&body), "not_found");
    let res = app
        .http()
        .delete(app.url("/ciba/authorize"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(code_of(&body), "method_not_allowed");
}
