//! Web Push to the installed dashboard: a local push service checks each request's VAPID
//! token and the test decrypts the RFC 8291 body with the device's own keys (aws-lc-rs, not
//! the server's encryption code). Devices subscribe the way the dashboard's script does.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::{aead, agreement, hkdf, rand::SecureRandom, signature};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use countersign_proto::guard::ToolRequest;
use serde_json::{Value, json};

use crate::support::*;

const P: &str = "default";

/// One request the push service received.
#[derive(Debug, Clone)]
struct Received {
    device: String,
    headers: HeaderMap,
    body: Vec<u8>,
    /// The VAPID token's claims, or why the token was refused.
    vapid: Result<Value, String>,
    /// The `k` of the Authorization header.
    key: String,
}

#[derive(Default)]
struct Shared {
    origin: String,
    received: Vec<Received>,
    /// Answers to give per device, in order; then 201.
    answers: HashMap<String, VecDeque<u16>>,
}

/// A stand-in push service on 127.0.0.1.
struct PushService {
    base: String,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PushService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Checks `vapid t=<JWT>, k=<key>` as a push service does (RFC 8292).
fn check_vapid(header: &str, origin: &str) -> (Result<Value, String>, String) {
    let Some(rest) = header.strip_prefix("vapid ") else {
        return (Err(format!("not a vapid header: {header}")), String::new());
    };
    let mut token = "";
    let mut key = "";
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(t) = part.strip_prefix("t=") {
            token = t;
        } else if let Some(k) = part.strip_prefix("k=") {
            key = k;
        }
    }
    let check = || -> Result<Value, String> {
        let k = URL_SAFE_NO_PAD.decode(key).map_err(|e| format!("k: {e}"))?;
        if k.len() != 65 || k[0] != 4 {
            return Err("k is not an uncompressed P-256 key".into());
        }
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() != 3 {
            return Err("t is not a JWT".into());
        }
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(parts[0])
                .map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        if header["alg"] != "ES256" {
            return Err(format!("alg is {}", header["alg"]));
        }
        let sig = URL_SAFE_NO_PAD
            .decode(parts[2])
            .map_err(|e| e.to_string())?;
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &k)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .map_err(|_| "the signature does not verify with k".to_string())?;
        let claims: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(parts[1])
                .map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        if claims["aud"] != origin {
            return Err(format!("aud {} is not {origin}", claims["aud"]));
        }
        let now = chrono::Utc::now().timestamp();
        let exp = claims["exp"].as_i64().ok_or("no exp")?;
        if exp <= now || exp > now + 24 * 3600 {
            return Err(format!("exp {exp} is not within 24 hours of {now}"));
        }
        if claims["sub"].as_str().is_none_or(str::is_empty) {
            return Err("no sub".into());
        }
        Ok(claims)
    };
    (check(), key.to_string())
}

async fn receive(
    State(shared): State<Arc<Mutex<Shared>>>,
    Path(device): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let mut s = shared.lock().unwrap();
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let (vapid, key) = check_vapid(&authorization, &s.origin);
    let refused = vapid.is_err();
    s.received.push(Received {
        device: device.clone(),
        headers,
        body: body.to_vec(),
        vapid,
        key,
    });
    if refused {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let status = s
        .answers
        .get_mut(&device)
        .and_then(|q| q.pop_front())
        .unwrap_or(201);
    let status = StatusCode::from_u16(status).unwrap();
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return (status, [("retry-after", "0")]).into_response();
    }
    status.into_response()
}

impl PushService {
    async fn start() -> PushService {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Mutex::new(Shared {
            origin: base.clone(),
            ..Shared::default()
        }));
        let app = axum::Router::new()
            .route("/push/{device}", axum::routing::post(receive))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        PushService { base, shared, task }
    }

    fn device(&self, name: &str) -> Device {
        let private = agreement::PrivateKey::generate(&agreement::ECDH_P256).unwrap();
        let public = private.compute_public_key().unwrap().as_ref().to_vec();
        let mut auth = [0u8; 16];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut auth)
            .unwrap();
        Device {
            name: name.into(),
            endpoint: format!("{}/push/{name}", self.base),
            private,
            public,
            auth,
        }
    }

    /// The next answers to `device` (then 201 again).
    fn answer(&self, device: &Device, statuses: &[u16]) {
        self.shared
            .lock()
            .unwrap()
            .answers
            .insert(device.name.clone(), statuses.iter().copied().collect());
    }

    fn received(&self) -> Vec<Received> {
        self.shared.lock().unwrap().received.clone()
    }

    /// Waits until at least `n` requests arrived (at most 10 s) and returns them all.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() > deadline {
                assert!(got.len() >= n, "expected {n} pushes, got {}", got.len());
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A browser's push subscription: its P-256 key pair and authentication secret.
struct Device {
    name: String,
    endpoint: String,
    private: agreement::PrivateKey,
    public: Vec<u8>,
    auth: [u8; 16],
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn hkdf_expand(prk: &hkdf::Prk, info: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    prk.expand(&[info], Len(len))
        .unwrap()
        .fill(&mut out)
        .unwrap();
    out
}

impl Device {
    /// What `PushSubscription.toJSON()` gives the dashboard's script.
    fn subscription(&self) -> Value {
        json!({
            "endpoint": self.endpoint,
            "expirationTime": null,
            "keys": {
                "p256dh": URL_SAFE_NO_PAD.encode(&self.public),
                "auth": URL_SAFE_NO_PAD.encode(self.auth),
            }
        })
    }

    /// Decrypts an `aes128gcm` body (RFC 8188 framing, RFC 8291 keys) sent to this device.
    fn decrypt(&self, body: &[u8]) -> Value {
        let salt = &body[..16];
        let record_size = u32::from_be_bytes(body[16..20].try_into().unwrap()) as usize;
        let id_len = body[20] as usize;
        let server_public = &body[21..21 + id_len];
        assert_eq!(
            id_len, 65,
            "the key id is the server's ephemeral public key"
        );
        let mut ciphertext = body[21 + id_len..].to_vec();
        assert!(ciphertext.len() <= record_size, "one record");
        let ecdh = agreement::agree(
            &self.private,
            agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, server_public),
            aws_lc_rs::error::Unspecified,
            |secret| Ok(secret.to_vec()),
        )
        .unwrap();
        // RFC 8291 §3.4: IKM from the shared secret, keyed by the authentication secret.
        let mut key_info = b"WebPush: info\0".to_vec();
        key_info.extend_from_slice(&self.public);
        key_info.extend_from_slice(server_public);
        let prk_key = hkdf::Salt::new(hkdf::HKDF_SHA256, &self.auth).extract(&ecdh);
        let ikm = hkdf_expand(&prk_key, &key_info, 32);
        // RFC 8188 §2.2: the content key and nonce.
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&ikm);
        let cek = hkdf_expand(&prk, b"Content-Encoding: aes128gcm\0", 16);
        let nonce = hkdf_expand(&prk, b"Content-Encoding: nonce\0", 12);
        let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &cek).unwrap());
        let plain = key
            .open_in_place(
                aead::Nonce::try_assume_unique_for_key(&nonce).unwrap(),
                aead::Aad::empty(),
                &mut ciphertext,
            )
            .expect("the body decrypts with the device's keys");
        // The last record ends with the delimiter 2, then optional zero padding.
        let end = plain.iter().rposition(|b| *b != 0).unwrap();
        assert_eq!(plain[end], 2, "a last-record delimiter");
        serde_json::from_slice(&plain[..end]).unwrap()
    }
}

fn with_push(s: &mut countersign_server::Settings) {
    s.outbound.allow_private_networks = true;
    s.outbound.allow_http = true;
    s.outbound.poll_interval_ms = 50;
    s.notifications.push.subject = Some("mailto:ops@example.com".into());
    s.notifications.push.ttl_secs = 600;
}

/// Posts a subscription as the account page's script does.
async fn subscribe(b: &mut Browser, body: &Value) -> (u16, Value) {
    let (status, _, _) = b.get("/ui/account").await;
    assert_eq!(status, 200);
    let res = b
        .http
        .post(format!("{}/ui/account/push-subscriptions", b.base))
        .header("cookie", b.cookie.clone().unwrap())
        .header("x-csrf-token", b.csrf())
        .header("origin", b.base.clone())
        .json(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn subscribed(app: &TestApp, email: &str, device: &Device) -> Browser {
    let mut b = signed_in(app, email).await;
    let (status, body) = subscribe(&mut b, &device.subscription()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["id"].as_str().unwrap().starts_with("psh_"), "{body}");
    b
}

/// Waits until every state change was fanned out and no delivery is pending.
async fn settled(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while app
        .query_i64("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
        .await
        > 0
    {
        assert!(Instant::now() < deadline, "the outbox did not settle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn push_rows(app: &TestApp) -> i64 {
    app.query_i64("SELECT COUNT(*) FROM push_subscriptions")
        .await
}

#[tokio::test]
async fn a_ciba_request_pushes_to_the_users_device_and_its_outcome_replaces_it() {
    let service = PushService::start().await;
    let app = spawn_with(with_push).await;
    let (alice, alice_client) = app.reviewer("alice@example.com").await;
    let phone = service.device("alice-phone");
    let mut b = subscribed(&app, "alice@example.com", &phone).await;
    let (_, _, page) = b.get("/ui/account").await;
    assert!(page.contains("data-device=\"psh_"), "the device is listed");
    assert!(page.contains("via 127.0.0.1"));
    assert!(!page.contains(&phone.endpoint), "endpoints are not shown");

    let (_, agent) = app.agent("payments-bot").await;
    agent.ciba_authorize(&payment(&alice)).await.unwrap();
    let got = service.wait_for(1).await;
    let push = &got[0];
    assert_eq!(push.device, "alice-phone");
    let claims = push.vapid.as_ref().unwrap();
    assert_eq!(claims["sub"], "mailto:ops@example.com");
    // The key the page gives browsers is the key that signs.
    assert!(page.contains(&format!("data-key=\"{}\"", push.key)));
    assert_eq!(push.headers["content-encoding"], "aes128gcm");
    assert_eq!(push.headers["ttl"], "600");
    assert_eq!(push.headers["urgency"], "high");
    let message = phone.decrypt(&push.body);
    assert_eq!(message["title"], "Approval required: approve:payment");
    assert_eq!(message["event"], "requested");
    let id = message["tag"].as_str().unwrap().to_string();
    assert!(id.starts_with("apr_"));
    assert_eq!(message["url"], app.url(&format!("/ui/requests/{id}")));
    let body = message["body"].as_str().unwrap();
    assert!(body.starts_with("payments-bot asks: amount: 500"), "{body}");
    assert!(body.contains("recipient: Acme Corp"), "{body}");
    assert!(
        body.contains("The agent's own words: \u{201c}Approve payment of $500 to Acme Corp?"),
        "{body}"
    );
    assert_eq!(push.headers["topic"], id.as_str());

    // The decision reaches the same device with the same tag.
    alice_client.approve(&id, None).await.unwrap();
    let got = service.wait_for(2).await;
    assert_eq!(got.len(), 2);
    let outcome = phone.decrypt(&got[1].body);
    assert_eq!(outcome["tag"], id.as_str());
    assert_eq!(outcome["event"], "approved");
    assert_eq!(outcome["title"], "Approved: approve:payment");
    assert_eq!(outcome["body"], "Approved by alice@example.com");
    assert_eq!(got[1].headers["urgency"], "normal");

    settled(&app).await;
    let log = deliveries(&app, &id).await;
    let pushes: Vec<_> = log.iter().filter(|d| d["channel"] == "push").collect();
    assert_eq!(pushes.len(), 2, "{log:?}");
    for d in pushes {
        assert_eq!(d["state"], "delivered");
        assert_eq!(d["status_code"], 201);
    }
}

#[tokio::test]
async fn a_tool_call_for_a_group_pushes_to_its_primaries_devices() {
    let service = PushService::start().await;
    let app = spawn_with(with_push).await;
    finance_team(&app, Some(15)).await;
    app.admin
        .create_policy(P, &finance_policy(&["dashboard"]))
        .await
        .unwrap();
    let devices: Vec<Device> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| service.device(n))
        .collect();
    for d in &devices {
        subscribed(&app, &format!("{}@company.com", d.name), d).await;
    }
    let (_, agent) = app.agent("support-bot").await;
    let decision = agent
        .guard_tool(
            P,
            &ToolRequest {
                session_id: "session_abc123".into(),
                tool_call: json!({"name": "payment_refund", "arguments": {"amount": 500, "customer_id": "cust_123"}}),
                scope: None,
                reason: Some("<b>Customer</b> asked for a refund".into()),
                on_behalf_of: None,
                annotations: None,
                mcp: None,
            },
        )
        .await
        .unwrap();
    let id = decision.approval_id.unwrap();
    service.wait_for(2).await;
    settled(&app).await;
    let got = service.received();
    let mut to: Vec<_> = got.iter().map(|r| r.device.clone()).collect();
    to.sort();
    assert_eq!(to, ["alice", "bob"], "primaries only, once each");
    for r in &got {
        assert!(r.vapid.is_ok(), "{:?}", r.vapid);
        let device = devices.iter().find(|d| d.name == r.device).unwrap();
        let message = device.decrypt(&r.body);
        assert_eq!(message["title"], "Approval required: payment_refund");
        assert_eq!(message["tag"], id.as_str());
        assert_eq!(message["url"], app.url(&format!("/ui/requests/{id}")));
        let body = message["body"].as_str().unwrap();
        assert!(body.starts_with("support-bot asks: "), "{body}");
        assert!(body.contains("customer_id: cust_123"), "{body}");
        // The agent's words are labelled as such (a notification shows plain text).
        assert!(
            body.contains("The agent's own words: \u{201c}<b>Customer</b> asked for a refund"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_gone_subscription_is_removed_and_a_busy_service_is_retried() {
    let service = PushService::start().await;
    let app = spawn_with(with_push).await;
    let (alice, alice_client) = app.reviewer("alice@example.com").await;
    let old = service.device("old-laptop");
    let phone = service.device("phone");
    let mut b = subscribed(&app, "alice@example.com", &old).await;
    subscribe(&mut b, &phone.subscription()).await;
    assert_eq!(push_rows(&app).await, 2);
    service.answer(&old, &[410]);
    service.answer(&phone, &[503]);

    let (_, agent) = app.agent("payments-bot").await;
    agent.ciba_authorize(&payment(&alice)).await.unwrap();
    // The phone's service was busy once: it gets the message on the retry.
    service.wait_for(3).await;
    settled(&app).await;
    let got_now = service.received();
    assert_eq!(got_now.len(), 3);
    let to_old = got_now.iter().filter(|r| r.device == "old-laptop").count();
    let to_phone = got_now.iter().filter(|r| r.device == "phone").count();
    assert_eq!((to_old, to_phone), (1, 2), "the gone device is not retried");
    let message = phone.decrypt(&got_now.last().unwrap().body);
    assert_eq!(message["event"], "requested");

    // The gone device was forgotten; the other stays.
    assert_eq!(push_rows(&app).await, 1);
    let (_, _, page) = b.get("/ui/account").await;
    assert_eq!(page.matches("data-device=\"psh_").count(), 1);
    let id = message["tag"].as_str().unwrap();
    let log = settled_deliveries(&app, id).await;
    let failed: Vec<_> = log
        .iter()
        .filter(|d| d["channel"] == "push" && d["state"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{log:?}");
    assert_eq!(failed[0]["status_code"], 410);
    assert_eq!(failed[0]["attempts"], 1);
    let delivered: Vec<_> = log
        .iter()
        .filter(|d| d["channel"] == "push" && d["state"] == "delivered")
        .collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["attempts"], 2);

    // The outcome goes only to the device that is still there.
    alice_client.deny(id, None).await.unwrap();
    service.wait_for(4).await;
    settled(&app).await;
    let after: Vec<_> = service.received().into_iter().skip(3).collect();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].device, "phone");
    assert_eq!(phone.decrypt(&after[0].body)["event"], "rejected");
}

#[tokio::test]
async fn the_account_form_saves_preferences_and_push_off_sends_nothing() {
    let service = PushService::start().await;
    let app = spawn_with(with_push).await;
    let (alice, _) = app.reviewer("alice@example.com").await;
    let phone = service.device("phone");
    let mut b = subscribed(&app, "alice@example.com", &phone).await;
    let (status, headers, page) = b.get("/ui/account").await;
    assert_eq!(status, 200);
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    assert!(
        page.contains("name=\"push\" value=\"on\" checked"),
        "push is on by default"
    );
    assert!(page.contains("name=\"email\" value=\"on\" checked"));
    assert!(!page.contains("name=\"slack\" value=\"on\" checked"));
    assert!(page.contains("data-push-subscribe"));
    assert!(!page.contains("<script>"), "no inline script");

    // Without the anti-forgery token nothing changes.
    let (status, _, _) = b
        .post("/ui/account/notifications", form(&[("email", "on")]))
        .await;
    assert_eq!(status, 403);
    // Ticked boxes are sent; unticked ones are not.
    let csrf = b.csrf();
    let (status, headers, _) = b
        .post(
            "/ui/account/notifications",
            form(&[("csrf", &csrf), ("slack", "on")]),
        )
        .await;
    assert_eq!(status, 303);
    assert!(
        headers["location"]
            .to_str()
            .unwrap()
            .starts_with("/ui/account?done=notifications-saved")
    );
    let prefs: Value = app
        .http()
        .get(app.url(&format!("/v1/admin/users/{alice}/notification-preferences")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prefs["email"], false);
    assert_eq!(prefs["slack"], true);
    assert_eq!(prefs["push"], false);
    assert_eq!(prefs["push_devices"], 1);
    let (_, _, page) = b.get("/ui/account?done=notifications-saved").await;
    assert!(page.contains("Your notification choices were saved."));
    assert!(page.contains("name=\"slack\" value=\"on\" checked"));
    assert!(!page.contains("name=\"push\" value=\"on\" checked"));

    let (_, agent) = app.agent("payments-bot").await;
    agent.ciba_authorize(&payment(&alice)).await.unwrap();
    settled(&app).await;
    assert!(service.received().is_empty(), "push is off");

    // The service worker is served from /ui/ with the dashboard's headers.
    let res = app.http().get(app.url("/ui/sw.js")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(res.headers().contains_key("content-security-policy"));
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    let sw = res.text().await.unwrap();
    assert!(sw.contains("showNotification") && sw.contains("notificationclick"));
}

#[tokio::test]
async fn bad_subscriptions_are_refused() {
    // Private addresses are not allowed here, as in production.
    let app = spawn_with(|s| s.outbound.poll_interval_ms = 50).await;
    app.reviewer("alice@example.com").await;
    let mut b = signed_in(&app, "alice@example.com").await;
    let service = PushService::start().await;
    let device = service.device("d");
    let good = json!({
        "endpoint": "https://push.example.net/send/abc",
        "keys": device.subscription()["keys"],
    });
    let mut cases = vec![
        json!({"endpoint": "https://push.example.net/x"}),
        json!({"keys": good["keys"]}),
        json!("not an object"),
    ];
    let mut with = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        cases.push(v);
    };
    with(&|v| v["endpoint"] = json!("http://push.example.net/x"));
    with(&|v| v["endpoint"] = json!("https://127.0.0.1/x"));
    with(&|v| v["endpoint"] = json!("https://user:pw@push.example.net/x"));
    with(&|v| v["endpoint"] = json!("ftp://push.example.net/x"));
    with(&|v| v["keys"]["auth"] = json!(URL_SAFE_NO_PAD.encode([1u8; 8])));
    with(&|v| v["keys"]["p256dh"] = json!(URL_SAFE_NO_PAD.encode([4u8; 65])));
    with(&|v| v["keys"]["p256dh"] = json!("not base64!"));
    with(&|v| v["keys"]["auth"] = json!(42));
    for case in &cases {
        let (status, body) = subscribe(&mut b, case).await;
        assert!((400..500).contains(&status), "{case}: {status} {body}");
    }
    assert_eq!(push_rows(&app).await, 0);

    // Without the anti-forgery header, or signed out: refused.
    let res = b
        .http
        .post(app.url("/ui/account/push-subscriptions"))
        .header("cookie", b.cookie.clone().unwrap())
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let error: Value = res.json().await.unwrap();
    assert_eq!(error["error"]["code"], "csrf_failed");
    let res = app
        .http()
        .post(app.url("/ui/account/push-subscriptions"))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(push_rows(&app).await, 0);
    let (status, body) = subscribe(&mut b, &good).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(push_rows(&app).await, 1);
}

#[tokio::test]
async fn another_users_device_cannot_be_removed() {
    let service = PushService::start().await;
    let app = spawn_with(with_push).await;
    app.reviewer("alice@example.com").await;
    app.reviewer("bob@example.com").await;
    let mut alice = subscribed(&app, "alice@example.com", &service.device("alice")).await;
    let (_, _, page) = alice.get("/ui/account").await;
    let start = page.find("data-device=\"").unwrap() + "data-device=\"".len();
    let id = page[start..start + page[start..].find('"').unwrap()].to_string();

    let mut bob = signed_in(&app, "bob@example.com").await;
    let (_, _, bobs_page) = bob.get("/ui/account").await;
    assert!(!bobs_page.contains(&id), "bob does not see alice's device");
    let csrf = bob.csrf();
    let (status, _, _) = bob
        .post(
            &format!("/ui/account/push-subscriptions/{id}/remove"),
            form(&[("csrf", &csrf)]),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(push_rows(&app).await, 1);

    let csrf = alice.csrf();
    let (status, headers, _) = alice
        .post(
            &format!("/ui/account/push-subscriptions/{id}/remove"),
            form(&[("csrf", &csrf)]),
        )
        .await;
    assert_eq!(status, 303);
    assert!(
        headers["location"]
            .to_str()
            .unwrap()
            .starts_with("/ui/account?done=device-removed")
    );
    assert_eq!(push_rows(&app).await, 0);
    let (_, _, page) = alice.get("/ui/account").await;
    assert!(page.contains("data-no-devices"));
}
