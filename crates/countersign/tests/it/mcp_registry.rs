//! Upstream MCP servers registered for the in-server gateway (`/v1/admin/mcp-servers`).
use std::collections::BTreeMap;

use countersign_proto::admin::CreateTenant;
use countersign_proto::mcp::{CreateMcpServer, UpdateMcpServer};
use serde_json::{Value, json};

use crate::support::*;

const SECRET: &str = "s3cret-upstream-token";

async fn call(
    app: &TestApp,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app
        .http()
        .request(method.parse().unwrap(), app.url(path))
        .bearer_auth(key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn files(url: &str) -> CreateMcpServer {
    CreateMcpServer {
        id: "files".into(),
        url: url.into(),
        headers: Some(BTreeMap::from([
            ("Authorization".to_string(), format!("Bearer {SECRET}")),
            ("X-Team".to_string(), "ops".to_string()),
        ])),
    }
}

#[tokio::test]
async fn admins_register_list_change_and_delete_mcp_servers_without_showing_header_values() {
    let app = spawn_app().await;
    let created = app
        .admin
        .create_mcp_server(&files("https://mcp.example.com/mcp"))
        .await
        .unwrap();
    assert_eq!(created.id, "files");
    assert_eq!(created.url, "https://mcp.example.com/mcp");
    assert_eq!(created.header_names, ["Authorization", "X-Team"]);
    // No answer, listing or audit event ever carries a header value.
    let (status, raw) = call(&app, ADMIN_KEY, "GET", "/v1/admin/mcp-servers", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        raw["mcp_servers"][0]["header_names"],
        json!(["Authorization", "X-Team"])
    );
    assert!(!raw.to_string().contains(SECRET), "{raw}");
    let (status, one) = call(&app, ADMIN_KEY, "GET", "/v1/admin/mcp-servers/files", None).await;
    assert_eq!(status, 200);
    assert!(!one.to_string().contains(SECRET));
    assert_eq!(one["id"], "files");
    // A second server without headers.
    app.admin
        .create_mcp_server(&CreateMcpServer {
            id: "calendar-2".into(),
            url: "https://calendar.example.com/mcp".into(),
            headers: None,
        })
        .await
        .unwrap();
    let listed = app.admin.list_mcp_servers().await.unwrap().mcp_servers;
    assert_eq!(
        listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["calendar-2", "files"]
    );
    assert!(listed[0].header_names.is_empty());
    // Replacing changes the URL and the headers.
    let updated = app
        .admin
        .update_mcp_server(
            "files",
            &UpdateMcpServer {
                url: "https://files.example.com/mcp".into(),
                headers: Some(BTreeMap::from([(
                    "X-Api-Key".to_string(),
                    SECRET.to_string(),
                )])),
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.url, "https://files.example.com/mcp");
    assert_eq!(updated.header_names, ["X-Api-Key"]);
    assert_eq!(updated.created_at, created.created_at);
    // Delete once; after that it is gone.
    app.admin.delete_mcp_server("files").await.unwrap();
    assert_eq!(
        code(app.admin.delete_mcp_server("files").await),
        "not_found"
    );
    assert_eq!(code(app.admin.get_mcp_server("files").await), "not_found");
    let (status, v) = call(
        &app,
        ADMIN_KEY,
        "PUT",
        "/v1/admin/mcp-servers/files",
        Some(json!({"url": "https://files.example.com/mcp"})),
    )
    .await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "not_found");
    // Ids that could never exist are not found either.
    for path in ["/v1/admin/mcp-servers/Nope", "/v1/admin/mcp-servers/a%20b"] {
        let (status, _) = call(&app, ADMIN_KEY, "GET", path, None).await;
        assert_eq!(status, 404, "{path}");
    }
    // Every change is audited, with header names only.
    for action in [
        "mcp_server.created",
        "mcp_server.updated",
        "mcp_server.deleted",
    ] {
        assert!(audited(&app, action, Some("files")).await >= 1, "{action}");
    }
    let events = app.admin.audit_page(None, Some(500)).await.unwrap().events;
    let created_event = events
        .iter()
        .find(|e| e.action == "mcp_server.created")
        .unwrap();
    assert_eq!(
        created_event.details["header_names"],
        json!(["Authorization", "X-Team"])
    );
    assert!(
        !serde_json::to_string(&events).unwrap().contains(SECRET),
        "an audit event holds a header value"
    );
}

#[tokio::test]
async fn a_duplicate_id_is_a_conflict() {
    let app = spawn_app().await;
    app.admin
        .create_mcp_server(&files("https://mcp.example.com/mcp"))
        .await
        .unwrap();
    let (status, v) = call(
        &app,
        ADMIN_KEY,
        "POST",
        "/v1/admin/mcp-servers",
        Some(json!({"id": "files", "url": "https://other.example.com/mcp"})),
    )
    .await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "already_exists");
    // The first registration is unchanged.
    let kept = app.admin.get_mcp_server("files").await.unwrap();
    assert_eq!(kept.url, "https://mcp.example.com/mcp");
}

#[tokio::test]
async fn bad_ids_urls_and_headers_are_refused_with_their_codes() {
    let app = spawn_app().await;
    let long_value = "v".repeat(4097);
    let too_many: serde_json::Map<String, Value> =
        (0..21).map(|i| (format!("X-{i}"), json!("v"))).collect();
    let cases: Vec<(Value, u16, &str)> = vec![
        // Ids: lowercase letters, digits, `_`, `-`; a letter or digit first; at most 63.
        (
            json!({"id": "Files", "url": "https://a.example.com"}),
            400,
            "invalid_request",
        ),
        (
            json!({"id": "-files", "url": "https://a.example.com"}),
            400,
            "invalid_request",
        ),
        (
            json!({"id": "", "url": "https://a.example.com"}),
            400,
            "invalid_request",
        ),
        (
            json!({"id": "a/b", "url": "https://a.example.com"}),
            400,
            "invalid_request",
        ),
        (
            json!({"id": "a".repeat(64), "url": "https://a.example.com"}),
            400,
            "invalid_request",
        ),
        // URLs: http(s) with a host; https and public addresses unless the operator allows.
        (
            json!({"id": "x", "url": "ftp://a.example.com"}),
            400,
            "invalid_request",
        ),
        (
            json!({"id": "x", "url": "https://user:pw@a.example.com"}),
            400,
            "invalid_request",
        ),
        (
            json!({"id": "x", "url": "http://a.example.com/mcp"}),
            400,
            "endpoint_not_allowed",
        ),
        (
            json!({"id": "x", "url": "https://127.0.0.1/mcp"}),
            400,
            "endpoint_not_allowed",
        ),
        (
            json!({"id": "x", "url": "https://10.0.0.5/mcp"}),
            400,
            "endpoint_not_allowed",
        ),
        (
            json!({"id": "x", "url": "https://[::1]/mcp"}),
            400,
            "endpoint_not_allowed",
        ),
        // Headers: token names, visible ASCII values, no protocol-owned names, at most 20.
        (
            json!({"id": "x", "url": "https://a.example.com", "headers": {"Bad Name": "v"}}),
            400,
            "invalid_request",
        ),
        (
            json!({"id": "x", "url": "https://a.example.com", "headers": {"X-Token": format!("{SECRET}\r\nX-Injected: 1")}}),
            400,
            "invalid_request",
        ),
        (
            json!({"id": "x", "url": "https://a.example.com", "headers": {"X-Token": format!("{SECRET}é")}}),
            400,
            "invalid_request",
        ),
        (
            json!({"id": "x", "url": "https://a.example.com", "headers": {"X-Token": long_value}}),
            400,
            "invalid_request",
        ),
        (
            json!({"id": "x", "url": "https://a.example.com", "headers": {"host": "evil.example.com"}}),
            400,
            "invalid_request",
        ),
        (
            json!({"id": "x", "url": "https://a.example.com", "headers": {"Mcp-Session-Id": "s"}}),
            400,
            "invalid_request",
        ),
        (
            json!({"id": "x", "url": "https://a.example.com", "headers": {"content-type": "text/plain"}}),
            400,
            "invalid_request",
        ),
        (
            json!({"id": "x", "url": "https://a.example.com", "headers": too_many}),
            400,
            "invalid_request",
        ),
        // Shapes: unknown fields, a header value that is not a string.
        (
            json!({"id": "x", "url": "https://a.example.com", "secret": "s"}),
            422,
            "invalid_body",
        ),
        (
            json!({"id": "x", "url": "https://a.example.com", "headers": {"X-N": 5}}),
            422,
            "invalid_body",
        ),
    ];
    for (body, status, expected) in cases {
        let (got, v) = call(
            &app,
            ADMIN_KEY,
            "POST",
            "/v1/admin/mcp-servers",
            Some(body.clone()),
        )
        .await;
        assert_eq!(got, status, "{body} → {v}");
        assert_eq!(v["error"]["code"], expected, "{body} → {v}");
        // The message never repeats a header value.
        assert!(!v.to_string().contains(SECRET), "{v}");
    }
    // Nothing was stored.
    assert!(
        app.admin
            .list_mcp_servers()
            .await
            .unwrap()
            .mcp_servers
            .is_empty()
    );
    // The same checks apply when replacing.
    app.admin
        .create_mcp_server(&files("https://mcp.example.com/mcp"))
        .await
        .unwrap();
    let (status, v) = call(
        &app,
        ADMIN_KEY,
        "PUT",
        "/v1/admin/mcp-servers/files",
        Some(json!({"url": "https://mcp.example.com/mcp", "headers": {"Connection": "close"}})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = call(
        &app,
        ADMIN_KEY,
        "PUT",
        "/v1/admin/mcp-servers/files",
        Some(json!({"url": "http://mcp.example.com/mcp"})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "endpoint_not_allowed");
    assert_eq!(
        app.admin
            .get_mcp_server("files")
            .await
            .unwrap()
            .header_names,
        ["Authorization", "X-Team"]
    );
}

#[tokio::test]
async fn the_operator_may_allow_http_and_private_upstreams() {
    let app = spawn_with(|s| {
        s.outbound.allow_http = true;
        s.outbound.allow_private_networks = true;
    })
    .await;
    let created = app
        .admin
        .create_mcp_server(&CreateMcpServer {
            id: "local".into(),
            url: "http://127.0.0.1:8931/mcp".into(),
            headers: None,
        })
        .await
        .unwrap();
    assert_eq!(created.url, "http://127.0.0.1:8931/mcp");
}

#[tokio::test]
async fn only_admins_of_the_tenant_see_its_mcp_servers() {
    let app = spawn_app().await;
    app.admin
        .create_mcp_server(&files("https://mcp.example.com/mcp"))
        .await
        .unwrap();
    let (_, agent) = app.agent("bot").await;
    let (_, reviewer) = app.reviewer("alice@company.com").await;
    for client in [&agent, &reviewer] {
        assert_eq!(code(client.list_mcp_servers().await), "forbidden");
        assert_eq!(code(client.get_mcp_server("files").await), "forbidden");
        assert_eq!(
            code(
                client
                    .create_mcp_server(&files("https://x.example.com/mcp"))
                    .await
            ),
            "forbidden"
        );
        assert_eq!(code(client.delete_mcp_server("files").await), "forbidden");
    }
    assert_eq!(
        code(app.anonymous().list_mcp_servers().await),
        "unauthorized"
    );
    // Another tenant's admin sees none of them and cannot touch them.
    let acme = app
        .admin
        .create_tenant(&CreateTenant {
            id: "acme".into(),
            name: None,
        })
        .await
        .unwrap();
    let acme_admin = app.client(&acme.admin_key.key);
    assert!(
        acme_admin
            .list_mcp_servers()
            .await
            .unwrap()
            .mcp_servers
            .is_empty()
    );
    assert_eq!(code(acme_admin.get_mcp_server("files").await), "not_found");
    assert_eq!(
        code(acme_admin.delete_mcp_server("files").await),
        "not_found"
    );
    // The same id is free in another tenant.
    acme_admin
        .create_mcp_server(&files("https://acme.example.com/mcp"))
        .await
        .unwrap();
    assert_eq!(
        app.admin.get_mcp_server("files").await.unwrap().url,
        "https://mcp.example.com/mcp"
    );
}
