//! OpenID Connect CIBA Core 1.0: the behaviours the OpenID conformance suite's CIBA modules
//! check, against the real server over HTTP.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use countersign_client::Client;
use countersign_proto::oidc::{CreateOidcClient, OidcClientCreated};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::*;

const CIBA: &str = "urn:openid:params:grant-type:ciba";

/// An ES256 key pair of a client: the private half signs, the public half is registered.
struct ClientKey {
    pkcs8: Vec<u8>,
    jwk: Value,
}

impl ClientKey {
    fn new(kid: &str) -> ClientKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap()
            .as_ref()
            .to_vec();
        let pair =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).unwrap();
        let point = pair.public_key().as_ref();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        ClientKey { pkcs8, jwk }
    }

    fn jwks(&self) -> Value {
        json!({"keys": [self.jwk]})
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = self.jwk["kid"].as_str().map(str::to_string);
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.pkcs8)).unwrap()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn jti() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// What a test server of a client received at its notification endpoint.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(HeaderMap, Value)>>>);

impl Received {
    fn all(&self) -> Vec<(HeaderMap, Value)> {
        self.0.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize, within: Duration) -> Vec<(HeaderMap, Value)> {
        let deadline = Instant::now() + within;
        loop {
            let all = self.all();
            if all.len() >= n || Instant::now() > deadline {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A client's notification endpoint on a loopback port: records every call and answers with
/// the statuses given, in turn (the last one repeats).
async fn notification_endpoint(statuses: Vec<u16>) -> (String, Received) {
    let received = Received::default();
    let statuses = Arc::new(Mutex::new(statuses));
    let r = received.clone();
    let app = axum::Router::new().route(
        "/cb",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let r = r.clone();
            let statuses = statuses.clone();
            async move {
                let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                r.0.lock().unwrap().push((headers, value));
                let mut s = statuses.lock().unwrap();
                let status = if s.len() > 1 { s.remove(0) } else { s[0] };
                StatusCode::from_u16(status).unwrap().into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/cb"), received)
}

struct Ciba {
    client_id: String,
    secret: Option<String>,
    key: Option<ClientKey>,
}

async fn register(app: &TestApp, name: &str, body: impl FnOnce(&mut CreateOidcClient)) -> Ciba {
    let (agent_id, _) = app.agent(name).await;
    let mut create = CreateOidcClient {
        agent_id: agent_id.clone(),
        token_endpoint_auth_method: "client_secret_basic".into(),
        jwks: None,
        backchannel_token_delivery_mode: "poll".into(),
        backchannel_client_notification_endpoint: None,
        backchannel_authentication_request_signing_alg: None,
        backchannel_user_code_parameter: false,
        grant_types: None,
    };
    body(&mut create);
    let created: OidcClientCreated = app.admin.create_oidc_client(&create).await.unwrap();
    assert_eq!(created.view.client_id, agent_id);
    Ciba {
        client_id: agent_id,
        secret: created.client_secret,
        key: None,
    }
}

async fn basic_client(app: &TestApp, name: &str) -> Ciba {
    register(app, name, |_| {}).await
}

/// A response: status, headers, JSON body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("<none>")
    }

    /// OAuth error bodies carry only `error`, `error_description` and `error_uri`, and are
    /// never cached.
    fn assert_oauth_error(&self, status: u16, error: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.error(), error, "{}", self.body);
        let keys: Vec<&String> = self.body.as_object().unwrap().keys().collect();
        assert!(
            keys.iter()
                .all(|k| ["error", "error_description", "error_uri"].contains(&k.as_str())),
            "unexpected members in {}",
            self.body
        );
        assert_eq!(self.headers["cache-control"], "no-store");
    }
}

async fn post_form(
    app: &TestApp,
    path: &str,
    basic: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> Answer {
    let mut request = app.http().post(app.url(path)).form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

impl Ciba {
    fn basic(&self) -> Option<(&str, &str)> {
        self.secret.as_deref().map(|s| (self.client_id.as_str(), s))
    }

    /// The client authentication form members for `private_key_jwt`.
    fn assertion(&self, app: &TestApp, claims: impl FnOnce(&mut Value)) -> Vec<(String, String)> {
        let mut c = json!({
            "iss": self.client_id, "sub": self.client_id, "aud": app.base,
            "iat": now(), "exp": now() + 60, "jti": jti(),
        });
        claims(&mut c);
        vec![
            (
                "client_assertion_type".into(),
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
            ),
            (
                "client_assertion".into(),
                self.key.as_ref().unwrap().sign(&c),
            ),
        ]
    }

    async fn call(&self, app: &TestApp, path: &str, form: &[(&str, &str)]) -> Answer {
        if self.key.is_some() && self.secret.is_none() {
            let mut all: Vec<(String, String)> = self.assertion(app, |_| {});
            all.extend(form.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            let pairs: Vec<(&str, &str)> =
                all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            return post_form(app, path, None, &pairs).await;
        }
        post_form(app, path, self.basic(), form).await
    }

    async fn bc(&self, app: &TestApp, form: &[(&str, &str)]) -> Answer {
        self.call(app, "/oidc/bc-authorize", form).await
    }

    async fn token(&self, app: &TestApp, auth_req_id: &str) -> Answer {
        self.call(
            app,
            "/oidc/token",
            &[("grant_type", CIBA), ("auth_req_id", auth_req_id)],
        )
        .await
    }

    /// A valid request for `login_hint`; returns the auth_req_id.
    async fn ask(&self, app: &TestApp, login_hint: &str) -> String {
        let a = self
            .bc(
                app,
                &[
                    ("scope", "openid"),
                    ("login_hint", login_hint),
                    ("binding_message", "W4SCT"),
                ],
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.body["auth_req_id"].as_str().unwrap().to_string()
    }
}

async fn pending_approval_id(reviewer: &Client) -> String {
    let list = reviewer
        .list_approvals(&countersign_client::ApprovalFilter {
            status: Some("pending".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    list.approvals[0].id.clone()
}

/// Verifies a token against the server's JWKS and returns its claims.
async fn verify(app: &TestApp, token: &str, audience: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet = app
        .anonymous()
        .jwks()
        .await
        .unwrap()
        .to_string()
        .parse::<Value>()
        .map(|v| serde_json::from_value(v).unwrap())
        .unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[app.base.as_str()]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .unwrap()
        .claims
}

#[tokio::test]
async fn discovery_is_consistent() {
    let app = spawn_app().await;
    let d: Value = app
        .http()
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["issuer"], app.base.as_str(), "the issuer matches exactly");
    for endpoint in [
        "token_endpoint",
        "backchannel_authentication_endpoint",
        "jwks_uri",
    ] {
        let url = d[endpoint].as_str().unwrap();
        assert!(url.starts_with(&app.base), "{endpoint}: {url}");
    }
    assert_eq!(
        d["backchannel_token_delivery_modes_supported"],
        json!(["poll", "ping", "push"])
    );
    assert!(
        d["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(CIBA))
    );
    assert_eq!(d["backchannel_user_code_parameter_supported"], true);
    let request_algs = d["backchannel_authentication_request_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    assert!(!request_algs.is_empty());
    assert!(!request_algs.contains(&json!("none")) && !request_algs.contains(&json!("HS256")));
    for m in [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ] {
        assert!(
            d["token_endpoint_auth_methods_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(m))
        );
    }
    assert!(
        d["authorization_details_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("payment_initiation"))
    );
    // The advertised ID token algorithm is the one of the published key.
    let jwks: Value = app
        .http()
        .get(d["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        d["id_token_signing_alg_values_supported"],
        json!([jwks["keys"][0]["alg"]])
    );
}

#[tokio::test]
async fn backchannel_request_errors_match_the_spec() {
    let app = spawn_app().await;
    let (user, _) = app.reviewer("alice@example.com").await;
    let client = basic_client(&app, "bot").await;
    let ok = |extra: &[(&'static str, &'static str)]| {
        let mut f: Vec<(&str, &str)> = vec![("scope", "openid")];
        f.extend_from_slice(extra);
        f
    };
    // Zero or two hints.
    client
        .bc(&app, &ok(&[]))
        .await
        .assert_oauth_error(400, "invalid_request");
    let two = [
        ("scope", "openid"),
        ("login_hint", user.as_str()),
        ("id_token_hint", "x.y.z"),
    ];
    client
        .bc(&app, &two)
        .await
        .assert_oauth_error(400, "invalid_request");
    client
        .bc(&app, &[("scope", "openid"), ("login_hint_token", "x")])
        .await
        .assert_oauth_error(400, "invalid_request");
    // No openid scope.
    client
        .bc(
            &app,
            &[("scope", "payments"), ("login_hint", user.as_str())],
        )
        .await
        .assert_oauth_error(400, "invalid_scope");
    // Unknown user, by id and by email.
    client
        .bc(&app, &ok(&[("login_hint", "nobody@example.com")]))
        .await
        .assert_oauth_error(400, "unknown_user_id");
    client
        .bc(
            &app,
            &[
                ("scope", "openid"),
                ("login_hint", "usr_00000000000000000000000000"),
            ],
        )
        .await
        .assert_oauth_error(400, "unknown_user_id");
    // Bad binding messages: too long, control characters.
    let long = "x".repeat(500);
    client
        .bc(
            &app,
            &[
                ("scope", "openid"),
                ("login_hint", user.as_str()),
                ("binding_message", long.as_str()),
            ],
        )
        .await
        .assert_oauth_error(400, "invalid_binding_message");
    client
        .bc(
            &app,
            &[
                ("scope", "openid"),
                ("login_hint", user.as_str()),
                ("binding_message", "a\u{1}b"),
            ],
        )
        .await
        .assert_oauth_error(400, "invalid_binding_message");
    // requested_expiry: digits are fine, anything else is not.
    client
        .bc(
            &app,
            &[
                ("scope", "openid"),
                ("login_hint", user.as_str()),
                ("requested_expiry", "ten"),
            ],
        )
        .await
        .assert_oauth_error(400, "invalid_request");
    let a = client
        .bc(
            &app,
            &[
                ("scope", "openid"),
                ("login_hint", "Alice@Example.com"),
                ("requested_expiry", "120"),
            ],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["expires_in"], 120);
    assert_eq!(a.body["interval"], 5);
    assert_eq!(a.headers["cache-control"], "no-store");
    let id = a.body["auth_req_id"].as_str().unwrap();
    assert!(id.len() >= 27, "at least 160 bits");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    // A parameter twice.
    client
        .bc(
            &app,
            &[
                ("scope", "openid"),
                ("scope", "openid"),
                ("login_hint", user.as_str()),
            ],
        )
        .await
        .assert_oauth_error(400, "invalid_request");
    // Authorization details: unknown type, schema mismatch, not JSON.
    for bad in [
        r#"[{"type":"teleport"}]"#,
        r#"[{"type":"payment_initiation","instructedAmount":{"currency":"usd","amount":"5"},"creditorName":"Acme"}]"#,
        "not json",
        "[]",
    ] {
        client
            .bc(
                &app,
                &[
                    ("scope", "openid"),
                    ("login_hint", user.as_str()),
                    ("authorization_details", bad),
                ],
            )
            .await
            .assert_oauth_error(400, "invalid_authorization_details");
    }
    // Bad client credentials: 401 with a challenge; no credentials at all too.
    let wrong = post_form(
        &app,
        "/oidc/bc-authorize",
        Some((&client.client_id, "wrong-secret")),
        &[("scope", "openid"), ("login_hint", user.as_str())],
    )
    .await;
    wrong.assert_oauth_error(401, "invalid_client");
    assert!(wrong.headers.contains_key("www-authenticate"));
    post_form(
        &app,
        "/oidc/bc-authorize",
        None,
        &[("scope", "openid"), ("login_hint", user.as_str())],
    )
    .await
    .assert_oauth_error(401, "invalid_client");
    post_form(
        &app,
        "/oidc/bc-authorize",
        Some(("agt_unknown", "x")),
        &[("scope", "openid")],
    )
    .await
    .assert_oauth_error(401, "invalid_client");
    // client_secret_post with a basic client: the registered method only.
    let secret = client.secret.clone().unwrap();
    post_form(
        &app,
        "/oidc/bc-authorize",
        None,
        &[
            ("client_id", client.client_id.as_str()),
            ("client_secret", secret.as_str()),
            ("scope", "openid"),
            ("login_hint", user.as_str()),
        ],
    )
    .await
    .assert_oauth_error(401, "invalid_client");
    // A client without the CIBA grant.
    let no_grant = register(&app, "no-grant", |c| {
        c.grant_types = Some(vec!["client_credentials".into()])
    })
    .await;
    no_grant
        .bc(&app, &ok(&[("login_hint", "alice@example.com")]))
        .await
        .assert_oauth_error(400, "unauthorized_client");
    // Nothing above created a request except the one good call.
    let all = app.admin.list_approvals(&Default::default()).await.unwrap();
    assert_eq!(all.approvals.len(), 1);
}

#[tokio::test]
async fn client_secret_post_and_user_codes() {
    let app = spawn_app().await;
    let (user, _) = app.reviewer("alice@example.com").await;
    let client = register(&app, "post-bot", |c| {
        c.token_endpoint_auth_method = "client_secret_post".into();
        c.backchannel_user_code_parameter = true;
    })
    .await;
    let secret = client.secret.clone().unwrap();
    let base = |extra: &[(&'static str, &'static str)]| -> Vec<(String, String)> {
        let mut f = vec![
            ("client_id".to_string(), client.client_id.clone()),
            ("client_secret".to_string(), secret.clone()),
            ("scope".to_string(), "openid".to_string()),
            ("login_hint".to_string(), user.clone()),
        ];
        f.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        f
    };
    let send = |f: Vec<(String, String)>| {
        let app = &app;
        async move {
            let pairs: Vec<(&str, &str)> =
                f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            post_form(app, "/oidc/bc-authorize", None, &pairs).await
        }
    };
    send(base(&[]))
        .await
        .assert_oauth_error(400, "missing_user_code");
    send(base(&[("user_code", "1234")]))
        .await
        .assert_oauth_error(400, "invalid_user_code");
    app.admin.set_user_code(&user, "4711").await.unwrap();
    send(base(&[("user_code", "1234")]))
        .await
        .assert_oauth_error(400, "invalid_user_code");
    assert_eq!(send(base(&[("user_code", "4711")])).await.status, 200);
}

#[tokio::test]
async fn poll_mode_pending_slow_down_approve_redeem_once() {
    let app = spawn_with_clock().await;
    let clock = app.clock.clone().unwrap();
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let client = basic_client(&app, "poller").await;
    let other = basic_client(&app, "other").await;
    let details = r#"[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"123.50"},"creditorName":"Merchant A"}]"#;
    let a = client
        .bc(
            &app,
            &[
                ("scope", "openid payments"),
                ("login_hint", &user),
                ("binding_message", "Pay 123.50 EUR"),
                ("authorization_details", details),
                ("acr_values", "urn:countersign:acr:human-approval"),
            ],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let id = a.body["auth_req_id"].as_str().unwrap().to_string();

    client
        .token(&app, &id)
        .await
        .assert_oauth_error(400, "authorization_pending");
    client
        .token(&app, &id)
        .await
        .assert_oauth_error(400, "slow_down");
    // The interval grew to 10 s: 6 s later is still too fast, 11 s later is fine.
    clock.advance(chrono::Duration::seconds(6));
    client
        .token(&app, &id)
        .await
        .assert_oauth_error(400, "slow_down");
    clock.advance(chrono::Duration::seconds(16));
    client
        .token(&app, &id)
        .await
        .assert_oauth_error(400, "authorization_pending");
    // Another client's auth_req_id is not theirs.
    other
        .token(&app, &id)
        .await
        .assert_oauth_error(400, "invalid_grant");
    client
        .token(&app, "not-a-real-auth-req-id")
        .await
        .assert_oauth_error(400, "invalid_grant");
    // Unknown grant types.
    post_form(
        &app,
        "/oidc/token",
        client.basic(),
        &[("grant_type", "password"), ("auth_req_id", &id)],
    )
    .await
    .assert_oauth_error(400, "unsupported_grant_type");

    // The reviewer sees it like any other request, with the binding message and details.
    let approval_id = pending_approval_id(&reviewer).await;
    let view = reviewer.get_approval(&approval_id).await.unwrap();
    assert_eq!(view.kind, "oidc");
    assert_eq!(view.binding_message, "Pay 123.50 EUR");
    assert_eq!(
        view.context["authorization_details"][0]["creditorName"],
        "Merchant A"
    );
    assert_eq!(view.agent_id, client.client_id);
    reviewer
        .approve(&approval_id, Some("ok".into()))
        .await
        .unwrap();

    let t = client.token(&app, &id).await;
    assert_eq!(t.status, 200, "{}", t.body);
    assert_eq!(t.headers["cache-control"], "no-store");
    assert_eq!(t.body["token_type"], "Bearer");
    assert_eq!(t.body["expires_in"], 300);
    // The access token is for the tenant's audience, not the client: the client is no
    // resource server.
    let access = verify(
        &app,
        t.body["access_token"].as_str().unwrap(),
        "urn:countersign:tenant:default",
    )
    .await;
    assert_eq!(access["tid"], "default");
    assert_eq!(access["approval_id"], approval_id.as_str());
    assert_eq!(
        access["authorization_details"][0]["type"],
        "payment_initiation"
    );
    assert_eq!(
        access["authorization_details"][0]["instructedAmount"]["amount"],
        "123.50"
    );
    let id_token = verify(
        &app,
        t.body["id_token"].as_str().unwrap(),
        &client.client_id,
    )
    .await;
    assert_eq!(id_token["sub"], user.as_str());
    assert_eq!(id_token["acr"], "urn:countersign:acr:human-approval");
    assert!(id_token["auth_time"].as_i64().unwrap() <= id_token["iat"].as_i64().unwrap());
    let digest = Sha256::digest(t.body["access_token"].as_str().unwrap().as_bytes());
    assert_eq!(id_token["at_hash"], URL_SAFE_NO_PAD.encode(&digest[..16]));

    // Redeemable once.
    client
        .token(&app, &id)
        .await
        .assert_oauth_error(400, "invalid_grant");
}

#[tokio::test]
async fn the_token_endpoint_binds_the_access_token_to_an_allowed_resource() {
    let app = spawn_app().await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let client = basic_client(&app, "poller").await;
    app.admin
        .put_guard_settings(
            "default",
            &countersign_proto::guard::GuardSettings {
                grant_audiences: vec!["https://payments.example.com".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let id = client.ask(&app, &user).await;
    let approval_id = pending_approval_id(&reviewer).await;
    reviewer.approve(&approval_id, None).await.unwrap();
    let token = |resource: &'static str| {
        let (app, client, id) = (&app, &client, id.clone());
        async move {
            let form = [
                ("grant_type", CIBA),
                ("auth_req_id", id.as_str()),
                ("resource", resource),
            ];
            client.call(app, "/oidc/token", &form).await
        }
    };
    // RFC 8707: a resource the tenant does not allow is refused, and nothing is issued.
    token("https://evil.example.com")
        .await
        .assert_oauth_error(400, "invalid_target");
    let t = token("https://payments.example.com").await;
    assert_eq!(t.status, 200, "{}", t.body);
    let access = verify(
        &app,
        t.body["access_token"].as_str().unwrap(),
        "https://payments.example.com",
    )
    .await;
    assert_eq!(access["tid"], "default");
}

#[tokio::test]
async fn denied_and_expired_requests() {
    let app = spawn_with_clock().await;
    let clock = app.clock.clone().unwrap();
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let client = basic_client(&app, "bot").await;
    let denied = client.ask(&app, &user).await;
    let approval_id = pending_approval_id(&reviewer).await;
    reviewer
        .deny(&approval_id, Some("no".into()))
        .await
        .unwrap();
    client
        .token(&app, &denied)
        .await
        .assert_oauth_error(400, "access_denied");

    let a = client
        .bc(
            &app,
            &[
                ("scope", "openid"),
                ("login_hint", &user),
                ("requested_expiry", "30"),
            ],
        )
        .await;
    let expiring = a.body["auth_req_id"].as_str().unwrap().to_string();
    clock.advance(chrono::Duration::seconds(31));
    client
        .token(&app, &expiring)
        .await
        .assert_oauth_error(400, "expired_token");
}

#[tokio::test]
async fn id_token_hint_names_the_user() {
    let app = spawn_app().await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let client = basic_client(&app, "bot").await;
    let id = client.ask(&app, "alice@example.com").await;
    reviewer
        .approve(&pending_approval_id(&reviewer).await, None)
        .await
        .unwrap();
    let t = client.token(&app, &id).await;
    let id_token = t.body["id_token"].as_str().unwrap();
    let a = client
        .bc(&app, &[("scope", "openid"), ("id_token_hint", id_token)])
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let list = reviewer.list_approvals(&Default::default()).await.unwrap();
    assert_eq!(list.approvals[0].user_id.as_deref(), Some(user.as_str()));
    // A forged hint is refused.
    let forged = format!("{}x", &id_token[..id_token.len() - 1]);
    client
        .bc(
            &app,
            &[("scope", "openid"), ("id_token_hint", forged.as_str())],
        )
        .await
        .assert_oauth_error(400, "invalid_request");
}

#[tokio::test]
async fn private_key_jwt_clients() {
    let app = spawn_app().await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let key = ClientKey::new("k1");
    let mut client = register(&app, "jwt-bot", |c| {
        c.token_endpoint_auth_method = "private_key_jwt".into();
        c.jwks = Some(key.jwks());
    })
    .await;
    assert!(client.secret.is_none());
    client.key = Some(key);
    let id = client.ask(&app, &user).await;
    reviewer
        .approve(&pending_approval_id(&reviewer).await, None)
        .await
        .unwrap();
    assert_eq!(client.token(&app, &id).await.status, 200);

    let form = |assertion: Vec<(String, String)>| {
        let mut f = assertion;
        f.push(("scope".into(), "openid".into()));
        f.push(("login_hint".into(), user.clone()));
        f
    };
    let send = |f: Vec<(String, String)>| {
        let app = &app;
        async move {
            let pairs: Vec<(&str, &str)> =
                f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            post_form(app, "/oidc/bc-authorize", None, &pairs).await
        }
    };
    // Wrong audience, expired, too long, missing jti, another key: all invalid_client.
    for bad in [
        client.assertion(&app, |c| c["aud"] = json!("https://elsewhere.example.com")),
        client.assertion(&app, |c| c["exp"] = json!(now() - 60)),
        client.assertion(&app, |c| c["exp"] = json!(now() + 7200)),
        client.assertion(&app, |c| {
            c.as_object_mut().unwrap().remove("jti");
        }),
        client.assertion(&app, |c| c["sub"] = json!("someone-else")),
    ] {
        send(form(bad))
            .await
            .assert_oauth_error(401, "invalid_client");
    }
    let stranger = ClientKey::new("k1");
    let claims = json!({"iss": client.client_id, "sub": client.client_id, "aud": app.base, "iat": now(), "exp": now() + 60, "jti": jti()});
    let foreign = vec![
        (
            "client_assertion_type".to_string(),
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
        ),
        ("client_assertion".to_string(), stranger.sign(&claims)),
    ];
    send(form(foreign))
        .await
        .assert_oauth_error(401, "invalid_client");
    // A replayed assertion is refused.
    let once = client.assertion(&app, |_| {});
    assert_eq!(send(form(once.clone())).await.status, 200);
    send(form(once))
        .await
        .assert_oauth_error(401, "invalid_client");
}

#[tokio::test]
async fn client_assertions_name_only_the_issuer_as_audience() {
    let app = spawn_app().await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let key = ClientKey::new("k1");
    let mut client = register(&app, "jwt-bot", |c| {
        c.token_endpoint_auth_method = "private_key_jwt".into();
        c.jwks = Some(key.jwks());
    })
    .await;
    client.key = Some(key);
    let id = client.ask(&app, &user).await;
    reviewer
        .approve(&pending_approval_id(&reviewer).await, None)
        .await
        .unwrap();
    let with = |aud: Value, mut form: Vec<(String, String)>| {
        let mut all = client.assertion(&app, |c| c["aud"] = aud);
        all.append(&mut form);
        all
    };
    let send = |path: &'static str, f: Vec<(String, String)>| {
        let app = &app;
        async move {
            let pairs: Vec<(&str, &str)> =
                f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            post_form(app, path, None, &pairs).await
        }
    };
    let token_form = || {
        vec![
            ("grant_type".to_string(), CIBA.to_string()),
            ("auth_req_id".to_string(), id.clone()),
        ]
    };
    let bc_form = || {
        vec![
            ("scope".to_string(), "openid".to_string()),
            ("login_hint".to_string(), user.clone()),
        ]
    };
    // The endpoints' own URLs are not the issuer: refused at either endpoint.
    let token_url = json!(format!("{}/oidc/token", app.base));
    let bc_url = json!(format!("{}/oidc/bc-authorize", app.base));
    send("/oidc/token", with(token_url.clone(), token_form()))
        .await
        .assert_oauth_error(401, "invalid_client");
    send("/oidc/bc-authorize", with(bc_url, bc_form()))
        .await
        .assert_oauth_error(401, "invalid_client");
    send("/oidc/bc-authorize", with(json!([token_url]), bc_form()))
        .await
        .assert_oauth_error(401, "invalid_client");
    // The issuer is.
    let ok = send("/oidc/token", with(json!(app.base), token_form())).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

#[tokio::test]
async fn signed_authentication_requests() {
    let app = spawn_app().await;
    let (user, _) = app.reviewer("alice@example.com").await;
    let key = ClientKey::new("sig");
    let mut client = register(&app, "signer", |c| {
        c.jwks = Some(key.jwks());
        c.backchannel_authentication_request_signing_alg = Some("ES256".into());
    })
    .await;
    client.key = Some(key);
    let claims = |f: &dyn Fn(&mut Value)| {
        let mut c = json!({
            "iss": client.client_id, "aud": app.base, "iat": now(), "nbf": now(), "exp": now() + 300,
            "jti": jti(), "scope": "openid", "login_hint": user, "binding_message": "A1B2",
            "requested_expiry": "120",
        });
        f(&mut c);
        c
    };
    let send = |request: String| {
        let app = &app;
        let basic = (client.client_id.clone(), client.secret.clone().unwrap());
        async move {
            post_form(
                app,
                "/oidc/bc-authorize",
                Some((&basic.0, &basic.1)),
                &[("request", request.as_str())],
            )
            .await
        }
    };
    let signer = client.key.as_ref().unwrap();
    // requested_expiry as a string inside the request object.
    let a = send(signer.sign(&claims(&|_| {}))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["expires_in"], 120);
    // Unsigned requests are refused when the client registered an algorithm.
    client
        .bc(&app, &[("scope", "openid"), ("login_hint", &user)])
        .await
        .assert_oauth_error(400, "invalid_request");
    // alg none, HS256 with the client secret, a key not registered.
    send(unsigned(&claims(&|_| {})))
        .await
        .assert_oauth_error(400, "invalid_request");
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(&|_| {}),
        &EncodingKey::from_secret(client.secret.as_ref().unwrap().as_bytes()),
    )
    .unwrap();
    send(hs).await.assert_oauth_error(400, "invalid_request");
    // RS256 is ruled out by FAPI-CIBA whatever the signature.
    let rs256 = format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"sig"}"#),
        URL_SAFE_NO_PAD.encode(claims(&|_| {}).to_string())
    );
    send(rs256).await.assert_oauth_error(400, "invalid_request");
    send(ClientKey::new("sig").sign(&claims(&|_| {})))
        .await
        .assert_oauth_error(400, "invalid_request");
    // Missing claims, a lifetime over 60 minutes, another audience, a replay.
    for name in ["exp", "iat", "nbf", "jti", "aud", "iss"] {
        send(signer.sign(&claims(&|c| {
            c.as_object_mut().unwrap().remove(name);
        })))
        .await
        .assert_oauth_error(400, "invalid_request");
    }
    send(signer.sign(&claims(&|c| c["exp"] = json!(now() + 3700))))
        .await
        .assert_oauth_error(400, "invalid_request");
    send(signer.sign(&claims(&|c| c["aud"] = json!("https://other.example.com"))))
        .await
        .assert_oauth_error(400, "invalid_request");
    let once = signer.sign(&claims(&|_| {}));
    assert_eq!(send(once.clone()).await.status, 200);
    send(once).await.assert_oauth_error(400, "invalid_request");
    // Parameters outside the signed request are refused.
    let inside = signer.sign(&claims(&|_| {}));
    post_form(
        &app,
        "/oidc/bc-authorize",
        client.basic(),
        &[("request", inside.as_str()), ("binding_message", "outside")],
    )
    .await
    .assert_oauth_error(400, "invalid_request");
}

async fn ping_client(app: &TestApp, endpoint: &str, mode: &str) -> Ciba {
    let endpoint = endpoint.to_string();
    let mode = mode.to_string();
    register(app, &format!("{mode}-bot"), move |c| {
        c.backchannel_token_delivery_mode = mode;
        c.backchannel_client_notification_endpoint = Some(endpoint);
    })
    .await
}

const NOTIFICATION_TOKEN: &str = "8d67dc78-7faa-4d41-aabd-67707b374255";

#[tokio::test]
async fn ping_is_sent_once_with_the_bearer_token_and_then_the_client_redeems() {
    let app = spawn_with(loopback_callbacks).await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let (endpoint, received) = notification_endpoint(vec![204]).await;
    let client = ping_client(&app, &endpoint, "ping").await;
    client
        .bc(&app, &[("scope", "openid"), ("login_hint", &user)])
        .await
        .assert_oauth_error(400, "invalid_request");
    let a = client
        .bc(
            &app,
            &[
                ("scope", "openid"),
                ("login_hint", &user),
                ("client_notification_token", NOTIFICATION_TOKEN),
            ],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let id = a.body["auth_req_id"].as_str().unwrap().to_string();
    client
        .token(&app, &id)
        .await
        .assert_oauth_error(400, "authorization_pending");
    assert!(received.all().is_empty());

    reviewer
        .approve(&pending_approval_id(&reviewer).await, None)
        .await
        .unwrap();
    let calls = received.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].0["authorization"],
        format!("Bearer {NOTIFICATION_TOKEN}")
    );
    assert_eq!(calls[0].1, json!({"auth_req_id": id}));
    let t = client.token(&app, &id).await;
    assert_eq!(t.status, 200, "{}", t.body);
    // Exactly once: nothing more arrives.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(received.all().len(), 1);
    assert_eq!(
        app.query_i64(
            "SELECT COUNT(*) FROM outbox WHERE state = 'delivered' AND channel LIKE 'ciba_%'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn callbacks_follow_no_redirects_and_retry_only_server_errors() {
    let app = spawn_with(|s| {
        s.outbound.allow_private_networks = true;
        s.outbound.allow_http = true;
        s.outbound.poll_interval_ms = 50;
    })
    .await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    // A redirect is not followed and not retried.
    let (target, target_received) = notification_endpoint(vec![204]).await;
    let redirector = {
        let target = target.clone();
        let app = axum::Router::new().route(
            "/cb",
            axum::routing::post(move || {
                let target = target.clone();
                async move { axum::response::Redirect::temporary(&target) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/cb")
    };
    let redirected = ping_client(&app, &redirector, "ping").await;
    redirected
        .bc(
            &app,
            &[
                ("scope", "openid"),
                ("login_hint", &user),
                ("client_notification_token", NOTIFICATION_TOKEN),
            ],
        )
        .await;
    reviewer
        .approve(&pending_approval_id(&reviewer).await, None)
        .await
        .unwrap();
    // 503 twice, then 200: retried with backoff until delivered.
    let (flaky, flaky_received) = notification_endpoint(vec![503, 503, 200]).await;
    let retried = register(&app, "flaky", |c| {
        c.backchannel_token_delivery_mode = "ping".into();
        c.backchannel_client_notification_endpoint = Some(flaky);
    })
    .await;
    retried
        .bc(
            &app,
            &[
                ("scope", "openid"),
                ("login_hint", &user),
                ("client_notification_token", NOTIFICATION_TOKEN),
            ],
        )
        .await;
    reviewer
        .approve(&pending_approval_id(&reviewer).await, None)
        .await
        .unwrap();
    // 400: failed at once.
    let (refusing, refusing_received) = notification_endpoint(vec![400]).await;
    let refused = register(&app, "refusing", |c| {
        c.backchannel_token_delivery_mode = "ping".into();
        c.backchannel_client_notification_endpoint = Some(refusing);
    })
    .await;
    refused
        .bc(
            &app,
            &[
                ("scope", "openid"),
                ("login_hint", &user),
                ("client_notification_token", NOTIFICATION_TOKEN),
            ],
        )
        .await;
    reviewer
        .approve(&pending_approval_id(&reviewer).await, None)
        .await
        .unwrap();

    let flaky_calls = flaky_received.wait_for(3, Duration::from_secs(15)).await;
    assert_eq!(flaky_calls.len(), 3, "two 503s, then delivered");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        target_received.all().is_empty(),
        "the redirect was followed"
    );
    assert_eq!(refusing_received.all().len(), 1, "a 4xx is not retried");
    assert_eq!(
        app.query_i64(
            "SELECT COUNT(*) FROM outbox WHERE state = 'failed' AND channel LIKE 'ciba_%'"
        )
        .await,
        2
    );
    assert_eq!(
        app.query_i64(
            "SELECT COUNT(*) FROM outbox WHERE state = 'delivered' AND channel LIKE 'ciba_%'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn loopback_endpoints_are_refused_unless_allowed() {
    // Registered while the operator allowed loopback callbacks...
    let app = spawn_with(loopback_callbacks).await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let (endpoint, received) = notification_endpoint(vec![204]).await;
    let client = ping_client(&app, &endpoint, "ping").await;
    // ...and refused at delivery once they are not.
    let app = app.restart().await;
    let (agent_id, _) = app.agent("loopback-bot").await;
    let err = app
        .admin
        .create_oidc_client(&CreateOidcClient {
            agent_id,
            token_endpoint_auth_method: "client_secret_basic".into(),
            jwks: None,
            backchannel_token_delivery_mode: "ping".into(),
            backchannel_client_notification_endpoint: Some(endpoint.clone()),
            backchannel_authentication_request_signing_alg: None,
            backchannel_user_code_parameter: false,
            grant_types: None,
        })
        .await;
    assert_eq!(code(err), "endpoint_not_allowed");
    let reviewer = app.client(reviewer.key().unwrap());
    client
        .bc(
            &app,
            &[
                ("scope", "openid"),
                ("login_hint", &user),
                ("client_notification_token", NOTIFICATION_TOKEN),
            ],
        )
        .await;
    reviewer
        .approve(&pending_approval_id(&reviewer).await, None)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while app
        .query_i64("SELECT COUNT(*) FROM outbox WHERE state = 'failed' AND channel LIKE 'ciba_%'")
        .await
        == 0
    {
        assert!(Instant::now() < deadline, "the callback was not refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(received.all().is_empty());
}

#[tokio::test]
async fn a_disabled_client_is_neither_pushed_nor_pinged_nor_answered() {
    let app = spawn_with(|s| {
        loopback_callbacks(s);
        s.outbound.poll_interval_ms = 50;
    })
    .await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let (endpoint, received) = notification_endpoint(vec![200]).await;
    let pushed = ping_client(&app, &endpoint, "push").await;
    let pinged = ping_client(&app, &endpoint, "ping").await;
    let mut asked = Vec::new();
    for client in [&pushed, &pinged] {
        let a = client
            .bc(
                &app,
                &[
                    ("scope", "openid"),
                    ("login_hint", &user),
                    ("client_notification_token", NOTIFICATION_TOKEN),
                ],
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        asked.push(a.body["auth_req_id"].as_str().unwrap().to_string());
    }
    let listed = reviewer
        .list_approvals(&countersign_client::ApprovalFilter {
            status: Some("pending".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.approvals.len(), 2);
    for request in &listed.approvals {
        app.admin.disable_agent(&request.agent_id).await.unwrap();
        reviewer.approve(&request.id, None).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while app
        .query_i64("SELECT COUNT(*) FROM outbox WHERE state = 'failed' AND channel LIKE 'ciba_%'")
        .await
        < 2
    {
        assert!(Instant::now() < deadline, "the callbacks were not given up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(received.all().is_empty(), "{:?}", received.all());
    assert_eq!(
        app.query_i64("SELECT COUNT(*) FROM approval_requests WHERE token_jti IS NOT NULL")
            .await,
        0,
        "no token was issued"
    );
    // Polling with a disabled client's credentials fails client authentication.
    pinged
        .token(&app, &asked[1])
        .await
        .assert_oauth_error(401, "invalid_client");
}

#[tokio::test]
async fn push_delivers_a_valid_token_response_and_errors() {
    let app = spawn_with(loopback_callbacks).await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let (endpoint, received) = notification_endpoint(vec![200]).await;
    let client = ping_client(&app, &endpoint, "push").await;
    let a = client
        .bc(
            &app,
            &[
                ("scope", "openid"),
                ("login_hint", &user),
                ("client_notification_token", NOTIFICATION_TOKEN),
            ],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.get("interval").is_none(), "push clients do not poll");
    let id = a.body["auth_req_id"].as_str().unwrap().to_string();
    reviewer
        .approve(&pending_approval_id(&reviewer).await, None)
        .await
        .unwrap();
    let calls = received.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(calls.len(), 1);
    let (headers, body) = &calls[0];
    assert_eq!(
        headers["authorization"],
        format!("Bearer {NOTIFICATION_TOKEN}")
    );
    assert_eq!(body["auth_req_id"], id.as_str());
    assert_eq!(body["token_type"], "Bearer");
    let access_token = body["access_token"].as_str().unwrap();
    verify(&app, access_token, "urn:countersign:tenant:default").await;
    let id_token = verify(&app, body["id_token"].as_str().unwrap(), &client.client_id).await;
    assert_eq!(
        id_token["urn:openid:params:jwt:claim:auth_req_id"],
        id.as_str()
    );
    let digest = Sha256::digest(access_token.as_bytes());
    assert_eq!(id_token["at_hash"], URL_SAFE_NO_PAD.encode(&digest[..16]));
    // Push clients do not redeem at the token endpoint.
    client
        .token(&app, &id)
        .await
        .assert_oauth_error(400, "unauthorized_client");

    // A denial pushes the spec's error payload.
    let denied = client
        .bc(
            &app,
            &[
                ("scope", "openid"),
                ("login_hint", &user),
                ("client_notification_token", NOTIFICATION_TOKEN),
            ],
        )
        .await;
    let denied_id = denied.body["auth_req_id"].as_str().unwrap().to_string();
    reviewer
        .deny(&pending_approval_id(&reviewer).await, None)
        .await
        .unwrap();
    let calls = received.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(
        calls[1].1,
        json!({"auth_req_id": denied_id, "error": "access_denied", "error_description": "the user denied the request"})
    );
}

#[tokio::test]
async fn a_restart_loses_no_callback() {
    let app = spawn_with(loopback_callbacks).await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    // The endpoint is down at decision time (nothing listens on the port yet).
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}/cb");
    let client = ping_client(&app, &endpoint, "ping").await;
    let a = client
        .bc(
            &app,
            &[
                ("scope", "openid"),
                ("login_hint", &user),
                ("client_notification_token", NOTIFICATION_TOKEN),
            ],
        )
        .await;
    let id = a.body["auth_req_id"].as_str().unwrap().to_string();
    reviewer
        .approve(&pending_approval_id(&reviewer).await, None)
        .await
        .unwrap();
    let app = {
        let TestApp {
            server,
            dir,
            clock,
            database,
            ..
        } = app;
        server.stop().await.unwrap();
        let mut s = settings(&dir);
        s.database.url = database.keep();
        s.outbound.allow_private_networks = true;
        s.outbound.allow_http = true;
        start(dir, s, clock).await
    };
    // Now the endpoint comes up; the restarted server delivers the ping.
    let received = Received::default();
    let r = received.clone();
    let router = axum::Router::new().route(
        "/cb",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let r = r.clone();
            async move {
                r.0.lock()
                    .unwrap()
                    .push((headers, serde_json::from_slice(&body).unwrap()));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let calls = received.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(calls.len(), 1, "the ping survived the restart");
    assert_eq!(calls[0].1, json!({"auth_req_id": id}));
    let _ = app;
}

#[tokio::test]
async fn expiry_pings_the_client() {
    let app = spawn_with_clock_and(loopback_callbacks).await;
    let clock = app.clock.clone().unwrap();
    let (user, _) = app.reviewer("alice@example.com").await;
    let (endpoint, received) = notification_endpoint(vec![204]).await;
    let client = ping_client(&app, &endpoint, "ping").await;
    let a = client
        .bc(
            &app,
            &[
                ("scope", "openid"),
                ("login_hint", &user),
                ("client_notification_token", NOTIFICATION_TOKEN),
                ("requested_expiry", "20"),
            ],
        )
        .await;
    let id = a.body["auth_req_id"].as_str().unwrap().to_string();
    clock.advance(chrono::Duration::seconds(21));
    let calls = received.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(calls.len(), 1);
    client
        .token(&app, &id)
        .await
        .assert_oauth_error(400, "expired_token");
}

#[tokio::test]
async fn admin_manages_clients() {
    let app = spawn_app().await;
    let (agent_id, agent) = app.agent("bot").await;
    // Agents may not register themselves; bad registrations are clear 4xx.
    let create = |f: &dyn Fn(&mut CreateOidcClient)| {
        let mut c = CreateOidcClient {
            agent_id: agent_id.clone(),
            token_endpoint_auth_method: "client_secret_basic".into(),
            jwks: None,
            backchannel_token_delivery_mode: "poll".into(),
            backchannel_client_notification_endpoint: None,
            backchannel_authentication_request_signing_alg: None,
            backchannel_user_code_parameter: false,
            grant_types: None,
        };
        f(&mut c);
        c
    };
    assert_eq!(
        code(agent.create_oidc_client(&create(&|_| {})).await),
        "forbidden"
    );
    assert_eq!(
        code(
            app.admin
                .create_oidc_client(&create(
                    &|c| c.token_endpoint_auth_method = "tls_client_auth".into()
                ))
                .await
        ),
        "invalid_request"
    );
    assert_eq!(
        code(
            app.admin
                .create_oidc_client(&create(
                    &|c| c.backchannel_token_delivery_mode = "ping".into()
                ))
                .await
        ),
        "invalid_request"
    );
    assert_eq!(
        code(
            app.admin
                .create_oidc_client(&create(
                    &|c| c.token_endpoint_auth_method = "private_key_jwt".into()
                ))
                .await
        ),
        "invalid_request"
    );
    assert_eq!(
        code(
            app.admin
                .create_oidc_client(&create(
                    &|c| c.agent_id = "agt_00000000000000000000000000".into()
                ))
                .await
        ),
        "not_found"
    );
    let created = app
        .admin
        .create_oidc_client(&create(&|_| {}))
        .await
        .unwrap();
    assert!(created.client_secret.as_ref().unwrap().len() >= 43);
    assert_eq!(
        code(app.admin.create_oidc_client(&create(&|_| {})).await),
        "already_exists"
    );
    let listed = app.admin.list_oidc_clients().await.unwrap();
    assert_eq!(listed.oidc_clients.len(), 1);
    let listed_json = serde_json::to_string(&listed).unwrap();
    assert!(!listed_json.contains(created.client_secret.as_ref().unwrap()));
    assert_eq!(
        app.admin
            .get_oidc_client(&agent_id)
            .await
            .unwrap()
            .grant_types,
        vec![CIBA]
    );
    app.admin.delete_oidc_client(&agent_id).await.unwrap();
    assert_eq!(
        code(app.admin.get_oidc_client(&agent_id).await),
        "not_found"
    );
    // A deleted client cannot authenticate.
    post_form(
        &app,
        "/oidc/bc-authorize",
        Some((&agent_id, created.client_secret.as_ref().unwrap())),
        &[("scope", "openid")],
    )
    .await
    .assert_oauth_error(401, "invalid_client");
}

/// The reference OpenID client library (openid-client v6, under e2e/oidc) against the server:
/// discovery, backchannel authentication, approval through the reviewer API, polling, and ID
/// token verification against the JWKS, for client_secret_basic and private_key_jwt.
#[tokio::test(flavor = "multi_thread")]
async fn openid_client_library_completes_the_flow() {
    let e2e = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e/oidc");
    if !e2e.join("node_modules/openid-client").exists() {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&e2e)
            .status()
            .expect("npm is needed for the openid-client test");
        assert!(status.success(), "npm ci failed in e2e/oidc");
    }
    let app = spawn_with(|s| s.requests.poll_interval_secs = 1).await;
    let (user, _) = app.reviewer("alice@example.com").await;
    let reviewer_key = app
        .admin
        .create_api_key(&countersign_proto::admin::CreateApiKey {
            role: countersign_proto::admin::KeyRole::Reviewer,
            user_id: Some(user.clone()),
            agent_id: None,
            name: None,
            audiences: Vec::new(),
        })
        .await
        .unwrap()
        .key;
    let basic = basic_client(&app, "library-basic").await;
    let key = ClientKey::new("e2e-key");
    let jwt = register(&app, "library-jwt", |c| {
        c.token_endpoint_auth_method = "private_key_jwt".into();
        c.jwks = Some(key.jwks());
    })
    .await;
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(&key.pkcs8)
    );
    let config = json!({
        "issuer": app.base,
        "tenant": "default",
        "userId": user,
        "reviewerKey": reviewer_key,
        "clients": [
            {"method": "client_secret_basic", "clientId": basic.client_id, "secret": basic.secret},
            {"method": "private_key_jwt", "clientId": jwt.client_id, "privateKeyPem": pem, "kid": "e2e-key"},
        ],
    });
    let output = tokio::process::Command::new("node")
        .arg("ciba.mjs")
        .current_dir(&e2e)
        .env("COUNTERSIGN_E2E", config.to_string())
        .output()
        .await
        .expect("node is needed for the openid-client test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "openid-client flow failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("ok client_secret_basic") && stdout.contains("ok private_key_jwt"),
        "{stdout}"
    );
}

#[tokio::test]
async fn the_user_is_emailed_and_decides_from_the_link() {
    let smtp = SmtpServer::start().await;
    let app = spawn_with(|s| with_email(s, &smtp.url())).await;
    let (user, _) = app.reviewer("alice@example.com").await;
    let client = basic_client(&app, "payer").await;
    let details = r#"[{"type":"payment_initiation","instructedAmount":{"currency":"EUR","amount":"123.50"},"creditorName":"Merchant A"}]"#;
    let a = client
        .bc(
            &app,
            &[
                ("scope", "openid payments"),
                ("login_hint", &user),
                ("binding_message", "Pay 123.50 EUR"),
                ("authorization_details", details),
            ],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let id = a.body["auth_req_id"].as_str().unwrap().to_string();
    let mail = smtp.wait_for(1).await.remove(0);
    assert_eq!(mail.to(), "alice@example.com");
    let text = as_read(&mail.text());
    assert!(text.contains("\"creditorName\": \"Merchant A\""), "{text}");
    assert!(text.contains("Pay 123.50 EUR"));
    let token = url::Url::parse(&mail.link("Approve"))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.to_string())
        .unwrap();
    let res = app
        .http()
        .post(app.url("/ui/review"))
        .form(&[("token", token.as_str()), ("verdict", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let t = client.token(&app, &id).await;
    assert_eq!(t.status, 200, "{}", t.body);
    assert!(t.body["id_token"].is_string());
}

#[tokio::test]
async fn guessing_user_codes_is_cut_off() {
    let app = spawn_with(|s| s.limits.failures_per_window = 3).await;
    let (user, _) = app.reviewer("alice@example.com").await;
    app.admin.set_user_code(&user, "4711").await.unwrap();
    let client = register(&app, "guesser", |c| {
        c.backchannel_user_code_parameter = true
    })
    .await;
    let attempt = |code: &'static str| {
        let (app, client, user) = (&app, &client, user.clone());
        async move {
            post_form(
                app,
                "/oidc/bc-authorize",
                client.basic(),
                &[
                    ("scope", "openid"),
                    ("login_hint", &user),
                    ("user_code", code),
                ],
            )
            .await
        }
    };
    for guess in ["0000", "1111", "2222"] {
        attempt(guess)
            .await
            .assert_oauth_error(400, "invalid_user_code");
    }
    // Out of guesses: even the right code waits for the window to pass.
    let refused = attempt("4711").await;
    refused.assert_oauth_error(429, "rate_limited");
    assert!(refused.headers.contains_key("retry-after"));
}
