//! Slack notifications against a local stand-in for Slack's Web API: Block Kit posts with
//! the request's facts, signed button clicks that decide as the mapped reviewer, direct
//! messages, and updates when a request is decided elsewhere, escalates or expires.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use countersign_proto::ApprovalStatus;
use countersign_proto::ciba::TokenResponse;
use countersign_proto::guard::{
    ApprovalConfig, EscalationRule, GroupInput, MemberInput, MemberRole, PolicyInput, ToolRequest,
};
use serde_json::{Value, json};

use crate::support::*;

const P: &str = "default";
const TOKEN: &str = "xoxb-test-bot-token-5f0c3a9e";
const SIGNING_SECRET: &str = "slack-signing-secret-7d2b9c41";
const TEAM: &str = "T0TEAM01";
const APPROVALS: &str = "C0APPROVALS";
const MANAGERS: &str = "C0MANAGERS";

/// One call Slack received, and what it answered.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    body: Value,
    answer: Value,
    authorized: bool,
}

#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<Call>>,
    /// Slack user id → profile email.
    users: Mutex<Vec<(String, String)>>,
    /// How many of the next posts are answered 429.
    rate_limited_posts: AtomicUsize,
    seq: AtomicU64,
}

/// Slack's Web API (`/api/{method}`) and its `response_url`s (`/respond/{name}`).
struct Slack {
    fake: Arc<Fake>,
    base: String,
}

async fn web_api(
    State(fake): State<Arc<Fake>>,
    Path(method): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, Json<Value>) {
    let authorized = headers
        .get("authorization")
        .is_some_and(|v| v == format!("Bearer {TOKEN}").as_str());
    let body: Value = if body.is_empty() {
        json!(query)
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let n = fake.seq.fetch_add(1, Ordering::SeqCst) + 1;
    let user = |find: &dyn Fn(&(String, String)) -> bool| {
        fake.users
            .lock()
            .unwrap()
            .iter()
            .find(|u| find(u))
            .map(|(id, email)| json!({"id": id, "team_id": TEAM, "deleted": false, "profile": {"email": email}}))
    };
    let mut out_headers = HeaderMap::new();
    let mut status = StatusCode::OK;
    let answer = if !authorized {
        json!({"ok": false, "error": "invalid_auth"})
    } else {
        match method.as_str() {
            "chat.postMessage" => {
                if fake
                    .rate_limited_posts
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    status = StatusCode::TOO_MANY_REQUESTS;
                    out_headers.insert("retry-after", "1".parse().unwrap());
                    json!({"ok": false, "error": "ratelimited"})
                } else {
                    let to = body["channel"].as_str().unwrap_or_default();
                    // Posting to a user id opens the app's direct message with them.
                    let channel = match to.strip_prefix('U') {
                        Some(rest) => format!("D{rest}"),
                        None => to.to_string(),
                    };
                    json!({"ok": true, "channel": channel, "ts": format!("1700000000.{n:06}"),
                        "message": {"type": "message", "text": body["text"]}})
                }
            }
            "chat.update" => {
                json!({"ok": true, "channel": body["channel"], "ts": body["ts"], "text": body["text"]})
            }
            "users.lookupByEmail" => {
                let email = body["email"].as_str().unwrap_or_default().to_string();
                match user(&|(_, e)| *e == email) {
                    Some(u) => json!({"ok": true, "user": u}),
                    None => json!({"ok": false, "error": "users_not_found"}),
                }
            }
            "users.info" => {
                let id = body["user"].as_str().unwrap_or_default().to_string();
                match user(&|(i, _)| *i == id) {
                    Some(u) => json!({"ok": true, "user": u}),
                    None => json!({"ok": false, "error": "user_not_found"}),
                }
            }
            _ => json!({"ok": false, "error": "unknown_method"}),
        }
    };
    fake.calls.lock().unwrap().push(Call {
        method,
        body,
        answer: answer.clone(),
        authorized,
    });
    (status, out_headers, Json(answer))
}

async fn respond(
    State(fake): State<Arc<Fake>>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> &'static str {
    fake.calls.lock().unwrap().push(Call {
        method: format!("respond/{name}"),
        body,
        answer: Value::Null,
        authorized: true,
    });
    "ok"
}

impl Slack {
    async fn start(users: &[(&str, &str)]) -> Slack {
        let fake = Arc::new(Fake::default());
        *fake.users.lock().unwrap() = users
            .iter()
            .map(|(id, email)| (id.to_string(), email.to_string()))
            .collect();
        let router = axum::Router::new()
            .route("/api/{method}", axum::routing::any(web_api))
            .route("/respond/{name}", axum::routing::post(respond))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Slack {
            fake,
            base: format!("http://{addr}"),
        }
    }

    fn calls(&self, method: &str) -> Vec<Call> {
        self.fake
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// Waits (at most 10 s) for a call of `method` that `matches`, moving `clock` on by two
    /// seconds a round when given (a retried delivery is due only when time passes).
    async fn wait_for(
        &self,
        method: &str,
        clock: Option<&countersign_core::ManualClock>,
        matches: impl Fn(&Call) -> bool,
    ) -> Call {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(c) = self.calls(method).into_iter().find(&matches) {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "no matching {method}; calls: {:#?}",
                self.fake.calls.lock().unwrap()
            );
            if let Some(clock) = clock {
                clock.advance(chrono::Duration::seconds(2));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn response_url(&self, name: &str) -> String {
        format!("{}/respond/{name}", self.base)
    }
}

fn text(call: &Call) -> String {
    call.body.to_string()
}

fn posted_to(call: &Call, channel: &str, id: &str) -> bool {
    call.body["channel"] == channel && text(call).contains(id)
}

/// The buttons of a message, by action id.
fn buttons(call: &Call) -> HashMap<String, Value> {
    call.body["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().unwrap().clone())
        .map(|e| (e["action_id"].as_str().unwrap().to_string(), e))
        .collect()
}

async fn slack_app(slack: &Slack, manual_clock: bool) -> TestApp {
    let api = format!("{}/api", slack.base);
    let configure = move |s: &mut countersign_server::Settings| {
        s.notifications.slack.api_base_url = api;
        s.outbound.allow_private_networks = true;
        s.outbound.allow_http = true;
        s.outbound.poll_interval_ms = 50;
    };
    if manual_clock {
        spawn_with_clock_and(configure).await
    } else {
        spawn_with(configure).await
    }
}

async fn set_slack(app: &TestApp, settings: Value) {
    let mut body = json!({"bot_token": TOKEN, "signing_secret": SIGNING_SECRET, "team_id": TEAM});
    body.as_object_mut()
        .unwrap()
        .extend(settings.as_object().unwrap().clone());
    let res = app
        .http()
        .put(app.url("/v1/admin/notification-channels/slack"))
        .bearer_auth(ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

async fn group(app: &TestApp, id: &str, name: &str, members: &[(&str, MemberRole)]) {
    app.admin
        .create_group(
            P,
            &GroupInput {
                id: Some(id.into()),
                name: name.into(),
                members: members
                    .iter()
                    .map(|(email, role)| MemberInput {
                        email: email.to_string(),
                        role: *role,
                    })
                    .collect(),
                escalation_minutes: None,
            },
        )
        .await
        .unwrap();
}

/// alice and bob (primaries) in Finance; dave is a reviewer of the tenant outside it.
async fn people(app: &TestApp) -> HashMap<&'static str, countersign_client::Client> {
    let mut out = HashMap::new();
    for (name, email) in [
        ("alice", "alice@company.com"),
        ("bob", "bob@company.com"),
        ("dave", "dave@company.com"),
    ] {
        out.insert(name, app.reviewer(email).await.1);
    }
    group(
        app,
        "group_finance",
        "Finance Team",
        &[
            ("alice@company.com", MemberRole::Primary),
            ("bob@company.com", MemberRole::Primary),
        ],
    )
    .await;
    out
}

fn policy(config: ApprovalConfig) -> PolicyInput {
    let mut policy = finance_policy(&["slack"]);
    policy.approval_config = policy.approval_config.map(|base| ApprovalConfig {
        approval_group_id: base.approval_group_id,
        notification_channels: base.notification_channels,
        ..config
    });
    policy
}

fn refund() -> ToolRequest {
    ToolRequest {
        session_id: "session_abc123".into(),
        tool_call: json!({"name": "payment_refund", "arguments": {"amount": 500, "customer_id": "cust_123"}}),
        scope: None,
        reason: Some("<b>Customer</b> asked for a refund <!channel> & more".into()),
        on_behalf_of: None,
        annotations: None,
        mcp: None,
    }
}

struct Click<'a> {
    user: &'a str,
    team: &'a str,
    action: &'a str,
    approval_id: &'a str,
    /// The `chat.postMessage` call of the clicked message.
    message: &'a Call,
    reply_to: &'a str,
}

fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, format!("v0:{timestamp}:{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

fn click_body(slack: &Slack, c: &Click) -> String {
    let channel = c.message.answer["channel"].as_str().unwrap();
    let ts = c.message.answer["ts"].as_str().unwrap();
    let payload = json!({
        "type": "block_actions",
        "team": {"id": c.team, "domain": "example"},
        "user": {"id": c.user, "username": "someone", "name": "someone", "team_id": c.team},
        "api_app_id": "A0APP",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": false},
        "trigger_id": "1.2.3",
        "channel": {"id": channel, "name": "approvals"},
        "message": {"type": "message", "ts": ts, "text": c.message.body["text"]},
        "response_url": slack.response_url(c.reply_to),
        "actions": [{"action_id": c.action, "block_id": "countersign_decision", "value": c.approval_id,
            "type": "button", "action_ts": "1700000001.000001"}],
    });
    form(&[("payload", &payload.to_string())])
}

/// Sends a click signed with `secret` at `timestamp`.
async fn send_click(
    app: &TestApp,
    tenant: &str,
    body: &str,
    secret: &str,
    timestamp: i64,
) -> reqwest::Response {
    app.http()
        .post(app.url(&format!("/integrations/slack/{tenant}/interactivity")))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", timestamp.to_string())
        .header("x-slack-signature", sign(secret, timestamp, body))
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn click(app: &TestApp, slack: &Slack, c: Click<'_>) {
    let body = click_body(slack, &c);
    let started = Instant::now();
    let res = send_click(
        app,
        P,
        &body,
        SIGNING_SECRET,
        chrono::Utc::now().timestamp(),
    )
    .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "Slack wants an answer within 3 s"
    );
}

async fn slack_user_of(app: &TestApp, email: &str) -> Value {
    let users = app.admin.list_users().await.unwrap().users;
    let id = &users.iter().find(|u| u.email == email).unwrap().id;
    let v: Value = app
        .http()
        .get(app.url(&format!("/v1/admin/users/{id}/notification-preferences")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["slack_user_id"].clone()
}

#[tokio::test]
async fn a_tool_call_is_posted_and_a_signed_click_decides_it() {
    let slack = Slack::start(&[("U0BOB", "bob@company.com")]).await;
    let app = slack_app(&slack, false).await;
    people(&app).await;
    app.admin
        .create_policy(P, &policy(ApprovalConfig::default()))
        .await
        .unwrap();
    set_slack(&app, json!({"channel": APPROVALS})).await;

    // The settings page's test message goes to the default channel.
    let res: Value = app
        .http()
        .post(app.url("/v1/admin/notification-channels/slack/test"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(res["delivered"], true, "{res}");
    assert!(text(&slack.calls("chat.postMessage")[0]).contains("test message"));

    let (_, agent) = app.agent("support-bot").await;
    let id = agent
        .guard_tool(P, &refund())
        .await
        .unwrap()
        .approval_id
        .unwrap();
    let post = slack
        .wait_for("chat.postMessage", None, |c| posted_to(c, APPROVALS, &id))
        .await;
    let shown = as_read(&text(&post));
    for fact in [
        "Approval required: payment_refund",
        "*Tool*\\npayment_refund",
        "Risk score",
        "session_abc123",
        "\\\"customer_id\\\": \\\"cust_123\\\"",
        "support-bot (trust: standard)",
        "Finance Team",
        "The agent's own words",
        "&lt;b&gt;Customer&lt;/b&gt; asked for a refund &lt;!channel&gt; &amp; more",
    ] {
        assert!(shown.contains(fact), "{fact} missing from {shown}");
    }
    assert!(!shown.contains("<b>") && !shown.contains("<!channel>"));
    let b = buttons(&post);
    assert_eq!(b["approve"]["value"], id.as_str());
    assert_eq!(b["approve"]["style"], "primary");
    assert_eq!(b["reject"]["value"], id.as_str());
    assert_eq!(b["reject"]["style"], "danger");
    assert!(
        b["open_dashboard"]["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/ui/requests/{id}"))
    );
    for secret in [TOKEN, SIGNING_SECRET] {
        assert!(!shown.contains(secret));
    }
    assert!(
        slack
            .fake
            .calls
            .lock()
            .unwrap()
            .iter()
            .all(|c| c.authorized)
    );

    // Bob clicks Approve: he is found by his Slack profile's email.
    click(
        &app,
        &slack,
        Click {
            user: "U0BOB",
            team: TEAM,
            action: "approve",
            approval_id: &id,
            message: &post,
            reply_to: "bob",
        },
    )
    .await;
    let view = agent.guard_approval(P, &id, Some(10)).await.unwrap();
    assert_eq!(view.status, ApprovalStatus::Approved);
    assert_eq!(view.decisions[0].channel, "slack");
    assert_eq!(view.decisions[0].reviewer, "bob@company.com");
    let ts = post.answer["ts"].clone();
    let updated = slack
        .wait_for("chat.update", None, |c| {
            c.body["ts"] == ts && text(c).contains("Approved by bob@company.com")
        })
        .await;
    assert_eq!(updated.body["channel"], APPROVALS);
    assert!(buttons(&updated).is_empty(), "no buttons once decided");
    assert_eq!(slack_user_of(&app, "bob@company.com").await, "U0BOB");
    assert!(slack.calls("respond/bob").is_empty(), "no complaint");

    let log = settled_deliveries(&app, &id).await;
    let post_row = log
        .iter()
        .find(|d| d["channel"] == "slack" && d["target"] == APPROVALS)
        .unwrap();
    assert_eq!(post_row["state"], "delivered");
    assert_eq!(post_row["status_code"], 200);
}

#[tokio::test]
async fn forged_stale_and_ineligible_clicks_change_nothing() {
    let slack = Slack::start(&[
        ("U0ALICE", "alice@company.com"),
        ("U0BOB", "bob@company.com"),
        ("U0DAVE", "dave@company.com"),
    ])
    .await;
    let app = slack_app(&slack, false).await;
    let people = people(&app).await;
    app.admin
        .create_policy(P, &policy(ApprovalConfig::default()))
        .await
        .unwrap();
    set_slack(&app, json!({"channel": APPROVALS})).await;
    let (_, agent) = app.agent("support-bot").await;
    let id = agent
        .guard_tool(P, &refund())
        .await
        .unwrap()
        .approval_id
        .unwrap();
    let post = slack
        .wait_for("chat.postMessage", None, |c| posted_to(c, APPROVALS, &id))
        .await;
    let by = |user: &'static str, team: &'static str, reply_to: &'static str| Click {
        user,
        team,
        action: "approve",
        approval_id: &id,
        message: &post,
        reply_to,
    };
    let now = chrono::Utc::now().timestamp();
    let body = click_body(&slack, &by("U0BOB", TEAM, "forged"));
    for (tenant, secret, at) in [
        (P, "not-the-signing-secret", now),
        (P, SIGNING_SECRET, now - 6 * 60),
        (P, SIGNING_SECRET, now + 6 * 60),
        ("no-such-tenant", SIGNING_SECRET, now),
    ] {
        let res = send_click(&app, tenant, &body, secret, at).await;
        assert_eq!(res.status(), 401, "{tenant} {secret} {at}");
        let error: Value = res.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_signature");
    }
    // A correct signature over another body does not pass either.
    let res = app
        .http()
        .post(app.url("/integrations/slack/default/interactivity"))
        .header("x-slack-request-timestamp", now.to_string())
        .header("x-slack-signature", sign(SIGNING_SECRET, now, &body))
        .body(body.replace("approve", "reject"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // Signed clicks that may not decide: another workspace, a Slack user who is nobody
    // here, a reviewer outside the group. Each gets a reply only they see.
    click(&app, &slack, by("U0BOB", "T0ELSEWHERE", "team")).await;
    click(&app, &slack, by("U0STRANGER", TEAM, "stranger")).await;
    click(&app, &slack, by("U0DAVE", TEAM, "dave")).await;
    for (reply, says) in [
        ("team", "not the one connected"),
        ("stranger", "not linked to a Countersign reviewer"),
        ("dave", "not an eligible reviewer"),
    ] {
        let answer = slack
            .wait_for(&format!("respond/{reply}"), None, |_| true)
            .await;
        assert_eq!(answer.body["response_type"], "ephemeral");
        assert_eq!(answer.body["replace_original"], false);
        assert!(text(&answer).contains(says), "{reply}: {}", text(&answer));
    }
    let view = agent.guard_approval(P, &id, None).await.unwrap();
    assert_eq!(view.status, ApprovalStatus::Pending);
    assert!(view.decisions.is_empty());
    assert!(slack.calls("chat.update").is_empty());

    // Decided through the API: the message follows, and a late click changes nothing.
    people["alice"]
        .guard_reject(P, &id, Some("not this customer"))
        .await
        .unwrap();
    let ts = post.answer["ts"].clone();
    let updated = slack
        .wait_for("chat.update", None, |c| {
            c.body["ts"] == ts && text(c).contains("Rejected by alice@company.com")
        })
        .await;
    assert!(text(&updated).contains("not this customer"));
    assert!(buttons(&updated).is_empty());
    click(&app, &slack, by("U0BOB", TEAM, "late")).await;
    let answer = slack.wait_for("respond/late", None, |_| true).await;
    assert!(
        text(&answer).contains("already decided"),
        "{}",
        text(&answer)
    );
    let view = agent.guard_approval(P, &id, None).await.unwrap();
    assert_eq!(view.status, ApprovalStatus::Rejected);
    assert_eq!(view.decisions.len(), 1);

    let doc: Value = app.openapi().await;
    assert!(doc["paths"]["/integrations/slack/{tenant}/interactivity"]["post"].is_object());
}

#[tokio::test]
async fn a_ciba_request_is_a_direct_message_found_by_email() {
    let slack = Slack::start(&[("U0ALICE", "alice@example.com")]).await;
    let app = slack_app(&slack, false).await;
    set_slack(&app, json!({"channel": APPROVALS})).await;
    let (alice, _) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("payments-bot").await;
    let asked = agent.ciba_authorize(&payment(&alice)).await.unwrap();

    let dm = slack
        .wait_for("chat.postMessage", None, |c| c.body["channel"] == "U0ALICE")
        .await;
    assert_eq!(dm.answer["channel"], "D0ALICE");
    let lookups = slack.calls("users.lookupByEmail");
    assert_eq!(lookups.len(), 1);
    assert_eq!(lookups[0].body["email"], "alice@example.com");
    let shown = text(&dm);
    assert!(shown.contains("*Scope*\\napprove:payment"), "{shown}");
    assert!(shown.contains("Approve payment of $500 to Acme Corp?"));
    assert!(
        slack.calls("chat.postMessage").len() == 1,
        "a request for one person never goes to the shared channel"
    );
    assert_eq!(slack_user_of(&app, "alice@example.com").await, "U0ALICE");

    // Alice rejects from the direct message; the remembered id maps her click.
    let id = buttons(&dm)["reject"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    click(
        &app,
        &slack,
        Click {
            user: "U0ALICE",
            team: TEAM,
            action: "reject",
            approval_id: &id,
            message: &dm,
            reply_to: "alice",
        },
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match agent.ciba_token(&asked.auth_req_id, Some(5)).await.unwrap() {
            TokenResponse::Denied { .. } => break,
            TokenResponse::Pending if Instant::now() < deadline => {}
            other => panic!("expected a denial, got {other:?}"),
        }
    }
    slack
        .wait_for("chat.update", None, |c| {
            c.body["channel"] == "D0ALICE" && text(c).contains("Rejected by alice@example.com")
        })
        .await;
    assert!(slack.calls("users.info").is_empty());
}

#[tokio::test]
async fn escalation_and_expiry_follow_the_request_in_slack() {
    let slack = Slack::start(&[]).await;
    let app = slack_app(&slack, true).await;
    let clock = app.clock.clone().unwrap();
    people(&app).await;
    group(
        &app,
        "group_managers",
        "Managers",
        &[("dave@company.com", MemberRole::Primary)],
    )
    .await;
    app.admin
        .create_policy(
            P,
            &policy(ApprovalConfig {
                timeout_minutes: 30,
                escalation_rules: vec![EscalationRule {
                    after_minutes: 15,
                    escalate_to: "group_managers".into(),
                }],
                ..ApprovalConfig::default()
            }),
        )
        .await
        .unwrap();
    set_slack(
        &app,
        json!({"channel": APPROVALS, "group_channels": {"group_managers": MANAGERS}}),
    )
    .await;
    let (_, agent) = app.agent("support-bot").await;
    let id = agent
        .guard_tool(P, &refund())
        .await
        .unwrap()
        .approval_id
        .unwrap();
    let first = slack
        .wait_for("chat.postMessage", None, |c| posted_to(c, APPROVALS, &id))
        .await;
    assert!(!text(&first).contains("escalated"));

    clock.advance(chrono::Duration::minutes(16));
    let second = slack
        .wait_for("chat.postMessage", Some(&clock), |c| {
            posted_to(c, MANAGERS, &id)
        })
        .await;
    assert!(
        text(&second).contains("escalated to *Managers*"),
        "{}",
        text(&second)
    );
    assert_eq!(buttons(&second)["approve"]["value"], id.as_str());
    let first_ts = first.answer["ts"].clone();
    let escalated = slack
        .wait_for("chat.update", Some(&clock), |c| {
            c.body["ts"] == first_ts && text(c).contains("escalated to *Managers*")
        })
        .await;
    assert!(!buttons(&escalated).is_empty(), "still pending");

    clock.advance(chrono::Duration::minutes(15));
    for ts in [first_ts, second.answer["ts"].clone()] {
        let expired = slack
            .wait_for("chat.update", Some(&clock), |c| {
                c.body["ts"] == ts && text(c).contains("Expired without a decision")
            })
            .await;
        assert!(buttons(&expired).is_empty());
    }
    assert_eq!(
        agent.guard_approval(P, &id, None).await.unwrap().status,
        ApprovalStatus::Expired
    );
}

#[tokio::test]
async fn a_rate_limited_post_is_retried() {
    let slack = Slack::start(&[]).await;
    slack.fake.rate_limited_posts.store(1, Ordering::SeqCst);
    let app = slack_app(&slack, false).await;
    people(&app).await;
    app.admin
        .create_policy(P, &policy(ApprovalConfig::default()))
        .await
        .unwrap();
    set_slack(&app, json!({"channel": APPROVALS})).await;
    let (_, agent) = app.agent("support-bot").await;
    let id = agent
        .guard_tool(P, &refund())
        .await
        .unwrap()
        .approval_id
        .unwrap();
    slack
        .wait_for("chat.postMessage", None, |c| {
            c.answer["ok"] == true && posted_to(c, APPROVALS, &id)
        })
        .await;
    let posts = slack.calls("chat.postMessage");
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[0].answer["error"], "ratelimited");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = deliveries(&app, &id).await;
        let row = log
            .iter()
            .find(|d| d["channel"] == "slack")
            .unwrap()
            .clone();
        if row["state"] == "delivered" {
            assert_eq!(row["attempts"], 2);
            break;
        }
        assert!(Instant::now() < deadline, "{row}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
