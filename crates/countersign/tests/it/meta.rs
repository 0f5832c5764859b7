//! Health, readiness, metrics, OpenAPI and request ids.
use crate::support::*;

#[tokio::test]
async fn health_readiness_and_request_ids() {
    let app = spawn_app().await;
    assert_eq!(app.anonymous().health().await.unwrap().status, "ok");
    assert_eq!(app.anonymous().ready().await.unwrap().status, "ready");
    let res = app.http().get(app.url("/healthz")).send().await.unwrap();
    assert!(res.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn metrics_count_requests_pending_and_decisions() {
    let app = spawn_app().await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("bot").await;
    agent.ciba_authorize(&payment(&user)).await.unwrap();
    let asked = agent.ciba_authorize(&payment(&user)).await.unwrap();
    reviewer
        .ciba_approve(&countersign_proto::ciba::ApproveRequest {
            auth_req_id: Some(asked.auth_req_id),
            ..Default::default()
        })
        .await
        .unwrap();
    let text = app.metrics().await;
    assert!(text.contains("countersign_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/ciba/authorize\""));
    assert!(text.contains("countersign_http_request_duration_seconds"));
    assert!(text.contains("countersign_decisions_total"));
    // Metrics are process-wide and tests share the process; this server has one pending.
    assert!(text.contains("countersign_approval_requests_pending"));
}

#[tokio::test]
async fn openapi_describes_every_endpoint() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app.openapi().await;
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/ciba/authorize",
        "/ciba/token",
        "/ciba/approve",
        "/ciba/deny",
        "/v1/approvals",
        "/v1/approvals/{id}",
        "/v1/approvals/{id}/approve",
        "/v1/approvals/{id}/deny",
        "/v1/admin/users",
        "/v1/admin/users/{id}",
        "/v1/admin/users/{id}/disable",
        "/v1/admin/agents",
        "/v1/admin/agents/{id}",
        "/v1/admin/agents/{id}/disable",
        "/v1/admin/api-keys",
        "/v1/admin/api-keys/{id}/revoke",
        "/v1/admin/tenants",
        "/v1/audit",
        "/v1/audit/verify",
        "/healthz",
        "/readyz",
        "/metrics",
        "/.well-known/jwks.json",
        "/v1/admin/notification-channels",
        "/v1/admin/notification-channels/email",
        "/v1/admin/notification-channels/slack",
        "/v1/admin/notification-channels/teams",
        "/v1/admin/notification-channels/{channel}/test",
        "/v1/me/notification-preferences",
        "/v1/admin/users/{id}/notification-preferences",
        "/v1/approvals/{id}/deliveries",
        "/v1/admin/webhooks",
        "/v1/admin/webhooks/{id}",
        "/v1/admin/webhooks/{id}/rotate-secret",
        "/v1/admin/webhooks/{id}/deliveries",
        "/v1/admin/webhooks/{id}/deliveries/{delivery_id}/redeliver",
        "/v1/admin/webhooks/{id}/test",
        "/integrations/slack/{tenant}/interactivity",
    ] {
        assert!(paths.contains_key(path), "{path} is not described");
    }
    assert!(doc["components"]["schemas"]["AuthorizeRequest"].is_object());
}

#[tokio::test]
async fn graceful_shutdown_answers_in_flight_long_polls() {
    let app = spawn_app().await;
    let (user, _) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("bot").await;
    let asked = agent.ciba_authorize(&payment(&user)).await.unwrap();
    let id = asked.auth_req_id.clone();
    let poller = tokio::spawn(async move { agent.ciba_token(&id, Some(30)).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let start = std::time::Instant::now();
    app.server.stop().await.unwrap();
    // The waiting agent gets a real answer rather than a dropped connection, and shutdown
    // does not wait out the 30 s poll.
    let answer = poller.await.unwrap().unwrap();
    assert_eq!(answer, countersign_proto::ciba::TokenResponse::Pending);
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn metrics_need_the_token_or_their_own_listener() {
    let app = spawn_app().await;
    let scrape = |url: String, token: Option<&'static str>| {
        let mut request = app.http().get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    // With a token: nothing without it, nothing with another one.
    let (status, body) = scrape(app.url("/metrics"), None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"unauthorized\""));
    assert!(!body.contains("countersign_"));
    let (status, _) = scrape(app.url("/metrics"), Some("test-metrics-token-0123456780")).await;
    assert_eq!(status, 401);
    let (status, body) = scrape(app.url("/metrics"), Some(METRICS_TOKEN)).await;
    assert_eq!(status, 200);
    assert!(body.contains("countersign_http_requests_total"));

    // Without a token or a listener, the metrics are not served at all.
    let closed = spawn_with(|s| s.metrics.token = None).await;
    let (status, body) = scrape(closed.url("/metrics"), None).await;
    assert_eq!(status, 404, "{body}");
    assert!(!body.contains("countersign_"));

    // With their own listener, they are served only there (with the token if one is set).
    let separate = spawn_with(|s| {
        s.metrics.token = None;
        s.metrics.listen = Some("127.0.0.1:0".into());
    })
    .await;
    let metrics_url = format!("http://{}/metrics", separate.server.metrics_addr.unwrap());
    let (status, body) = scrape(metrics_url.clone(), None).await;
    assert_eq!(status, 200);
    assert!(body.contains("countersign_"));
    let (status, _) = scrape(separate.url("/metrics"), Some(METRICS_TOKEN)).await;
    assert_eq!(status, 404);
    let guarded = spawn_with(|s| s.metrics.listen = Some("127.0.0.1:0".into())).await;
    let metrics_url = format!("http://{}/metrics", guarded.server.metrics_addr.unwrap());
    assert_eq!(scrape(metrics_url.clone(), None).await.0, 401);
    assert_eq!(scrape(metrics_url, Some(METRICS_TOKEN)).await.0, 200);

    // A guessable token is refused at start.
    let dir = tempfile::tempdir().unwrap();
    let mut short = settings(&dir);
    short.metrics.token = Some("short".into());
    let err = countersign_server::build(short).await.err().unwrap();
    assert!(err.to_string().contains("metrics.token"), "{err}");
}
