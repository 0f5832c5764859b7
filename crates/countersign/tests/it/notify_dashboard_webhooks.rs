//! Webhook endpoints on the dashboard's Notifications page: added, tested, rotated, disabled,
//! enabled, redelivered to and deleted through its forms, with a local receiver that checks
//! every signature with the `standardwebhooks` crate.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::response::IntoResponse;
use countersign_proto::admin::{CreateInvitation, CreateTenant};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const PAGE: &str = "/ui/admin/notifications";
const HOOKS: &str = "/ui/admin/notifications/webhooks";

/// One message a receiver got.
#[derive(Clone)]
struct Got {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn id(&self) -> String {
        self.headers["webhook-id"].to_str().unwrap().to_string()
    }

    /// Whether the message verifies with `secret`, as a consumer checks it.
    fn verifies_with(&self, secret: &str) -> bool {
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(&self.body, &self.headers)
            .is_ok()
    }
}

#[derive(Default)]
struct Inner {
    got: HashMap<String, Vec<Got>>,
    /// The status each path answers with (200 when not named).
    status: HashMap<String, u16>,
}

/// A webhook receiver on 127.0.0.1: `POST /{path}`.
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
) -> axum::response::Response {
    let mut inner = r.inner.lock().unwrap();
    inner.got.entry(path.clone()).or_default().push(Got {
        headers,
        body: body.to_vec(),
    });
    let status = inner.status.get(&path).copied().unwrap_or(200);
    AxumStatus::from_u16(status).unwrap().into_response()
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

    fn answer(&self, path: &str, status: u16) {
        self.inner
            .lock()
            .unwrap()
            .status
            .insert(path.into(), status);
    }

    fn at(&self, path: &str) -> Vec<Got> {
        self.inner
            .lock()
            .unwrap()
            .got
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    async fn wait_for(&self, path: &str, n: usize) -> Vec<Got> {
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

fn private_allowed(s: &mut countersign_server::Settings) {
    s.outbound.allow_private_networks = true;
    s.outbound.allow_http = true;
    s.outbound.poll_interval_ms = 50;
}

async fn admin_browser_in(
    admin: &countersign_client::Client,
    app: &TestApp,
    email: &str,
) -> Browser {
    admin
        .create_invitation(&CreateInvitation {
            email: email.into(),
            name: None,
            is_admin: true,
        })
        .await
        .unwrap();
    let url = sign_in_link(admin, email).await;
    let mut b = Browser::new(app);
    b.sign_in(&url).await;
    b
}

async fn admin_browser(app: &TestApp) -> Browser {
    admin_browser_in(&app.admin, app, "ada@example.com").await
}

/// Posts a form with the page's anti-forgery token: the status, `Location` and body.
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

/// Every `whsec_…` secret in a page.
fn secrets_in(body: &str) -> Vec<String> {
    body.match_indices("whsec_")
        .map(|(i, _)| {
            body[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "_+/=".contains(*c))
                .collect()
        })
        .collect()
}

/// The part of the page about one endpoint.
fn endpoint<'a>(body: &'a str, id: &str) -> &'a str {
    let start = body
        .find(&format!(r#"data-webhook="{id}""#))
        .unwrap_or_else(|| panic!("{id} is not on the page:\n{body}"));
    let rest = &body[start..];
    &rest[..rest.find("</article>").unwrap()]
}

async fn webhooks(app: &TestApp) -> Value {
    let res = app
        .http()
        .get(app.url("/v1/admin/webhooks"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json::<Value>().await.unwrap()["webhooks"].clone()
}

/// Adds an endpoint through the page: its id and secret.
async fn add(b: &mut Browser, app: &TestApp, url: &str) -> (String, String) {
    let (status, _, body) = post(b, HOOKS, &[("url", url)]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let secret = secrets_in(&body).remove(0);
    let id = webhooks(app)
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["url"] == url)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    (id, secret)
}

/// Reloads the page until the endpoint's part satisfies `done` (the worker delivers in the
/// background).
async fn endpoint_when(b: &mut Browser, id: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = b.get(PAGE).await;
        assert_eq!(status, StatusCode::OK);
        let part = endpoint(&body, id).to_string();
        if done(&part) {
            return part;
        }
        assert!(Instant::now() < deadline, "never happened:\n{part}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_admin_adds_a_webhook_sees_its_secret_once_and_a_signed_test_arrives() {
    let app = spawn_with(private_allowed).await;
    let hooks = Receiver::start().await;
    let mut b = admin_browser(&app).await;
    let (status, _, body) = b.get(PAGE).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r##"href="#webhooks""##));
    assert!(body.contains("data-webhooks-empty"));
    for event in [
        "requested",
        "escalated",
        "approved",
        "rejected",
        "expired",
        "cancelled",
    ] {
        assert!(
            body.contains(&format!(r#"name="event:approval.{event}""#)),
            "{event}"
        );
    }

    // Added: the secret is on the page that answers the form, once, and in no redirect.
    let description = r#"<script>alert(1)</script> SIEM"#;
    let url = hooks.url("siem");
    let (status, location, body) = post(
        &mut b,
        HOOKS,
        &[
            ("url", &url),
            ("event:approval.requested", "on"),
            ("event:approval.approved", "on"),
            ("description", description),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(location.is_empty());
    let secrets = secrets_in(&body);
    assert_eq!(secrets.len(), 1, "the secret is shown once: {secrets:?}");
    let secret = secrets[0].clone();
    assert!(secret.len() > 40);
    assert!(body.contains(&format!(r#"data-webhook-secret>{secret}<"#)));
    let list = webhooks(&app).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(list[0]["url"], url.as_str());
    assert_eq!(
        list[0]["events"],
        json!(["approval.approved", "approval.requested"])
    );
    assert_eq!(list[0]["description"], description);
    let part = endpoint(&body, &id);
    assert!(
        part.contains("&#60;script&#62;alert(1)&#60;/script&#62; SIEM"),
        "{part}"
    );
    assert!(!body.contains("<script>alert(1)"));
    assert!(part.contains("<code>approval.approved</code>, <code>approval.requested</code>"));
    assert!(part.contains(r#"data-enabled="true""#));

    // Never again.
    let (_, _, again) = b.get(PAGE).await;
    assert!(!again.contains("whsec_") && !again.contains(&secret));
    assert!(endpoint(&again, &id).contains(&url));

    // A test event, signed with that secret, sent at once.
    let (status, _, body) = post(&mut b, &format!("{HOOKS}/{id}/test"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    let part = endpoint(&body, &id);
    assert!(part.contains(r#"data-delivered="true""#), "{part}");
    assert!(part.contains("Status 200."));
    assert!(!body.contains("whsec_"));
    let got = hooks.wait_for("siem", 1).await.remove(0);
    assert!(got.verifies_with(&secret));
    assert_eq!(got.json()["type"], "webhook.test");
    assert_eq!(got.json()["data"]["webhook_id"], id.as_str());

    // Rotation shows the new secret, once; later messages verify only with it.
    let (status, location, body) = post(&mut b, &format!("{HOOKS}/{id}/rotate-secret"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(location.is_empty());
    let rotated = secrets_in(&body);
    assert_eq!(rotated.len(), 1);
    let new = rotated[0].clone();
    assert_ne!(new, secret);
    assert!(body.contains("The new signing secret"));
    let (_, _, again) = b.get(PAGE).await;
    assert!(!again.contains("whsec_"));
    post(&mut b, &format!("{HOOKS}/{id}/test"), &[]).await;
    let got = hooks.wait_for("siem", 2).await.remove(1);
    assert!(got.verifies_with(&new));
    assert!(!got.verifies_with(&secret));

    // A receiver that fails: the outcome says so, with its status.
    hooks.answer("siem", 503);
    let (status, _, body) = post(&mut b, &format!("{HOOKS}/{id}/test"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    let part = endpoint(&body, &id);
    assert!(part.contains(r#"data-delivered="false""#), "{part}");
    assert!(part.contains("Status 503."));
    assert!(part.contains("data-test-error"));
}

#[tokio::test]
async fn an_admin_disables_enables_redelivers_and_deletes_and_sees_each_delivery() {
    let app = spawn_with(private_allowed).await;
    let hooks = Receiver::start().await;
    hooks.answer("gone", 410);
    let mut b = admin_browser(&app).await;
    let (ops, _) = add(&mut b, &app, &hooks.url("ops")).await;
    let (gone, _) = add(&mut b, &app, &hooks.url("gone")).await;
    let (_, _, body) = b.get(PAGE).await;
    assert!(endpoint(&body, &ops).contains("every event"), "none ticked");
    let (alice, _) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("payments-bot").await;
    agent.ciba_authorize(&payment(&alice)).await.unwrap();
    let approval = app
        .admin
        .list_approvals(&countersign_client::ApprovalFilter {
            status: Some("pending".into()),
            cursor: None,
            limit: None,
        })
        .await
        .unwrap()
        .approvals[0]
        .id
        .clone();

    // Each delivery: its event, a link to the request, state, attempts and status.
    let first = hooks.wait_for("ops", 1).await.remove(0);
    let part = endpoint_when(&mut b, &ops, |p| p.contains(r#"data-state="delivered""#)).await;
    for fact in [
        format!(r#"href="/ui/requests/{approval}""#),
        ">requested<".into(),
        r#"data-label="Attempts">1<"#.into(),
        r#"data-status-code>200<"#.into(),
        ">Send again<".into(),
    ] {
        assert!(part.contains(&fact), "{fact} missing from {part}");
    }

    // A 410 disables its endpoint, with the reason on the page, and nothing is sent again.
    // (The endpoint is disabled first, then the delivery's outcome is recorded.)
    let part = endpoint_when(&mut b, &gone, |p| {
        p.contains(r#"data-enabled="false""#) && p.contains(r#"data-status-code>410<"#)
    })
    .await;
    assert!(part.contains("410 Gone"), "{part}");
    assert!(!part.contains(">Send again<"));
    assert!(part.contains(">Enable<"));

    // Send again: the same webhook-id, at once.
    let delivery = part_delivery(&endpoint_when(&mut b, &ops, |_| true).await);
    let (status, location, _) = post(
        &mut b,
        &format!("{HOOKS}/{ops}/deliveries/{delivery}/redeliver"),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        location,
        format!("{PAGE}?done=webhook-redelivered&webhook={ops}#webhook-{ops}")
    );
    let (_, _, body) = b.get(&location).await;
    assert!(endpoint(&body, &ops).contains("Sending that delivery again"));
    let again = hooks.wait_for("ops", 2).await.remove(1);
    assert_eq!(again.id(), first.id());
    assert_eq!(again.body, first.body);

    // Disabled: it says so, and a delivery is not sent again until it is enabled.
    let (status, location, _) = post(&mut b, &format!("{HOOKS}/{ops}/enable"), &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, _, body) = b.get(&location).await;
    let part = endpoint(&body, &ops);
    assert!(part.contains(r#"data-enabled="false""#));
    assert!(part.contains("disabled by an admin"));
    assert!(part.contains("Disabled: it receives no events"));
    assert_eq!(webhooks(&app).await[0]["disabled"], true);
    let (status, _, body) = post(
        &mut b,
        &format!("{HOOKS}/{ops}/deliveries/{delivery}/redeliver"),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        endpoint(&body, &ops).contains(r#"data-notice="webhook""#),
        "{body}"
    );
    let (status, _, _) = post(
        &mut b,
        &format!("{HOOKS}/{ops}/enable"),
        &[("enabled", "on")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let list = webhooks(&app).await;
    let ops_view = list
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == ops.as_str())
        .unwrap();
    assert_eq!(ops_view["disabled"], false);

    // Deleting asks first.
    let (status, _, body) = post(&mut b, &format!("{HOOKS}/{ops}/delete"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    let part = endpoint(&body, &ops);
    assert!(part.contains("data-confirm-delete"));
    assert!(part.contains("Yes, delete this endpoint"));
    assert_eq!(webhooks(&app).await.as_array().unwrap().len(), 2);
    let (status, location, _) = post(
        &mut b,
        &format!("{HOOKS}/{ops}/delete"),
        &[("confirm", "yes")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, _, body) = b.get(&location).await;
    assert!(body.contains("Webhook endpoint deleted."));
    assert!(!body.contains(&format!(r#"data-webhook="{ops}""#)));
    let list = webhooks(&app).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], gone.as_str());
}

/// The id of the first delivery listed in an endpoint's part of the page.
fn part_delivery(part: &str) -> String {
    let marker = r#"data-webhook-delivery=""#;
    let rest = &part[part.find(marker).unwrap() + marker.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

#[tokio::test]
async fn bad_webhook_input_is_shown_beside_the_form_and_changes_nothing() {
    let app = spawn_app().await;
    let mut b = admin_browser(&app).await;
    b.get(PAGE).await;
    let long = "x".repeat(501);
    for (fields, says) in [
        (
            vec![
                ("url", "http://127.0.0.1:9/hook"),
                ("event:approval.expired", "on"),
            ],
            "not a public address",
        ),
        (
            vec![("url", "http://169.254.169.254/latest")],
            "not a public address",
        ),
        (vec![("url", "ftp://example.com/x")], "http or https"),
        (vec![("url", "")], "http or https"),
        (
            vec![
                ("url", "https://hooks.example.com/x"),
                ("event:approval.nope", "on"),
            ],
            "unknown event",
        ),
        (
            vec![
                ("url", "https://hooks.example.com/x"),
                ("description", &long),
            ],
            "at most 500",
        ),
    ] {
        let (status, location, body) = post(&mut b, HOOKS, &fields).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{fields:?}: {body}");
        assert!(location.is_empty());
        let notice = &body[body.find(r#"data-notice="webhooks""#).unwrap()..];
        assert!(
            notice[..notice.find("</div>").unwrap()].contains(says),
            "{fields:?}: {notice}"
        );
        assert!(!body.contains("whsec_"));
        // What was typed is kept.
        assert!(body.contains(&format!(r#"value="{}""#, fields[0].1)));
        if fields.iter().any(|(k, _)| *k == "event:approval.expired") {
            assert!(body.contains(r#"name="event:approval.expired" value="on" checked"#));
        }
    }
    assert_eq!(webhooks(&app).await, json!([]));
    // Without the anti-forgery token: refused.
    let (status, _, _) = b
        .post(HOOKS, form(&[("url", "https://hooks.example.com/forged")]))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(webhooks(&app).await, json!([]));

    // Endpoints that are not there.
    for path in [
        "whk_nope/test",
        "whk_nope/rotate-secret",
        "whk_nope/enable",
        "nope/delete",
        "whk_01jzzzzzzzzzzzzzzzzzzzzzzz/deliveries/1/redeliver",
    ] {
        let (status, _, body) =
            post(&mut b, &format!("{HOOKS}/{path}"), &[("confirm", "yes")]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert!(body.contains(r#"data-notice="webhooks""#), "{path}");
    }
    let (hook, _) = add(&mut b, &app, "https://hooks.example.com/ok").await;
    let (status, _, body) = post(
        &mut b,
        &format!("{HOOKS}/{hook}/deliveries/abc/redeliver"),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(endpoint(&body, &hook).contains(r#"data-notice="webhook""#));
    let before = webhooks(&app).await;

    // Another tenant's admin sees none of it and changes none of it.
    let acme_key = app
        .admin
        .create_tenant(&CreateTenant {
            id: "acme".into(),
            name: None,
        })
        .await
        .unwrap()
        .admin_key
        .key;
    let acme = app.client(&acme_key);
    let mut other = admin_browser_in(&acme, &app, "olga@example.com").await;
    let (status, _, body) = other.get(PAGE).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.contains(&hook) && body.contains("data-webhooks-empty"));
    for path in [
        "test",
        "rotate-secret",
        "enable",
        "delete",
        "deliveries/1/redeliver",
    ] {
        let (status, _, body) = post(
            &mut other,
            &format!("{HOOKS}/{hook}/{path}"),
            &[("confirm", "yes")],
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            !body.contains("whsec_") && !body.contains(&hook),
            "{path}: {body}"
        );
    }
    assert_eq!(webhooks(&app).await, before, "nothing changed");
}

#[tokio::test]
async fn reviewers_cannot_see_or_change_webhooks() {
    let app = spawn_app().await;
    let mut admin = admin_browser(&app).await;
    let (hook, _) = add(&mut admin, &app, "https://hooks.example.com/x").await;
    let before = webhooks(&app).await;
    app.reviewer("rita@example.com").await;
    let mut b = signed_in(&app, "rita@example.com").await;
    let (status, _, _) = b.get(PAGE).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    b.get("/ui/queue").await;
    let (status, _, body) = post(&mut b, HOOKS, &[("url", "https://hooks.example.com/y")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!body.contains("whsec_"));
    for path in [
        "test",
        "rotate-secret",
        "enable",
        "delete",
        "deliveries/1/redeliver",
    ] {
        let (status, _, body) = post(
            &mut b,
            &format!("{HOOKS}/{hook}/{path}"),
            &[("confirm", "yes")],
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert!(!body.contains("whsec_"), "{path}");
    }
    assert_eq!(webhooks(&app).await, before, "nothing changed");
}
