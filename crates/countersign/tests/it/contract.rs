//! The OpenAPI document is the API's contract: it names each operation's keys, errors and
//! constraints, links the operations that share ids, and the server holds to it (a body the
//! document allows is read as such; one it forbids is refused).
use serde_json::{Value, json};

use crate::support::*;

async fn call(app: &TestApp, key: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let res = app
        .http()
        .request(method.parse().unwrap(), app.url(path))
        .bearer_auth(key)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

async fn document(app: &TestApp) -> Value {
    app.openapi().await
}

#[tokio::test]
async fn the_document_names_keys_errors_constraints_and_links() {
    let app = spawn_with(|s| {
        s.requests.min_expiry_secs = 20;
        s.requests.max_expiry_secs = 3_600;
    })
    .await;
    let doc = document(&app).await;

    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for scheme in ["admin_key", "reviewer_key", "agent_key"] {
        assert_eq!(schemes[scheme]["scheme"], "bearer", "{scheme}");
    }
    let op = |path: &str, method: &str| doc["paths"][path][method].clone();
    assert_eq!(
        op("/ciba/authorize", "post")["security"],
        json!([{"agent_key": []}])
    );
    assert_eq!(
        op("/v1/approvals", "get")["security"],
        json!([{"reviewer_key": []}, {"admin_key": []}])
    );
    assert_eq!(
        op("/v1/admin/users", "get")["security"],
        json!([{"admin_key": []}])
    );

    // Every error an operation can answer, each with the error body; no ranges.
    let list_users = op("/v1/admin/users", "get");
    for status in ["401", "403", "429", "500", "503"] {
        assert!(
            list_users["responses"][status].is_object(),
            "GET /v1/admin/users {status}"
        );
    }
    let create_user = op("/v1/admin/users", "post");
    for status in ["400", "409", "413", "415", "422"] {
        assert!(
            create_user["responses"][status].is_object(),
            "POST /v1/admin/users {status}"
        );
    }
    assert!(op("/v1/admin/users/{id}", "get")["responses"]["404"].is_object());
    assert!(op("/v1/approvals", "get")["responses"]["4XX"].is_null());
    assert_eq!(
        doc["components"]["responses"]["Unauthorized"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );

    // Constraints the server enforces, with this server's configured expiry range.
    let schemas = &doc["components"]["schemas"];
    let authorize = &schemas["AuthorizeRequest"]["properties"];
    assert_eq!(authorize["scope"]["minLength"], 1);
    assert_eq!(authorize["scope"]["maxLength"], 200);
    assert!(authorize["bindingMessage"]["pattern"].is_string());
    assert_eq!(authorize["requestedExpiry"]["minimum"], 20);
    assert_eq!(authorize["requestedExpiry"]["maximum"], 3_600);
    assert_eq!(
        schemas["CreateTenant"]["properties"]["id"]["pattern"],
        "^[a-z0-9][a-z0-9-]{0,62}$"
    );
    assert_eq!(
        schemas["ApproveRequest"]["oneOf"].as_array().unwrap().len(),
        2
    );
    assert_eq!(
        schemas["CreateApiKey"]["oneOf"].as_array().unwrap().len(),
        4
    );
    assert_eq!(
        op("/v1/admin/signing-keys/rotate", "post")["requestBody"]["required"],
        false
    );

    // Links from what creates an id to what uses it.
    let link = &op("/ciba/authorize", "post")["responses"]["200"]["links"]["PollToken"];
    assert_eq!(link["operationId"], "ciba_token");
    assert_eq!(link["parameters"]["authReqId"], "$response.body#/authReqId");
    let link =
        &op("/v1/guard/{proxy_id}/policies", "post")["responses"]["201"]["links"]["GetPolicy"];
    assert_eq!(link["operationId"], "guard_get_policy");
    assert_eq!(link["parameters"]["proxy_id"], "$request.path.proxy_id");
}

#[tokio::test]
async fn a_body_must_be_a_json_object_even_when_every_field_is_optional() {
    let app = spawn_app().await;
    let (_, reviewer) = app.reviewer("alice@example.com").await;
    let key = reviewer.key().unwrap().to_string();
    let path = "/v1/me/notification-preferences";
    let (status, before) = call(&app, &key, "GET", path, "").await;
    assert_eq!(status, 200);
    for body in ["[false, false]", "[null, null]", "3", "\"email\""] {
        let (status, got) = call(&app, &key, "PUT", path, body).await;
        assert_eq!((status, code(&got)), (422, "invalid_body"), "{body}: {got}");
    }
    let (_, after) = call(&app, &key, "GET", path, "").await;
    assert_eq!(before, after, "a refused body changes nothing");
}

#[tokio::test]
async fn a_whole_number_written_with_a_fraction_is_an_integer() {
    let app = spawn_app().await;
    let (user, _) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("bot").await;
    let body = json!({"userId": user, "scope": "approve:payment", "bindingMessage": "Pay?"})
        .to_string()
        .replace('}', ",\"requestedExpiry\":300.0}");
    let (status, got) = call(&app, agent.key().unwrap(), "POST", "/ciba/authorize", &body).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["expiresIn"], 300);
    let fractional = body.replace("300.0", "300.5");
    let (status, got) = call(
        &app,
        agent.key().unwrap(),
        "POST",
        "/ciba/authorize",
        &fractional,
    )
    .await;
    assert_eq!((status, code(&got)), (422, "invalid_body"));
}

#[tokio::test]
async fn a_tool_call_type_that_is_not_a_string_is_refused() {
    let app = spawn_app().await;
    let (_, agent) = app.agent("bot").await;
    let body =
        json!({"session_id": "s1", "tool_call": {"type": {}, "name": "read_file", "input": {}}});
    let (status, got) = call(
        &app,
        agent.key().unwrap(),
        "POST",
        "/v1/guard/default/tool",
        &body.to_string(),
    )
    .await;
    assert_eq!((status, code(&got)), (400, "invalid_request"), "{got}");
    assert!(
        got["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tool_call.type")
    );
}

#[tokio::test]
async fn a_key_without_a_person_may_not_use_my_preferences() {
    let app = spawn_app().await;
    let (status, got) = call(
        &app,
        ADMIN_KEY,
        "GET",
        "/v1/me/notification-preferences",
        "",
    )
    .await;
    assert_eq!((status, code(&got)), (403, "forbidden"), "{got}");
}

#[tokio::test]
async fn inviting_a_disabled_user_conflicts_with_their_state() {
    let app = spawn_app().await;
    let (user, _) = app.reviewer("alice@example.com").await;
    let (status, _) = call(
        &app,
        ADMIN_KEY,
        "POST",
        &format!("/v1/admin/users/{user}/disable"),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let (status, got) = call(
        &app,
        ADMIN_KEY,
        "POST",
        "/v1/admin/invitations",
        r#"{"email":"alice@example.com"}"#,
    )
    .await;
    assert_eq!((status, code(&got)), (409, "disabled"), "{got}");
}

#[tokio::test]
async fn a_tool_pattern_that_is_not_a_glob_has_its_own_code() {
    let app = spawn_app().await;
    let body = json!({"name": "broken", "tool_pattern": "payment_[", "action": "block"});
    let (status, got) = call(
        &app,
        ADMIN_KEY,
        "POST",
        "/v1/guard/default/policies",
        &body.to_string(),
    )
    .await;
    assert_eq!((status, code(&got)), (400, "invalid_pattern"), "{got}");
}

#[tokio::test]
async fn a_test_message_refuses_a_to_that_is_not_an_address_on_every_channel() {
    let app = spawn_app().await;
    for channel in ["email", "slack", "teams"] {
        let (status, got) = call(
            &app,
            ADMIN_KEY,
            "POST",
            &format!("/v1/admin/notification-channels/{channel}/test"),
            r#"{"to":"not an address"}"#,
        )
        .await;
        assert_eq!(
            (status, code(&got)),
            (400, "invalid_request"),
            "{channel}: {got}"
        );
    }
}
