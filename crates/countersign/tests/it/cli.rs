//! The `countersign` binary against a running server.
use std::process::Command;

use crate::support::*;

fn countersign(app: &TestApp, key: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(args)
        .env("COUNTERSIGN_URL", &app.base)
        .env("COUNTERSIGN_KEY", key)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_and_reviewer_commands_drive_the_flow() {
    let app = spawn_app().await;
    let (code, out, err) = countersign(
        &app,
        ADMIN_KEY,
        &[
            "admin",
            "users",
            "create",
            "--email",
            "carol@example.com",
            "--name",
            "Carol",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let user = json(&out)["id"].as_str().unwrap().to_string();
    let (code, out, _) = countersign(
        &app,
        ADMIN_KEY,
        &[
            "admin",
            "agents",
            "create",
            "--name",
            "cli-bot",
            "--trust-level",
            "critical",
        ],
    );
    assert_eq!(code, 0);
    let agent = json(&out);
    assert_eq!(agent["trust_level"], "critical");
    let agent_id = agent["id"].as_str().unwrap().to_string();
    let (_, out, _) = countersign(
        &app,
        ADMIN_KEY,
        &[
            "admin",
            "api-keys",
            "create",
            "--role",
            "agent",
            "--agent-id",
            &agent_id,
        ],
    );
    let agent_key = json(&out)["key"].as_str().unwrap().to_string();
    let (_, out, _) = countersign(
        &app,
        ADMIN_KEY,
        &[
            "admin",
            "api-keys",
            "create",
            "--role",
            "reviewer",
            "--user-id",
            &user,
        ],
    );
    let reviewer_key = json(&out)["key"].as_str().unwrap().to_string();
    let (_, out, _) = countersign(&app, ADMIN_KEY, &["admin", "users", "list"]);
    assert_eq!(json(&out)["users"].as_array().unwrap().len(), 1);

    let agent = app.client(&agent_key);
    let asked = agent.ciba_authorize(&payment(&user)).await.unwrap();

    let (code, out, _) = countersign(&app, &reviewer_key, &["approvals", "list"]);
    assert_eq!(code, 0);
    let listed = json(&out);
    let id = listed["approvals"][0]["id"].as_str().unwrap().to_string();
    let (code, out, _) = countersign(
        &app,
        &reviewer_key,
        &["approvals", "approve", &id, "--comment", "from the shell"],
    );
    assert_eq!(code, 0);
    assert_eq!(json(&out)["status"], "approved");
    let (code, _, err) = countersign(&app, &reviewer_key, &["approvals", "deny", &id]);
    assert_ne!(code, 0);
    assert!(err.contains("already_decided"), "{err}");
    assert!(matches!(
        agent.ciba_token(&asked.auth_req_id, None).await.unwrap(),
        countersign_proto::ciba::TokenResponse::Approved {
            access_token: Some(_),
            ..
        }
    ));

    // A wrong role is refused with the server's message.
    let (code, _, err) = countersign(&app, &agent_key, &["admin", "users", "list"]);
    assert_ne!(code, 0);
    assert!(err.contains("403"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_verify_exits_non_zero_on_an_edited_event() {
    let app = spawn_app().await;
    app.admin.create_user("a@example.com", "A").await.unwrap();
    app.admin.create_user("b@example.com", "B").await.unwrap();
    let (code, out, _) = countersign(&app, ADMIN_KEY, &["audit", "verify"]);
    assert_eq!(code, 0);
    assert!(out.contains("intact"));
    app.exec_sql("UPDATE audit_events SET actor_id = 'someone-else' WHERE seq = 3")
        .await;
    let (code, out, _) = countersign(&app, ADMIN_KEY, &["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(out.contains("BROKEN at event 3"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_command() {
    let app = spawn_app().await;
    let (code, out, _) = countersign(&app, "", &["healthcheck"]);
    assert_eq!(code, 0);
    assert!(out.contains("ready"));
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc_client_commands() {
    let app = spawn_app().await;
    let (agent_id, _) = app.agent("cli-ciba").await;
    let (code, out, err) = countersign(
        &app,
        ADMIN_KEY,
        &[
            "admin",
            "oidc-clients",
            "create",
            "--agent-id",
            &agent_id,
            "--delivery-mode",
            "ping",
            "--notification-endpoint",
            "https://client.example.com/cb",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let created = json(&out);
    assert_eq!(created["client_id"], agent_id.as_str());
    assert_eq!(created["backchannel_token_delivery_mode"], "ping");
    assert!(created["client_secret"].as_str().unwrap().len() >= 43);
    let (code, out, _) = countersign(&app, ADMIN_KEY, &["admin", "oidc-clients", "list"]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["oidc_clients"].as_array().unwrap().len(), 1);
    assert!(!out.contains(created["client_secret"].as_str().unwrap()));
    // A bad registration fails with the server's message.
    let (code, _, err) = countersign(
        &app,
        ADMIN_KEY,
        &[
            "admin",
            "oidc-clients",
            "create",
            "--agent-id",
            &agent_id,
            "--delivery-mode",
            "push",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("notification_endpoint"), "{err}");
    let (code, out, _) = countersign(
        &app,
        ADMIN_KEY,
        &["admin", "oidc-clients", "delete", &agent_id],
    );
    assert_eq!(code, 0);
    assert!(out.contains("deleted"));
    let (code, _, _) = countersign(
        &app,
        ADMIN_KEY,
        &["admin", "oidc-clients", "get", &agent_id],
    );
    assert_ne!(code, 0);
}
