//! The dashboard side of notifications: the admins' settings page (secrets write-only, test
//! sends), the delivery log on request pages, and the demo's one-time sign-in link.
use std::io::BufRead;
use std::time::{Duration, Instant};

use countersign_proto::admin::CreateInvitation;
use countersign_proto::guard::{
    ApprovalConfig, GroupInput, MemberInput, MemberRole, PolicyAction, PolicyInput, ToolRequest,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const PAGE: &str = "/ui/admin/notifications";

async fn admin_browser(app: &TestApp) -> Browser {
    app.admin
        .create_invitation(&CreateInvitation {
            email: "ada@example.com".into(),
            name: Some("Ada".into()),
            is_admin: true,
        })
        .await
        .unwrap();
    signed_in(app, "ada@example.com").await
}

async fn channels(app: &TestApp) -> Value {
    app.http()
        .get(app.url("/v1/admin/notification-channels"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn group(app: &TestApp, id: &str, name: &str, members: &[&str]) {
    app.admin
        .create_group(
            "default",
            &GroupInput {
                id: Some(id.into()),
                name: name.into(),
                members: members
                    .iter()
                    .map(|m| MemberInput {
                        email: m.to_string(),
                        role: MemberRole::Primary,
                    })
                    .collect(),
                escalation_minutes: None,
            },
        )
        .await
        .unwrap();
}

/// Posts a settings form with the page's anti-forgery token.
async fn post(
    b: &mut Browser,
    path: &str,
    fields: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let csrf = b.csrf();
    let mut pairs = vec![("csrf", csrf.as_str())];
    pairs.extend_from_slice(fields);
    let (status, headers, body) = b.post(path, form(&pairs)).await;
    let location = headers
        .get("location")
        .map(|l| l.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, location, body)
}

#[tokio::test]
async fn an_admin_saves_slack_and_teams_settings_whose_secrets_the_page_never_shows() {
    let app = spawn_app().await;
    app.reviewer("fin@example.com").await;
    group(&app, "group_finance", "Finance", &["fin@example.com"]).await;
    let mut b = admin_browser(&app).await;

    let (status, _, body) = b.get(PAGE).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#"href="/ui/admin/notifications" aria-current="page""#));
    assert!(body.contains("data-smtp=\"off\""), "no SMTP server here");
    // The Slack app manifest, built for this server.
    for part in [
        "chat:write.public",
        "users:read.email",
        "im:write",
        "is_enabled",
        "/integrations/slack/default/interactivity",
    ] {
        assert!(body.contains(part), "{part} missing from the manifest");
    }
    assert!(body.contains(&format!(
        "{}/integrations/slack/default/interactivity",
        app.base
    )));

    let (status, location, _) = post(
        &mut b,
        "/ui/admin/notifications/slack",
        &[
            ("bot_token", "xoxb-dashboard-secret"),
            ("signing_secret", "signing-secret-123"),
            ("channel", "#approvals"),
            ("team_id", ""),
            ("group:group_finance", "#finance"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/ui/admin/notifications?done=slack#slack");
    let (_, _, body) = b.get(&location).await;
    assert!(body.contains("Slack settings saved."));
    assert!(body.contains(r#"data-set="bot_token">set<"#), "{body}");
    assert!(body.contains(r#"data-set="signing_secret">set<"#));
    assert!(body.contains(r##"value="#approvals""##));
    assert!(body.contains(r##"value="#finance""##));
    for secret in ["xoxb-dashboard-secret", "signing-secret-123"] {
        assert!(!body.contains(secret), "the page shows a secret");
    }
    let v = channels(&app).await;
    assert_eq!(v["slack"]["bot_token_set"], true);
    assert_eq!(v["slack"]["channel"], "#approvals");
    assert_eq!(v["slack"]["group_channels"]["group_finance"], "#finance");

    // Blank secrets keep the stored ones (the service refuses a Slack setup without them).
    let (status, _, _) = post(
        &mut b,
        "/ui/admin/notifications/slack",
        &[
            ("bot_token", ""),
            ("signing_secret", ""),
            ("channel", "C024BE91L"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let v = channels(&app).await;
    assert_eq!(v["slack"]["channel"], "C024BE91L");
    assert_eq!(v["slack"]["signing_secret_set"], true);
    assert!(v["slack"]["group_channels"].as_object().unwrap().is_empty());

    // Bad input: the error beside the form, what was typed kept (but not the secret), and
    // nothing changed.
    let (status, _, body) = post(
        &mut b,
        "/ui/admin/notifications/slack",
        &[
            ("bot_token", "xoxb-typed-secret"),
            ("channel", "not a channel!"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains(r#"data-notice="slack""#), "{body}");
    assert!(body.contains("must be a Slack channel id"), "{body}");
    assert!(body.contains(r#"value="not a channel!""#));
    assert!(!body.contains("xoxb-typed-secret"));
    assert_eq!(channels(&app).await["slack"]["channel"], "C024BE91L");
    let (status, _, _) = post(
        &mut b,
        "/ui/admin/notifications/slack",
        &[("channel", "#ok"), ("group:group_nope", "#x")],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "an unknown group");

    // A form without its anti-forgery token changes nothing.
    let (status, _, _) = b
        .post(
            "/ui/admin/notifications/slack",
            form(&[("channel", "#forged")]),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(channels(&app).await["slack"]["channel"], "C024BE91L");

    // Teams: the workflow URLs are write-only too.
    let hook = "https://example.webhook.office.com/workflows/secret-sig";
    let (status, location, _) = post(
        &mut b,
        "/ui/admin/notifications/teams",
        &[("webhook_url", hook), ("group:group_finance", "")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, _, body) = b.get(&location).await;
    assert!(body.contains(r#"data-set="webhook_url">set<"#));
    assert!(!body.contains("secret-sig"));
    let (status, _, body) = post(
        &mut b,
        "/ui/admin/notifications/teams",
        &[("group:group_finance", "ftp://nope")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains(r#"data-notice="teams""#));
    let (status, _, _) = post(
        &mut b,
        "/ui/admin/notifications/teams",
        &[(
            "group:group_finance",
            "https://example.webhook.office.com/workflows/finance-sig",
        )],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let v = channels(&app).await;
    assert_eq!(v["teams"]["webhook_url_set"], true);
    assert_eq!(v["teams"]["groups_with_webhooks"], json!(["group_finance"]));
    let (status, _, _) = post(
        &mut b,
        "/ui/admin/notifications/teams",
        &[("clear:group_finance", "on")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        channels(&app).await["teams"]["groups_with_webhooks"],
        json!([])
    );

    // Removing Slack's settings.
    let (status, location, _) = post(&mut b, "/ui/admin/notifications/slack/remove", &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, _, body) = b.get(&location).await;
    assert!(body.contains("Slack settings removed."));
    assert!(channels(&app).await.get("slack").is_none());
    let (status, _, _) = post(&mut b, "/ui/admin/notifications/fax/remove", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn reviewers_cannot_see_or_change_notification_settings() {
    let app = spawn_app().await;
    app.reviewer("rita@example.com").await;
    let mut b = signed_in(&app, "rita@example.com").await;
    let (_, _, queue) = b.get("/ui/queue").await;
    assert!(!queue.contains("/ui/admin/notifications"), "no nav item");
    let (status, _, _) = b.get(PAGE).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = post(
        &mut b,
        "/ui/admin/notifications/slack",
        &[
            ("bot_token", "xoxb-x"),
            ("signing_secret", "s"),
            ("channel", "#c"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = post(
        &mut b,
        "/ui/admin/notifications/email/test",
        &[("to", "rita@example.com")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(channels(&app).await.get("slack").is_none());
}

#[tokio::test]
async fn email_settings_and_test_sends_report_their_outcome() {
    let smtp = SmtpServer::start().await;
    let app = spawn_with(|s| with_email(s, &smtp.url())).await;
    let mut b = admin_browser(&app).await;
    let (_, _, body) = b.get(PAGE).await;
    assert!(body.contains("data-smtp=\"on\""));
    assert!(body.contains("countersign@example.com"), "the sender");

    let (status, _, body) = post(
        &mut b,
        "/ui/admin/notifications/email/test",
        &[("to", "ops@example.com")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#"data-delivered="true""#), "{body}");
    assert!(body.contains("Status 250."), "{body}");
    let mail = smtp.wait_for(1).await.remove(0);
    assert_eq!(mail.to(), "ops@example.com");
    assert_eq!(mail.subject(), "Countersign test message");

    let (status, _, body) = post(
        &mut b,
        "/ui/admin/notifications/email/test",
        &[("to", "not an address")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains(r#"data-notice="email""#));
    assert!(!body.contains("data-test-result"));

    // Slack without settings: the outcome says it was not delivered, and why.
    let (status, _, body) = post(&mut b, "/ui/admin/notifications/slack/test", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#"data-delivered="false""#), "{body}");
    assert!(body.contains("data-test-error"));

    // Email settings: off, and sign-in above a risk score; bad scores are refused.
    let (status, _, _) = post(
        &mut b,
        "/ui/admin/notifications/email",
        &[("require_sign_in_above_risk", "0.5")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let v = channels(&app).await;
    assert_eq!(v["email"]["enabled"], false);
    assert_eq!(v["email"]["require_sign_in_above_risk"], 0.5);
    for bad in ["2", "abc"] {
        let (status, _, body) = post(
            &mut b,
            "/ui/admin/notifications/email",
            &[("enabled", "on"), ("require_sign_in_above_risk", bad)],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(body.contains("between 0 and 1"), "{body}");
        assert!(body.contains(&format!(r#"value="{bad}""#)));
    }
    assert_eq!(channels(&app).await["email"]["enabled"], false);
    let (status, _, _) = post(&mut b, "/ui/admin/notifications/email/remove", &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(channels(&app).await["email"]["enabled"], true);
}

/// Reloads a page until it contains `needle` (the delivery worker runs in the background).
async fn page_with(b: &mut Browser, path: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, body) = b.get(path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body.contains(needle) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{needle} never appeared:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_request_page_shows_who_was_emailed_and_how_it_went() {
    let smtp = SmtpServer::start().await;
    let app = spawn_with(|s| with_email(s, &smtp.url())).await;
    let (alice, _) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("payments-bot").await;
    let mut admin = admin_browser(&app).await;
    agent.ciba_authorize(&payment(&alice)).await.unwrap();
    smtp.wait_for(1).await;
    let filter = countersign_client::ApprovalFilter {
        status: Some("pending".into()),
        cursor: None,
        limit: None,
    };
    let id = app.admin.list_approvals(&filter).await.unwrap().approvals[0]
        .id
        .clone();

    let path = format!("/ui/requests/{id}");
    let body = page_with(&mut admin, &path, r#"data-state="delivered""#).await;
    let row = &body[body.find("data-delivery=").unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    for fact in [
        r#"data-channel="email""#,
        "alice@example.com",
        "Email",
        "requested",
        ">250<",
        "delivered 20",
    ] {
        assert!(row.contains(fact), "{fact} missing from {row}");
    }
    // The log reloads itself while the request is open.
    assert!(body.contains(r#"data-live="true""#));
    assert!(body.contains(&format!(r#"hx-get="/ui/requests/{id}/deliveries""#)));
    let (status, _, fragment) = admin.get(&format!("{path}/deliveries")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(fragment.starts_with("<section"));
    assert!(fragment.contains(">250<"));

    // The reviewer who may see the request sees its log too; others see neither.
    let mut alice_browser = signed_in(&app, "alice@example.com").await;
    let (status, _, body) = alice_browser.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("data-deliveries"));
    let (status, _, _) = alice_browser.get(&format!("{path}/deliveries")).await;
    assert_eq!(status, StatusCode::OK);
    app.reviewer("bob@example.com").await;
    let mut bob_browser = signed_in(&app, "bob@example.com").await;
    let (status, _, _) = bob_browser.get(&format!("{path}/deliveries")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = admin.get("/ui/requests/apr_nope/deliveries").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_delivery_log_names_targets_from_the_record_and_escapes_them() {
    let app = spawn_app().await;
    app.reviewer("fin@example.com").await;
    let name = r#"<img src=x onerror="alert(1)"> Finance"#;
    group(&app, "group_finance", name, &["fin@example.com"]).await;
    let res = app
        .http()
        .put(app.url("/v1/admin/notification-channels/teams"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"group_webhook_urls": {"group_finance": "https://teams.invalid/workflows/sig"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    app.admin
        .create_policy(
            "default",
            &PolicyInput {
                name: "Refunds".into(),
                tool_pattern: "payment_*".into(),
                action: PolicyAction::RequireApproval,
                description: None,
                priority: None,
                is_active: None,
                condition: None,
                approval_config: Some(ApprovalConfig {
                    approval_group_id: Some("group_finance".into()),
                    notification_channels: vec!["teams".into()],
                    ..ApprovalConfig::default()
                }),
            },
        )
        .await
        .unwrap();
    let (_, agent) = app.agent("support-bot").await;
    let decision = agent
        .guard_tool(
            "default",
            &ToolRequest {
                session_id: "s1".into(),
                tool_call: json!({"name": "payment_refund", "arguments": {"amount": 5}}),
                scope: None,
                reason: None,
                on_behalf_of: None,
                annotations: None,
                mcp: None,
            },
        )
        .await
        .unwrap();
    let id = decision.approval_id.unwrap();
    let mut b = admin_browser(&app).await;
    let body = page_with(
        &mut b,
        &format!("/ui/requests/{id}"),
        r#"data-channel="teams""#,
    )
    .await;
    assert!(
        body.contains(
            "the workflow of group &#60;img src=x onerror=&#34;alert(1)&#34;&#62; Finance"
        ),
        "{body}"
    );
    assert!(!body.contains("<img src=x"));
    assert!(
        !body.contains("teams.invalid"),
        "the workflow URL is a secret"
    );
}

/// Kills the server it holds when the test ends, however it ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_prints_a_sign_in_link_that_works_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let database = DatabaseGuard::new(if on_postgres() {
        Some(fresh_database().await)
    } else {
        None
    });
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"));
    command
        .args(["serve", "--demo", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("COUNTERSIGN_TEST_DATABASE_URL")
        .env_remove("COUNTERSIGN_TEST_BACKEND")
        .env("COUNTERSIGN_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    if let Some(url) = database.url() {
        command.env("COUNTERSIGN_DATABASE__URL", url);
    }
    let mut server = Server(command.spawn().unwrap());
    let stdout = server.0.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Reads to the end: a closed pipe would fail the server's next print.
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let printed = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut printed = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match received.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains("/ui/sign-in/link?token=");
                    printed.push(line);
                    if found {
                        return printed;
                    }
                }
                Err(_) => panic!("no sign-in link printed:\n{}", printed.join("\n")),
            }
        }
    })
    .await
    .unwrap();
    let text = printed.join("\n");
    assert!(text.contains("reviewer@example.com"), "{text}");
    assert!(text.contains("works once"), "{text}");
    let url = printed.last().unwrap().trim().to_string();
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        url.starts_with(&format!("{base}/ui/sign-in/link?token=")),
        "{url}"
    );

    let browser = || Browser {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        base: base.clone(),
        cookie: None,
        csrf: None,
    };
    let mut first = browser();
    first.sign_in(&url).await;
    let (_, _, queue) = first.get("/ui/queue").await;
    assert!(
        queue.contains("reviewer@example.com"),
        "signed in as the demo reviewer"
    );
    let mut second = browser();
    let (status, _, _) = second
        .post("/ui/sign-in/link", form(&[("token", &token_of(&url))]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the link works once");
    assert!(second.cookie.is_none());
    drop(server);
}
