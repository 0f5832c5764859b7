#![allow(dead_code)]

use std::sync::Arc;

use chrono::Utc;
use countersign_client::Client;
use countersign_core::ManualClock;
use countersign_proto::TrustLevel;
use countersign_proto::admin::{CreateAgent, CreateApiKey, KeyRole};
use countersign_proto::ciba::AuthorizeRequest;
use countersign_server::{RunningApp, Settings};
use tempfile::TempDir;

pub const ADMIN_KEY: &str = "csk_test-admin-key-0123456789-abcdefghijklmnop";

pub struct TestApp {
    pub server: RunningApp,
    pub dir: Arc<TempDir>,
    pub admin: Client,
    pub base: String,
    pub clock: Option<ManualClock>,
}

pub fn settings(dir: &TempDir) -> Settings {
    let mut s = Settings::default();
    s.listen = "127.0.0.1:0".into();
    s.data_dir = dir.path().to_path_buf();
    s.bootstrap_admin_key = Some(ADMIN_KEY.into());
    s.database.synchronous = "normal".into();
    s.requests.sweep_interval_ms = 50;
    s
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut s = settings(&dir);
    configure(&mut s);
    start(dir, s, None).await
}

/// A server whose time moves only when the test says so.
pub async fn spawn_with_clock() -> TestApp {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let s = settings(&dir);
    start(dir, s, Some(ManualClock::new(Utc::now()))).await
}

pub async fn start(dir: Arc<TempDir>, settings: Settings, clock: Option<ManualClock>) -> TestApp {
    let app = match &clock {
        Some(c) => countersign_server::build_with_clock(settings, Arc::new(c.clone())).await,
        None => countersign_server::build(settings).await,
    }
    .unwrap();
    let server = app.spawn();
    let base = server.base_url.clone();
    TestApp {
        admin: Client::new(&base, Some(ADMIN_KEY.into())).unwrap(),
        server,
        dir,
        base,
        clock,
    }
}

impl TestApp {
    /// Stops this server and starts a new one on the same data directory.
    pub async fn restart(self) -> TestApp {
        let dir = self.dir.clone();
        let clock = self.clock.clone();
        self.server.stop().await.unwrap();
        let s = settings(&dir);
        start(dir, s, clock).await
    }

    pub fn anonymous(&self) -> Client {
        Client::new(&self.base, None).unwrap()
    }

    pub fn client(&self, key: &str) -> Client {
        Client::new(&self.base, Some(key.to_string())).unwrap()
    }

    pub fn db_path(&self) -> std::path::PathBuf {
        self.dir.path().join("countersign.db")
    }

    /// A reviewer and a client acting with their key.
    pub async fn reviewer(&self, email: &str) -> (String, Client) {
        reviewer_in(&self.admin, email).await
    }

    /// An agent and a client acting with its key.
    pub async fn agent(&self, name: &str) -> (String, Client) {
        agent_in(&self.admin, name).await
    }

    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

pub async fn reviewer_in(admin: &Client, email: &str) -> (String, Client) {
    let user = admin.create_user(email, "A Reviewer").await.unwrap();
    let key = admin
        .create_api_key(&CreateApiKey {
            role: KeyRole::Reviewer,
            user_id: Some(user.id.clone()),
            agent_id: None,
            name: None,
        })
        .await
        .unwrap();
    (user.id, admin.with_key(key.key))
}

pub async fn agent_in(admin: &Client, name: &str) -> (String, Client) {
    let agent = admin
        .create_agent(&CreateAgent {
            name: name.into(),
            trust_level: TrustLevel::Standard,
        })
        .await
        .unwrap();
    let key = admin
        .create_api_key(&CreateApiKey {
            role: KeyRole::Agent,
            user_id: None,
            agent_id: Some(agent.id.clone()),
            name: None,
        })
        .await
        .unwrap();
    (agent.id, admin.with_key(key.key))
}

pub fn payment(user_id: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        user_id: user_id.to_string(),
        scope: "approve:payment".into(),
        binding_message: "Approve payment of $500 to Acme Corp?".into(),
        requested_expiry: Some(300),
        context: Some(
            serde_json::json!({"amount": 500, "recipient": "Acme Corp", "currency": "USD"}),
        ),
    }
}

/// The error code of a failed call.
pub fn code<T: std::fmt::Debug>(r: Result<T, countersign_client::ClientError>) -> String {
    r.expect_err("expected an error")
        .code()
        .unwrap_or("<no code>")
        .to_string()
}
