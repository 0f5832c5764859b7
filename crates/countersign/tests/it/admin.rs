//! The admin API, keys and tenant isolation.
use countersign_proto::TrustLevel;
use countersign_proto::admin::{CreateAgent, CreateApiKey, CreateTenant, KeyRole};
use countersign_proto::ciba::ApproveRequest;

use crate::support::*;

#[tokio::test]
async fn users_and_agents_are_created_listed_fetched_and_disabled() {
    let app = spawn_app().await;
    let user = app
        .admin
        .create_user("Alice@Example.com", "Alice")
        .await
        .unwrap();
    assert!(user.id.starts_with("usr_"));
    assert_eq!(user.email, "alice@example.com");
    assert_eq!(
        code(app.admin.create_user("alice@example.com", "Again").await),
        "already_exists"
    );
    assert_eq!(app.admin.list_users().await.unwrap().users.len(), 1);
    assert_eq!(app.admin.get_user(&user.id).await.unwrap().name, "Alice");
    assert!(app.admin.disable_user(&user.id).await.unwrap().disabled);
    assert_eq!(code(app.admin.get_user("usr_nope").await), "not_found");

    for level in TrustLevel::ALL {
        let agent = app
            .admin
            .create_agent(&CreateAgent {
                name: format!("bot-{}", level.as_str()),
                trust_level: level,
            })
            .await
            .unwrap();
        assert!(agent.id.starts_with("agt_"));
        assert_eq!(
            app.admin.get_agent(&agent.id).await.unwrap().trust_level,
            level
        );
    }
    let agents = app.admin.list_agents().await.unwrap().agents;
    assert_eq!(agents.len(), 5);
    assert!(
        app.admin
            .disable_agent(&agents[0].id)
            .await
            .unwrap()
            .disabled
    );
}

#[tokio::test]
async fn keys_are_shown_once_stored_hashed_and_revoked_at_once() {
    let app = spawn_app().await;
    let (_, agent) = app.agent("bot").await;
    let (user, _) = app.reviewer("alice@example.com").await;
    let listed = app.admin.list_api_keys().await.unwrap();
    // bootstrap admin + agent + reviewer
    assert_eq!(listed.api_keys.len(), 3);
    let raw = serde_json::to_string(&listed).unwrap();
    assert!(
        !raw.contains(agent.key().unwrap()),
        "listing never shows a secret"
    );
    assert!(!raw.contains("key_hash"));

    // The database holds no key in clear.
    let secret = agent.key().unwrap();
    let stored = app
        .query_i64(&format!(
            "SELECT COUNT(*) FROM api_keys WHERE key_hash = '{secret}' OR prefix = '{secret}'"
        ))
        .await;
    assert_eq!(stored, 0);
    let hashed = app
        .query_i64(&format!(
            "SELECT COUNT(*) FROM api_keys WHERE key_hash = '{}'",
            countersign_core::secret::hash_secret(secret)
        ))
        .await;
    assert_eq!(hashed, 1);

    let agent_key_id = listed
        .api_keys
        .iter()
        .find(|k| k.role == KeyRole::Agent)
        .unwrap()
        .id
        .clone();
    agent.ciba_authorize(&payment(&user)).await.unwrap();
    let revoked = app.admin.revoke_api_key(&agent_key_id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    let err = agent.ciba_authorize(&payment(&user)).await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(401), Some("unauthorized"))
    );
}

#[tokio::test]
async fn key_creation_checks_the_owner() {
    let app = spawn_app().await;
    let make = |role, user_id: Option<&str>, agent_id: Option<&str>| CreateApiKey {
        role,
        user_id: user_id.map(str::to_string),
        agent_id: agent_id.map(str::to_string),
        name: None,
        audiences: Vec::new(),
    };
    assert_eq!(
        code(
            app.admin
                .create_api_key(&make(KeyRole::Agent, None, None))
                .await
        ),
        "invalid_request"
    );
    assert_eq!(
        code(
            app.admin
                .create_api_key(&make(KeyRole::Reviewer, None, Some("agt_x")))
                .await
        ),
        "invalid_request"
    );
    assert_eq!(
        code(
            app.admin
                .create_api_key(&make(
                    KeyRole::Agent,
                    None,
                    Some("agt_01aaaaaaaaaaaaaaaaaaaaaaaa")
                ))
                .await
        ),
        "not_found"
    );
    let admin2 = app
        .admin
        .create_api_key(&make(KeyRole::Admin, None, None))
        .await
        .unwrap();
    assert!(admin2.key.starts_with("csk_"));
    app.client(&admin2.key).list_users().await.unwrap();
}

#[tokio::test]
async fn disabling_a_principal_stops_its_keys() {
    let app = spawn_app().await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let (agent_id, agent) = app.agent("bot").await;
    let asked = agent.ciba_authorize(&payment(&user)).await.unwrap();
    app.admin.disable_agent(&agent_id).await.unwrap();
    assert_eq!(
        agent
            .ciba_token(&asked.auth_req_id, None)
            .await
            .unwrap_err()
            .status(),
        Some(401)
    );
    app.admin.disable_user(&user).await.unwrap();
    assert_eq!(
        reviewer
            .list_approvals(&Default::default())
            .await
            .unwrap_err()
            .status(),
        Some(401)
    );
}

#[tokio::test]
async fn missing_or_bad_keys_get_401_and_wrong_roles_403() {
    let app = spawn_app().await;
    let anon = app.anonymous();
    let err = anon.list_users().await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(401), Some("unauthorized"))
    );
    let bad = app.client("csk_not-a-real-key");
    assert_eq!(bad.list_users().await.unwrap_err().status(), Some(401));
    let res = app
        .http()
        .get(app.url("/v1/admin/users"))
        .header("Authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");

    let (_, reviewer) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("bot").await;
    for client in [&reviewer, &agent] {
        assert_eq!(client.list_users().await.unwrap_err().status(), Some(403));
        assert_eq!(
            client
                .create_user("x@example.com", "X")
                .await
                .unwrap_err()
                .status(),
            Some(403)
        );
        assert_eq!(
            client.list_api_keys().await.unwrap_err().status(),
            Some(403)
        );
        assert_eq!(client.audit_verify().await.unwrap_err().status(), Some(403));
    }
}

#[tokio::test]
async fn tenants_are_isolated() {
    let app = spawn_app().await;
    let created = app
        .admin
        .create_tenant(&CreateTenant {
            id: "acme".into(),
            name: Some("Acme".into()),
        })
        .await
        .unwrap();
    assert_eq!(created.tenant.id, "acme");
    let acme_admin = app.client(&created.admin_key.key);
    // Only admins of `default` create tenants.
    assert_eq!(
        code(
            acme_admin
                .create_tenant(&CreateTenant {
                    id: "evil".into(),
                    name: None
                })
                .await
        ),
        "forbidden"
    );
    assert_eq!(
        code(
            app.admin
                .create_tenant(&CreateTenant {
                    id: "acme".into(),
                    name: None
                })
                .await
        ),
        "already_exists"
    );
    assert_eq!(
        code(
            app.admin
                .create_tenant(&CreateTenant {
                    id: "Not A Slug".into(),
                    name: None
                })
                .await
        ),
        "invalid_request"
    );

    // Tenant A (default) has a reviewer, an agent and a request.
    let (user_a, reviewer_a) = app.reviewer("alice@example.com").await;
    let (agent_a_id, agent_a) = app.agent("bot").await;
    let asked = agent_a.ciba_authorize(&payment(&user_a)).await.unwrap();
    let apr = reviewer_a
        .list_approvals(&Default::default())
        .await
        .unwrap()
        .approvals[0]
        .id
        .clone();

    // Tenant B's keys see nothing of A.
    let (user_b, reviewer_b) = reviewer_in(&acme_admin, "alice@example.com").await;
    let (_, agent_b) = agent_in(&acme_admin, "bot").await;
    assert!(
        acme_admin
            .list_approvals(&Default::default())
            .await
            .unwrap()
            .approvals
            .is_empty()
    );
    assert_eq!(acme_admin.list_users().await.unwrap().users.len(), 1);
    assert_eq!(code(acme_admin.get_user(&user_a).await), "not_found");
    assert_eq!(code(acme_admin.get_agent(&agent_a_id).await), "not_found");
    assert_eq!(code(acme_admin.get_approval(&apr).await), "not_found");
    assert_eq!(
        code(agent_b.ciba_token(&asked.auth_req_id, None).await),
        "not_found"
    );
    assert_eq!(
        code(
            reviewer_b
                .ciba_approve(&ApproveRequest {
                    auth_req_id: Some(asked.auth_req_id.clone()),
                    ..Default::default()
                })
                .await
        ),
        "not_found"
    );
    assert_eq!(code(acme_admin.approve(&apr, None).await), "not_found");
    // B's agent cannot ask A's reviewer.
    assert_eq!(
        code(agent_b.ciba_authorize(&payment(&user_a)).await),
        "unknown_user_id"
    );
    // A's admin cannot reach B's users either.
    assert_eq!(code(app.admin.get_user(&user_b).await), "not_found");
    // A's audit trail has none of B's events and each chain verifies on its own.
    assert!(acme_admin.audit_verify().await.unwrap().ok);
    assert!(app.admin.audit_verify().await.unwrap().ok);
    let b_events = acme_admin.audit_page(None, Some(500)).await.unwrap().events;
    assert!(b_events.iter().all(|e| e.subject != apr));
    // The request is still pending for A.
    assert!(matches!(
        agent_a.ciba_token(&asked.auth_req_id, None).await.unwrap(),
        countersign_proto::ciba::TokenResponse::Pending
    ));
}
