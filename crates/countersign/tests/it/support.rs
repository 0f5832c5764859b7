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
/// The `metrics.token` of test servers.
pub const METRICS_TOKEN: &str = "test-metrics-token-0123456789";

pub struct TestApp {
    pub server: RunningApp,
    pub dir: Arc<TempDir>,
    pub admin: Client,
    pub base: String,
    pub clock: Option<ManualClock>,
    /// The PostgreSQL database of this test, when the suite runs on PostgreSQL.
    pub database: DatabaseGuard,
}

/// Drops a test's PostgreSQL database when the test ends.
pub struct DatabaseGuard(Option<String>);

impl DatabaseGuard {
    pub fn new(url: Option<String>) -> DatabaseGuard {
        DatabaseGuard(url)
    }

    pub fn url(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// Hands the database on (to a restarted server) instead of dropping it.
    pub fn keep(mut self) -> Option<String> {
        self.0.take()
    }
}

impl Drop for DatabaseGuard {
    fn drop(&mut self) {
        if let Some(url) = self.0.take() {
            drop_database(&url);
        }
    }
}

/// Which store the suite runs on: `COUNTERSIGN_TEST_BACKEND=postgres` selects PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var("COUNTERSIGN_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// The PostgreSQL server the tests use; `scripts/test` starts one.
pub fn test_server_url() -> String {
    std::env::var("COUNTERSIGN_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "COUNTERSIGN_TEST_DATABASE_URL is not set: run scripts/test (it starts PostgreSQL) or point it at a server"
        )
    })
}

/// A new, empty database on the test server, for one test.
pub async fn fresh_database() -> String {
    use sqlx::Connection;
    let server = test_server_url();
    let name = format!("cs_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&server).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut url = url::Url::parse(&server).unwrap();
    url.set_path(&name);
    url.to_string()
}

/// Drops a test database (terminating its connections).
pub fn drop_database(url: &str) {
    let url = url.to_string();
    let _ = std::thread::spawn(move || {
        use sqlx::Connection;
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let parsed = url::Url::parse(&url).unwrap();
            let name = parsed.path().trim_start_matches('/').to_string();
            if let Ok(mut conn) = sqlx::PgConnection::connect(&test_server_url()).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        });
    })
    .join();
}

pub fn settings(dir: &TempDir) -> Settings {
    let mut s = Settings::default();
    s.listen = "127.0.0.1:0".into();
    s.data_dir = dir.path().to_path_buf();
    s.bootstrap_admin_key = Some(ADMIN_KEY.into());
    s.database.synchronous = "normal".into();
    s.requests.sweep_interval_ms = 50;
    s.metrics.token = Some(METRICS_TOKEN.into());
    s
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut s = settings(&dir);
    s.database.url = database_for_test().await;
    configure(&mut s);
    start(dir, s, None).await
}

/// A server whose time moves only when the test says so.
pub async fn spawn_with_clock() -> TestApp {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut s = settings(&dir);
    s.database.url = database_for_test().await;
    start(dir, s, Some(ManualClock::new(Utc::now()))).await
}

async fn database_for_test() -> Option<String> {
    if on_postgres() {
        Some(fresh_database().await)
    } else {
        None
    }
}

pub async fn start(dir: Arc<TempDir>, settings: Settings, clock: Option<ManualClock>) -> TestApp {
    let database_url = settings.database.url.clone();
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
        database: DatabaseGuard(database_url),
    }
}

impl TestApp {
    /// Stops this server and starts a new one on the same data directory.
    pub async fn restart(self) -> TestApp {
        let TestApp {
            server,
            dir,
            clock,
            database,
            ..
        } = self;
        server.stop().await.unwrap();
        let mut s = settings(&dir);
        s.database.url = database.keep();
        start(dir, s, clock).await
    }

    /// Runs a statement directly on the database (tests that tamper with stored data).
    pub async fn exec_sql(&self, sql: &str) -> u64 {
        match self.database.url() {
            Some(url) => {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query(sql)
                    .execute(&mut conn)
                    .await
                    .unwrap()
                    .rows_affected()
            }
            None => rusqlite::Connection::open(self.db_path())
                .unwrap()
                .execute(sql, [])
                .unwrap() as u64,
        }
    }

    /// Runs a query returning one integer directly on the database.
    pub async fn query_i64(&self, sql: &str) -> i64 {
        match self.database.url() {
            Some(url) => {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
            }
            None => rusqlite::Connection::open(self.db_path())
                .unwrap()
                .query_row(sql, [], |r| r.get(0))
                .unwrap(),
        }
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

    /// The API document the server serves at `/openapi.json`.
    pub async fn openapi(&self) -> serde_json::Value {
        self.http()
            .get(self.url("/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The Prometheus text of `/metrics`, scraped with the test token.
    pub async fn metrics(&self) -> String {
        let response = self
            .http()
            .get(self.url("/metrics"))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
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
            audiences: Vec::new(),
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
            audiences: Vec::new(),
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

/// Message text as a reader sees it: argument values are wrapped in invisible bidi isolates
/// (U+2068 … U+2069), which this leaves out.
pub fn as_read(text: &str) -> String {
    text.replace(['\u{2068}', '\u{2069}'], "")
}

/// The error code of a failed call.
pub fn code<T: std::fmt::Debug>(r: Result<T, countersign_client::ClientError>) -> String {
    r.expect_err("expected an error")
        .code()
        .unwrap_or("<no code>")
        .to_string()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `authReqId`s the server answered 200 for, collected from several tasks.
#[derive(Default)]
pub struct Accepted(std::sync::Mutex<Vec<String>>);

impl Accepted {
    pub fn push(&self, id: String) {
        self.0.lock().unwrap().push(id);
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A server with a manual clock and adjusted settings.
pub async fn spawn_with_clock_and(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut s = settings(&dir);
    s.database.url = database_for_test().await;
    configure(&mut s);
    start(dir, s, Some(ManualClock::new(Utc::now()))).await
}

/// Audit events with this action and subject, waiting briefly for a background worker on
/// another connection to commit them (PostgreSQL sweeps skip rows another sweep holds).
pub async fn audited(app: &TestApp, action: &str, subject: Option<&str>) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let events = app.admin.audit_page(None, Some(500)).await.unwrap().events;
        let n = events
            .iter()
            .filter(|e| e.action == action && subject.is_none_or(|s| e.subject == s))
            .count();
        if n > 0 || std::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Sends authorize requests from several tasks to `agent`'s server and kills `child` (that
/// server) mid-stream, once it acknowledged some; returns the `authReqId`s it acknowledged.
pub async fn kill_under_load(
    child: &mut std::process::Child,
    agent: &Client,
    user: &str,
) -> Vec<String> {
    use std::time::{Duration, Instant};
    let accepted = Arc::new(Accepted::default());
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let agent = agent.clone();
            let accepted = accepted.clone();
            let user = user.to_string();
            tokio::spawn(async move {
                for _ in 0..500 {
                    match agent.ciba_authorize(&payment(&user)).await {
                        Ok(r) => accepted.push(r.auth_req_id),
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while accepted.len() < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap();
    let _ = child.wait();
    for w in writers {
        let _ = w.await;
    }
    let accepted = accepted.take();
    assert!(
        !accepted.is_empty(),
        "some requests were acknowledged before the kill"
    );
    accepted
}

/// A real SMTP server (aiosmtpd) that keeps every message it receives in a maildir.
pub struct SmtpServer {
    pub port: u16,
    dir: TempDir,
    child: std::process::Child,
}

impl SmtpServer {
    pub async fn start() -> SmtpServer {
        SmtpServer::start_on(free_port()).await
    }

    pub async fn start_on(port: u16) -> SmtpServer {
        let dir = tempfile::tempdir().unwrap();
        let child = std::process::Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.path().join("mail"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m aiosmtpd (scripts/test installs aiosmtpd)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the SMTP server did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        SmtpServer { port, dir, child }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<Mail> {
        let mut files: Vec<_> = ["new", "cur"]
            .iter()
            .filter_map(|d| std::fs::read_dir(self.dir.path().join("mail").join(d)).ok())
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| {
                let modified = e.metadata().and_then(|m| m.modified()).ok();
                (modified, e.path())
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, p)| std::fs::read(p).ok())
            .map(|raw| Mail { raw })
            .collect()
    }

    /// Waits until at least `n` messages arrived (at most 20 s), and returns them all.
    /// Waits until the messages received so far satisfy `done` (messages may arrive in any
    /// order, and a delivery whose answer was lost may arrive twice).
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[Mail]) -> bool) -> Vec<Mail> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let messages = self.messages();
            if done(&messages) {
                return messages;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "waited in vain for {what}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// Waits for the first message to `to`.
    pub async fn wait_for_mail_to(&self, to: &str) -> Mail {
        let is_to = |m: &Mail| m.to() == to;
        let mails = self
            .wait_until(&format!("an email to {to}"), |mails| {
                mails.iter().any(is_to)
            })
            .await;
        mails.into_iter().find(is_to).expect("found above")
    }

    pub async fn wait_for(&self, n: usize) -> Vec<Mail> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let messages = self.messages();
            if messages.len() >= n || std::time::Instant::now() > deadline {
                assert!(
                    messages.len() >= n,
                    "expected {n} emails, got {}",
                    messages.len()
                );
                return messages;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One received email.
pub struct Mail {
    pub raw: Vec<u8>,
}

impl Mail {
    fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(&self.raw)
            .expect("a parsable email")
    }

    pub fn subject(&self) -> String {
        self.parsed().subject().unwrap_or_default().to_string()
    }

    pub fn to(&self) -> String {
        self.parsed()
            .to()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .unwrap_or_default()
            .to_string()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.parsed().header_raw(name).map(|v| v.trim().to_string())
    }

    pub fn message_id(&self) -> String {
        self.parsed().message_id().unwrap_or_default().to_string()
    }

    pub fn text(&self) -> String {
        self.parsed()
            .body_text(0)
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    pub fn html(&self) -> String {
        self.parsed()
            .body_html(0)
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    /// The URL after `label` in the text part (`Approve: http://…`).
    pub fn link(&self, label: &str) -> String {
        let text = self.text();
        let start = text
            .find(&format!("{label}: "))
            .unwrap_or_else(|| panic!("no {label} link in:\n{text}"))
            + label.len()
            + 2;
        text[start..]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

/// Settings of a server that sends email through `smtp`.
pub fn with_email(s: &mut Settings, smtp_url: &str) {
    s.notifications.email.smtp_url = Some(smtp_url.to_string());
    s.notifications.email.from = Some("Countersign <countersign@example.com>".into());
    s.outbound.poll_interval_ms = 50;
}

/// A browser without JavaScript: it keeps the session cookie and the page's anti-forgery token.
pub struct Browser {
    pub http: reqwest::Client,
    pub base: String,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
}

pub fn token_of(url: &str) -> String {
    url.split("token=").nth(1).unwrap().to_string()
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

impl Browser {
    pub fn new(app: &TestApp) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: app.base.clone(),
            cookie: None,
            csrf: None,
        }
    }

    pub fn remember(&mut self, headers: &reqwest::header::HeaderMap) {
        if let Some(c) = headers.get(reqwest::header::SET_COOKIE) {
            let pair = c.to_str().unwrap().split(';').next().unwrap().to_string();
            self.cookie = Some(pair);
        }
    }

    pub async fn get(
        &mut self,
        path: &str,
    ) -> (reqwest::StatusCode, reqwest::header::HeaderMap, String) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let res = req.send().await.unwrap();
        let (status, headers) = (res.status(), res.headers().clone());
        let body = res.text().await.unwrap();
        let marker = "name=\"csrf-token\" content=\"";
        if let Some(i) = body.find(marker) {
            let rest = &body[i + marker.len()..];
            self.csrf = Some(rest[..rest.find('"').unwrap()].to_string());
        }
        (status, headers, body)
    }

    pub async fn post(
        &mut self,
        path: &str,
        body: String,
    ) -> (reqwest::StatusCode, reqwest::header::HeaderMap, String) {
        self.post_with(path, body, &[]).await
    }

    pub async fn post_with(
        &mut self,
        path: &str,
        body: String,
        extra: &[(&str, &str)],
    ) -> (reqwest::StatusCode, reqwest::header::HeaderMap, String) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let res = req.send().await.unwrap();
        let (status, headers) = (res.status(), res.headers().clone());
        self.remember(&headers);
        (status, headers, res.text().await.unwrap())
    }

    /// Signs in with a one-time link, as its landing page's button does.
    pub async fn sign_in(&mut self, url: &str) {
        let (status, headers, _) = self
            .post("/ui/sign-in/link", form(&[("token", &token_of(url))]))
            .await;
        assert_eq!(status, reqwest::StatusCode::SEE_OTHER);
        assert_eq!(headers[reqwest::header::LOCATION], "/ui/queue");
        let (status, _, _) = self.get("/ui/queue").await;
        assert_eq!(status, reqwest::StatusCode::OK);
    }

    pub fn csrf(&self) -> String {
        self.csrf.clone().expect("a page was loaded")
    }
}

pub async fn sign_in_link(admin: &countersign_client::Client, email: &str) -> String {
    admin
        .create_sign_in_link(&countersign_proto::admin::CreateSignInLink {
            user_id: None,
            email: Some(email.into()),
        })
        .await
        .unwrap()
        .url
}

pub async fn signed_in(app: &TestApp, email: &str) -> Browser {
    let url = sign_in_link(&app.admin, email).await;
    let mut b = Browser::new(app);
    b.sign_in(&url).await;
    b
}

/// A request's delivery log (`GET /v1/approvals/{id}/deliveries`, with the admin key).
pub async fn deliveries(app: &TestApp, id: &str) -> Vec<serde_json::Value> {
    let res: serde_json::Value = app
        .http()
        .get(app.url(&format!("/v1/approvals/{id}/deliveries")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    res["deliveries"].as_array().cloned().unwrap_or_default()
}

/// The delivery log once none of its deliveries is pending: a receiver may hold a message
/// a moment before the worker has recorded how sending it went.
pub async fn settled_deliveries(app: &TestApp, id: &str) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = deliveries(app, id).await;
        if log.iter().all(|d| d["state"] != "pending") {
            return log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "deliveries stayed pending: {log:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A policy that makes `payment_*` calls need the approval of `group_finance`, told on
/// `channels`.
pub fn finance_policy(channels: &[&str]) -> countersign_proto::guard::PolicyInput {
    use countersign_proto::guard::{ApprovalConfig, PolicyAction, PolicyInput};
    PolicyInput {
        name: "Approve Financial Operations".into(),
        tool_pattern: "payment_*".into(),
        action: PolicyAction::RequireApproval,
        description: None,
        priority: None,
        is_active: None,
        condition: None,
        approval_config: Some(ApprovalConfig {
            approval_group_id: Some("group_finance".into()),
            notification_channels: channels.iter().map(|c| c.to_string()).collect(),
            ..ApprovalConfig::default()
        }),
    }
}

/// Reviewers alice and bob (primaries) and carol (backup) of `group_finance`, whose backups
/// join after `escalation_minutes`.
pub async fn finance_team(app: &TestApp, escalation_minutes: Option<u32>) {
    use countersign_proto::guard::{GroupInput, MemberInput, MemberRole};
    for email in ["alice@company.com", "bob@company.com", "carol@company.com"] {
        app.reviewer(email).await;
    }
    let member = |email: &str, role| MemberInput {
        email: email.into(),
        role,
    };
    app.admin
        .create_group(
            "default",
            &GroupInput {
                id: Some("group_finance".into()),
                name: "Finance Team".into(),
                members: vec![
                    member("alice@company.com", MemberRole::Primary),
                    member("bob@company.com", MemberRole::Primary),
                    member("carol@company.com", MemberRole::Backup),
                ],
                escalation_minutes,
            },
        )
        .await
        .unwrap();
}

/// Waits until the worker has fanned out every state change (planned its deliveries).
pub async fn fanned_out(app: &TestApp) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app
        .query_i64("SELECT COUNT(*) FROM outbox WHERE channel = 'notify'")
        .await
        > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "state changes were not fanned out"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Lets callbacks reach the loopback stand-ins tests run (plain http on 127.0.0.1).
pub fn loopback_callbacks(s: &mut Settings) {
    s.outbound.allow_private_networks = true;
    s.outbound.allow_http = true;
}
