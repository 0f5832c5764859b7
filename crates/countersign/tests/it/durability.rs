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
