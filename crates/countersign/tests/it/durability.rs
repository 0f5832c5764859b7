//! A 2xx answer means the change is on disk: a crash (SIGKILL) of the embedded-SQLite server
//! loses nothing it acknowledged.
use std::sync::Arc;
use std::time::{Duration, Instant};

use countersign_client::Client;
use countersign_proto::ciba::TokenResponse;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_loses_no_acknowledged_request() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .env("COUNTERSIGN_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
        .env("COUNTERSIGN_LOG__LEVEL", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let admin = Client::new(&format!("http://127.0.0.1:{port}"), Some(ADMIN_KEY.into())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin.ready().await.is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (user, _) = reviewer_in(&admin, "alice@example.com").await;
    let (_, agent) = agent_in(&admin, "bot").await;

    let accepted = kill_under_load(&mut child, &agent, &user).await;

    // The same data directory, served again.
    let app = start(dir.clone(), settings(&dir), None).await;
    let agent = app.client(agent.key().unwrap());
    for id in &accepted {
        assert_eq!(
            agent.ciba_token(id, None).await.unwrap(),
            TokenResponse::Pending,
            "an acknowledged request was lost"
        );
    }
    assert!(app.admin.audit_verify().await.unwrap().ok);
}

/// Notifications are written with the change that causes them: a server killed while its
/// SMTP server is down still sends every email, once, when both are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_while_smtp_is_down_loses_no_email_and_sends_none_twice() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let port = free_port();
    let smtp_port = free_port();
    let smtp_url = format!("smtp://127.0.0.1:{smtp_port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .env("COUNTERSIGN_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
        .env("COUNTERSIGN_LOG__LEVEL", "error")
        .env("COUNTERSIGN_NOTIFICATIONS__EMAIL__SMTP_URL", &smtp_url)
        .env(
            "COUNTERSIGN_NOTIFICATIONS__EMAIL__FROM",
            "Countersign <countersign@example.com>",
        )
        .env("COUNTERSIGN_OUTBOUND__POLL_INTERVAL_MS", "50")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let admin = Client::new(&format!("http://127.0.0.1:{port}"), Some(ADMIN_KEY.into())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin.ready().await.is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (alice, _) = reviewer_in(&admin, "alice@example.com").await;
    let (bob, _) = reviewer_in(&admin, "bob@example.com").await;
    let (_, agent) = agent_in(&admin, "bot").await;
    for user in [&alice, &bob, &alice] {
        agent.ciba_authorize(&payment(user)).await.unwrap();
    }
    // Wait until the worker tried and failed (the SMTP server is down), then kill it.
    let db = dir.path().join("countersign.db");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let failed_attempts: i64 = rusqlite::Connection::open(&db)
            .and_then(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM outbox WHERE channel = 'email' AND last_error IS NOT NULL",
                    [],
                    |r| r.get(0),
                )
            })
            .unwrap_or(0);
        if failed_attempts == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "no delivery was attempted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    let _ = child.wait();

    let smtp = SmtpServer::start_on(smtp_port).await;
    let mut s = settings(&dir);
    with_email(&mut s, &smtp_url);
    let _app = start(dir.clone(), s, None).await;
    let mails = smtp.wait_for(3).await;
    // Give a duplicate every chance to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mails = if smtp.messages().len() > mails.len() {
        smtp.messages()
    } else {
        mails
    };
    let mut to: Vec<_> = mails.iter().map(|m| m.to()).collect();
    to.sort();
    assert_eq!(
        to,
        ["alice@example.com", "alice@example.com", "bob@example.com"],
        "each reviewer gets exactly one email per request"
    );
    let mut ids: Vec<_> = mails.iter().map(|m| m.message_id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3);
}
