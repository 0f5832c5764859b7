//! Standard Webhooks through a local receiver that checks every signature with the
//! `standardwebhooks` crate (independent of the server's signing code), and answers as each
//! test scripts it: errors and retries, rate limits, 410 Gone, redirects.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use countersign_core::Clock;
use serde_json::{Value, json};

use crate::support::*;

#[derive(Clone, Debug)]
struct Received {
    path: String,
    id: String,
    timestamp: i64,
    headers: HeaderMap,
    body: Vec<u8>,
    /// The receiver's check against the secret it knows for this path.
    verified: Result<(), String>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Whether `secret` signed this message.
    fn signed_with(&self, secret: &str) -> bool {
        let expected = standardwebhooks::Webhook::new(secret)
            .unwrap()
            .sign(&self.id, self.timestamp, &self.body)
            .unwrap();
        self.headers["webhook-signature"]
            .to_str()
            .unwrap()
            .split(' ')
            .any(|s| s == expected)
    }
}

/// A scripted answer: the status and extra headers.
type Answer = (u16, Vec<(&'static str, String)>);

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    /// Answers per path, in order (status, headers); 200 once they run out.
    script: HashMap<String, VecDeque<Answer>>,
    secrets: HashMap<String, String>,
}

/// A webhook receiver: `POST /{path}`. It checks signatures as a consumer would, with a
/// five-minute tolerance around its own clock (the tests move the server's by less).
#[derive(Clone)]
struct Receiver {
    base: String,
    inner: Arc<Mutex<Inner>>,
}

async fn receive(
    State(r): State<Receiver>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut inner = r.inner.lock().unwrap();
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let verified = match inner.secrets.get(&path) {
        Some(secret) => standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(&body, &headers)
            .map_err(|e| e.to_string()),
        None => Err("no secret known for this path".into()),
    };
    assert_eq!(header("content-type"), "application/json");
    inner.received.push(Received {
        path: path.clone(),
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp").parse().unwrap_or(0),
        headers: headers.clone(),
        body: body.to_vec(),
        verified,
    });
    let (status, extra) = inner
        .script
        .get_mut(&path)
        .and_then(VecDeque::pop_front)
        .unwrap_or((200, Vec::new()));
    let mut response = StatusCode::from_u16(status).unwrap().into_response();
    for (name, value) in extra {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            base: format!("http://{}", listener.local_addr().unwrap()),
            inner: Arc::default(),
        };
        let router = axum::Router::new()
            .route("/{path}", axum::routing::post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        receiver
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    fn answer(&self, path: &str, status: u16, headers: Vec<(&'static str, String)>) {
        self.inner
            .lock()
            .unwrap()
            .script
            .entry(path.into())
            .or_default()
            .push_back((status, headers));
    }

    fn knows(&self, path: &str, secret: &str) {
        self.inner
            .lock()
            .unwrap()
            .secrets
            .insert(path.into(), secret.into());
    }

    /// What `path` received; every message carried a valid signature.
    fn at(&self, path: &str) -> Vec<Received> {
        let got: Vec<_> = self
            .inner
            .lock()
            .unwrap()
            .received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect();
        for r in &got {
            assert_eq!(r.verified, Ok(()), "a bad signature at /{path}");
            assert!(r.id.starts_with("msg_") && !r.id.contains('.'), "{}", r.id);
        }
        got
    }

    async fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.at(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "/{path}: expected {n} messages, got {}",
                got.len()
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

/// One API call with `key`: the status and the JSON answer (`null` when empty).
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

async fn create(app: &TestApp, url: &str, events: &[&str]) -> (String, String) {
    let (status, v) = call(
        app,
        ADMIN_KEY,
        "POST",
        "/v1/admin/webhooks",
        Some(json!({"url": url, "events": events})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let secret = v["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    (v["id"].as_str().unwrap().to_string(), secret)
}

async fn log(app: &TestApp, hook: &str, query: &str) -> Value {
    let (status, v) = call(
        app,
        ADMIN_KEY,
        "GET",
        &format!("/v1/admin/webhooks/{hook}/deliveries{query}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v
}

/// Waits until the newest delivery of `hook` satisfies `done` (the worker records an
/// outcome just after the receiver answered).
async fn newest_when(app: &TestApp, hook: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = log(app, hook, "").await;
        if let Some(d) = v["deliveries"].get(0).filter(|d| done(d)) {
            return d.clone();
        }
        assert!(Instant::now() < deadline, "{v:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn at(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

async fn ask(agent: &countersign_client::Client, user: &str) {
    agent.ciba_authorize(&payment(user)).await.unwrap();
}

#[tokio::test]
async fn events_are_signed_filtered_and_retried_with_the_same_id() {
    let app = spawn_with_clock_and(settings).await;
    let clock = app.clock.clone().unwrap();
    let hooks = Receiver::start().await;
    let (hook, secret) = create(
        &app,
        &hooks.url("orders"),
        &["approval.requested", "approval.approved"],
    )
    .await;
    hooks.knows("orders", &secret);
    let (rejections, _) = create(&app, &hooks.url("rejections"), &["approval.rejected"]).await;
    let (alice, alice_client) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("payments-bot").await;

    // The first attempt meets a 500: the worker tries again 5 s later, same id, new timestamp.
    hooks.answer("orders", 500, Vec::new());
    ask(&agent, &alice).await;
    let first = hooks.wait_for("orders", 1).await.remove(0);
    let failed = newest_when(&app, &hook, |d| d["status_code"] == 500).await;
    assert_eq!(failed["state"], "pending");
    assert_eq!(failed["attempts"], 1);
    assert!(failed["last_error"].as_str().unwrap().contains("500"));
    assert_eq!(
        at(&failed["next_attempt_at"]),
        clock.now() + chrono::Duration::seconds(5)
    );
    clock.advance(chrono::Duration::seconds(6));
    let retried = hooks.wait_for("orders", 2).await.remove(1);
    assert_eq!(retried.id, first.id);
    assert_eq!(retried.id, format!("msg_{}", failed["id"]));
    assert!(retried.timestamp >= first.timestamp + 5);
    assert_eq!(retried.body, first.body, "the same bytes, signed anew");
    let event = first.json();
    assert_eq!(event["type"], "approval.requested");
    assert!(event["timestamp"].as_str().unwrap().ends_with('Z'));
    let data = &event["data"];
    let id = data["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("apr_"));
    assert_eq!(data["status"], "pending");
    assert_eq!(data["context"]["recipient"], "Acme Corp");
    assert_eq!(data["review_url"], app.url(&format!("/ui/requests/{id}")));
    let delivered = newest_when(&app, &hook, |d| d["state"] == "delivered").await;
    assert_eq!(delivered["attempts"], 2);
    assert_eq!(delivered["status_code"], 200);
    assert!(delivered.get("next_attempt_at").is_none());

    alice_client.approve(&id, None).await.unwrap();
    let approved = hooks.wait_for("orders", 3).await.remove(2);
    assert_eq!(approved.json()["type"], "approval.approved");
    assert_eq!(approved.json()["data"]["status"], "approved");
    assert_ne!(approved.id, first.id);
    // The other endpoint hears only rejections (its deliveries are planned in the same
    // transaction as the approval's, so none means none).
    assert_eq!(log(&app, &rejections, "").await["deliveries"], json!([]));

    // The log, newest first, one page at a time.
    let page = log(&app, &hook, "?limit=1").await;
    assert_eq!(page["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(page["deliveries"][0]["event"], "approved");
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let page = log(&app, &hook, &format!("?limit=1&cursor={cursor}")).await;
    assert_eq!(page["deliveries"][0]["event"], "requested");
    assert_eq!(page["deliveries"][0]["target"], hook);
    let last = page["next_cursor"].as_str().unwrap().to_string();
    let page = log(&app, &hook, &format!("?limit=1&cursor={last}")).await;
    assert_eq!(page, json!({"deliveries": []}));

    // A redelivery goes out at once with the original id.
    let delivery = failed["id"].as_i64().unwrap();
    let (status, v) = call(
        &app,
        ADMIN_KEY,
        "POST",
        &format!("/v1/admin/webhooks/{hook}/deliveries/{delivery}/redeliver"),
        None,
    )
    .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["id"], delivery);
    let again = hooks.wait_for("orders", 4).await.remove(3);
    assert_eq!(again.id, first.id);
    assert_eq!(again.body, first.body);
    assert_eq!(hooks.at("rejections").len(), 0);
}

#[tokio::test]
async fn rate_limits_are_honoured_gone_endpoints_are_disabled_and_redirects_not_followed() {
    let app = spawn_with_clock_and(settings).await;
    let clock = app.clock.clone().unwrap();
    let hooks = Receiver::start().await;
    let (limited, secret) = create(&app, &hooks.url("limited"), &[]).await;
    hooks.knows("limited", &secret);
    let (gone, secret) = create(&app, &hooks.url("gone"), &[]).await;
    hooks.knows("gone", &secret);
    let (moved, secret) = create(&app, &hooks.url("moved"), &[]).await;
    hooks.knows("moved", &secret);
    hooks.answer("limited", 429, vec![("retry-after", "120".into())]);
    hooks.answer("gone", 410, Vec::new());
    for _ in 0..2 {
        hooks.answer("moved", 307, vec![("location", hooks.url("elsewhere"))]);
    }
    let (alice, _) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("payments-bot").await;
    ask(&agent, &alice).await;

    // 429 with Retry-After: 120 s, not the 5 s of the schedule.
    hooks.wait_for("limited", 1).await;
    let waiting = newest_when(&app, &limited, |d| d["status_code"] == 429).await;
    assert_eq!(waiting["state"], "pending");
    assert_eq!(
        at(&waiting["next_attempt_at"]),
        clock.now() + chrono::Duration::seconds(120)
    );
    clock.advance(chrono::Duration::seconds(10));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hooks.at("limited").len(), 1, "too early for another try");
    clock.advance(chrono::Duration::seconds(111));
    hooks.wait_for("limited", 2).await;
    newest_when(&app, &limited, |d| d["state"] == "delivered").await;

    // 410: the endpoint is disabled, with its reason, and hears nothing more.
    hooks.wait_for("gone", 1).await;
    let failed = newest_when(&app, &gone, |d| d["state"] == "failed").await;
    assert_eq!(failed["status_code"], 410);
    let (_, v) = call(
        &app,
        ADMIN_KEY,
        "GET",
        &format!("/v1/admin/webhooks/{gone}"),
        None,
    )
    .await;
    assert_eq!(v["disabled"], true);
    assert!(
        v["disabled_reason"].as_str().unwrap().contains("410"),
        "{v}"
    );
    assert_eq!(audited(&app, "webhook.disabled", Some(&gone)).await, 1);

    // A redirect is a failure, never followed.
    hooks.wait_for("moved", 1).await;
    let failed = newest_when(&app, &moved, |d| d["state"] == "failed").await;
    assert_eq!(failed["status_code"], 307);
    assert_eq!(failed["attempts"], 1);

    ask(&agent, &alice).await;
    hooks.wait_for("limited", 3).await;
    hooks.wait_for("moved", 2).await;
    assert_eq!(hooks.at("gone").len(), 1);
    assert_eq!(
        log(&app, &gone, "").await["deliveries"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(hooks.at("elsewhere").is_empty());
    // A disabled endpoint is not redelivered to until it is enabled again.
    let (status, v) = call(
        &app,
        ADMIN_KEY,
        "POST",
        &format!(
            "/v1/admin/webhooks/{gone}/deliveries/{}/redeliver",
            failed["id"]
        ),
        None,
    )
    .await;
    assert_eq!(status, 404, "that delivery is another endpoint's: {v}");
    let gone_delivery = log(&app, &gone, "").await["deliveries"][0]["id"].clone();
    let redeliver = format!("/v1/admin/webhooks/{gone}/deliveries/{gone_delivery}/redeliver");
    let (status, v) = call(&app, ADMIN_KEY, "POST", &redeliver, None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("disabled")),
        "{v}"
    );
    let (status, v) = call(
        &app,
        ADMIN_KEY,
        "PATCH",
        &format!("/v1/admin/webhooks/{gone}"),
        Some(json!({"disabled": false})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["disabled"], false);
    assert!(v.get("disabled_reason").is_none());
    let (status, _) = call(&app, ADMIN_KEY, "POST", &redeliver, None).await;
    assert_eq!(status, 202);
    let back = hooks.wait_for("gone", 2).await;
    assert_eq!(back[1].id, back[0].id);
}

#[tokio::test]
async fn endpoints_are_managed_by_admins_of_their_tenant_and_secrets_shown_once() {
    let app = spawn_with(settings).await;
    let hooks = Receiver::start().await;
    let (status, created) = call(
        &app,
        ADMIN_KEY,
        "POST",
        "/v1/admin/webhooks",
        Some(json!({"url": hooks.url("audit"), "events": ["approval.requested"], "description": "SIEM"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let hook = created["id"].as_str().unwrap().to_string();
    assert!(hook.starts_with("whk_"));
    assert_eq!(created["events"], json!(["approval.requested"]));
    assert_eq!(created["description"], "SIEM");
    assert_eq!(created["disabled"], false);
    let old = created["secret"].as_str().unwrap().to_string();
    hooks.knows("audit", &old);

    // The secret is never shown again.
    let (_, one) = call(
        &app,
        ADMIN_KEY,
        "GET",
        &format!("/v1/admin/webhooks/{hook}"),
        None,
    )
    .await;
    let (_, all) = call(&app, ADMIN_KEY, "GET", "/v1/admin/webhooks", None).await;
    assert_eq!(one["url"], hooks.url("audit"));
    assert_eq!(all["webhooks"][0]["id"], hook);
    for v in [&one, &all] {
        assert!(
            !v.to_string().contains(&old) && !v.to_string().contains("whsec_"),
            "{v}"
        );
    }

    // A test event, signed, at once.
    let test = format!("/v1/admin/webhooks/{hook}/test");
    let (status, sent) = call(&app, ADMIN_KEY, "POST", &test, None).await;
    assert_eq!(status, 200);
    assert_eq!(sent, json!({"delivered": true, "status_code": 200}));
    let got = hooks.wait_for("audit", 1).await.remove(0);
    assert_eq!(got.json()["type"], "webhook.test");
    assert_eq!(got.json()["data"]["webhook_id"], hook);

    // Rotation: the new secret once; later messages verify only with it.
    let (status, rotated) = call(
        &app,
        ADMIN_KEY,
        "POST",
        &format!("/v1/admin/webhooks/{hook}/rotate-secret"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert!(new.starts_with("whsec_") && new != old);
    hooks.knows("audit", &new);
    let (alice, _) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("payments-bot").await;
    ask(&agent, &alice).await;
    let event = hooks.wait_for("audit", 2).await.remove(1);
    assert_eq!(event.json()["type"], "approval.requested");
    assert!(event.signed_with(&new));
    assert!(!event.signed_with(&old));
    assert!(got.signed_with(&old) && !got.signed_with(&new));
    let (_, one) = call(
        &app,
        ADMIN_KEY,
        "GET",
        &format!("/v1/admin/webhooks/{hook}"),
        None,
    )
    .await;
    assert!(!one.to_string().contains(&new));
    assert_eq!(
        audited(&app, "webhook.secret_rotated", Some(&hook)).await,
        1
    );
    let audit = app.admin.audit_page(None, Some(500)).await.unwrap();
    let audit = serde_json::to_string(&audit.events).unwrap();
    assert!(!audit.contains(&old) && !audit.contains(&new));

    // Bad input: a clear 4xx, and nothing changes.
    let path = format!("/v1/admin/webhooks/{hook}");
    for (body, expected) in [
        (json!({"url": "ftp://example.com/x"}), 400),
        (json!({"url": "https://user:pw@example.com/x"}), 400),
        (
            json!({"events": ["approval.requested", "approval.nope"]}),
            400,
        ),
        (json!({"description": "x".repeat(501)}), 400),
        (json!({"url": 7}), 422),
        (json!({"colour": "red"}), 422),
    ] {
        let (status, v) = call(&app, ADMIN_KEY, "PATCH", &path, Some(body.clone())).await;
        assert_eq!(status, expected, "{body}: {v}");
    }
    for body in [
        json!({"url": "not a url"}),
        json!({"url": hooks.url("x"), "events": ["user.created"]}),
        json!({"events": []}),
    ] {
        let (status, v) = call(
            &app,
            ADMIN_KEY,
            "POST",
            "/v1/admin/webhooks",
            Some(body.clone()),
        )
        .await;
        assert!((400..500).contains(&status), "{body}: {status} {v}");
    }
    let (_, now) = call(&app, ADMIN_KEY, "GET", &path, None).await;
    assert_eq!(now, one, "nothing changed");
    let (_, all) = call(&app, ADMIN_KEY, "GET", "/v1/admin/webhooks", None).await;
    assert_eq!(all["webhooks"].as_array().unwrap().len(), 1);
    for (method, bad) in [
        ("GET", "/v1/admin/webhooks/nope".to_string()),
        (
            "GET",
            "/v1/admin/webhooks/whk_01jzzzzzzzzzzzzzzzzzzzzzzz".to_string(),
        ),
        (
            "GET",
            format!("/v1/admin/webhooks/{hook}/deliveries?cursor=abc"),
        ),
        (
            "GET",
            format!("/v1/admin/webhooks/{hook}/deliveries?limit=0"),
        ),
        (
            "GET",
            format!("/v1/admin/webhooks/{hook}/deliveries?limit=many"),
        ),
        (
            "POST",
            format!("/v1/admin/webhooks/{hook}/deliveries/abc/redeliver"),
        ),
        (
            "POST",
            format!("/v1/admin/webhooks/{hook}/deliveries/999999/redeliver"),
        ),
    ] {
        let (status, v) = call(&app, ADMIN_KEY, method, &bad, None).await;
        let expected = if bad.contains("cursor") || bad.contains("limit") {
            400
        } else {
            404
        };
        assert_eq!(status, expected, "{method} {bad}: {v}");
    }

    // A good change.
    let (status, v) = call(
        &app,
        ADMIN_KEY,
        "PATCH",
        &path,
        Some(json!({"events": ["approval.expired", "approval.approved"], "description": ""})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["events"],
        json!(["approval.approved", "approval.expired"])
    );
    assert!(v.get("description").is_none());

    // Another tenant's admin sees none of it; reviewers and agents may not manage endpoints.
    let acme = app
        .admin
        .create_tenant(&countersign_proto::admin::CreateTenant {
            id: "acme".into(),
            name: None,
        })
        .await
        .unwrap()
        .admin_key
        .key;
    let (_, list) = call(&app, &acme, "GET", "/v1/admin/webhooks", None).await;
    assert_eq!(list, json!({"webhooks": []}));
    for (method, p, body) in [
        ("GET", path.clone(), None),
        ("PATCH", path.clone(), Some(json!({"disabled": true}))),
        ("DELETE", path.clone(), None),
        ("POST", format!("{path}/rotate-secret"), None),
        ("POST", format!("{path}/test"), None),
        ("GET", format!("{path}/deliveries"), None),
    ] {
        let (status, v) = call(&app, &acme, method, &p, body).await;
        assert_eq!(status, 404, "{method} {p}: {v}");
    }
    let (_, reviewer) = app.reviewer("bob@example.com").await;
    let (status, _) = call(
        &app,
        reviewer.key().unwrap(),
        "GET",
        "/v1/admin/webhooks",
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &app,
        agent.key().unwrap(),
        "POST",
        "/v1/admin/webhooks",
        Some(json!({"url": hooks.url("evil")})),
    )
    .await;
    assert_eq!(status, 403);
    let (_, v) = call(&app, ADMIN_KEY, "GET", &path, None).await;
    assert_eq!(v["disabled"], false, "the other tenant changed nothing");
    assert_eq!(hooks.at("audit").len(), 2);

    // Gone for good.
    let (status, _) = call(&app, ADMIN_KEY, "DELETE", &path, None).await;
    assert_eq!(status, 204);
    let (status, _) = call(&app, ADMIN_KEY, "GET", &path, None).await;
    assert_eq!(status, 404);
    let (status, _) = call(&app, ADMIN_KEY, "DELETE", &path, None).await;
    assert_eq!(status, 404);

    // Every endpoint is in the API description.
    let (_, doc) = call(&app, ADMIN_KEY, "GET", "/openapi.json", None).await;
    for p in [
        "/v1/admin/webhooks",
        "/v1/admin/webhooks/{id}",
        "/v1/admin/webhooks/{id}/rotate-secret",
        "/v1/admin/webhooks/{id}/deliveries",
        "/v1/admin/webhooks/{id}/deliveries/{delivery_id}/redeliver",
        "/v1/admin/webhooks/{id}/test",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} is not described");
    }
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let app = spawn_app().await;
    let (status, v) = call(
        &app,
        ADMIN_KEY,
        "POST",
        "/v1/admin/webhooks",
        Some(json!({"url": "http://127.0.0.1:9/hook"})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = call(
        &app,
        ADMIN_KEY,
        "POST",
        "/v1/admin/webhooks",
        Some(json!({"url": "http://169.254.169.254/latest"})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let (_, all) = call(&app, ADMIN_KEY, "GET", "/v1/admin/webhooks", None).await;
    assert_eq!(all, json!({"webhooks": []}));
}

#[tokio::test]
async fn plain_http_endpoints_are_refused_unless_allowed() {
    // Public host names, so only the scheme is in question.
    let app = spawn_app().await;
    let (status, v) = call(
        &app,
        ADMIN_KEY,
        "POST",
        "/v1/admin/webhooks",
        Some(json!({"url": "http://hooks.example.com/countersign"})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "endpoint_not_allowed");
    let (agent_id, _) = app.agent("rp").await;
    let (status, v) = call(
        &app,
        ADMIN_KEY,
        "POST",
        "/v1/admin/oidc-clients",
        Some(json!({
            "agent_id": agent_id, "token_endpoint_auth_method": "client_secret_basic",
            "backchannel_token_delivery_mode": "ping",
            "backchannel_client_notification_endpoint": "http://rp.example.com/cb",
        })),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "endpoint_not_allowed");
    let (status, v) = call(
        &app,
        ADMIN_KEY,
        "PUT",
        "/v1/admin/notification-channels/teams",
        Some(json!({"webhook_url": "http://teams.example.com/hook"})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "endpoint_not_allowed");
    let (_, all) = call(&app, ADMIN_KEY, "GET", "/v1/admin/webhooks", None).await;
    assert_eq!(all, json!({"webhooks": []}));
    let (status, v) = call(
        &app,
        ADMIN_KEY,
        "POST",
        "/v1/admin/webhooks",
        Some(json!({"url": "https://hooks.example.com/countersign"})),
    )
    .await;
    assert_eq!(status, 201, "{v}");

    // An operator who allows http may register it.
    let relaxed = spawn_with(|s| s.outbound.allow_http = true).await;
    let (status, v) = call(
        &relaxed,
        ADMIN_KEY,
        "POST",
        "/v1/admin/webhooks",
        Some(json!({"url": "http://hooks.example.com/countersign"})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
}

/// Outgoing calls ignore the proxy environment variables: a webhook goes straight to its
/// endpoint even when `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` name a proxy (the real binary,
/// started with them set; the stand-in proxy counts the connections it gets).
#[tokio::test]
async fn outgoing_calls_ignore_proxy_environment_variables() {
    let hooks = Receiver::start().await;
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let proxied = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = proxied.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = proxy.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("COUNTERSIGN_TEST_DATABASE_URL")
        .env_remove("COUNTERSIGN_TEST_BACKEND")
        .env("COUNTERSIGN_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
        .env("COUNTERSIGN_OUTBOUND__ALLOW_PRIVATE_NETWORKS", "true")
        .env("COUNTERSIGN_OUTBOUND__ALLOW_HTTP", "true")
        .env("HTTP_PROXY", &proxy_url)
        .env("HTTPS_PROXY", &proxy_url)
        .env("ALL_PROXY", &proxy_url)
        .env("http_proxy", &proxy_url)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/readyz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let created: Value = http
        .post(format!("{base}/v1/admin/webhooks"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"url": hooks.url("direct"), "events": ["approval.requested"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hook = created["id"].as_str().expect("the webhook is created");
    hooks.knows("direct", created["secret"].as_str().unwrap());
    let sent: Value = http
        .post(format!("{base}/v1/admin/webhooks/{hook}/test"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(sent, json!({"delivered": true, "status_code": 200}));
    assert_eq!(hooks.wait_for("direct", 1).await.len(), 1);
    assert_eq!(
        proxied.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the proxy was used"
    );
}
