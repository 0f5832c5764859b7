//! The audit trail: every state change, hash-chained, verifiable.
use countersign_proto::ciba::ApproveRequest;

use crate::support::*;

#[tokio::test]
async fn every_state_change_is_audited_in_a_verifiable_chain() {
    let app = spawn_app().await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("bot").await;
    let asked = agent.ciba_authorize(&payment(&user)).await.unwrap();
    reviewer
        .ciba_approve(&ApproveRequest {
            auth_req_id: Some(asked.auth_req_id.clone()),
            comment: Some("fine".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    agent.ciba_token(&asked.auth_req_id, None).await.unwrap();
    let keys = app.admin.list_api_keys().await.unwrap().api_keys;
    app.admin.revoke_api_key(&keys[2].id).await.unwrap();

    let events = app.admin.audit_page(None, Some(500)).await.unwrap().events;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    for expected in [
        "tenant.created",
        "api_key.created",
        "user.created",
        "agent.created",
        "approval.created",
        "approval.approved",
        "token.issued",
        "api_key.revoked",
    ] {
        assert!(
            actions.contains(&expected),
            "missing {expected} in {actions:?}"
        );
    }
    let approved = events
        .iter()
        .find(|e| e.action == "approval.approved")
        .unwrap();
    assert_eq!(approved.actor_type, "reviewer");
    assert_eq!(approved.actor_id, user);
    assert_eq!(approved.details["comment"], "fine");
    // The chain links each event to the previous one.
    for pair in events.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        assert_eq!(pair[1].seq, pair[0].seq + 1);
    }
    // Secrets never land in the trail.
    let raw = serde_json::to_string(&events).unwrap();
    assert!(!raw.contains(&asked.auth_req_id));
    assert!(!raw.contains(agent.key().unwrap()));

    let report = app.admin.audit_verify().await.unwrap();
    assert!(report.ok);
    assert_eq!(report.events_checked as usize, events.len());
}

#[tokio::test]
async fn audit_pages_with_a_cursor() {
    let app = spawn_app().await;
    for i in 0..7 {
        app.admin
            .create_user(&format!("u{i}@example.com"), "U")
            .await
            .unwrap();
    }
    let mut seqs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = app
            .admin
            .audit_page(cursor.as_deref(), Some(3))
            .await
            .unwrap();
        seqs.extend(page.events.iter().map(|e| e.seq));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
    assert_eq!(seqs, expected);
    assert_eq!(
        code(app.admin.audit_page(Some("abc"), None).await),
        "invalid_request"
    );
    assert_eq!(
        code(app.admin.audit_page(None, Some(0)).await),
        "invalid_request"
    );
}

#[tokio::test]
async fn verify_names_the_first_edited_event() {
    let app = spawn_app().await;
    for i in 0..4 {
        app.admin
            .create_user(&format!("u{i}@example.com"), "U")
            .await
            .unwrap();
    }
    assert!(app.admin.audit_verify().await.unwrap().ok);
    let changed = app
        .exec_sql(
            "UPDATE audit_events SET details = '{\"email\":\"mallory@example.com\",\"name\":\"U\"}' \
             WHERE tenant_id = 'default' AND seq = 4",
        )
        .await;
    assert_eq!(changed, 1);
    let report = app.admin.audit_verify().await.unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_broken.unwrap().seq, 4);
}

#[tokio::test]
async fn verify_detects_a_removed_event() {
    let app = spawn_app().await;
    for i in 0..4 {
        app.admin
            .create_user(&format!("u{i}@example.com"), "U")
            .await
            .unwrap();
    }
    app.exec_sql("DELETE FROM audit_events WHERE tenant_id = 'default' AND seq = 3")
        .await;
    let report = app.admin.audit_verify().await.unwrap();
    assert!(!report.ok);
    let broken = report.first_broken.unwrap();
    assert_eq!(broken.seq, 4);
    assert!(broken.reason.contains("missing"));
}
