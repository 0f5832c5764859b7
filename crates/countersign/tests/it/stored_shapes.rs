//! Rows as this version writes them must read back unchanged: settings, routing rules and
//! approval configs are stored as JSON, so renaming a field of their API types would silently
//! change what stored data means. These fixtures are today's stored text, written by hand into
//! the store (both backends) and read back through the API after a restart.
use serde_json::{Value, json};

use crate::support::*;

const POLICY_ID: &str = "pol_01m8q81m3aehk8sy2s0m4bvnsr";

fn approval_config() -> Value {
    json!({"timeout_minutes": 45, "notification_channels": ["email", "slack"],
        "approval_group_id": "group_ops", "default_on_timeout": "approve",
        "escalation_rules": [{"after_minutes": 10, "escalate_to": "group_ops"}],
        "required_approvals": 2, "allow_self_approval": true,
        "audiences": ["https://pay.example.com"]})
}

fn guard_settings() -> Value {
    json!({"default_action": "require_approval", "default_approval_group_id": "group_ops",
        "admins_can_decide": true,
        "trust_rules": [{"trust_levels": ["restricted"], "tool_patterns": ["payment_*"],
            "scopes": ["payments"], "approval_group_id": "group_ops"}],
        "default_timeout_minutes": 60, "grant_audiences": ["https://api.example.com"]})
}

fn routing() -> Value {
    json!({"routing_rules": [{"condition": {"risk_score_min": 0.5, "tool_pattern": "delete_*"},
        "approval_group": "group_ops"}]})
}

async fn get(app: &TestApp, path: &str) -> Value {
    let response = app
        .http()
        .get(app.url(path))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn settings_routing_and_approval_configs_stored_by_this_version_read_back_unchanged() {
    let app = spawn_app().await;
    let admin = app.http();
    for (path, body) in [
        (
            "/v1/admin/users",
            json!({"email": "ana@example.com", "name": "Ana"}),
        ),
        (
            "/v1/guard/default/approval-groups",
            json!({"id": "group_ops", "name": "Ops",
                "members": [{"email": "ana@example.com", "role": "primary"}]}),
        ),
    ] {
        let r = admin
            .post(app.url(path))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "{path}: {}",
            r.text().await.unwrap()
        );
    }
    let text = |v: Value| v.to_string().replace('\'', "''");
    app.exec_sql(&format!(
        "INSERT INTO tenant_settings (tenant_id, guard, routing, updated_at) \
         VALUES ('default', '{}', '{}', 1764547200000) \
         ON CONFLICT (tenant_id) DO UPDATE SET guard = excluded.guard, routing = excluded.routing",
        text(guard_settings()),
        text(routing())
    ))
    .await;
    app.exec_sql(&format!(
        "INSERT INTO policies (id, tenant_id, name, description, tool_pattern, action, priority, \
         is_active, condition, approval_config, created_at, updated_at) VALUES ('{POLICY_ID}', \
         'default', 'payments', NULL, 'payment_*', 'require_approval', 7, TRUE, \
         'args.amount > 100', '{}', 1764547200000, 1764547200000)",
        text(approval_config())
    ))
    .await;
    // Nothing cached: what is read is what is stored.
    let app = app.restart().await;
    let policy = get(&app, &format!("/v1/guard/default/policies/{POLICY_ID}")).await;
    assert_eq!(policy["approval_config"], approval_config());
    assert_eq!(policy["condition"], "args.amount > 100");
    assert_eq!(
        get(&app, "/v1/guard/default/settings").await,
        guard_settings()
    );
    assert_eq!(
        get(&app, "/v1/guard/default/routing-rules").await,
        routing()
    );
}
