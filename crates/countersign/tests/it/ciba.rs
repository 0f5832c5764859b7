//! The seed's CIBA flow, end to end.
use std::time::{Duration, Instant};

use countersign_proto::ciba::{ApproveRequest, DenyRequest, TokenResponse};
use countersign_proto::{ApprovalStatus, ErrorCode};

use crate::support::*;

fn approve_by(auth_req_id: &str) -> ApproveRequest {
    ApproveRequest {
        auth_req_id: Some(auth_req_id.to_string()),
        ..Default::default()
    }
}

#[tokio::test]
async fn seed_flow_approve_yields_one_token() {
    let app = spawn_app().await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("payments-bot").await;

    let asked = agent.ciba_authorize(&payment(&user)).await.unwrap();
    assert_eq!(asked.expires_in, 300);
    assert_eq!(asked.interval, 5);
    assert!(
        asked.auth_req_id.len() >= 22,
        "at least 128 bits of randomness"
    );

    assert_eq!(
        agent.ciba_token(&asked.auth_req_id, None).await.unwrap(),
        TokenResponse::Pending
    );

    let decided = reviewer
        .ciba_approve(&approve_by(&asked.auth_req_id))
        .await
        .unwrap();
    assert_eq!(decided.status, "approved");
    assert!(decided.approval_id.starts_with("apr_"));

    match agent.ciba_token(&asked.auth_req_id, None).await.unwrap() {
        TokenResponse::Approved {
            access_token: Some(token),
            token_type,
            expires_in,
            token_already_issued: false,
        } => {
            assert_eq!(token_type.as_deref(), Some("Bearer"));
            assert_eq!(expires_in, Some(300));
            assert_eq!(token.split('.').count(), 3);
        }
        other => panic!("expected a token, got {other:?}"),
    }
    // One approval, one token: later polls say it was issued.
    assert_eq!(
        agent.ciba_token(&asked.auth_req_id, None).await.unwrap(),
        TokenResponse::Approved {
            access_token: None,
            token_type: None,
            expires_in: None,
            token_already_issued: true
        }
    );
}

#[tokio::test]
async fn seed_flow_deny_with_reason() {
    let app = spawn_app().await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("bot").await;
    let asked = agent.ciba_authorize(&payment(&user)).await.unwrap();
    let decided = reviewer
        .ciba_deny(&DenyRequest {
            auth_req_id: Some(asked.auth_req_id.clone()),
            approval_id: None,
            reason: Some("not this vendor".into()),
        })
        .await
        .unwrap();
    assert_eq!(decided.status, "denied");
    assert_eq!(
        agent.ciba_token(&asked.auth_req_id, None).await.unwrap(),
        TokenResponse::Denied {
            reason: Some("not this vendor".into())
        }
    );
    // A second decision gets 409 with the current status.
    let err = reviewer
        .ciba_approve(&approve_by(&asked.auth_req_id))
        .await
        .unwrap_err();
    match err {
        countersign_client::ClientError::Api {
            status,
            code,
            current_status,
            ..
        } => {
            assert_eq!(status, 409);
            assert_eq!(code, "already_decided");
            assert_eq!(current_status.as_deref(), Some("rejected"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn reviewers_find_pending_requests_by_public_id_and_decide_with_it() {
    let app = spawn_app().await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let (other_user, other_reviewer) = app.reviewer("bob@example.com").await;
    let (agent_id, agent) = app.agent("bot").await;
    let asked = agent.ciba_authorize(&payment(&user)).await.unwrap();
    agent.ciba_authorize(&payment(&other_user)).await.unwrap();

    let mine = reviewer
        .list_approvals(&countersign_client::ApprovalFilter {
            status: Some("pending".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        mine.approvals.len(),
        1,
        "a reviewer sees only requests addressed to them"
    );
    let view = &mine.approvals[0];
    assert_eq!(view.status, ApprovalStatus::Pending);
    assert_eq!(view.scope, "approve:payment");
    assert_eq!(
        view.binding_message,
        "Approve payment of $500 to Acme Corp?"
    );
    assert_eq!(view.context["amount"], 500);
    assert_eq!(view.agent_id, agent_id);
    assert_eq!(view.agent_name, "bot");
    assert!(view.expires_at > view.created_at);
    // The secret handle is never listed.
    let raw = serde_json::to_string(&mine).unwrap();
    assert!(!raw.contains(&asked.auth_req_id));

    // Another reviewer can neither see nor decide it.
    assert_eq!(
        code(other_reviewer.get_approval(&view.id).await),
        "not_found"
    );
    let err = other_reviewer
        .ciba_approve(&ApproveRequest {
            approval_id: Some(view.id.clone()),
            ..Default::default()
        })
        .await;
    assert_eq!(code(err), "forbidden");

    // An admin sees both.
    let all = app.admin.list_approvals(&Default::default()).await.unwrap();
    assert_eq!(all.approvals.len(), 2);

    // Deciding by public id through the seed endpoint and the reviewer API.
    let decided = reviewer
        .ciba_approve(&ApproveRequest {
            approval_id: Some(view.id.clone()),
            comment: Some("ok".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(decided.approval_id, view.id);
    let after = reviewer.get_approval(&view.id).await.unwrap();
    assert_eq!(after.status, ApprovalStatus::Approved);
    assert_eq!(after.decided_by.as_deref(), Some(user.as_str()));
    assert_eq!(after.comment.as_deref(), Some("ok"));
    assert_eq!(code(reviewer.deny(&view.id, None).await), "already_decided");

    let approved = app
        .admin
        .list_approvals(&countersign_client::ApprovalFilter {
            status: Some("approved".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(approved.approvals.len(), 1);
}

#[tokio::test]
async fn approvals_list_pages_with_a_cursor() {
    let app = spawn_app().await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("bot").await;
    for _ in 0..5 {
        agent.ciba_authorize(&payment(&user)).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = reviewer
            .list_approvals(&countersign_client::ApprovalFilter {
                status: None,
                cursor: cursor.clone(),
                limit: Some(2),
            })
            .await
            .unwrap();
        seen.extend(page.approvals.iter().map(|a| a.id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(seen, sorted, "newest first, no repeats");
}

#[tokio::test]
async fn long_poll_wakes_on_decision() {
    let app = spawn_app().await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("bot").await;
    let asked = agent.ciba_authorize(&payment(&user)).await.unwrap();

    let id = asked.auth_req_id.clone();
    let poller = tokio::spawn(async move {
        let start = Instant::now();
        let answer = agent.ciba_token(&id, Some(20)).await.unwrap();
        (answer, start.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    reviewer
        .ciba_approve(&approve_by(&asked.auth_req_id))
        .await
        .unwrap();
    let (answer, waited) = poller.await.unwrap();
    assert!(matches!(
        answer,
        TokenResponse::Approved {
            access_token: Some(_),
            ..
        }
    ));
    assert!(
        waited < Duration::from_secs(10),
        "woke on the decision, not the timeout: {waited:?}"
    );
}

#[tokio::test]
async fn long_poll_returns_pending_when_the_wait_ends() {
    let app = spawn_app().await;
    let (user, _) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("bot").await;
    let asked = agent.ciba_authorize(&payment(&user)).await.unwrap();
    let answer = agent.ciba_token(&asked.auth_req_id, Some(1)).await.unwrap();
    assert_eq!(answer, TokenResponse::Pending);
}

#[tokio::test]
async fn expiry_is_seen_at_read_time_recorded_by_the_sweeper_and_blocks_decisions() {
    let app = spawn_with_clock().await;
    let clock = app.clock.clone().unwrap();
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("bot").await;
    let mut input = payment(&user);
    input.requested_expiry = Some(60);
    let asked = agent.ciba_authorize(&input).await.unwrap();
    assert_eq!(asked.expires_in, 60);

    clock.advance(chrono::Duration::seconds(61));
    // Before any sweep, a poll already reads expired.
    assert_eq!(
        agent.ciba_token(&asked.auth_req_id, None).await.unwrap(),
        TokenResponse::Expired
    );
    let err = reviewer
        .ciba_approve(&approve_by(&asked.auth_req_id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("already_decided"));
    match err {
        countersign_client::ClientError::Api { current_status, .. } => {
            assert_eq!(current_status.as_deref(), Some("expired"))
        }
        other => panic!("unexpected {other:?}"),
    }

    // The background sweeper may have recorded it first; either way it is recorded once.
    countersign_server::workers::sweep_expired(&app.server.state)
        .await
        .unwrap();
    let listed = app
        .admin
        .list_approvals(&countersign_client::ApprovalFilter {
            status: Some("expired".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.approvals.len(), 1);
    assert_eq!(
        audited(&app, "approval.expired", None).await,
        1,
        "expiry is recorded once"
    );
    assert_eq!(
        countersign_server::workers::sweep_expired(&app.server.state)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn a_waiting_agent_learns_of_expiry() {
    let app = spawn_app().await;
    let (user, _) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("bot").await;
    let mut input = payment(&user);
    input.requested_expiry = Some(10);
    let asked = agent.ciba_authorize(&input).await.unwrap();
    let start = Instant::now();
    // The long-poll ends at expiry (10 s), before its 30 s wait.
    let answer = agent
        .ciba_token(&asked.auth_req_id, Some(30))
        .await
        .unwrap();
    assert_eq!(answer, TokenResponse::Expired);
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn sixty_four_concurrent_decisions_have_exactly_one_winner() {
    let app = spawn_app().await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("bot").await;
    let asked = agent.ciba_authorize(&payment(&user)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let reviewer = reviewer.clone();
        let admin = app.admin.clone();
        let id = asked.auth_req_id.clone();
        tasks.push(tokio::spawn(async move {
            let who = if i % 2 == 0 { reviewer } else { admin };
            if i % 3 == 0 {
                who.ciba_deny(&DenyRequest {
                    auth_req_id: Some(id),
                    ..Default::default()
                })
                .await
            } else {
                who.ciba_approve(&approve_by(&id)).await
            }
        }));
    }
    let mut wins = 0;
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(e) if e.status() == Some(409) => conflicts += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((wins, conflicts), (1, 63));
    let audit = app.admin.audit_page(None, Some(500)).await.unwrap();
    let decisions = audit
        .events
        .iter()
        .filter(|e| e.action == "approval.approved" || e.action == "approval.rejected")
        .count();
    assert_eq!(decisions, 1);
}

#[tokio::test]
async fn only_the_asking_agent_polls_and_agents_never_decide() {
    let app = spawn_app().await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("bot").await;
    let (_, other_agent) = app.agent("other-bot").await;
    let asked = agent.ciba_authorize(&payment(&user)).await.unwrap();

    let err = other_agent
        .ciba_token(&asked.auth_req_id, None)
        .await
        .unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(403), Some("forbidden")));
    let err = agent
        .ciba_approve(&approve_by(&asked.auth_req_id))
        .await
        .unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(403), Some("forbidden")));
    let err = agent
        .ciba_deny(&DenyRequest {
            auth_req_id: Some(asked.auth_req_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403));
    // Reviewers and admins cannot ask or poll as an agent.
    assert_eq!(
        reviewer
            .ciba_authorize(&payment(&user))
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    assert_eq!(
        app.admin
            .ciba_token(&asked.auth_req_id, None)
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    // Agents cannot list approvals.
    assert_eq!(
        agent
            .list_approvals(&Default::default())
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    // Still pending after all that.
    assert_eq!(
        agent.ciba_token(&asked.auth_req_id, None).await.unwrap(),
        TokenResponse::Pending
    );
}

#[tokio::test]
async fn authorize_validates_its_input() {
    let app = spawn_app().await;
    let (user, _) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("bot").await;

    let mut unknown = payment("usr_01aaaaaaaaaaaaaaaaaaaaaaaa");
    assert_eq!(
        code(agent.ciba_authorize(&unknown).await),
        ErrorCode::UnknownUserId.as_str()
    );
    unknown.user_id = "not-an-id".into();
    assert_eq!(
        code(agent.ciba_authorize(&unknown).await),
        "unknown_user_id"
    );

    for expiry in [0, 9, 86_401, -5] {
        let mut input = payment(&user);
        input.requested_expiry = Some(expiry);
        let err = agent.ciba_authorize(&input).await.unwrap_err();
        assert_eq!(err.code(), Some("invalid_request"), "expiry {expiry}");
        assert!(err.to_string().contains("requestedExpiry"));
    }
    let mut input = payment(&user);
    input.binding_message = "  ".into();
    assert_eq!(code(agent.ciba_authorize(&input).await), "invalid_request");
    let mut input = payment(&user);
    input.scope = "".into();
    assert_eq!(code(agent.ciba_authorize(&input).await), "invalid_request");
    let mut input = payment(&user);
    input.context = Some(serde_json::json!(["not", "an", "object"]));
    assert_eq!(code(agent.ciba_authorize(&input).await), "invalid_request");
    let mut input = payment(&user);
    input.context = Some(serde_json::json!({"blob": "x".repeat(17 * 1024)}));
    assert_eq!(code(agent.ciba_authorize(&input).await), "invalid_request");

    // A disabled reviewer can no longer be asked.
    app.admin.disable_user(&user).await.unwrap();
    assert_eq!(
        code(agent.ciba_authorize(&payment(&user)).await),
        "unknown_user_id"
    );
    // Nothing was created by any of the above.
    assert!(
        app.admin
            .list_approvals(&Default::default())
            .await
            .unwrap()
            .approvals
            .is_empty()
    );
}

#[tokio::test]
async fn unknown_auth_req_ids_are_not_found() {
    let app = spawn_app().await;
    let (_, agent) = app.agent("bot").await;
    assert_eq!(
        code(agent.ciba_token("does-not-exist", None).await),
        "not_found"
    );
    let made_up = "A".repeat(43);
    assert_eq!(code(agent.ciba_token(&made_up, None).await), "not_found");
}

#[tokio::test]
async fn restart_keeps_requests_keys_tokens_and_the_audit_chain() {
    let app = spawn_with(|s| s.database.synchronous = "full".into()).await;
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("bot").await;
    let pending = agent.ciba_authorize(&payment(&user)).await.unwrap();
    let decided = agent.ciba_authorize(&payment(&user)).await.unwrap();
    reviewer
        .ciba_approve(&approve_by(&decided.auth_req_id))
        .await
        .unwrap();
    let jwks_before = app.admin.jwks().await.unwrap();
    let events_before = app
        .admin
        .audit_page(None, Some(500))
        .await
        .unwrap()
        .events
        .len();

    let app = app.restart().await;
    let agent = app.client(agent.key().unwrap());
    let reviewer = app.client(reviewer.key().unwrap());
    assert_eq!(
        agent.ciba_token(&pending.auth_req_id, None).await.unwrap(),
        TokenResponse::Pending
    );
    assert!(matches!(
        agent.ciba_token(&decided.auth_req_id, None).await.unwrap(),
        TokenResponse::Approved {
            access_token: Some(_),
            ..
        }
    ));
    reviewer
        .ciba_approve(&approve_by(&pending.auth_req_id))
        .await
        .unwrap();
    assert_eq!(
        app.admin.jwks().await.unwrap(),
        jwks_before,
        "the signing key survives"
    );
    let report = app.admin.audit_verify().await.unwrap();
    assert!(report.ok);
    assert!(report.events_checked as usize > events_before);
}
