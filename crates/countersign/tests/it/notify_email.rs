//! Email notifications through a real SMTP server (aiosmtpd): each reviewer gets their own
//! message; its links open a confirmation page that changes nothing until its form is sent.
use countersign_proto::ciba::TokenResponse;
use countersign_proto::guard::ToolRequest;
use serde_json::{Value, json};

use crate::support::*;

const P: &str = "default";

async fn get(app: &TestApp, url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let res = app.http().get(url).send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.text().await.unwrap())
}

async fn submit(app: &TestApp, link: &str, verdict: &str, comment: &str) -> (u16, String) {
    let token = url::Url::parse(link)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.to_string())
        .unwrap();
    let res = app
        .http()
        .post(app.url("/ui/review"))
        .header("origin", app.base.clone())
        .form(&[
            ("token", token.as_str()),
            ("verdict", verdict),
            ("comment", comment),
        ])
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test]
async fn a_ciba_request_is_emailed_and_decided_on_the_confirmation_page() {
    let smtp = SmtpServer::start().await;
    let app = spawn_with(|s| with_email(s, &smtp.url())).await;
    let (alice, _) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("payments-bot").await;
    let asked = agent.ciba_authorize(&payment(&alice)).await.unwrap();

    let mail = smtp.wait_for(1).await.remove(0);
    assert_eq!(mail.to(), "alice@example.com");
    assert_eq!(mail.subject(), "Approval required: approve:payment");
    assert_eq!(
        mail.header("Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
    assert!(mail.message_id().contains("apr_"), "{}", mail.message_id());
    // Each argument value is isolated, so right-to-left text cannot reorder the rest.
    assert!(mail.text().contains("\u{2068}\"Acme Corp\"\u{2069}"));
    let text = as_read(&mail.text());
    assert!(text.contains("The agent's own words"), "{text}");
    assert!(text.contains("Approve payment of $500 to Acme Corp?"));
    assert!(text.contains("\"recipient\": \"Acme Corp\""));
    assert!(text.contains("payments-bot (trust: standard)"));
    let html = mail.html();
    assert!(html.contains("View in dashboard") && html.contains(">Approve</a>"));
    let approve = mail.link("Approve");
    assert!(approve.contains("/ui/review?token="), "{approve}");
    assert_ne!(approve, mail.link("Reject"));

    // A mail scanner may fetch the link any number of times: nothing changes.
    for _ in 0..2 {
        let (status, headers, body) = get(&app, &approve).await;
        assert_eq!(status, 200);
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert!(body.contains("data-review-form"));
        assert!(body.contains("Approve payment of $500 to Acme Corp?"));
    }
    assert_eq!(
        agent.ciba_token(&asked.auth_req_id, None).await.unwrap(),
        TokenResponse::Pending
    );

    let (status, body) = submit(&app, &approve, "approve", "checked the invoice").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("Approved. The agent learns it now."),
        "{body}"
    );
    match agent.ciba_token(&asked.auth_req_id, Some(5)).await.unwrap() {
        TokenResponse::Approved { access_token, .. } => assert!(access_token.is_some()),
        other => panic!("expected approved, got {other:?}"),
    }
    let events = app.admin.audit_page(None, Some(500)).await.unwrap().events;
    let decision = events
        .iter()
        .find(|e| e.action == "approval.approved")
        .unwrap();
    assert_eq!(decision.details["channel"], "email");

    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"countersign_notifications_total{channel="email",outcome="delivered"}"#),
        "{metrics}"
    );

    // The link now shows the outcome, and a second submission changes nothing.
    let (_, _, body) = get(&app, &approve).await;
    assert!(!body.contains("data-review-form"));
    assert!(body.contains("already decided"), "{body}");
    let (status, body) = submit(&app, &approve, "reject", "changed my mind").await;
    assert_eq!(status, 200);
    assert!(body.contains("already decided"), "{body}");
    assert_eq!(
        app.admin
            .get_approval(&decision.subject)
            .await
            .unwrap()
            .status,
        countersign_proto::ApprovalStatus::Approved
    );
}

fn refund() -> ToolRequest {
    ToolRequest {
        session_id: "session_abc123".into(),
        tool_call: json!({"name": "payment_refund", "arguments": {"amount": 500, "customer_id": "cust_123"}}),
        scope: None,
        reason: Some("<b>Customer</b> asked for a refund".into()),
        on_behalf_of: None,
        annotations: None,
        mcp: None,
    }
}

#[tokio::test]
async fn each_primary_gets_their_own_links_and_one_rejection_closes_both() {
    let smtp = SmtpServer::start().await;
    let app = spawn_with(|s| with_email(s, &smtp.url())).await;
    finance_team(&app, Some(15)).await;
    app.admin
        .create_policy(P, &finance_policy(&["email"]))
        .await
        .unwrap();
    let (_, agent) = app.agent("support-bot").await;
    let decision = agent.guard_tool(P, &refund()).await.unwrap();
    let id = decision.approval_id.unwrap();

    let mails = smtp.wait_for(2).await;
    let mut to: Vec<_> = mails.iter().map(|m| m.to()).collect();
    to.sort();
    assert_eq!(
        to,
        ["alice@company.com", "bob@company.com"],
        "primaries only"
    );
    let bob = mails.iter().find(|m| m.to() == "bob@company.com").unwrap();
    let alice = mails
        .iter()
        .find(|m| m.to() == "alice@company.com")
        .unwrap();
    assert_eq!(bob.subject(), "Approval required: payment_refund");
    let text = as_read(&bob.text());
    for fact in [
        "Tool: payment_refund",
        "Risk score:",
        "Session: session_abc123",
        "\"customer_id\": \"cust_123\"",
        "<b>Customer</b> asked for a refund",
    ] {
        assert!(text.contains(fact), "{fact} missing from:\n{text}");
    }
    // The agent's words are escaped in the HTML part.
    assert!(bob.html().contains("&#60;b&#62;Customer&#60;/b&#62;"));
    assert!(!bob.html().contains("<b>Customer"));
    assert_ne!(bob.link("Reject"), alice.link("Reject"));

    // A forged token changes nothing.
    let forged = bob.link("Reject").replace("token=", "token=x");
    let (status, _, _) = get(&app, &forged).await;
    assert_eq!(status, 400);

    let (status, body) = submit(&app, &bob.link("Reject"), "reject", "not this customer").await;
    assert_eq!(status, 200);
    assert!(body.contains("Rejected."), "{body}");
    let view = agent.guard_approval(P, &id, None).await.unwrap();
    assert_eq!(view.status, countersign_proto::ApprovalStatus::Rejected);
    assert_eq!(view.decisions[0].channel, "email");
    assert_eq!(view.decisions[0].reviewer, "bob@company.com");

    // Alice's link now tells her it is over.
    let (_, _, body) = get(&app, &alice.link("Approve")).await;
    assert!(body.contains("it is rejected"), "{body}");

    let log = settled_deliveries(&app, &id).await;
    let emails: Vec<_> = log.iter().filter(|d| d["channel"] == "email").collect();
    assert_eq!(emails.len(), 2);
    for d in emails {
        assert_eq!(d["state"], "delivered");
        assert_eq!(d["status_code"], 250);
        assert_eq!(d["event"], "requested");
    }
}

#[tokio::test]
async fn a_policy_without_email_sends_none_and_risky_links_need_a_sign_in() {
    let smtp = SmtpServer::start().await;
    let app = spawn_with(|s| with_email(s, &smtp.url())).await;
    finance_team(&app, Some(15)).await;
    let policy_id = app
        .admin
        .create_policy(P, &finance_policy(&["slack"]))
        .await
        .unwrap()
        .id;
    let (_, agent) = app.agent("support-bot").await;
    let first = agent.guard_tool(P, &refund()).await.unwrap();
    // Let the worker fan the request out, then see that nothing was mailed.
    fanned_out(&app).await;
    assert!(smtp.messages().is_empty());
    assert!(
        deliveries(&app, first.approval_id.as_deref().unwrap())
            .await
            .is_empty()
    );

    // Email on, but links decide requests riskier than 0 only after a sign-in.
    let mut email_policy = finance_policy(&["email"]);
    email_policy.name = "With email".into();
    app.admin
        .update_policy(P, &policy_id, &email_policy)
        .await
        .unwrap();
    let res = app
        .http()
        .put(app.url("/v1/admin/notification-channels/email"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"enabled": true, "require_sign_in_above_risk": 0.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut call = refund();
    call.session_id = "another".into();
    let second = agent.guard_tool(P, &call).await.unwrap();
    assert!(second.risk_score > 0.0, "the refund carries some risk");
    let mail = smtp.wait_for(1).await.remove(0);
    let link = mail.link("Approve");
    let (_, _, body) = get(&app, &link).await;
    assert!(!body.contains("data-review-form"));
    assert!(body.contains("Sign in to decide"), "{body}");
    let (status, _) = submit(&app, &link, "approve", "").await;
    assert_eq!(status, 403);
    let view = agent
        .guard_approval(P, second.approval_id.as_deref().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(view.status, countersign_proto::ApprovalStatus::Pending);
}

#[tokio::test]
async fn channel_settings_never_show_their_secrets() {
    let app = spawn_app().await;
    let put = |path: &str, body: Value| {
        app.http()
            .put(app.url(path))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
    };
    let res = put(
        "/v1/admin/notification-channels/slack",
        json!({"bot_token": "xoxb-secret-token", "signing_secret": "shhh-signing", "channel": "#approvals"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(!body.contains("xoxb-secret-token") && !body.contains("shhh-signing"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["slack"]["bot_token_set"], true);
    assert_eq!(v["slack"]["channel"], "#approvals");
    assert!(
        v["slack"]["interactivity_url"]
            .as_str()
            .unwrap()
            .ends_with("/integrations/slack/default/interactivity")
    );
    assert_eq!(v["email"]["smtp_configured"], false);

    // Changing the channel keeps the stored secrets.
    let res = put(
        "/v1/admin/notification-channels/slack",
        json!({"channel": "C024BE91L"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let res = put(
        "/v1/admin/notification-channels/teams",
        json!({"webhook_url": "https://example.webhook.office.com/workflows/secret-sig"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(!body.contains("secret-sig"));

    // Bad input: a clear 4xx, nothing changes.
    for (path, body) in [
        (
            "/v1/admin/notification-channels/slack",
            json!({"channel": "not a channel!"}),
        ),
        (
            "/v1/admin/notification-channels/teams",
            json!({"webhook_url": "ftp://x"}),
        ),
        (
            "/v1/admin/notification-channels/email",
            json!({"require_sign_in_above_risk": 2}),
        ),
    ] {
        let res = put(path, body).await.unwrap();
        assert_eq!(res.status(), 400, "{path}");
    }
    let res = put(
        "/v1/admin/notification-channels/email",
        json!({"enabled": "yes"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 422, "a body of the wrong shape");
    let v: Value = app
        .http()
        .get(app.url("/v1/admin/notification-channels"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["slack"]["channel"], "C024BE91L");
    assert_eq!(v["teams"]["webhook_url_set"], true);
    for secret in ["xoxb-secret-token", "shhh-signing", "secret-sig"] {
        assert!(!v.to_string().contains(secret));
    }

    // Reviewers and agents cannot read them.
    let (_, reviewer) = app.reviewer("r@example.com").await;
    let res = app
        .http()
        .get(app.url("/v1/admin/notification-channels"))
        .bearer_auth(reviewer.key().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn people_choose_their_channels() {
    let smtp = SmtpServer::start().await;
    let app = spawn_with(|s| with_email(s, &smtp.url())).await;
    let (alice, alice_client) = app.reviewer("alice@example.com").await;
    let (_, agent) = app.agent("bot").await;
    let res = app
        .http()
        .put(app.url("/v1/me/notification-preferences"))
        .bearer_auth(alice_client.key().unwrap())
        .json(&json!({"email": false, "slack_user_id": "U024BE7LH"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["email"], false);
    assert_eq!(v["push"], true);
    assert_eq!(v["slack_user_id"], "U024BE7LH");
    // Bob keeps the default, so his email shows the worker did its work.
    let (bob, _) = app.reviewer("bob@example.com").await;
    agent.ciba_authorize(&payment(&alice)).await.unwrap();
    agent.ciba_authorize(&payment(&bob)).await.unwrap();
    smtp.wait_for(1).await;
    fanned_out(&app).await;
    let to: Vec<_> = smtp.messages().iter().map(|m| m.to()).collect();
    assert_eq!(to, ["bob@example.com"], "alice turned email off");

    // Another user cannot take the same Slack id; a bad id is refused.
    let res = app
        .http()
        .put(app.url(&format!("/v1/admin/users/{bob}/notification-preferences")))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"slack_user_id": "U024BE7LH"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let res = app
        .http()
        .put(app.url(&format!("/v1/admin/users/{bob}/notification-preferences")))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"slack_user_id": "bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn escalation_emails_the_next_reviewers_and_expiry_follows_up() {
    let smtp = SmtpServer::start().await;
    let app = spawn_with_clock_and(|s| with_email(s, &smtp.url())).await;
    finance_team(&app, Some(15)).await;
    app.admin
        .create_policy(P, &finance_policy(&["email"]))
        .await
        .unwrap();
    let (_, agent) = app.agent("support-bot").await;
    let id = agent
        .guard_tool(P, &refund())
        .await
        .unwrap()
        .approval_id
        .unwrap();
    let first = smtp.wait_for(2).await;
    assert!(first.iter().all(|m| m.to() != "carol@company.com"));

    // The group's backups join after 15 minutes: carol is told then, and only then.
    let clock = app.clock.clone().unwrap();
    clock.advance(chrono::Duration::minutes(16));
    let carol = smtp.wait_for_mail_to("carol@company.com").await;
    assert_eq!(
        carol.subject(),
        "Escalated, approval required: payment_refund"
    );
    assert!(carol.text().contains("escalated to you"));
    assert!(carol.link("Approve").contains("token="));

    // Nobody decides: everyone told is told it expired, without buttons.
    clock.advance(chrono::Duration::minutes(15));
    let expired_subject = "Expired without a decision: payment_refund";
    let mails = smtp
        .wait_until("three expiry emails", |mails| {
            let mut to: Vec<_> = mails
                .iter()
                .filter(|m| m.subject() == expired_subject)
                .map(|m| m.to())
                .collect();
            to.sort();
            to.dedup();
            to.len() >= 3
        })
        .await;
    let expired: Vec<_> = mails
        .iter()
        .filter(|m| m.subject() == expired_subject)
        .collect();
    let mut to: Vec<_> = expired.iter().map(|m| m.to()).collect();
    to.sort();
    to.dedup();
    assert_eq!(
        to,
        ["alice@company.com", "bob@company.com", "carol@company.com"]
    );
    assert!(expired.iter().all(|m| !m.text().contains("Approve: ")));
    let log = settled_deliveries(&app, &id).await;
    assert_eq!(
        log.iter()
            .filter(|d| d["channel"] == "email" && d["event"] == "expired")
            .count(),
        3
    );
}
