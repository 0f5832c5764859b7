//! Bounded loopback benchmark of the OpenID Connect CIBA provider, next to its peer, the npm
//! package `oidc-provider` (CIBA enabled, in memory), in the same run on the same machine.
//!
//! It starts `countersign serve` (durable SQLite; with `--backends postgres` also PostgreSQL
//! with one replica and with two, the workers alternating between them) and
//! `node bench/oidc-provider/server.mjs` as child processes on 127.0.0.1, and measures at a
//! fixed concurrency: backchannel
//! authentication requests/s, token-endpoint polls/s (pending requests), complete poll-mode
//! flows/s (bc-authorize, approve, redeem), and for Countersign complete ping-mode flows/s
//! with the approve → client-notified latency. Every loop stops at a deadline and a request
//! budget; the children are killed when the driver ends. Prints a markdown report.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser;
use countersign_bench::server::{BackendArgs, Group, Servers, Spec};
use serde_json::{Value, json};
use tokio::sync::oneshot;

const ADMIN_KEY: &str = "csk_bench-admin-key-0123456789-abcdefghijklmnop";
const PEER_SECRET: &str = "bench-secret-0123456789-0123456789";
const CIBA: &str = "urn:openid:params:grant-type:ciba";
const NOTIFICATION_TOKEN: &str = "bench-notification-token-0123456789";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Most operations one phase may run, whatever the duration.
const MAX_OPS: u64 = 2_000_000;

#[derive(Parser, Debug)]
#[command(
    name = "countersign-bench-ciba",
    about = "Loopback CIBA benchmark against oidc-provider"
)]
struct Opts {
    /// The server binary (`countersign serve`).
    #[arg(long, default_value = "target/release/countersign")]
    server_bin: PathBuf,
    /// The peer harness directory (with node_modules installed by `npm ci`).
    #[arg(long, default_value = "bench/oidc-provider")]
    peer_dir: PathBuf,
    /// Seconds each timed phase lasts.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Concurrent workers of every phase.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Concurrency of the light-load ping run that measures notification latency alone.
    #[arg(long, default_value_t = 4)]
    light_concurrency: usize,
    /// Leave out the oidc-provider peer.
    #[arg(long)]
    no_peer: bool,
    #[command(flatten)]
    backends: BackendArgs,
}

/// A child process killed on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_ready(http: &reqwest::Client, url: &str) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{url} did not become ready within {READY_TIMEOUT:?}")
}

/// What a phase measured.
#[derive(Default)]
struct Stats {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Stats {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let idx = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[idx] as f64 / 1000.0
    }
}

/// Runs `op` on `concurrency` workers until `duration` passes or the budget is spent. An op
/// returns Ok(Some(latency)) / Ok(None) when it succeeded, Err when it failed.
async fn run_phase<F, Fut>(concurrency: usize, duration: Duration, op: F) -> Stats
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Option<Duration>>> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let deadline = started + duration;
    let budget = Arc::new(AtomicU64::new(MAX_OPS));
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let op = op.clone();
        let budget = budget.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = Stats::default();
            while Instant::now() < deadline && budget.fetch_sub(1, Ordering::Relaxed) > 0 {
                match tokio::time::timeout(Duration::from_secs(30), op(worker)).await {
                    Ok(Ok(latency)) => {
                        s.ok += 1;
                        if let Some(l) = latency {
                            s.latencies_us.push(l.as_micros() as u64);
                        }
                    }
                    Ok(Err(e)) => {
                        if s.errors == 0 {
                            eprintln!("worker {worker}: {e:#}");
                        }
                        s.errors += 1;
                    }
                    Err(_) => s.errors += 1,
                }
            }
            s
        }));
    }
    let mut total = Stats::default();
    for t in tasks {
        if let Ok(s) = t.await {
            total.ok += s.ok;
            total.errors += s.errors;
            total.latencies_us.extend(s.latencies_us);
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// Builds the approval of a request, given the base to send it to and its auth_req_id.
type Approve = Arc<dyn Fn(&str, String) -> reqwest::RequestBuilder + Send + Sync>;

/// A person asked, with their reviewer key.
#[derive(Clone)]
struct Reviewer {
    user_id: String,
    key: String,
}

/// A CIBA provider under test: where it is and how its client and reviewer act.
#[derive(Clone)]
struct Target {
    name: String,
    /// oidc-provider rather than Countersign.
    peer: bool,
    /// Where this worker sends its requests: one of `bases`.
    base: String,
    /// Every replica; workers alternate between them.
    bases: Vec<String>,
    http: reqwest::Client,
    client_id: String,
    secret: String,
    login_hint: String,
    /// Approves a request, given the base to send it to and its id (the peer's auth_req_id,
    /// Countersign's approval id).
    approve: Approve,
    /// Countersign: one reviewer per flow worker, each asked by that worker alone, who finds
    /// the request in their pending list as a person would (the peer's bench route approves
    /// by auth_req_id).
    reviewers: Vec<Reviewer>,
    /// The reviewer of this worker's flows.
    reviewer: Option<Reviewer>,
}

impl Target {
    /// The target as worker `worker` sees it: on its replica.
    fn on(&self, worker: usize) -> Target {
        let mut t = self.clone();
        t.base = self.bases[worker % self.bases.len()].clone();
        t
    }

    /// The target as flow worker `worker` sees it: on its replica, asking its own reviewer.
    fn flow_on(&self, worker: usize) -> Target {
        let mut t = self.on(worker);
        if let Some(r) = self.reviewers.get(worker % self.reviewers.len().max(1)) {
            t.login_hint = r.user_id.clone();
            t.reviewer = Some(r.clone());
        }
        t
    }

    /// The id the reviewer approves: Countersign's reviewer reads their one pending request.
    async fn find(&self, auth_req_id: &str) -> Result<String> {
        let Some(reviewer) = &self.reviewer else {
            return Ok(auth_req_id.to_string());
        };
        let r = self
            .http
            .get(format!("{}/v1/approvals?status=pending&limit=1", self.base))
            .bearer_auth(&reviewer.key)
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        ensure!(status.is_success(), "pending list {status}: {body}");
        body["approvals"][0]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the reviewer has nothing pending: {body}"))
    }

    async fn bc_authorize(&self, extra: &[(&str, &str)]) -> Result<String> {
        let mut form = vec![
            ("scope", "openid"),
            ("login_hint", self.login_hint.as_str()),
            ("binding_message", "BENCH"),
        ];
        form.extend_from_slice(extra);
        let r = self
            .http
            .post(format!("{}{}", self.base, self.bc_path()))
            .basic_auth(&self.client_id, Some(&self.secret))
            .form(&form)
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        ensure!(status.is_success(), "bc-authorize {status}: {body}");
        body["auth_req_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no auth_req_id in {body}"))
    }

    fn bc_path(&self) -> String {
        if self.peer {
            "/backchannel".into()
        } else {
            "/oidc/bc-authorize".into()
        }
    }

    fn token_path(&self) -> String {
        if self.peer {
            "/token".into()
        } else {
            "/oidc/token".into()
        }
    }

    async fn token(&self, auth_req_id: &str) -> Result<(u16, Value)> {
        let r = self
            .http
            .post(format!("{}{}", self.base, self.token_path()))
            .basic_auth(&self.client_id, Some(&self.secret))
            .form(&[("grant_type", CIBA), ("auth_req_id", auth_req_id)])
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await?))
    }

    async fn approve(&self, id: &str) -> Result<()> {
        let request = match &self.reviewer {
            Some(r) => self
                .http
                .post(format!("{}/v1/approvals/{id}/approve", self.base))
                .bearer_auth(&r.key)
                .json(&json!({})),
            None => (self.approve)(&self.base, id.to_string()),
        };
        let r = request.send().await?;
        ensure!(r.status().is_success(), "approve answered {}", r.status());
        Ok(())
    }
}

/// The client's notification endpoint for ping mode: each ping completes the waiter of its
/// auth_req_id with the instant it arrived.
type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Instant>>>>;

async fn ping_receiver(waiters: Waiters) -> Result<SocketAddr> {
    let app = axum::Router::new().route(
        "/cb",
        axum::routing::post(move |body: axum::body::Bytes| {
            let waiters = waiters.clone();
            async move {
                let at = Instant::now();
                let id = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["auth_req_id"].as_str().map(str::to_string));
                if let Some(tx) = id.and_then(|id| waiters.lock().ok()?.remove(&id)) {
                    let _ = tx.send(at);
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

async fn admin_post(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    path: &str,
    body: Value,
) -> Result<Value> {
    let r = http
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await?;
    let status = r.status();
    let body: Value = r.json().await?;
    ensure!(status.is_success(), "{path}: {status} {body}");
    Ok(body)
}

struct Countersign {
    group: Group,
    _servers: Servers,
    poll: Target,
    ping: Target,
}

/// A new user of the tenant with a reviewer key.
async fn add_reviewer(http: &reqwest::Client, base: &str, name: &str) -> Result<Reviewer> {
    let email = format!("{name}@example.com");
    let user = admin_post(
        http,
        base,
        ADMIN_KEY,
        "/v1/admin/users",
        json!({"email": email, "name": name}),
    )
    .await?;
    let user_id = user["id"].as_str().unwrap_or_default().to_string();
    let key = admin_post(
        http,
        base,
        ADMIN_KEY,
        "/v1/admin/api-keys",
        json!({"role": "reviewer", "user_id": user_id}),
    )
    .await?["key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok(Reviewer { user_id, key })
}

async fn start_countersign(
    opts: &Opts,
    http: &reqwest::Client,
    receiver: SocketAddr,
    group: Group,
    postgres: Option<&str>,
) -> Result<Countersign> {
    let servers = Servers::start(Spec {
        bin: &opts.server_bin,
        group,
        postgres_base: postgres,
        admin_key: ADMIN_KEY,
        env: vec![
            (
                "COUNTERSIGN_OUTBOUND__ALLOW_PRIVATE_NETWORKS".into(),
                "true".into(),
            ),
            ("COUNTERSIGN_OUTBOUND__ALLOW_HTTP".into(), "true".into()),
        ],
        dir_parent: None,
    })
    .await
    .with_context(|| format!("{group} (cargo build --release -p countersign)"))?;
    let base = servers.first().base();
    let bases = servers.bases();
    // The reviewer of the load phases (bc-authorize, polls), whose queue grows; the flows ask
    // reviewers of their own.
    let load = add_reviewer(http, &base, "reviewer").await?;
    let (user_id, reviewer_key) = (load.user_id, load.key);
    let mut reviewers = Vec::new();
    for i in 0..opts.concurrency.max(opts.light_concurrency) {
        reviewers.push(add_reviewer(http, &base, &format!("flow{i}")).await?);
    }
    let mut targets = Vec::new();
    for (name, mode) in [("bench-poll", "poll"), ("bench-ping", "ping")] {
        let agent = admin_post(
            http,
            &base,
            ADMIN_KEY,
            "/v1/admin/agents",
            json!({"name": name, "trust_level": "standard"}),
        )
        .await?;
        let agent_id = agent["id"].as_str().unwrap_or_default().to_string();
        let mut body = json!({"agent_id": agent_id, "backchannel_token_delivery_mode": mode});
        if mode == "ping" {
            body["backchannel_client_notification_endpoint"] =
                json!(format!("http://{receiver}/cb"));
        }
        let client = admin_post(http, &base, ADMIN_KEY, "/v1/admin/oidc-clients", body).await?;
        let approve_http = http.clone();
        targets.push(Target {
            name: format!("countersign ({group})"),
            peer: false,
            base: base.clone(),
            bases: bases.clone(),
            http: http.clone(),
            client_id: agent_id,
            secret: client["client_secret"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            login_hint: user_id.clone(),
            // The flow worker's reviewer approves what they found in their list.
            approve: {
                let reviewer_key = reviewer_key.clone();
                Arc::new(move |base, id| {
                    approve_http
                        .post(format!("{base}/v1/approvals/{id}/approve"))
                        .bearer_auth(&reviewer_key)
                        .json(&json!({}))
                })
            },
            reviewers: reviewers.clone(),
            reviewer: None,
        });
    }
    let ping = targets.pop().ok_or_else(|| anyhow!("no ping client"))?;
    let poll = targets.pop().ok_or_else(|| anyhow!("no poll client"))?;
    Ok(Countersign {
        group,
        _servers: servers,
        poll,
        ping,
    })
}

async fn start_peer(opts: &Opts, http: &reqwest::Client) -> Result<(Guard, Target)> {
    ensure!(
        opts.peer_dir.join("node_modules/oidc-provider").exists(),
        "run `npm ci` in {} first",
        opts.peer_dir.display()
    );
    let port = countersign_bench::server::free_port()?;
    let child = Command::new("node")
        .arg("server.mjs")
        .current_dir(&opts.peer_dir)
        .env("PORT", port.to_string())
        .env("CLIENT_SECRET", PEER_SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start node")?;
    let child = Guard(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(http, &format!("{base}/.well-known/openid-configuration")).await?;
    let approve_http = http.clone();
    Ok((
        child,
        Target {
            name: "oidc-provider".into(),
            peer: true,
            base: base.clone(),
            bases: vec![base],
            http: http.clone(),
            client_id: "bench-poll".into(),
            secret: PEER_SECRET.into(),
            login_hint: "user-1".into(),
            approve: Arc::new(move |base, id| {
                approve_http.post(format!("{base}/bench/approve/{id}"))
            }),
            reviewers: Vec::new(),
            reviewer: None,
        },
    ))
}

struct Row {
    target: String,
    bc_per_s: f64,
    polls_per_s: f64,
    poll_flows_per_s: f64,
    errors: u64,
}

async fn bc_phase(t: &Target, opts: &Opts) -> Stats {
    let tt = t.clone();
    run_phase(
        opts.concurrency,
        Duration::from_secs_f64(opts.duration),
        move |worker| {
            let t = tt.on(worker);
            async move { t.bc_authorize(&[]).await.map(|_| None) }
        },
    )
    .await
}

/// One pending request per worker, polled over and over (pending or slow_down answers).
async fn poll_phase(t: &Target, opts: &Opts) -> Result<Stats> {
    let mut ids = Vec::new();
    for _ in 0..opts.concurrency {
        ids.push(t.bc_authorize(&[]).await?);
    }
    let ids = Arc::new(ids);
    let tt = t.clone();
    Ok(run_phase(
        opts.concurrency,
        Duration::from_secs_f64(opts.duration),
        move |worker| {
            let t = tt.on(worker);
            let ids = ids.clone();
            async move {
                let (status, body) = t.token(&ids[worker]).await?;
                let error = body["error"].as_str().unwrap_or_default();
                ensure!(
                    status == 400 && (error == "authorization_pending" || error == "slow_down"),
                    "poll answered {status} {body}"
                );
                Ok(None)
            }
        },
    )
    .await)
}

/// bc-authorize, approve, redeem at the token endpoint.
async fn flow_phase(t: &Target, opts: &Opts) -> Stats {
    let tt = t.clone();
    run_phase(
        opts.concurrency,
        Duration::from_secs_f64(opts.duration),
        move |worker| {
            let t = tt.flow_on(worker);
            async move {
                let started = Instant::now();
                let id = t.bc_authorize(&[]).await?;
                t.approve(&t.find(&id).await?).await?;
                let (status, body) = t.token(&id).await?;
                ensure!(
                    status == 200 && body["access_token"].is_string(),
                    "redeem answered {status} {body}"
                );
                Ok(Some(started.elapsed()))
            }
        },
    )
    .await
}

/// Runs every phase on every target, target after target within a phase, so that load from
/// elsewhere on the machine falls on both alike.
async fn measure_poll_targets(targets: &[Target], opts: &Opts) -> Result<Vec<Row>> {
    let mut bc = Vec::new();
    for t in targets {
        bc.push(bc_phase(t, opts).await);
    }
    let mut polls = Vec::new();
    for t in targets {
        polls.push(poll_phase(t, opts).await?);
    }
    let mut flows = Vec::new();
    for t in targets {
        flows.push(flow_phase(t, opts).await);
    }
    Ok(targets
        .iter()
        .enumerate()
        .map(|(i, t)| Row {
            target: t.name.clone(),
            bc_per_s: bc[i].rate(),
            polls_per_s: polls[i].rate(),
            poll_flows_per_s: flows[i].rate(),
            errors: bc[i].errors + polls[i].errors + flows[i].errors,
        })
        .collect())
}

async fn measure_ping(t: &Target, waiters: Waiters, opts: &Opts, concurrency: usize) -> Stats {
    let tt = t.clone();
    run_phase(
        concurrency,
        Duration::from_secs_f64(opts.duration),
        move |worker| {
            let t = tt.flow_on(worker);
            let waiters = waiters.clone();
            async move {
                let id = t
                    .bc_authorize(&[("client_notification_token", NOTIFICATION_TOKEN)])
                    .await?;
                let (tx, rx) = oneshot::channel();
                waiters
                    .lock()
                    .map_err(|_| anyhow!("poisoned"))?
                    .insert(id.clone(), tx);
                let approval = t.find(&id).await?;
                let approved_at = Instant::now();
                t.approve(&approval).await?;
                let notified_at = tokio::time::timeout(Duration::from_secs(10), rx)
                    .await
                    .map_err(|_| anyhow!("no ping within 10 s"))??;
                let (status, body) = t.token(&id).await?;
                ensure!(status == 200, "redeem after ping answered {status} {body}");
                Ok(Some(notified_at.saturating_duration_since(approved_at)))
            }
        },
    )
    .await
}

#[tokio::main]
async fn main() -> Result<()> {
    let opts = Opts::parse();
    let postgres = opts.backends.postgres_base()?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency * 2)
        .timeout(Duration::from_secs(30))
        .build()?;
    let waiters: Waiters = Arc::default();
    let receiver = ping_receiver(waiters.clone()).await?;
    let mut ours = Vec::new();
    for group in opts.backends.groups(true) {
        ours.push(start_countersign(&opts, &http, receiver, group, postgres.as_deref()).await?);
    }
    let peer = if opts.no_peer {
        None
    } else {
        Some(start_peer(&opts, &http).await?)
    };
    let mut targets: Vec<Target> = ours.iter().map(|c| c.poll.clone()).collect();
    if let Some((_, target)) = &peer {
        targets.push(target.clone());
    }
    let rows = measure_poll_targets(&targets, &opts).await?;
    drop(peer);
    let mut pings = Vec::new();
    for c in &ours {
        let ping = measure_ping(&c.ping, waiters.clone(), &opts, opts.concurrency).await;
        let light = measure_ping(&c.ping, waiters.clone(), &opts, opts.light_concurrency).await;
        pings.push((c.group, ping, light));
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "Concurrency {}, {} s per phase, {cpus} cores, loopback HTTP/1.1 keep-alive.\n",
        opts.concurrency, opts.duration
    );
    println!(
        "| server | bc-authorize req/s | token polls/s (pending) | complete poll flows/s | errors |"
    );
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {} |",
            r.target, r.bc_per_s, r.polls_per_s, r.poll_flows_per_s, r.errors
        );
    }
    println!(
        "\nCountersign ping mode (bc-authorize, approve, ping received, redeem):\n\n| backend | concurrency | flows/s | approve → notified p50 ms | p99 ms | max ms | flows | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (group, ping, light) in &mut pings {
        for (concurrency, s) in [(opts.concurrency, ping), (opts.light_concurrency, light)] {
            println!(
                "| {group} | {concurrency} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |",
                s.rate(),
                s.percentile_ms(0.50),
                s.percentile_ms(0.99),
                s.percentile_ms(1.0),
                s.ok,
                s.errors
            );
        }
    }
    if let Some(peer) = rows.iter().find(|r| r.target == "oidc-provider") {
        println!();
        for ours in rows.iter().filter(|r| r.target != "oidc-provider") {
            println!(
                "{} / oidc-provider: bc-authorize {:.1}×, polls {:.1}×, complete poll flows {:.1}×.",
                ours.target,
                ours.bc_per_s / peer.bc_per_s,
                ours.polls_per_s / peer.polls_per_s,
                ours.poll_flows_per_s / peer.poll_flows_per_s
            );
        }
    }
    Ok(())
}
