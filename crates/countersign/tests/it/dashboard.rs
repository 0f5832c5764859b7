//! The reviewer dashboard over HTTP: one-time links, sessions and their timeouts, anti-forgery
//! tokens, security headers, and that people see and decide only their tenant's and their
//! group's requests. (Passkey ceremonies run in the browser tests under e2e/dashboard.)
use std::time::Duration;

use chrono::Duration as Span;
use countersign_core::dashboard::{self, LinkKind, SessionLimits, SessionProof};
use countersign_core::{Error, secret};
use countersign_proto::admin::{CreateInvitation, CreateSignInLink, CreateTenant};
use countersign_proto::guard::{
    ApprovalConfig, GroupInput, MemberInput, MemberRole, PolicyAction, PolicyInput, ToolRequest,
};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::json;

use crate::support::*;

fn error_code(headers: &HeaderMap) -> &str {
    headers
        .get("x-error-code")
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

#[tokio::test]
async fn a_sign_in_link_works_once_and_never_on_get() {
    let app = spawn_app().await;
    let (user_id, _) = app.reviewer("rita@example.com").await;
    let link = app
        .admin
        .create_sign_in_link(&CreateSignInLink {
            user_id: Some(user_id.clone()),
            email: None,
        })
        .await
        .unwrap();
    assert_eq!(link.view.kind, "sign_in");
    assert_eq!(link.view.state, "pending");
    let token = token_of(&link.url);
    assert!(secret::looks_like_token(&token), "256-bit token");
    // Only the hash is stored.
    let stored = app
        .query_i64(&format!(
            "SELECT COUNT(*) FROM login_links WHERE token_hash = '{}'",
            secret::hash_secret(&token)
        ))
        .await;
    assert_eq!(stored, 1);
    let clear = app
        .query_i64(&format!(
            "SELECT COUNT(*) FROM login_links WHERE token_hash = '{token}' OR id = '{token}'"
        ))
        .await;
    assert_eq!(clear, 0);

    let mut b = Browser::new(&app);
    // Opening the link (as a mail scanner would) signs nobody in and spends nothing.
    let (status, headers, body) = b.get(&format!("/ui/sign-in/link?token={token}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get(SET_COOKIE).is_none());
    assert!(body.contains("rita@example.com"));
    b.sign_in(&link.url).await;

    let mut again = Browser::new(&app);
    let (status, headers, body) = again
        .post("/ui/sign-in/link", form(&[("token", &token)]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&headers), "link_unusable");
    assert!(headers.get(SET_COOKIE).is_none());
    assert!(body.contains("invalid, expired or already used"));
    let (status, _, _) = again
        .post("/ui/sign-in/link", form(&[("token", "nonsense")]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn invitations_create_the_user_expire_and_are_spent_once() {
    let app = spawn_with_clock().await;
    let clock = app.clock.clone().unwrap();
    let invitation = app
        .admin
        .create_invitation(&CreateInvitation {
            email: "New.Person@Example.com".into(),
            name: None,
            is_admin: true,
        })
        .await
        .unwrap();
    assert_eq!(invitation.email, "new.person@example.com");
    let user = app.admin.get_user(&invitation.view.user_id).await.unwrap();
    assert!(user.is_admin);
    assert_eq!(user.name, "new.person");
    let listed = app.admin.list_invitations().await.unwrap();
    assert_eq!(listed.invitations.len(), 1);
    assert!(
        !serde_json::to_string(&listed)
            .unwrap()
            .contains(&token_of(&invitation.url))
    );

    let mut b = Browser::new(&app);
    let (status, _, body) = b
        .get(&format!("/ui/invite?token={}", token_of(&invitation.url)))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Create a passkey"));

    // Spent exactly once, in the transaction that registers the passkey (both backends).
    let store = &app.server.state.store;
    let now = app.server.state.clock.now();
    let limits = SessionLimits {
        idle: Span::minutes(30),
        absolute: Span::hours(8),
    };
    let stored_user = store.get_user("default", &user.id).await.unwrap().unwrap();
    let proof = |n: u8| SessionProof::Link {
        token_hash: secret::hash_secret(&token_of(&invitation.url)),
        kind: LinkKind::Invitation,
        new_passkey: Some(
            dashboard::new_passkey(
                &stored_user,
                format!("cred-{n}"),
                "laptop",
                "{}".into(),
                now,
            )
            .unwrap(),
        ),
    };
    let actor = countersign_core::audit::Actor::system("test");
    store
        .start_session(
            dashboard::new_session(&stored_user, "invitation", "t", limits, now),
            proof(1),
            actor.clone(),
        )
        .await
        .unwrap();
    let second = store
        .start_session(
            dashboard::new_session(&stored_user, "invitation", "t", limits, now),
            proof(2),
            actor.clone(),
        )
        .await;
    assert!(
        matches!(&second, Err(Error::Invalid { code, .. }) if code.as_str() == "link_unusable"),
        "{second:?}"
    );
    // The refused attempt changed nothing: one passkey, one session.
    assert_eq!(
        store
            .list_passkeys("default", &user.id)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .list_sessions("default", &user.id)
            .await
            .unwrap()
            .len(),
        1
    );
    let (status, headers, _) = b
        .get(&format!("/ui/invite?token={}", token_of(&invitation.url)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&headers), "link_unusable");

    // An unused invitation stops working when it expires (7 days by default).
    let later = app
        .admin
        .create_invitation(&CreateInvitation {
            email: "late@example.com".into(),
            name: Some("Late".into()),
            is_admin: false,
        })
        .await
        .unwrap();
    clock.advance(Span::days(7) + Span::seconds(1));
    let (status, headers, _) = b
        .get(&format!("/ui/invite?token={}", token_of(&later.url)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&headers), "link_unusable");
    let res = reqwest::Client::new()
        .post(app.url("/ui/invite/begin"))
        .json(&json!({"token": token_of(&later.url)}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "link_unusable");
    let states: Vec<String> = app
        .admin
        .list_invitations()
        .await
        .unwrap()
        .invitations
        .into_iter()
        .map(|i| i.state)
        .collect();
    assert_eq!(states, vec!["expired".to_string(), "used".to_string()]);

    // A revoked invitation is refused too.
    let revoked = app
        .admin
        .create_invitation(&CreateInvitation {
            email: "gone@example.com".into(),
            name: None,
            is_admin: false,
        })
        .await
        .unwrap();
    assert_eq!(
        app.admin
            .revoke_invitation(&revoked.view.id)
            .await
            .unwrap()
            .state,
        "revoked"
    );
    let (status, _, _) = b
        .get(&format!("/ui/invite?token={}", token_of(&revoked.url)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sessions_end_when_idle_at_their_absolute_limit_and_on_sign_out() {
    let app = spawn_with_clock().await;
    let clock = app.clock.clone().unwrap();
    app.reviewer("rita@example.com").await;

    // Idle: one hour without a visit ends the session.
    let mut idle = signed_in(&app, "rita@example.com").await;
    clock.advance(Span::minutes(59));
    assert_eq!(idle.get("/ui/queue").await.0, StatusCode::OK);
    clock.advance(Span::minutes(59));
    assert_eq!(
        idle.get("/ui/queue").await.0,
        StatusCode::OK,
        "each visit counts"
    );
    clock.advance(Span::minutes(61));
    let (status, headers, _) = idle.get("/ui/queue").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        headers[LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/ui/sign-in")
    );

    // Absolute: twelve hours after sign-in, however active.
    let mut busy = signed_in(&app, "rita@example.com").await;
    for _ in 0..23 {
        clock.advance(Span::minutes(30));
        assert_eq!(busy.get("/ui/queue").await.0, StatusCode::OK);
    }
    clock.advance(Span::minutes(31));
    assert_eq!(busy.get("/ui/queue").await.0, StatusCode::SEE_OTHER);

    // Sign-out ends the session on the server, not only in the browser.
    let mut b = signed_in(&app, "rita@example.com").await;
    let old_cookie = b.cookie.clone();
    let csrf = b.csrf();
    let (status, headers, _) = b.post("/ui/sign-out", form(&[("csrf", &csrf)])).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(headers[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    b.cookie = old_cookie;
    assert_eq!(b.get("/ui/queue").await.0, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_person_sees_their_sessions_and_ends_the_others() {
    let app = spawn_app().await;
    let (rita_id, _) = app.reviewer("rita@example.com").await;
    app.reviewer("otto@example.com").await;
    let mut laptop = signed_in(&app, "rita@example.com").await;
    let mut phone = signed_in(&app, "rita@example.com").await;
    let mut otto = signed_in(&app, "otto@example.com").await;

    let (_, _, page) = laptop.get("/ui/account").await;
    assert_eq!(page.matches("data-session=").count(), 2);
    // The session cookie itself never appears on a page.
    let cookie_value = laptop.cookie.clone().unwrap();
    assert!(!page.contains(cookie_value.split('=').nth(1).unwrap()));

    // Someone else's session cannot be ended from here.
    let sessions = app
        .server
        .state
        .store
        .list_sessions("default", &rita_id)
        .await
        .unwrap();
    let otto_sessions = app
        .server
        .state
        .store
        .list_sessions(
            "default",
            &app.admin
                .list_users()
                .await
                .unwrap()
                .users
                .iter()
                .find(|u| u.email == "otto@example.com")
                .unwrap()
                .id,
        )
        .await
        .unwrap();
    let csrf = laptop.csrf();
    let (status, _, _) = laptop
        .post(
            &format!("/ui/account/sessions/{}/revoke", otto_sessions[0].id),
            form(&[("csrf", &csrf)]),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(otto.get("/ui/queue").await.0, StatusCode::OK);

    assert_eq!(sessions.len(), 2);
    let (status, _, _) = laptop
        .post(
            "/ui/account/sessions/revoke-others",
            form(&[("csrf", &csrf)]),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(phone.get("/ui/queue").await.0, StatusCode::SEE_OTHER);
    assert_eq!(laptop.get("/ui/queue").await.0, StatusCode::OK);
    let (_, _, page) = laptop.get("/ui/account").await;
    assert_eq!(page.matches("data-session=").count(), 1);
}

#[tokio::test]
async fn every_form_post_needs_the_sessions_anti_forgery_token() {
    let app = spawn_app().await;
    let (rita_id, _) = app.reviewer("rita@example.com").await;
    let (_, agent) = app.agent("bot").await;
    agent.ciba_authorize(&payment(&rita_id)).await.unwrap();
    let id = app
        .admin
        .list_approvals(&Default::default())
        .await
        .unwrap()
        .approvals[0]
        .id
        .clone();
    let mut b = signed_in(&app, "rita@example.com").await;
    let (_, _, page) = b.get(&format!("/ui/requests/{id}")).await;
    assert!(page.contains("Approve"));
    let csrf = b.csrf();
    let approve = format!("/ui/requests/{id}/approve");

    for (body, headers) in [
        // No token at all.
        (form(&[("comment", "forged")]), vec![]),
        // Another session's token.
        (
            form(&[("comment", "forged"), ("csrf", &dashboard::csrf_token("x"))]),
            vec![],
        ),
        // The right token, sent from another site.
        (
            form(&[("comment", "forged"), ("csrf", &csrf)]),
            vec![("origin", "https://evil.example")],
        ),
    ] {
        let (status, headers, _) = b.post_with(&approve, body, &headers).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(error_code(&headers), "csrf_failed");
    }
    // Sign-out and admin forms are guarded the same way.
    let (status, _, _) = b.post("/ui/sign-out", String::new()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(b.get("/ui/queue").await.0, StatusCode::OK);
    assert_eq!(
        app.admin.get_approval(&id).await.unwrap().status.as_str(),
        "pending",
        "refused posts changed nothing"
    );

    // The token in a header (as htmx sends it) or in the form works; the decision is recorded
    // as made in the dashboard.
    let (status, _, panel) = b
        .post_with(
            &approve,
            form(&[("comment", "looks right")]),
            &[("x-csrf-token", &csrf), ("hx-request", "true")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(panel.contains("data-status=\"approved\""));
    let view = app.admin.get_approval(&id).await.unwrap();
    assert_eq!(view.status.as_str(), "approved");
    assert_eq!(view.comment.as_deref(), Some("looks right"));
    let audit = app.admin.audit_page(None, Some(500)).await.unwrap();
    let decided = audit
        .events
        .iter()
        .find(|e| e.action == "approval.approved")
        .unwrap();
    assert_eq!(decided.details["channel"], "dashboard");
    assert_eq!(decided.actor_id, rita_id);

    // Deciding again shows the outcome instead of failing.
    let (status, _, page) = b
        .post(
            &format!("/ui/requests/{id}/reject"),
            form(&[("csrf", &csrf), ("reason", "late")]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("This request was already decided: it is approved."));
}

#[tokio::test]
async fn reviewers_never_see_or_decide_another_tenants_requests() {
    let app = spawn_app().await;
    let (rita_id, _) = app.reviewer("rita@example.com").await;
    let (_, agent) = app.agent("bot").await;
    let other = app
        .admin
        .create_tenant(&CreateTenant {
            id: "acme".into(),
            name: None,
        })
        .await
        .unwrap();
    let acme_admin = app.client(&other.admin_key.key);
    // The same email exists in both tenants; a link signs in one user of one tenant.
    let (acme_rita, _) = reviewer_in(&acme_admin, "rita@example.com").await;
    let (_, acme_agent) = agent_in(&acme_admin, "acme-bot").await;
    let link = acme_admin
        .create_sign_in_link(&CreateSignInLink {
            user_id: Some(acme_rita.clone()),
            email: None,
        })
        .await
        .unwrap();
    let mut acme = Browser::new(&app);
    acme.sign_in(&link.url).await;

    let mut stream = reqwest::Client::new()
        .get(app.url("/ui/events"))
        .header("cookie", acme.cookie.clone().unwrap())
        .send()
        .await
        .unwrap();

    agent.ciba_authorize(&payment(&rita_id)).await.unwrap();
    let theirs = app
        .admin
        .list_approvals(&Default::default())
        .await
        .unwrap()
        .approvals[0]
        .id
        .clone();
    acme_agent
        .ciba_authorize(&payment(&acme_rita))
        .await
        .unwrap();
    let ours = acme_admin
        .list_approvals(&Default::default())
        .await
        .unwrap()
        .approvals[0]
        .id
        .clone();

    // The live stream tells only of this tenant's request.
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(&ours) {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("the event arrives")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!seen.contains(&theirs), "{seen}");

    let (_, _, queue) = acme.get("/ui/queue").await;
    assert!(queue.contains(&ours));
    assert!(!queue.contains(&theirs));
    let (status, _, _) = acme.get(&format!("/ui/requests/{theirs}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let csrf = acme.csrf();
    let (status, _, _) = acme
        .post(
            &format!("/ui/requests/{theirs}/approve"),
            form(&[("csrf", &csrf)]),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.admin
            .get_approval(&theirs)
            .await
            .unwrap()
            .status
            .as_str(),
        "pending"
    );
    // Nor do its admin pages show the other tenant's people.
    acme_admin
        .create_invitation(&CreateInvitation {
            email: "boss@acme.example".into(),
            name: None,
            is_admin: true,
        })
        .await
        .unwrap();
    let boss = acme_admin
        .create_sign_in_link(&CreateSignInLink {
            user_id: None,
            email: Some("boss@acme.example".into()),
        })
        .await
        .unwrap();
    let mut boss_browser = Browser::new(&app);
    boss_browser.sign_in(&boss.url).await;
    let (status, _, people) = boss_browser.get("/ui/admin/users").await;
    assert_eq!(status, StatusCode::OK);
    assert!(people.contains("boss@acme.example"));
    assert!(!people.contains(&rita_id));
    let (status, _, _) = acme.get("/ui/admin/users").await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "reviewers have no admin pages"
    );
}

#[tokio::test]
async fn reviewers_see_and_decide_only_their_groups_tool_calls() {
    let app = spawn_app().await;
    app.reviewer("rita@example.com").await;
    app.reviewer("otto@example.com").await;
    let (_, agent) = app.agent("bot").await;
    for (id, email) in [
        ("group_finance", "rita@example.com"),
        ("group_ops", "otto@example.com"),
    ] {
        app.admin
            .create_group(
                "default",
                &GroupInput {
                    id: Some(id.into()),
                    name: id.into(),
                    members: vec![MemberInput {
                        email: email.into(),
                        role: MemberRole::Primary,
                    }],
                    escalation_minutes: None,
                },
            )
            .await
            .unwrap();
    }
    app.admin
        .create_policy(
            "default",
            &PolicyInput {
                name: "refunds".into(),
                tool_pattern: "payment_*".into(),
                action: PolicyAction::RequireApproval,
                description: None,
                priority: None,
                is_active: None,
                condition: None,
                approval_config: Some(ApprovalConfig {
                    approval_group_id: Some("group_finance".into()),
                    ..ApprovalConfig::default()
                }),
            },
        )
        .await
        .unwrap();
    let decision = agent
        .guard_tool(
            "default",
            &serde_json::from_value::<ToolRequest>(json!({
                "session_id": "s1",
                "tool_call": {"name": "payment_refund", "arguments": {"amount": 500}},
                "reason": "<b>refund</b> please"
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let id = decision.approval_id.unwrap();

    let mut otto = signed_in(&app, "otto@example.com").await;
    let (_, _, queue) = otto.get("/ui/queue").await;
    assert!(!queue.contains(&id));
    assert_eq!(
        otto.get(&format!("/ui/requests/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    let csrf = otto.csrf();
    let (status, _, _) = otto
        .post(
            &format!("/ui/requests/{id}/approve"),
            form(&[("csrf", &csrf)]),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let mut rita = signed_in(&app, "rita@example.com").await;
    let (_, _, queue) = rita.get("/ui/queue").await;
    assert!(queue.contains(&id));
    let (status, _, page) = rita.get(&format!("/ui/requests/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("payment_refund"));
    assert!(page.contains("group_finance"));
    // The agent's words are escaped.
    assert!(
        page.contains("&lt;b&gt;refund&lt;/b&gt; please")
            || page.contains("&#60;b&#62;refund&#60;/b&#62; please"),
        "{page}"
    );
    assert!(!page.contains("<b>refund</b>"));
    let csrf = rita.csrf();
    let (status, _, page) = rita
        .post(
            &format!("/ui/requests/{id}/approve"),
            form(&[("csrf", &csrf)]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("data-status=\"approved\""));
}

#[tokio::test]
async fn pages_carry_strict_security_headers_and_secure_cookies_on_https() {
    let app = spawn_with(|s| s.public_url = Some("https://approvals.example.com".into())).await;
    app.reviewer("rita@example.com").await;
    let url = sign_in_link(&app.admin, "rita@example.com").await;
    assert!(url.starts_with("https://approvals.example.com/ui/sign-in/link?token="));
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(app.url("/ui/sign-in/link"))
        .header("origin", "https://approvals.example.com")
        .form(&[("token", token_of(&url))])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let h = res.headers();
    let cookie = h[SET_COOKIE].to_str().unwrap();
    assert!(
        cookie.starts_with("__Host-countersign_session="),
        "{cookie}"
    );
    for attr in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(h.contains_key("strict-transport-security"));

    // On a local http URL the cookie may go without Secure, and there is no HSTS.
    let local = spawn_app().await;
    local.reviewer("rita@example.com").await;
    let url = sign_in_link(&local.admin, "rita@example.com").await;
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(local.url("/ui/sign-in/link"))
        .form(&[("token", token_of(&url))])
        .send()
        .await
        .unwrap();
    let cookie = res.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(cookie.starts_with("countersign_session="));
    assert!(cookie.contains("HttpOnly") && !cookie.contains("Secure"));
    assert!(!res.headers().contains_key("strict-transport-security"));

    // The root leads to the dashboard; its assets come from the binary.
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(local.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()[LOCATION], "/ui");
    let htmx = reqwest::get(local.url("/ui/static/htmx.min.js"))
        .await
        .unwrap();
    assert_eq!(htmx.status(), StatusCode::OK);
    assert!(htmx.text().await.unwrap().contains("htmx"));
    let manifest: serde_json::Value = reqwest::get(local.url("/ui/manifest.webmanifest"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(manifest["start_url"], "/ui/queue");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_prints_invitation_and_sign_in_links() {
    let app = spawn_app().await;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
            .args(args)
            .env("COUNTERSIGN_URL", &app.base)
            .env("COUNTERSIGN_KEY", ADMIN_KEY)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, url, err) = run(&[
        "admin",
        "invite",
        "cli@example.com",
        "--name",
        "Cli",
        "--admin",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        url.starts_with(&format!("{}/ui/invite?token=", app.base)),
        "{url}"
    );
    assert!(err.contains("cli@example.com"));
    let users = app.admin.list_users().await.unwrap().users;
    assert!(
        users
            .iter()
            .any(|u| u.email == "cli@example.com" && u.is_admin)
    );
    let (code, url, _) = run(&["admin", "sign-in-link", "cli@example.com"]);
    assert_eq!(code, Some(0));
    let mut b = Browser::new(&app);
    b.sign_in(&url).await;
    let (_, _, page) = b.get("/ui/queue").await;
    assert!(page.contains("cli@example.com (admin)"));
    let (code, _, err) = run(&["admin", "sign-in-link", "nobody@example.com"]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("not_found") || err.contains("no such user"),
        "{err}"
    );
}

#[tokio::test]
async fn a_live_stream_ends_when_its_session_ends() {
    let app = spawn_app().await;
    let (rita_id, _) = app.reviewer("rita@example.com").await;
    let (_, agent) = app.agent("bot").await;
    let mut laptop = signed_in(&app, "rita@example.com").await;
    let phone = signed_in(&app, "rita@example.com").await;
    let mut stream = reqwest::Client::new()
        .get(app.url("/ui/events"))
        .header("cookie", phone.cookie.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    laptop.get("/ui/account").await;
    let csrf = laptop.csrf();
    laptop
        .post(
            "/ui/account/sessions/revoke-others",
            form(&[("csrf", &csrf)]),
        )
        .await;
    // The next event finds the session ended: the stream says so and closes.
    agent.ciba_authorize(&payment(&rita_id)).await.unwrap();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Some(chunk) = tokio::time::timeout_at(deadline, stream.chunk())
        .await
        .expect("the stream ends")
        .unwrap()
    {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: signed_out"), "{seen}");
    assert!(
        !seen.contains("apr_"),
        "nothing about requests after the session ended"
    );
}

#[tokio::test]
async fn the_queue_and_the_request_page_show_calls_that_came_through_mcp() {
    let app = spawn_app().await;
    app.reviewer("rita@example.com").await;
    let (_, agent) = app.agent("bot").await;
    app.admin
        .create_group(
            "default",
            &GroupInput {
                id: Some("group_ops".into()),
                name: "ops".into(),
                members: vec![MemberInput {
                    email: "rita@example.com".into(),
                    role: MemberRole::Primary,
                }],
                escalation_minutes: None,
            },
        )
        .await
        .unwrap();
    app.admin
        .create_policy(
            "default",
            &PolicyInput {
                name: "everything".into(),
                tool_pattern: "*".into(),
                action: PolicyAction::RequireApproval,
                description: None,
                priority: None,
                is_active: None,
                condition: None,
                approval_config: Some(ApprovalConfig {
                    approval_group_id: Some("group_ops".into()),
                    ..ApprovalConfig::default()
                }),
            },
        )
        .await
        .unwrap();
    let ask = |body: serde_json::Value| {
        let agent = &agent;
        async move {
            agent
                .guard_tool(
                    "default",
                    &serde_json::from_value::<ToolRequest>(body).unwrap(),
                )
                .await
                .unwrap()
                .approval_id
                .unwrap()
        }
    };
    // Through MCP, with a right-to-left server name and hints: destructive, open world.
    let mcp = ask(json!({
        "session_id": "s1",
        "tool_call": {"name": "delete_file", "arguments": {"path": "/srv/a"}},
        "annotations": {"destructiveHint": true},
        "mcp": {"server": "קבצים", "client": "claude-desktop <1.2.0>"},
    }))
    .await;
    // Through MCP, read-only and closed-world.
    let reading = ask(json!({
        "session_id": "s1",
        "tool_call": {"name": "read_file", "arguments": {"path": "/srv/a"}},
        "annotations": {"readOnlyHint": true, "openWorldHint": false},
        "mcp": {"server": "files"},
    }))
    .await;
    // Not through MCP.
    let direct = ask(json!({
        "session_id": "s1",
        "tool_call": {"name": "payment_refund", "arguments": {"amount": 5}},
    }))
    .await;

    let mut rita = signed_in(&app, "rita@example.com").await;
    let (_, _, queue) = rita.get("/ui/queue").await;
    let card = |id: &str| {
        let start = queue
            .find(&format!("data-request-id=\"{id}\""))
            .unwrap_or_else(|| panic!("{id} is not in the queue"));
        let end = queue[start..].find("</li>").unwrap() + start;
        queue[start..end].to_string()
    };
    let mcp_card = card(&mcp);
    assert!(mcp_card.contains("via MCP"), "{mcp_card}");
    assert!(
        mcp_card.contains("<bdi dir=\"auto\" data-mcp-server>קבצים</bdi>"),
        "{mcp_card}"
    );
    // The client is the gateway's words: escaped and isolated.
    assert!(
        mcp_card.contains("<bdi dir=\"auto\" data-mcp-client>claude-desktop &lt;1.2.0&gt;</bdi>")
            || mcp_card
                .contains("<bdi dir=\"auto\" data-mcp-client>claude-desktop &#60;1.2.0&#62;</bdi>"),
        "{mcp_card}"
    );
    assert!(mcp_card.contains("data-hint=\"destructive\""), "{mcp_card}");
    assert!(mcp_card.contains("data-hint=\"open-world\""), "{mcp_card}");
    assert!(!mcp_card.contains("data-hint=\"read-only\""), "{mcp_card}");
    let reading_card = card(&reading);
    assert!(reading_card.contains("data-mcp-server>files</bdi>"));
    assert!(reading_card.contains("data-hint=\"read-only\""));
    assert!(!reading_card.contains("data-hint=\"destructive\""));
    assert!(!reading_card.contains("data-hint=\"open-world\""));
    assert!(!reading_card.contains("data-mcp-client"));
    assert!(!card(&direct).contains("data-mcp"));

    let (status, _, page) = rita.get(&format!("/ui/requests/{mcp}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("via MCP"), "{page}");
    assert!(page.contains("<bdi dir=\"auto\" data-mcp-server>קבצים</bdi>"));
    assert!(page.contains("data-hint=\"destructive\""));
    assert!(page.contains("not verified"));
    let (_, _, page) = rita.get(&format!("/ui/requests/{direct}")).await;
    assert!(!page.contains("data-mcp"));
}
