//! Several replicas on one PostgreSQL database. These always run on PostgreSQL.
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use countersign_client::Client;
use countersign_core::ManualClock;
use countersign_proto::ciba::{ApproveRequest, TokenResponse};
use futures::future::join_all;

use crate::support::*;

struct Cluster {
    replicas: Vec<TestApp>,
    database: DatabaseGuard,
}

impl Cluster {
    fn url(&self) -> &str {
        self.database.url().unwrap()
    }

    async fn count(&self, sql: &str) -> i64 {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(self.url()).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
    }
}

async fn cluster(n: usize, clock: Option<ManualClock>) -> Cluster {
    cluster_with(n, clock, |_| {}).await
}

async fn cluster_with(
    n: usize,
    clock: Option<ManualClock>,
    configure: fn(&mut countersign_server::Settings),
) -> Cluster {
    let url = fresh_database().await;
    let starts = (0..n).map(|_| {
        let url = url.clone();
        let clock = clock.clone();
        async move {
            let dir = Arc::new(tempfile::tempdir().unwrap());
            let mut s = settings(&dir);
            s.database.url = Some(url);
            configure(&mut s);
            let mut app = start(dir, s, clock).await;
            // The cluster owns the database, not each replica.
            std::mem::replace(&mut app.database, DatabaseGuard::new(None)).keep();
            app
        }
    });
    // All at once: migrations and bootstrap must tolerate each other.
    let replicas = join_all(starts).await;
    Cluster {
        replicas,
        database: DatabaseGuard::new(Some(url)),
    }
}

fn on(app: &TestApp, client: &Client) -> Client {
    app.client(client.key().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_starting_at_once_migrate_and_bootstrap_once() {
    let c = cluster(3, None).await;
    assert_eq!(c.count("SELECT COUNT(*) FROM tenants").await, 1);
    let (_, versions) = countersign_store::migration_versions();
    assert_eq!(
        c.count("SELECT COUNT(*) FROM schema_migrations").await,
        versions.len() as i64
    );
    assert_eq!(
        c.count("SELECT COUNT(*) FROM signing_keys WHERE active")
            .await,
        1
    );
    for r in &c.replicas {
        r.admin.list_users().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_decision_on_one_replica_wakes_a_long_poll_held_on_another() {
    let c = cluster(3, None).await;
    let (a, b, cc) = (&c.replicas[0], &c.replicas[1], &c.replicas[2]);
    let (user, reviewer) = a.reviewer("alice@example.com").await;
    let (_, agent) = a.agent("bot").await;
    let asked = agent.ciba_authorize(&payment(&user)).await.unwrap();

    let poller = on(cc, &agent);
    let id = asked.auth_req_id.clone();
    let waiting = tokio::spawn(async move {
        let answer = poller.ciba_token(&id, Some(20)).await.unwrap();
        (answer, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let decided_at = Instant::now();
    on(b, &reviewer)
        .ciba_approve(&ApproveRequest {
            auth_req_id: Some(asked.auth_req_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let (answer, answered_at) = waiting.await.unwrap();
    assert!(matches!(
        answer,
        TokenResponse::Approved {
            access_token: Some(_),
            ..
        }
    ));
    let delay = answered_at.duration_since(decided_at);
    assert!(
        delay < Duration::from_secs(2),
        "woken by the other replica's NOTIFY, not the timeout: {delay:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_decisions_across_replicas_have_one_winner() {
    let c = cluster(3, None).await;
    let (user, reviewer) = c.replicas[0].reviewer("alice@example.com").await;
    let (_, agent) = c.replicas[0].agent("bot").await;
    let asked = agent.ciba_authorize(&payment(&user)).await.unwrap();
    let deciders: Vec<Client> = c.replicas.iter().map(|r| on(r, &reviewer)).collect();
    let tasks = (0..100).map(|i| {
        let client = deciders[i % deciders.len()].clone();
        let id = asked.auth_req_id.clone();
        async move {
            client
                .ciba_approve(&ApproveRequest {
                    auth_req_id: Some(id),
                    ..Default::default()
                })
                .await
        }
    });
    let results = join_all(tasks).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.status() == Some(409))
    );
    assert_eq!(
        c.count("SELECT COUNT(*) FROM audit_events WHERE action = 'approval.approved'")
            .await,
        1
    );
    assert!(c.replicas[2].admin.audit_verify().await.unwrap().ok);
}

async fn create_many(
    c: &Cluster,
    agent: &Client,
    user: &str,
    n: usize,
    expiry: i64,
) -> Vec<String> {
    let clients: Vec<Client> = c.replicas.iter().map(|r| on(r, agent)).collect();
    let mut ids = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(32) {
        let batch = chunk.iter().map(|i| {
            let client = clients[i % clients.len()].clone();
            let mut input = payment(user);
            input.requested_expiry = Some(expiry);
            async move { client.ciba_authorize(&input).await.unwrap().auth_req_id }
        });
        ids.extend(join_all(batch).await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_expire_a_thousand_requests_exactly_once() {
    let clock = ManualClock::new(Utc::now());
    let c = cluster(3, Some(clock.clone())).await;
    let (user, _) = c.replicas[0].reviewer("alice@example.com").await;
    let (_, agent) = c.replicas[0].agent("bot").await;
    create_many(&c, &agent, &user, 1000, 30).await;
    assert_eq!(
        c.count("SELECT COUNT(*) FROM approval_requests WHERE status = 'pending'")
            .await,
        1000
    );

    clock.advance(chrono::Duration::seconds(31));
    // Every replica sweeps at once (their background sweepers run too).
    let sweeps = c.replicas.iter().flat_map(|r| {
        let state = r.server.state.clone();
        (0..3).map(move |_| {
            let state = state.clone();
            async move {
                countersign_server::workers::sweep_expired(&state)
                    .await
                    .unwrap()
            }
        })
    });
    join_all(sweeps).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while c
        .count("SELECT COUNT(*) FROM approval_requests WHERE status = 'pending'")
        .await
        > 0
    {
        assert!(Instant::now() < deadline, "expiry did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        c.count("SELECT COUNT(*) FROM audit_events WHERE action = 'approval.expired'")
            .await,
        1000
    );
    assert_eq!(
        c.count(
            "SELECT COUNT(DISTINCT subject) FROM audit_events WHERE action = 'approval.expired'"
        )
        .await,
        1000
    );
    assert!(c.replicas[1].admin.audit_verify().await.unwrap().ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn work_claimed_by_a_replica_that_dies_is_taken_over() {
    use sqlx::Connection;
    let clock = ManualClock::new(Utc::now());
    // Only the explicit sweeps below run, so the test controls who claims what.
    let c = cluster_with(2, Some(clock.clone()), |s| {
        s.requests.sweep_interval_ms = 3_600_000
    })
    .await;
    let (user, _) = c.replicas[0].reviewer("alice@example.com").await;
    let (_, agent) = c.replicas[0].agent("bot").await;
    create_many(&c, &agent, &user, 200, 30).await;
    clock.advance(chrono::Duration::seconds(31));

    // A replica claims half of the due work the way the sweeper does, then dies mid-job.
    let mut dying = sqlx::PgConnection::connect(c.url()).await.unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut dying).await.unwrap();
    let claimed: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM approval_requests WHERE status = 'pending' AND expires_at <= $1 \
         ORDER BY expires_at LIMIT 100 FOR UPDATE SKIP LOCKED",
    )
    .bind(clock_ms(&clock))
    .fetch_all(&mut dying)
    .await
    .unwrap();
    assert_eq!(claimed.len(), 100);
    sqlx::query("UPDATE approval_requests SET status = 'expired' WHERE id = $1")
        .bind(&claimed[0].0)
        .execute(&mut dying)
        .await
        .unwrap();

    // The live replicas (their background sweepers, and these explicit sweeps) do the rest
    // without waiting on the claimed rows, and never touch them.
    for r in &c.replicas {
        countersign_server::workers::sweep_expired(&r.server.state)
            .await
            .unwrap();
    }
    let pending = "SELECT COUNT(*) FROM approval_requests WHERE status = 'pending'";
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.count(pending).await > 100 {
        assert!(Instant::now() < deadline, "the unclaimed work was not done");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..5 {
        assert_eq!(
            c.count(pending).await,
            100,
            "claimed rows stay with their claimant"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The dead replica's transaction never commits; its claims return and are finished.
    drop(dying);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for r in &c.replicas {
            countersign_server::workers::sweep_expired(&r.server.state)
                .await
                .unwrap();
        }
        if c.count(pending).await == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned claims were not taken over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while c
        .count("SELECT COUNT(*) FROM approval_requests WHERE status = 'pending'")
        .await
        > 0
    {
        assert!(
            Instant::now() < deadline,
            "the abandoned claims were not taken over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        c.count(
            "SELECT COUNT(DISTINCT subject) FROM audit_events WHERE action = 'approval.expired'"
        )
        .await,
        200
    );
    assert_eq!(
        c.count("SELECT COUNT(*) FROM audit_events WHERE action = 'approval.expired'")
            .await,
        200
    );
    assert!(c.replicas[0].admin.audit_verify().await.unwrap().ok);
}

fn clock_ms(clock: &ManualClock) -> i64 {
    use countersign_core::Clock;
    clock.now().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replica_process_loses_no_accepted_request() {
    let c = cluster(1, None).await;
    let survivor = &c.replicas[0];
    let (user, _) = survivor.reviewer("alice@example.com").await;
    let (_, agent) = survivor.agent("bot").await;

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .env("COUNTERSIGN_DATABASE_URL", c.url())
        .env("COUNTERSIGN_LOG__LEVEL", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let doomed = Client::new(
        &format!("http://127.0.0.1:{port}"),
        agent.key().map(str::to_string),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while doomed.ready().await.is_err() {
        assert!(Instant::now() < deadline, "the child replica did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Load the doomed replica from several tasks and kill it mid-stream.
    let accepted = kill_under_load(&mut child, &doomed, &user).await;
    let reader = on(survivor, &agent);
    for id in &accepted {
        assert_eq!(
            reader.ciba_token(id, None).await.unwrap(),
            TokenResponse::Pending,
            "an accepted request was lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_verify_across_replicas_and_key_rotation_spreads() {
    let c = cluster(2, None).await;
    let (a, b) = (&c.replicas[0], &c.replicas[1]);
    let jwks_a = a.admin.jwks().await.unwrap();
    assert_eq!(
        jwks_a,
        b.admin.jwks().await.unwrap(),
        "one key set for all replicas"
    );

    let rotated = a
        .admin
        .rotate_signing_key(Some("EdDSA".into()))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let jwks_b = b.admin.jwks().await.unwrap();
        if jwks_b["keys"][0]["kid"] == rotated.kid.as_str() {
            assert_eq!(
                jwks_b["keys"].as_array().unwrap().len(),
                2,
                "the old key stays published"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica B never learned of the rotation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A token signed by B now uses the new key.
    let (user, reviewer) = b.reviewer("alice@example.com").await;
    let (_, agent) = b.agent("bot").await;
    let asked = agent.ciba_authorize(&payment(&user)).await.unwrap();
    on(a, &reviewer)
        .ciba_approve(&ApproveRequest {
            auth_req_id: Some(asked.auth_req_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let TokenResponse::Approved {
        access_token: Some(token),
        ..
    } = agent.ciba_token(&asked.auth_req_id, None).await.unwrap()
    else {
        panic!("no token");
    };
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(rotated.kid.as_str()));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    // Only admins of `default` rotate.
    let tenant = a
        .admin
        .create_tenant(&countersign_proto::admin::CreateTenant {
            id: "acme".into(),
            name: None,
        })
        .await
        .unwrap();
    assert_eq!(
        code(
            a.client(&tenant.admin_key.key)
                .rotate_signing_key(None)
                .await
        ),
        "forbidden"
    );
}

/// A CIBA ping is delivered once though every replica's delivery worker races for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ping_is_delivered_once_by_one_of_the_replicas() {
    use std::sync::Mutex;
    let c = cluster_with(3, None, |s| {
        s.outbound.allow_private_networks = true;
        s.outbound.allow_http = true;
        s.outbound.poll_interval_ms = 10;
    })
    .await;
    // The client's notification endpoint counts what it receives.
    let received = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let r = received.clone();
    let endpoint = axum::Router::new().route(
        "/cb",
        axum::routing::post(move |body: axum::body::Bytes| {
            let r = r.clone();
            async move {
                r.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, endpoint).await });

    let first = &c.replicas[0];
    let (user, reviewer) = first.reviewer("alice@example.com").await;
    let (agent_id, _) = first.agent("pinger").await;
    let client = first
        .admin
        .create_oidc_client(&countersign_proto::oidc::CreateOidcClient {
            agent_id: agent_id.clone(),
            token_endpoint_auth_method: "client_secret_basic".into(),
            jwks: None,
            backchannel_token_delivery_mode: "ping".into(),
            backchannel_client_notification_endpoint: Some(format!("http://{addr}/cb")),
            backchannel_authentication_request_signing_alg: None,
            backchannel_user_code_parameter: false,
            grant_types: None,
        })
        .await
        .unwrap();
    let secret = client.client_secret.unwrap();
    let mut ids = Vec::new();
    for (i, replica) in c.replicas.iter().enumerate() {
        let answer: serde_json::Value = replica
            .http()
            .post(replica.url("/oidc/bc-authorize"))
            .basic_auth(&agent_id, Some(&secret))
            .form(&[
                ("scope", "openid"),
                ("login_hint", user.as_str()),
                ("binding_message", &format!("R{i}")),
                (
                    "client_notification_token",
                    "replica-notification-token-0123456789",
                ),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(answer["auth_req_id"].as_str().unwrap().to_string());
    }
    // Decide each request on another replica than the one that created it.
    let pending = reviewer
        .list_approvals(&countersign_client::ApprovalFilter {
            status: Some("pending".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.approvals.len(), 3);
    for (i, approval) in pending.approvals.iter().enumerate() {
        on(&c.replicas[i], &reviewer)
            .approve(&approval.id, None)
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.lock().unwrap().len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give any duplicate time to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut got: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .map(|v| v["auth_req_id"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "each ping exactly once");
    assert_eq!(
        c.count("SELECT COUNT(*) FROM outbox WHERE state = 'delivered' AND channel LIKE 'ciba_%'")
            .await,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_block_policy_saved_on_one_replica_stops_calls_on_another() {
    use countersign_proto::guard::{PolicyAction, PolicyInput, ToolRequest};
    let c = cluster(2, None).await;
    let (a, b) = (&c.replicas[0], &c.replicas[1]);
    let (_, agent) = a.agent("bot").await;
    let agent_on_b = on(b, &agent);
    let call = ToolRequest {
        session_id: "s".into(),
        tool_call: serde_json::json!({"name": "delete_all", "arguments": {}}),
        scope: None,
        reason: None,
        on_behalf_of: None,
        annotations: None,
        mcp: None,
    };
    // Replica b loads and caches the tenant's (empty) policies.
    let d = agent_on_b.guard_tool("default", &call).await.unwrap();
    assert_eq!(d.action, PolicyAction::Allow);
    a.admin
        .create_policy(
            "default",
            &PolicyInput {
                name: "stop".into(),
                tool_pattern: "delete_*".into(),
                action: PolicyAction::Block,
                description: None,
                priority: None,
                is_active: None,
                condition: None,
                approval_config: None,
            },
        )
        .await
        .unwrap();
    // The change hint reaches b and drops what it cached.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let d = agent_on_b.guard_tool("default", &call).await.unwrap();
        if d.action == PolicyAction::Block {
            break;
        }
        assert!(Instant::now() < deadline, "replica b still allows the call");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_revoked_on_one_replica_stops_working_on_another_at_once() {
    use countersign_proto::admin::KeyRole;
    let c = cluster(2, None).await;
    let (a, b) = (&c.replicas[0], &c.replicas[1]);
    let (user, _) = a.reviewer("alice@example.com").await;
    let (_, agent) = a.agent("bot").await;
    let agent_on_b = on(b, &agent);
    // Replica b checks the key and remembers it.
    agent_on_b.ciba_authorize(&payment(&user)).await.unwrap();
    let key_id = a
        .admin
        .list_api_keys()
        .await
        .unwrap()
        .api_keys
        .into_iter()
        .find(|k| k.role == KeyRole::Agent)
        .unwrap()
        .id;
    a.admin.revoke_api_key(&key_id).await.unwrap();
    // The change hint makes b forget it well before its 2 s memory would run out.
    let deadline = Instant::now() + Duration::from_millis(1000);
    loop {
        match agent_on_b.ciba_authorize(&payment(&user)).await {
            Err(e) if e.status() == Some(401) => break,
            Ok(_) => assert!(Instant::now() < deadline, "replica b still accepts the key"),
            Err(e) => panic!("unexpected {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
