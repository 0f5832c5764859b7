//! The store against a real SQLite database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{Duration, Utc};
use countersign_core::approval::{self, Decision, RequestLimits, RequestRef, Verdict};
use countersign_core::audit::{Actor, ActorKind, ChainVerifier};
use countersign_core::directory;
use countersign_core::{Clock, Error, Result, SystemClock};
use countersign_proto::admin::KeyRole;
use countersign_proto::ciba::AuthorizeRequest;
use countersign_proto::{ApprovalStatus, TrustLevel};
use countersign_store::{
    OutboxClaim, OutboxRows, PostgresOptions, RequestFilter, SqliteOptions, Store, StoreConfig,
};

struct Fixture {
    _dir: tempfile::TempDir,
    config: StoreConfig,
    store: Store,
    user: String,
    agent: String,
}

/// `COUNTERSIGN_TEST_BACKEND=postgres` runs these on a fresh database of the server at
/// `COUNTERSIGN_TEST_DATABASE_URL`.
async fn config(dir: &tempfile::TempDir) -> StoreConfig {
    if std::env::var("COUNTERSIGN_TEST_BACKEND").is_ok_and(|b| b == "postgres") {
        use sqlx::Connection;
        let server = std::env::var("COUNTERSIGN_TEST_DATABASE_URL").expect(
            "COUNTERSIGN_TEST_DATABASE_URL is not set: run scripts/test (it starts PostgreSQL)",
        );
        let name = format!("cs_store_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&server).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let mut url = url::Url::parse(&server).unwrap();
        url.set_path(&name);
        StoreConfig::Postgres(PostgresOptions::new(url.as_str()))
    } else {
        StoreConfig::Sqlite(SqliteOptions::new(dir.path().join("t.db")))
    }
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir).await;
    let store = Store::open(config.clone()).await.unwrap();
    let now = SystemClock.now();
    let admin = Actor::system("test");
    let key = directory::mint_key("t", KeyRole::Admin, None, None, None, now).unwrap();
    store
        .create_tenant(
            directory::new_tenant("t", None, now).unwrap(),
            key,
            admin.clone(),
        )
        .await
        .unwrap();
    let user = store
        .create_user(
            directory::new_user("t", "a@example.com", "A", now).unwrap(),
            admin.clone(),
        )
        .await
        .unwrap();
    let agent = store
        .create_agent(
            directory::new_agent("t", "bot", TrustLevel::Standard, now).unwrap(),
            admin,
        )
        .await
        .unwrap();
    Fixture {
        _dir: dir,
        config,
        store,
        user: user.id,
        agent: agent.id,
    }
}

fn input(user: &str, expiry: i64) -> AuthorizeRequest {
    AuthorizeRequest {
        user_id: user.into(),
        scope: "s".into(),
        binding_message: "m".into(),
        requested_expiry: Some(expiry),
        context: None,
    }
}

async fn create(f: &Fixture, expiry: i64, now: chrono::DateTime<Utc>) -> approval::NewRequest {
    let new = approval::new_ciba_request(
        "t",
        &f.agent,
        &input(&f.user, expiry),
        &RequestLimits::default(),
        now,
    )
    .unwrap();
    f.store
        .create_request(
            new.clone(),
            countersign_core::routing::ReviewerPlan::single(&f.user, now),
            Actor::new(ActorKind::Agent, &f.agent),
        )
        .await
        .unwrap();
    new
}

#[tokio::test]
async fn concurrent_writers_keep_each_tenant_chain_linear() {
    let f = fixture().await;
    let now = SystemClock.now();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = f.store.clone();
        let event = countersign_core::audit::AuditRecord::new(
            "t",
            now,
            &Actor::system("test"),
            "test.event",
            &format!("s{i}"),
            serde_json::json!({"i": i}),
        );
        tasks.push(tokio::spawn(async move { store.append_audit(event).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let v = verify_chain(&f.store).await;
    assert!(v.first_broken.is_none());
    assert!(v.checked >= 40);
}

/// Each PostgreSQL replica remembers the chain heads it wrote; appends from two replicas to
/// one chain keep finding the other's head moved and must still link up.
#[tokio::test]
async fn replicas_appending_to_one_chain_keep_it_linear() {
    let f = fixture().await;
    if matches!(f.config, StoreConfig::Sqlite(_)) {
        return;
    }
    let other = Store::open(f.config.clone()).await.unwrap();
    let before = verify_chain(&f.store).await.checked;
    let now = SystemClock.now();
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = if i % 2 == 0 {
            f.store.clone()
        } else {
            other.clone()
        };
        let event = countersign_core::audit::AuditRecord::new(
            "t",
            now,
            &Actor::system("test"),
            "test.event",
            &format!("s{i}"),
            serde_json::json!({"i": i}),
        );
        tasks.push(tokio::spawn(async move {
            // Appends in a row from one replica take the remembered head; a change appends
            // its event in one statement, or falls back when the other replica moved the head.
            store.append_audit(event.clone()).await?;
            store
                .create_user(
                    directory::new_user("t", &format!("r{i}@example.com"), "R", now).unwrap(),
                    Actor::system("test"),
                )
                .await?;
            store.append_audit(event).await.map(|_| ())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let v = verify_chain(&f.store).await;
    assert!(v.first_broken.is_none(), "{:?}", v.first_broken);
    assert_eq!(v.checked, before + 180);
}

async fn verify_chain(store: &Store) -> ChainVerifier {
    let mut v = ChainVerifier::default();
    for e in store.list_audit("t", 0, 100_000).await.unwrap() {
        v.check(&e).unwrap();
    }
    v
}

#[tokio::test]
async fn one_failing_change_does_not_undo_its_batch_neighbours() {
    let f = fixture().await;
    let now = SystemClock.now();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = f.store.clone();
        // Every fifth insert reuses an email and must fail alone.
        let email = if i % 5 == 0 {
            "a@example.com".to_string()
        } else {
            format!("u{i}@example.com")
        };
        tasks.push(tokio::spawn(async move {
            store
                .create_user(
                    directory::new_user("t", &email, "U", now).unwrap(),
                    Actor::system("test"),
                )
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(Error::AlreadyExists(_)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 40);
    assert_eq!(f.store.list_users("t").await.unwrap().len(), 41);
    let v = verify_chain(&f.store).await;
    assert!(v.first_broken.is_none());
}

#[tokio::test]
async fn decide_is_a_compare_and_set() {
    let f = fixture().await;
    let now = SystemClock.now();
    let new = create(&f, 300, now).await;
    let id = new.request.id.clone();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let store = f.store.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let verdict = if i % 2 == 0 {
                Verdict::Approve
            } else {
                Verdict::Reject
            };
            let d = decision(verdict, now);
            store.decide("t", &id, d).await
        }));
    }
    let results: Vec<Result<_>> = futures_join(tasks).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, Error::AlreadyDecided { .. }))
    );
    let stored = f
        .store
        .find_request("t", &RequestRef::PublicId(id))
        .await
        .unwrap()
        .unwrap();
    assert!(stored.status.is_terminal());
}

/// A reviewer's decision with the default limits.
fn decision(verdict: Verdict, at: chrono::DateTime<Utc>) -> Decision {
    Decision::new(
        verdict,
        Actor::system("r"),
        None,
        at,
        &RequestLimits::default(),
    )
    .unwrap()
}

async fn futures_join<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn expired_requests_cannot_be_decided_and_are_swept_once() {
    let f = fixture().await;
    let now = SystemClock.now();
    let new = create(&f, 10, now).await;
    let later = now + Duration::seconds(11);
    let d = decision(Verdict::Approve, later);
    match f.store.decide("t", &new.request.id, d).await {
        Err(Error::AlreadyDecided { status }) => assert_eq!(status, ApprovalStatus::Expired),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(f.store.expire_due(later, 100).await.unwrap().len(), 1);
    assert_eq!(f.store.expire_due(later, 100).await.unwrap().len(), 0);
    let page = f
        .store
        .list_requests(
            "t",
            &RequestFilter {
                status: Some(ApprovalStatus::Expired),
                ..RequestFilter::new(later, 10)
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
}

#[tokio::test]
async fn a_token_is_marked_issued_once() {
    let f = fixture().await;
    let now = SystemClock.now();
    let new = create(&f, 300, now).await;
    let actor = Actor::new(ActorKind::Agent, &f.agent);
    assert!(
        !f.store
            .mark_token_issued("t", &new.request.id, "j0", actor.clone(), now)
            .await
            .unwrap(),
        "not approved yet"
    );
    let d = decision(Verdict::Approve, now);
    f.store.decide("t", &new.request.id, d).await.unwrap();
    assert!(
        f.store
            .mark_token_issued("t", &new.request.id, "j1", actor.clone(), now)
            .await
            .unwrap()
    );
    assert!(
        !f.store
            .mark_token_issued("t", &new.request.id, "j2", actor, now)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn reopening_keeps_everything_and_migrations_are_idempotent() {
    let f = fixture().await;
    let now = SystemClock.now();
    let new = create(&f, 300, now).await;
    drop(f.store);
    let store = Store::open(f.config.clone()).await.unwrap();
    let found = store
        .find_request(
            "t",
            &RequestRef::AuthReqHash(new.auth_req_hash.clone().unwrap()),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, new.request);
    assert!(verify_chain(&store).await.first_broken.is_none());
    let (sqlite, postgres) = countersign_store::migration_versions();
    assert_eq!(sqlite, postgres, "every migration exists in both dialects");
}

mod oidc_and_outbox {
    use super::*;
    use countersign_core::notify;
    use countersign_core::oidc::{
        self, AuthMethod, ClientRegistration, DeliveryMode, OidcRequestInput, OutboxOutcome,
        PollSeen,
    };

    async fn ping_client(f: &Fixture, now: chrono::DateTime<Utc>) -> oidc::OidcClient {
        let new = oidc::new_client(
            "t",
            &f.agent,
            ClientRegistration {
                auth_method: AuthMethod::ClientSecretBasic,
                jwks: None,
                delivery_mode: DeliveryMode::Ping,
                notification_endpoint: Some("https://client.example.com/cb".into()),
                request_signing_alg: None,
                user_code_parameter: false,
                grant_types: vec![oidc::CIBA_GRANT.into()],
            },
            now,
        )
        .unwrap();
        f.store
            .create_oidc_client(new.client, Actor::system("test"))
            .await
            .unwrap()
    }

    async fn ciba_request(
        f: &Fixture,
        client: &oidc::OidcClient,
        expiry: i64,
        now: chrono::DateTime<Utc>,
    ) -> String {
        let new = oidc::new_oidc_request(
            OidcRequestInput {
                client,
                user_id: &f.user,
                scope: "openid".into(),
                expiry_secs: expiry,
                binding_message: Some("B1".into()),
                authorization_details: None,
                acr: None,
                client_notification_token: Some("token-0123456789-0123456789".into()),
                interval_secs: 5,
            },
            |id| format!("derived-{id}"),
            now,
        )
        .unwrap();
        let id = new.state.approval_id.clone();
        f.store
            .create_oidc_request(new, Actor::new(ActorKind::Agent, &f.agent))
            .await
            .unwrap();
        id
    }

    #[tokio::test]
    async fn clients_are_found_by_id_only_while_their_agent_is_active() {
        let f = fixture().await;
        let now = SystemClock.now();
        let client = ping_client(&f, now).await;
        assert_eq!(
            f.store.find_active_oidc_client(&f.agent).await.unwrap(),
            Some(client.clone())
        );
        assert_eq!(f.store.list_oidc_clients("t").await.unwrap(), vec![client]);
        f.store
            .disable_agent("t", &f.agent, Actor::system("test"), now)
            .await
            .unwrap();
        assert_eq!(
            f.store.find_active_oidc_client(&f.agent).await.unwrap(),
            None
        );
        f.store
            .delete_oidc_client("t", &f.agent, Actor::system("test"), now)
            .await
            .unwrap();
        assert!(matches!(
            f.store
                .delete_oidc_client("t", &f.agent, Actor::system("test"), now)
                .await,
            Err(Error::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_decision_and_an_expiry_each_put_one_callback_in_the_outbox() {
        let f = fixture().await;
        let now = SystemClock.now();
        let client = ping_client(&f, now).await;
        let decided = ciba_request(&f, &client, 300, now).await;
        let expiring = ciba_request(&f, &client, 10, now).await;
        // Creation puts only its notification in the outbox, no callback.
        assert!(
            f.store
                .claim_outbox(OutboxClaim::new(OutboxRows::Sends, now, now, 10))
                .await
                .unwrap()
                .is_empty()
        );
        let created = f
            .store
            .claim_outbox(OutboxClaim::new(OutboxRows::Changes, now, now, 10))
            .await
            .unwrap();
        assert_eq!(created.len(), 2);
        assert!(
            created
                .iter()
                .all(|i| i.channel == notify::NOTIFY && i.event == "requested")
        );
        let d = decision(Verdict::Approve, now);
        f.store.decide("t", &decided, d).await.unwrap();
        let later = now + Duration::seconds(11);
        assert_eq!(f.store.expire_due(later, 100).await.unwrap().len(), 1);

        // Claimed once: a second claim before the lease ends finds nothing.
        let lease = later + Duration::seconds(30);
        let claimed = f
            .store
            .claim_outbox(OutboxClaim::new(OutboxRows::Sends, later, lease, 10))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 2);
        let notifications = f
            .store
            .claim_outbox(OutboxClaim::new(OutboxRows::Changes, later, lease, 10))
            .await
            .unwrap();
        let mut events: Vec<_> = notifications.iter().map(|n| n.event.as_str()).collect();
        events.sort();
        assert_eq!(events, ["approved", "expired", "requested", "requested"]);
        assert!(
            f.store
                .claim_outbox(OutboxClaim::new(OutboxRows::Sends, later, lease, 10))
                .await
                .unwrap()
                .is_empty()
        );
        let by_request = |id: &str| {
            claimed
                .iter()
                .find(|i| i.approval_id == id)
                .unwrap()
                .clone()
        };
        let approved = by_request(&decided);
        assert_eq!(approved.event, "approved");
        assert_eq!(approved.channel, oidc::CHANNEL_PING);
        assert_eq!(approved.target, "https://client.example.com/cb");
        assert_eq!(
            approved.secret.as_deref(),
            Some("token-0123456789-0123456789")
        );
        assert_eq!(approved.attempts, 1);
        assert_eq!(by_request(&expiring).event, "expired");

        // A retry comes back when due, with one more attempt; delivered rows never do.
        f.store
            .finish_outbox(
                approved.id,
                OutboxOutcome::Retry {
                    at: later,
                    error: "503".into(),
                    status_code: Some(503),
                },
            )
            .await
            .unwrap();
        f.store
            .finish_outbox(
                by_request(&expiring).id,
                OutboxOutcome::Delivered {
                    at: later,
                    status_code: Some(200),
                    external_ref: None,
                },
            )
            .await
            .unwrap();
        let again = f
            .store
            .claim_outbox(OutboxClaim::new(OutboxRows::Sends, later, lease, 10))
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 2);
        // A lease that ran out (a worker that died) makes the row claimable again.
        let after_lease = lease + Duration::seconds(1);
        assert_eq!(
            f.store
                .claim_outbox(OutboxClaim::new(
                    OutboxRows::Sends,
                    after_lease,
                    after_lease,
                    10
                ))
                .await
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn polls_sooner_than_the_interval_slow_down() {
        let f = fixture().await;
        let now = SystemClock.now();
        let client = ping_client(&f, now).await;
        let id = ciba_request(&f, &client, 300, now).await;
        let seen = || async {
            let state = f.store.get_oidc_request("t", &id).await.unwrap().unwrap();
            state.poll_seen()
        };
        let before = seen().await;
        let first = f.store.record_oidc_poll(&id, before, now).await.unwrap();
        assert!(!first.too_fast);
        // Judged on a state another poll has since changed: the store reads it again.
        let fast = f
            .store
            .record_oidc_poll(&id, before, now + Duration::seconds(1))
            .await
            .unwrap();
        assert!(fast.too_fast);
        assert_eq!(fast.interval_secs, 10);
        let slow = f
            .store
            .record_oidc_poll(&id, seen().await, now + Duration::seconds(12))
            .await
            .unwrap();
        assert!(!slow.too_fast);
        assert_eq!(slow.interval_secs, 10);
        let state = f.store.get_oidc_request("t", &id).await.unwrap().unwrap();
        assert_eq!(state.client_id, client.client_id);
        assert_eq!(state.delivery_mode, DeliveryMode::Ping);
    }

    #[tokio::test]
    async fn a_poll_of_an_unknown_ciba_request_is_not_found_on_every_backend() {
        let f = fixture().await;
        let err = f
            .store
            .record_oidc_poll(
                "no-such-request",
                PollSeen {
                    interval_secs: 5,
                    last_poll_ms: None,
                },
                SystemClock.now(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    }

    #[tokio::test]
    async fn jtis_are_single_use_until_they_expire_and_secrets_are_stable() {
        let f = fixture().await;
        let now = SystemClock.now();
        let exp = now + Duration::seconds(60);
        assert!(f.store.use_jti("c", "j1", exp, now).await.unwrap());
        assert!(!f.store.use_jti("c", "j1", exp, now).await.unwrap());
        assert!(f.store.use_jti("other", "j1", exp, now).await.unwrap());
        // Once expired it is forgotten (the JWT's own `exp` refuses it by then).
        let later = now + Duration::seconds(61);
        assert!(
            f.store
                .use_jti("c", "j1", later + Duration::seconds(60), later)
                .await
                .unwrap()
        );

        let first = f.store.server_secret("k", vec![1; 32], now).await.unwrap();
        let second = f.store.server_secret("k", vec![2; 32], now).await.unwrap();
        assert_eq!(first, vec![1; 32]);
        assert_eq!(second, first, "the first stored secret wins");
    }
}

#[tokio::test]
async fn dashboard_passkeys_ceremonies_sessions_and_counts() {
    use countersign_core::dashboard::{self, SessionLimits, SessionProof};
    let f = fixture().await;
    let now = SystemClock.now();
    let user = f.store.get_user("t", &f.user).await.unwrap().unwrap();
    let admin = Actor::system("test");
    let limits = SessionLimits {
        idle: Duration::minutes(30),
        absolute: Duration::hours(8),
    };

    // Passkeys: one per credential id, found by credential and by email, removed by owner.
    let key =
        dashboard::new_passkey(&user, "cred-a".into(), "laptop", "{\"k\":1}".into(), now).unwrap();
    f.store
        .add_passkey(key.clone(), admin.clone())
        .await
        .unwrap();
    let again = dashboard::new_passkey(&user, "cred-a".into(), "dup", "{}".into(), now).unwrap();
    assert!(matches!(
        f.store.add_passkey(again, admin.clone()).await,
        Err(Error::AlreadyExists(_))
    ));
    assert_eq!(
        f.store
            .passkeys_for_email("a@example.com")
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        f.store
            .passkeys_for_email("b@example.com")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        f.store.find_passkey("cred-a").await.unwrap().unwrap().id,
        key.id
    );

    // A passkey sign-in updates the credential and starts a session; another user's passkey
    // proves nothing.
    let new = dashboard::new_session(&user, "passkey", "ua", limits, now);
    f.store
        .start_session(
            new.clone(),
            SessionProof::Passkey {
                credential_id: "cred-a".into(),
                credential: "{\"k\":2}".into(),
            },
            admin.clone(),
        )
        .await
        .unwrap();
    let stored = f.store.find_passkey("cred-a").await.unwrap().unwrap();
    assert_eq!(stored.credential, "{\"k\":2}");
    assert_eq!(stored.last_used_at, Some(now));
    let (session, who) = f
        .store
        .session_by_token(&countersign_core::secret::hash_secret(&new.token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (session.id.as_str(), who.id.as_str()),
        (new.session.id.as_str(), f.user.as_str())
    );
    let stranger = dashboard::new_session(&user, "passkey", "ua", limits, now);
    assert!(matches!(
        f.store
            .start_session(
                stranger,
                SessionProof::Passkey {
                    credential_id: "cred-unknown".into(),
                    credential: "{}".into(),
                },
                admin.clone(),
            )
            .await,
        Err(Error::Unauthorized { .. })
    ));
    assert_eq!(f.store.list_sessions("t", &f.user).await.unwrap().len(), 1);
    f.store
        .touch_session(&new.session.id, now + Duration::minutes(5))
        .await
        .unwrap();
    assert!(
        f.store
            .revoke_session("t", &f.user, &new.session.id, admin.clone(), now)
            .await
            .unwrap()
    );
    assert!(
        !f.store
            .revoke_session("t", &f.user, &new.session.id, admin.clone(), now)
            .await
            .unwrap()
    );
    assert!(
        f.store
            .delete_passkey("t", &f.user, &key.id, admin.clone(), now)
            .await
            .unwrap()
    );
    assert!(f.store.find_passkey("cred-a").await.unwrap().is_none());

    // Ceremony state is handed out once, and not after it expires.
    f.store
        .put_ceremony("c1", "state-1".into(), now + Duration::minutes(5), now)
        .await
        .unwrap();
    f.store
        .put_ceremony("c2", "state-2".into(), now + Duration::seconds(1), now)
        .await
        .unwrap();
    assert_eq!(
        f.store.take_ceremony("c1", now).await.unwrap().as_deref(),
        Some("state-1")
    );
    assert_eq!(f.store.take_ceremony("c1", now).await.unwrap(), None);
    assert_eq!(
        f.store
            .take_ceremony("c2", now + Duration::seconds(2))
            .await
            .unwrap(),
        None
    );

    // Counts by status, pending past expiry counted as expired.
    create(&f, 60, now).await;
    create(&f, 10, now).await;
    let counts = f
        .store
        .count_requests("t", None, now + Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(counts[0], (ApprovalStatus::Pending, 1));
    assert!(counts.contains(&(ApprovalStatus::Expired, 1)));
    let mine = f
        .store
        .count_requests("t", Some(&f.user), now + Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(mine, counts);
    let nobody = f
        .store
        .count_requests("t", Some("usr_nobody"), now)
        .await
        .unwrap();
    assert!(nobody.iter().all(|(_, n)| *n == 0));
}

mod notifications {
    use super::*;
    use countersign_core::notify::{
        self, Event, NewDelivery, Preferences, PushSubscription, ReviewToken,
    };
    use countersign_core::oidc::OutboxOutcome;

    fn delivery(notify_id: i64, channel: &'static str, target: &str) -> NewDelivery {
        NewDelivery {
            channel,
            target: target.into(),
            recipient: Some("usr_x".into()),
            event: Event::Requested,
            payload: Some(serde_json::json!({"n": 1})),
            dedupe_key: format!("{notify_id}:{channel}:{target}"),
        }
    }

    /// A fan-out batch deletes its rows in chunks of statements; none may be left to fan
    /// out twice, across a chunk boundary too.
    #[tokio::test]
    async fn a_fan_out_batch_removes_every_row_it_fanned_out() {
        let f = fixture().await;
        let now = SystemClock.now();
        for _ in 0..40 {
            create(&f, 300, now).await;
        }
        let claim = |at| OutboxClaim::new(OutboxRows::Changes, at, at, 100);
        let claimed = f.store.claim_outbox(claim(now)).await.unwrap();
        assert_eq!(claimed.len(), 40);
        let batch = claimed
            .into_iter()
            .map(|row| notify::FanOut {
                notify: row,
                deliveries: Vec::new(),
                tokens: Vec::new(),
            })
            .collect();
        f.store.fan_out(batch, now).await.unwrap();
        let later = now + chrono::Duration::hours(1);
        assert!(f.store.claim_outbox(claim(later)).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_change_is_fanned_out_once_whatever_happens() {
        let f = fixture().await;
        let now = SystemClock.now();
        let new = create(&f, 300, now).await;
        let id = new.request.id.clone();
        // Creation wrote exactly one notification row.
        let claimed = f
            .store
            .claim_outbox(OutboxClaim::new(OutboxRows::Changes, now, now, 10))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        let row = claimed[0].clone();
        assert_eq!(
            (row.channel.as_str(), row.event.as_str()),
            (notify::NOTIFY, "requested")
        );
        assert_eq!(row.approval_id, id);
        let token = ReviewToken {
            token_hash: "h1".into(),
            tenant_id: "t".into(),
            approval_id: id.clone(),
            user_id: f.user.clone(),
            expires_at: new.request.expires_at,
            created_at: now,
        };
        let plan = vec![
            delivery(row.id, notify::EMAIL, "a@example.com"),
            delivery(row.id, notify::SLACK, "C1"),
        ];
        let fan_out = notify::FanOut {
            notify: row.clone(),
            deliveries: plan,
            tokens: vec![token.clone()],
        };
        f.store.fan_out(vec![fan_out.clone()], now).await.unwrap();
        // A second run (a worker that died before it knew the first had committed) adds
        // nothing.
        f.store.fan_out(vec![fan_out], now).await.unwrap();
        let log = f.store.list_deliveries("t", &id).await.unwrap();
        assert_eq!(log.len(), 2);
        assert!(log.iter().all(|d| d.is_pending() && d.event == "requested"));
        assert_eq!(log[0].payload, Some(serde_json::json!({"n": 1})));
        assert!(
            f.store
                .list_deliveries("other", &id)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(f.store.find_review_token("h1").await.unwrap(), Some(token));
        // The deliveries are due; the fan-out row is done.
        let due = f
            .store
            .claim_outbox(OutboxClaim::new(OutboxRows::Sends, now, now, 10))
            .await
            .unwrap();
        assert_eq!(due.len(), 2);
        assert!(due.iter().all(|d| d.channel != notify::NOTIFY));
        let email = due.iter().find(|d| d.channel == notify::EMAIL).unwrap();
        assert_eq!(email.recipient.as_deref(), Some("usr_x"));
        f.store
            .finish_outbox(
                email.id,
                OutboxOutcome::Delivered {
                    at: now,
                    status_code: Some(250),
                    external_ref: Some("ref-1".into()),
                },
            )
            .await
            .unwrap();
        let got = f.store.get_delivery("t", email.id).await.unwrap().unwrap();
        assert!(got.is_delivered());
        assert_eq!(got.status_code, Some(250));
        assert_eq!(got.external_ref.as_deref(), Some("ref-1"));
        assert!(
            f.store
                .get_delivery("other", email.id)
                .await
                .unwrap()
                .is_none()
        );
        // A finished delivery can be sent again, a pending one cannot.
        f.store.redeliver("t", email.id, now).await.unwrap();
        assert!(f.store.redeliver("t", email.id, now).await.is_err());
        let again = f.store.get_delivery("t", email.id).await.unwrap().unwrap();
        assert!(again.is_pending());
        assert_eq!(again.external_ref.as_deref(), Some("ref-1"));
    }

    #[tokio::test]
    async fn preferences_webhooks_and_push_subscriptions() {
        let f = fixture().await;
        let now = SystemClock.now();
        let actor = Actor::system("test");
        assert!(
            f.store
                .get_preferences("t", &f.user)
                .await
                .unwrap()
                .is_none()
        );
        let mut prefs = Preferences::defaults("t", &f.user, now);
        prefs.slack_user_id = Some("U1".into());
        f.store
            .put_preferences(prefs.clone(), actor.clone())
            .await
            .unwrap();
        assert_eq!(
            f.store
                .find_user_by_slack_id("t", "U1")
                .await
                .unwrap()
                .map(|u| u.id),
            Some(f.user.clone())
        );
        assert!(
            f.store
                .find_user_by_slack_id("other", "U1")
                .await
                .unwrap()
                .is_none()
        );
        let other = f
            .store
            .create_user(
                directory::new_user("t", "b@example.com", "B", now).unwrap(),
                actor.clone(),
            )
            .await
            .unwrap();
        let mut taken = Preferences::defaults("t", &other.id, now);
        taken.slack_user_id = Some("U1".into());
        assert!(matches!(
            f.store.put_preferences(taken, actor.clone()).await,
            Err(Error::AlreadyExists(_))
        ));
        assert!(matches!(
            f.store
                .put_preferences(Preferences::defaults("t", "usr_nobody", now), actor.clone())
                .await,
            Err(Error::NotFound(_))
        ));
        assert_eq!(f.store.list_preferences("t").await.unwrap(), vec![prefs]);

        let hook = notify::new_webhook("t", "https://hooks.example.com/a", &[], None, now).unwrap();
        f.store
            .create_webhook(hook.clone(), actor.clone())
            .await
            .unwrap();
        let mut disabled = hook.clone();
        disabled.disabled_at = Some(now);
        disabled.disabled_reason = Some("410".into());
        let stored = f
            .store
            .update_webhook(disabled, "webhook.disabled", actor.clone())
            .await
            .unwrap();
        assert_eq!(stored.disabled_reason.as_deref(), Some("410"));
        assert_eq!(f.store.list_webhooks("t").await.unwrap().len(), 1);
        assert!(
            f.store
                .get_webhook("other", &hook.id)
                .await
                .unwrap()
                .is_none()
        );
        f.store
            .delete_webhook("t", &hook.id, actor.clone(), now)
            .await
            .unwrap();
        assert!(matches!(
            f.store
                .delete_webhook("t", &hook.id, actor.clone(), now)
                .await,
            Err(Error::NotFound(_))
        ));

        let sub = |id: &str| PushSubscription {
            id: id.into(),
            tenant_id: "t".into(),
            user_id: f.user.clone(),
            endpoint: "https://push.example.com/x".into(),
            p256dh: "k".into(),
            auth: "a".into(),
            user_agent: "test".into(),
            created_at: now,
        };
        f.store
            .put_push_subscription(sub("psh_1"), actor.clone())
            .await
            .unwrap();
        // The same device subscribing again replaces its old subscription.
        f.store
            .put_push_subscription(sub("psh_2"), actor.clone())
            .await
            .unwrap();
        let subs = f.store.list_push_subscriptions("t").await.unwrap();
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].id, "psh_2");
        assert!(
            !f.store
                .delete_push_subscription("other", "psh_2")
                .await
                .unwrap()
        );
        assert!(
            f.store
                .delete_push_subscription("t", "psh_2")
                .await
                .unwrap()
        );
        assert!(
            f.store
                .get_push_subscription("psh_2")
                .await
                .unwrap()
                .is_none()
        );

        f.store
            .put_channel_config(
                "t",
                "slack",
                Some(serde_json::json!({"bot_token": "x"})),
                actor.clone(),
                now,
            )
            .await
            .unwrap();
        let configs = f.store.channel_configs("t").await.unwrap();
        assert_eq!(configs.len(), 1);
        f.store
            .put_channel_config("t", "slack", None, actor, now)
            .await
            .unwrap();
        assert!(f.store.channel_configs("t").await.unwrap().is_empty());
        // Every change is in the audit trail, and the trail never holds the settings.
        let audit = f.store.list_audit("t", 0, 500).await.unwrap();
        assert!(
            audit
                .iter()
                .any(|e| e.record.action == "notification_channel.updated")
        );
        assert!(audit.iter().any(|e| e.record.action == "webhook.disabled"));
        assert!(
            !audit
                .iter()
                .any(|e| e.record.details.to_string().contains("bot_token"))
        );
    }
}

mod idempotency {
    use super::*;
    use countersign_core::idempotency::{StoredAnswer, retention};
    use countersign_proto::ErrorCode;

    fn answer(f: &Fixture, key_hash: &str, now: chrono::DateTime<Utc>) -> StoredAnswer {
        StoredAnswer {
            tenant_id: "t".into(),
            owner: format!("agent:{}", f.agent),
            key_hash: key_hash.into(),
            fingerprint: "f".into(),
            status: 200,
            answer: "sealed".into(),
            created_at: now,
            expires_at: now + retention(),
        }
    }

    fn new_request(f: &Fixture, now: chrono::DateTime<Utc>) -> approval::NewRequest {
        approval::new_ciba_request(
            "t",
            &f.agent,
            &input(&f.user, 60),
            &RequestLimits::default(),
            now,
        )
        .unwrap()
    }

    async fn store(f: &Fixture, new: approval::NewRequest) -> Result<approval::ApprovalRequest> {
        let now = new.request.created_at;
        f.store
            .create_request(
                new,
                countersign_core::routing::ReviewerPlan::single(&f.user, now),
                Actor::new(ActorKind::Agent, &f.agent),
            )
            .await
    }

    async fn exists(f: &Fixture, id: &str) -> bool {
        f.store
            .find_request("t", &RequestRef::PublicId(id.into()))
            .await
            .unwrap()
            .is_some()
    }

    #[tokio::test]
    async fn a_request_and_its_key_are_stored_together_or_not_at_all() {
        let f = fixture().await;
        let now = SystemClock.now();
        let owner = format!("agent:{}", f.agent);

        // The answer travels with the request it names.
        let mut first = new_request(&f, now);
        first.idempotency = Some(answer(&f, "k1", now));
        store(&f, first.clone()).await.unwrap();
        assert!(exists(&f, &first.request.id).await);
        let found = f
            .store
            .idempotent_answer("t", &owner, "k1", now)
            .await
            .unwrap();
        assert_eq!(found, first.idempotency.clone());

        // A second request under the same live key is not written at all.
        let mut second = new_request(&f, now);
        second.idempotency = Some(answer(&f, "k1", now));
        let err = store(&f, second.clone()).await.err().map(|e| e.code());
        assert_eq!(err, Some(ErrorCode::IdempotencyKeyInUse));
        assert!(!exists(&f, &second.request.id).await);
        let refused = f.store.remember_answer(answer(&f, "k1", now)).await;
        assert_eq!(
            refused.err().map(|e| e.code()),
            Some(ErrorCode::IdempotencyKeyInUse)
        );

        // A request that fails for another reason leaves no key behind.
        let mut orphan = new_request(&f, now);
        orphan.request.id = first.request.id.clone();
        orphan.idempotency = Some(answer(&f, "k2", now));
        assert!(store(&f, orphan).await.is_err());
        assert!(
            f.store
                .idempotent_answer("t", &owner, "k2", now)
                .await
                .unwrap()
                .is_none()
        );

        // Keys are per caller and per tenant.
        assert!(
            f.store
                .idempotent_answer("t", "agent:other", "k1", now)
                .await
                .unwrap()
                .is_none()
        );

        // An expired answer is invisible, can be taken over, and is swept.
        let later = now + retention() + Duration::seconds(1);
        assert!(
            f.store
                .idempotent_answer("t", &owner, "k1", later)
                .await
                .unwrap()
                .is_none()
        );
        let mut third = new_request(&f, later);
        third.idempotency = Some(answer(&f, "k1", later));
        store(&f, third.clone()).await.unwrap();
        assert!(exists(&f, &third.request.id).await);
        f.store
            .remember_answer(answer(&f, "k3", now))
            .await
            .unwrap();
        assert_eq!(f.store.forget_expired_answers(later).await.unwrap(), 1);
        assert!(
            f.store
                .idempotent_answer("t", &owner, "k1", later)
                .await
                .unwrap()
                .is_some()
        );
    }
}

mod mcp {
    use super::*;
    use countersign_core::approval::{DecisionRules, ToolCallApproval, ToolInfo};
    use countersign_core::mcp::{self, McpServerRecord};
    use countersign_core::toolcall;
    use countersign_proto::guard::{McpOrigin, ToolAnnotations};
    use countersign_store::SameCall;
    use std::collections::BTreeMap;

    fn record(id: &str, token: &str, now: chrono::DateTime<Utc>) -> McpServerRecord {
        let headers: BTreeMap<String, String> = [
            ("Authorization".to_string(), format!("Bearer {token}")),
            ("X-Team".to_string(), "ops".to_string()),
        ]
        .into_iter()
        .collect();
        mcp::new_server("t", id, "https://mcp.example.com/mcp", headers, now).unwrap()
    }

    #[tokio::test]
    async fn mcp_servers_are_registered_changed_and_deleted_with_audit() {
        let f = fixture().await;
        let now = SystemClock.now();
        let actor = Actor::system("test");
        let files = record("files", "s3cret-one", now);
        f.store
            .create_mcp_server(&files, actor.clone())
            .await
            .unwrap();
        // The same id again is a conflict, like other duplicates.
        let again = f
            .store
            .create_mcp_server(&record("files", "other", now), actor.clone())
            .await
            .unwrap_err();
        assert!(matches!(again, Error::AlreadyExists(_)), "{again:?}");
        f.store
            .create_mcp_server(&record("calendar", "s3cret-two", now), actor.clone())
            .await
            .unwrap();
        let listed = f.store.list_mcp_servers("t").await.unwrap();
        assert_eq!(
            listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["calendar", "files"]
        );
        let read = f.store.get_mcp_server("t", "files").await.unwrap().unwrap();
        assert_eq!(read, files);
        // Confined to the tenant.
        assert!(
            f.store
                .get_mcp_server("other", "files")
                .await
                .unwrap()
                .is_none()
        );
        assert!(f.store.list_mcp_servers("other").await.unwrap().is_empty());
        // Update replaces the URL and headers.
        let later = now + Duration::seconds(5);
        let changed = mcp::replace_server(
            read,
            "https://mcp2.example.com/mcp",
            [("X-Api-Key".to_string(), "s3cret-three".to_string())]
                .into_iter()
                .collect(),
            later,
        )
        .unwrap();
        assert!(
            f.store
                .update_mcp_server(&changed, actor.clone())
                .await
                .unwrap()
        );
        let read = f.store.get_mcp_server("t", "files").await.unwrap().unwrap();
        assert_eq!(read.url, "https://mcp2.example.com/mcp");
        assert_eq!(
            read.headers,
            vec![("X-Api-Key".to_string(), "s3cret-three".to_string())]
        );
        assert_eq!(read.created_at, files.created_at);
        assert_eq!(read.updated_at.timestamp_millis(), later.timestamp_millis());
        let mut missing = changed.clone();
        missing.id = "nothing".into();
        assert!(
            !f.store
                .update_mcp_server(&missing, actor.clone())
                .await
                .unwrap()
        );
        // Delete once; the second time there is nothing.
        assert!(
            !f.store
                .delete_mcp_server("other", "files", actor.clone(), later)
                .await
                .unwrap()
        );
        assert!(
            f.store
                .delete_mcp_server("t", "files", actor.clone(), later)
                .await
                .unwrap()
        );
        assert!(
            !f.store
                .delete_mcp_server("t", "files", actor, later)
                .await
                .unwrap()
        );
        assert!(
            f.store
                .get_mcp_server("t", "files")
                .await
                .unwrap()
                .is_none()
        );
        // Every write is audited, with header names and never their values.
        let audit = f.store.list_audit("t", 0, 500).await.unwrap();
        let actions: Vec<&str> = audit
            .iter()
            .filter(|e| e.record.action.starts_with("mcp_server."))
            .map(|e| e.record.action.as_str())
            .collect();
        assert_eq!(
            actions,
            [
                "mcp_server.created",
                "mcp_server.created",
                "mcp_server.updated",
                "mcp_server.deleted"
            ]
        );
        let created = audit
            .iter()
            .find(|e| e.record.action == "mcp_server.created")
            .unwrap();
        assert_eq!(
            created.record.details["header_names"],
            serde_json::json!(["Authorization", "X-Team"])
        );
        assert!(
            !audit
                .iter()
                .any(|e| e.record.details.to_string().contains("s3cret"))
        );
        verify_chain(&f.store).await;
    }

    fn tool_call(
        f: &Fixture,
        mcp: Option<McpOrigin>,
        annotations: Option<ToolAnnotations>,
        now: chrono::DateTime<Utc>,
    ) -> approval::NewRequest {
        let call = toolcall::normalize(
            &serde_json::json!({"name": "delete_file", "arguments": {"path": "/tmp/x"}}),
        )
        .unwrap();
        approval::new_tool_request(
            "t",
            &f.agent,
            ToolCallApproval {
                call: &call,
                tool: ToolInfo {
                    tool_name: call.name.clone(),
                    session_id: "s1".into(),
                    annotations,
                    mcp,
                    ..ToolInfo::default()
                },
                scope: None,
                rules: DecisionRules::default(),
                timeout_minutes: 30,
            },
            now,
        )
    }

    #[tokio::test]
    async fn tool_calls_keep_their_mcp_origin_and_are_pending_once_per_server() {
        let f = fixture().await;
        let now = SystemClock.now();
        let actor = Actor::new(ActorKind::Agent, &f.agent);
        let plan = || countersign_core::routing::ReviewerPlan::single(&f.user, now);
        let origin = |server: &str| McpOrigin {
            server: server.into(),
            client: Some("claude-desktop 1.2.0".into()),
        };
        let hints = ToolAnnotations {
            destructive_hint: Some(true),
            open_world_hint: Some(false),
            ..ToolAnnotations::default()
        };
        let files = tool_call(&f, Some(origin("files")), Some(hints), now);
        let created = f
            .store
            .create_request(files.clone(), plan(), actor.clone())
            .await
            .unwrap();
        let read = f
            .store
            .find_request("t", &RequestRef::PublicId(created.id.clone()))
            .await
            .unwrap()
            .unwrap();
        let tool = read.tool.unwrap();
        assert_eq!(tool.annotations, Some(hints));
        assert_eq!(tool.mcp, Some(origin("files")));
        let found = f
            .store
            .find_pending_tool_call(
                "t",
                &SameCall {
                    agent_id: &f.agent,
                    session_id: "s1",
                    tool_name: "delete_file",
                    arguments_sha256: &files.request.context_sha256,
                    mcp_server: Some("files"),
                },
                now,
            )
            .await
            .unwrap();
        assert_eq!(found.map(|r| r.id), Some(created.id.clone()));
        // The same call through the same server is a duplicate...
        let duplicate = f
            .store
            .create_request(
                tool_call(&f, Some(origin("files")), Some(hints), now),
                plan(),
                actor.clone(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(duplicate, Error::AlreadyExists(_)),
            "{duplicate:?}"
        );
        // ...through another server, or not through MCP, it is another action.
        for other in [Some(origin("files-prod")), None] {
            let server = other.as_ref().map(|o| o.server.clone());
            assert!(
                f.store
                    .find_pending_tool_call(
                        "t",
                        &SameCall {
                            agent_id: &f.agent,
                            session_id: "s1",
                            tool_name: "delete_file",
                            arguments_sha256: &files.request.context_sha256,
                            mcp_server: server.as_deref()
                        },
                        now,
                    )
                    .await
                    .unwrap()
                    .is_none()
            );
            let made = f
                .store
                .create_request(
                    tool_call(&f, other.clone(), None, now),
                    plan(),
                    actor.clone(),
                )
                .await
                .unwrap();
            let tool = made.tool.unwrap();
            assert_eq!(tool.mcp, other);
            assert_eq!(tool.annotations, None);
        }
        let plain = f
            .store
            .find_pending_tool_call(
                "t",
                &SameCall {
                    agent_id: &f.agent,
                    session_id: "s1",
                    tool_name: "delete_file",
                    arguments_sha256: &files.request.context_sha256,
                    mcp_server: None,
                },
                now,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(plain.tool.unwrap().mcp, None);
    }
}
