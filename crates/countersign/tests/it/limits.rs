//! What keeps one caller from costing everyone else: policy changes that take effect at
//! once, bounded policy conditions, rate limits and failure budgets.
use std::time::{Duration, Instant};

use countersign_proto::ciba::ApproveRequest;
use countersign_proto::guard::{PolicyAction, PolicyInput, ToolRequest};
use serde_json::{Value, json};

use crate::support::*;

const P: &str = "default";

fn call(tool: &str, args: Value) -> ToolRequest {
    ToolRequest {
        session_id: "session-1".into(),
        tool_call: json!({"name": tool, "arguments": args}),
        scope: None,
        reason: None,
        on_behalf_of: None,
        annotations: None,
        mcp: None,
    }
}

fn policy(name: &str, action: PolicyAction, condition: Option<&str>) -> PolicyInput {
    PolicyInput {
        name: name.into(),
        tool_pattern: "*".into(),
        action,
        description: None,
        priority: Some(10),
        is_active: None,
        condition: condition.map(str::to_string),
        approval_config: None,
    }
}

/// A raw answer: status, `Retry-After`, and the JSON body.
async fn answer(response: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_block_policy_takes_effect_on_the_next_call() {
    let app = spawn_app().await;
    let (_, agent) = app.agent("bot").await;
    app.admin
        .create_policy(P, &policy("all", PolicyAction::Allow, None))
        .await
        .unwrap();
    // The first call loads and caches the tenant's policies.
    let d = agent
        .guard_tool(P, &call("search", json!({})))
        .await
        .unwrap();
    assert_eq!(d.action, PolicyAction::Allow);
    let mut stop = policy("stop", PolicyAction::Block, None);
    stop.priority = Some(20);
    app.admin.create_policy(P, &stop).await.unwrap();
    let d = agent
        .guard_tool(P, &call("search", json!({})))
        .await
        .unwrap();
    assert_eq!(d.action, PolicyAction::Block, "{}", d.message);
    assert_eq!(d.policy_matched.as_deref(), Some("stop"));
}

#[tokio::test]
async fn costly_conditions_are_refused_when_saved() {
    let app = spawn_app().await;
    for (condition, expected) in [
        (
            "args.a.all(x, args.b.all(y, args.c.all(z, x == y && y == z)))",
            "comprehensions",
        ),
        (
            &*format!("risk in [{}]", vec!["1"; 101].join(",")),
            "list literal",
        ),
        (
            &*format!("tool.name == '{}'", "x".repeat(1_001)),
            "string literal",
        ),
    ] {
        let err = app
            .admin
            .create_policy(P, &policy("costly", PolicyAction::Block, Some(condition)))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(422), "{err}");
        assert_eq!(err.code(), Some("invalid_condition"), "{err}");
        assert!(err.to_string().contains(expected), "{err}");
    }
}

/// Every pair of 30,000 elements: far beyond any budget. The conditions run off the request
/// threads and stop at their budget, so the server keeps answering, and the calls are blocked
/// with a reason and audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_answers_while_hostile_conditions_are_saved_and_evaluated() {
    let app = spawn_app().await;
    let (_, agent) = app.agent("bot").await;
    app.admin
        .create_policy(
            P,
            &policy(
                "pairs",
                PolicyAction::Allow,
                Some("args.items.all(x, args.items.all(y, x == y))"),
            ),
        )
        .await
        .unwrap();
    let http = app.http();
    // A connection made before the load starts, as a health checker keeps one.
    http.get(app.url("/healthz")).send().await.unwrap();

    // The load comes from elsewhere (its own threads), as it would in production.
    let base = app.base.clone();
    let agent_key = agent.key().unwrap().to_string();
    let load = std::thread::spawn(move || hostile_load(&base, &agent_key));

    let mut slowest = Duration::ZERO;
    let mut probes = Vec::new();
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until || !load.is_finished() {
        let started = Instant::now();
        let status = http.get(app.url("/healthz")).send().await.unwrap().status();
        slowest = slowest.max(started.elapsed());
        probes.push(started.elapsed().as_millis());
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        slowest < Duration::from_millis(100),
        "/healthz took {slowest:?} while conditions ran ({probes:?} ms)"
    );
    let (decisions, saves) = load.join().unwrap();
    for d in decisions {
        assert_eq!(d["action"], "block", "{d}");
        let message = d["message"].as_str().unwrap();
        assert!(
            message.contains("budget") || message.contains("time limit"),
            "{message}"
        );
    }
    for s in saves {
        // Each save either fits its dry-run budget or is refused with a clear code.
        assert!(s == 201 || s == 200 || s == 422, "{s}");
    }
    assert!(audited(&app, "tool_call.blocked", Some("export")).await >= 4);
    // A small call is evaluated normally.
    let d = agent
        .guard_tool(P, &call("export", json!({"items": [0, 0, 0]})))
        .await
        .unwrap();
    assert_eq!(d.action, PolicyAction::Allow, "{}", d.message);
}

/// Four tool calls with 30,000 arguments and four saves of conditions as costly as the shape
/// limits allow, all at once; the decisions and the saves' statuses.
fn hostile_load(base: &str, agent_key: &str) -> (Vec<Value>, Vec<u16>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let body =
            serde_json::to_vec(&call("export", json!({ "items": vec![0; 30_000] }))).unwrap();
        let tool = format!("{base}/v1/guard/{P}/tool");
        let evaluations = (0..4).map(|_| {
            let request = http
                .post(&tool)
                .bearer_auth(agent_key)
                .header("content-type", "application/json")
                .body(body.clone());
            async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
        });
        let list = (0..100)
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let condition =
            format!("[{list}].all(x, [{list}].all(y, x == y || x != y)) && risk >= 0.0");
        let saves = (0..4).map(|i| {
            let mut p = policy(
                &format!("literal-{i}"),
                PolicyAction::Allow,
                Some(&condition),
            );
            p.is_active = Some(false);
            let request = http
                .post(format!("{base}/v1/guard/{P}/policies"))
                .bearer_auth(ADMIN_KEY)
                .json(&p);
            async move { request.send().await.unwrap().status().as_u16() }
        });
        futures::join!(
            futures::future::join_all(evaluations),
            futures::future::join_all(saves)
        )
    })
}

async fn agent_key(app: &TestApp, name: &str) -> String {
    let (_, client) = app.agent(name).await;
    client.key().unwrap().to_string()
}

#[tokio::test]
async fn a_key_over_its_limit_gets_429_and_other_keys_do_not() {
    let app = spawn_with(|s| {
        s.limits.per_key_per_second = 1;
        s.limits.per_key_burst = 10;
    })
    .await;
    let first = agent_key(&app, "first").await;
    let second = agent_key(&app, "second").await;
    let http = app.http();
    let list = |key: &str| http.get(app.url("/v1/approvals")).bearer_auth(key).send();
    for _ in 0..10 {
        let (status, _, body) = answer(list(&first).await.unwrap()).await;
        assert_ne!(status, 429, "{body}");
    }
    let (status, retry, body) = answer(list(&first).await.unwrap()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // Another key has its own budget.
    let (status, _, body) = answer(list(&second).await.unwrap()).await;
    assert_ne!(status, 429, "{body}");
}

#[tokio::test]
async fn a_dashboard_session_is_limited_like_a_key() {
    let app = spawn_with(|s| {
        s.limits.per_key_per_second = 1;
        s.limits.per_key_burst = 5;
    })
    .await;
    app.reviewer("alice@example.com").await;
    let mut browser = signed_in(&app, "alice@example.com").await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (status, headers, _) = browser.get("/ui/queue").await;
        statuses.push(status.as_u16());
        if status == 429 {
            assert_eq!(headers["x-error-code"], "rate_limited");
            assert!(headers.contains_key(reqwest::header::RETRY_AFTER));
        }
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
}

#[tokio::test]
async fn endpoints_without_a_key_are_limited_per_address() {
    let app = spawn_with(|s| {
        s.limits.per_ip_per_second = 1;
        s.limits.per_ip_burst = 3;
    })
    .await;
    let http = app.http();
    let token = || {
        http.post(app.url("/oidc/token"))
            .form(&[("grant_type", "urn:openid:params:grant-type:ciba")])
            .send()
    };
    for _ in 0..3 {
        let (status, _, body) = answer(token().await.unwrap()).await;
        assert_ne!(status, 429, "{body}");
    }
    let (status, retry, body) = answer(token().await.unwrap()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert!(retry.is_some());
    // The sign-in pages share the address's budget; the API and probes do not use it.
    let page = http.get(app.url("/ui/sign-in")).send().await.unwrap();
    assert_eq!(page.status(), 429);
    assert_eq!(page.headers()["x-error-code"], "rate_limited");
    let health = http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(app.admin.list_users().await.is_ok());
}

#[tokio::test]
async fn behind_a_proxy_the_address_comes_from_its_header() {
    let app = spawn_with(|s| {
        s.limits.per_ip_per_second = 1;
        s.limits.per_ip_burst = 2;
        s.limits.client_ip_header = Some("x-forwarded-for".into());
    })
    .await;
    let http = app.http();
    let page = |forwarded: &'static str| {
        http.get(app.url("/ui/sign-in"))
            .header("x-forwarded-for", forwarded)
            .send()
    };
    // The proxy appends the address it saw; what the client sent before it does not count.
    for spoofed in ["1.1.1.1, 10.0.0.7", "2.2.2.2, 10.0.0.7"] {
        assert_eq!(page(spoofed).await.unwrap().status(), 200);
    }
    assert_eq!(page("3.3.3.3, 10.0.0.7").await.unwrap().status(), 429);
    assert_eq!(page("10.0.0.8").await.unwrap().status(), 200);
}

#[tokio::test]
async fn guessing_sign_in_links_is_cut_off() {
    let app = spawn_with(|s| s.limits.failures_per_window = 3).await;
    app.reviewer("alice@example.com").await;
    let link = sign_in_link(&app.admin, "alice@example.com").await;
    let mut browser = Browser::new(&app);
    for guess in ["a1", "b2", "c3"] {
        let (status, _, _) = browser
            .post("/ui/sign-in/link", form(&[("token", guess)]))
            .await;
        assert!(status.is_client_error() && status != 429, "{status}");
    }
    // Out of guesses: even the right link waits for the window to pass.
    let (status, headers, _) = browser
        .post("/ui/sign-in/link", form(&[("token", &token_of(&link))]))
        .await;
    assert_eq!(status, 429);
    assert!(headers.contains_key(reqwest::header::RETRY_AFTER));
    // Review links share the budget.
    let (status, _, _) = browser.get("/ui/review?token=guess").await;
    assert_eq!(status, 429);
}

#[tokio::test]
async fn an_agent_with_too_many_pending_requests_waits() {
    let app = spawn_with(|s| s.limits.max_pending_per_agent = 2).await;
    finance_team(&app, None).await;
    app.admin
        .create_policy(P, &finance_policy(&["dashboard"]))
        .await
        .unwrap();
    let (user_id, reviewer) = app.reviewer("dora@example.com").await;
    let (_, agent) = app.agent("bot").await;
    let (_, other) = app.agent("other-bot").await;
    let first = agent.ciba_authorize(&payment(&user_id)).await.unwrap();
    agent.ciba_authorize(&payment(&user_id)).await.unwrap();
    let err = agent.ciba_authorize(&payment(&user_id)).await.unwrap_err();
    assert_eq!(err.status(), Some(429), "{err}");
    assert_eq!(err.code(), Some("too_many_pending"), "{err}");
    // Guard calls that need approval count too.
    let err = agent
        .guard_tool(P, &call("payment_send", json!({"amount": 5})))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("too_many_pending"), "{err}");
    // Other agents are not affected; a decision makes room.
    other.ciba_authorize(&payment(&user_id)).await.unwrap();
    reviewer
        .ciba_approve(&ApproveRequest {
            auth_req_id: Some(first.auth_req_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    agent.ciba_authorize(&payment(&user_id)).await.unwrap();
}

#[tokio::test]
async fn the_api_document_declares_429_where_limits_apply() {
    let app = spawn_app().await;
    let doc: Value = app.openapi().await;
    let paths = &doc["paths"];
    for (path, method) in [
        ("/v1/guard/{proxy_id}/tool", "post"),
        ("/ciba/authorize", "post"),
        ("/oidc/bc-authorize", "post"),
        ("/v1/admin/users", "get"),
    ] {
        let mut answer = &paths[path][method]["responses"]["429"];
        assert!(answer.is_object(), "{method} {path} declares no 429");
        if let Some(shared) = answer["$ref"].as_str() {
            answer = doc
                .pointer(shared.trim_start_matches('#'))
                .expect("the shared 429 answer exists");
        }
        assert!(answer["headers"]["Retry-After"].is_object(), "{answer}");
    }
    assert!(paths["/healthz"]["get"]["responses"]["429"].is_null());
}
