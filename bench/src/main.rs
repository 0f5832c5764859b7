//! A bounded loopback load driver for Countersign.
//!
//! It starts `countersign serve` as a child process on 127.0.0.1, sets up a reviewer and an
//! agent through the admin API, drives the agent API with one keep-alive HTTP/1.1 connection
//! per worker, and prints a markdown report. Every loop stops at a deadline and at a request
//! budget, and the server is killed when the driver ends, on success or on error.
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use clap::Parser;
use countersign_bench::server::{Backend, BackendArgs, Group, Servers, Spec};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rand::RngCore;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpStream;

/// Longest any single HTTP exchange may take (long-polls wait at most 10 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a setup loop (request pools, latency samples, memory fill) may run.
const SETUP_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Parser, Debug)]
#[command(
    name = "countersign-bench",
    about = "Bounded loopback load driver for Countersign",
    long_about = "Bounded loopback load driver for Countersign.\n\nWith `--backends postgres` \
        the phases also run on two replicas on one database: the workers' connections \
        alternate between them, the latency phase long-polls on one and approves on the \
        other, and the memory phase runs on one replica only."
)]
struct Opts {
    /// The server binary to start (`countersign serve`).
    #[arg(long, default_value = "target/release/countersign")]
    server_bin: PathBuf,
    /// Seconds each timed run lasts (authorize, poll, flow).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Concurrency levels of the authorize phase; poll and flow run at the largest.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    concurrency: Vec<usize>,
    /// Pending requests created in the memory phase.
    #[arg(long, default_value_t = 100_000)]
    pending_count: usize,
    /// Samples of the approve -> agent latency phase.
    #[arg(long, default_value_t = 500)]
    latency_samples: usize,
    /// Phases to run, by name or number: authorize(1), poll(2), flow(3), latency(4), memory(5).
    #[arg(long, value_delimiter = ',', default_value = "authorize,poll,flow,latency,memory",
          value_parser = parse_phase)]
    phases: Vec<Phase>,
    /// Pending requests the poll phase polls.
    #[arg(long, default_value_t = 1_000)]
    poll_pool: usize,
    /// Connections that fill the memory phase.
    #[arg(long, default_value_t = 256)]
    memory_concurrency: usize,
    /// Most requests (or flows) of one timed run, whatever the duration.
    #[arg(long, default_value_t = 2_000_000)]
    max_requests: u64,
    /// Milliseconds the latency phase waits after sending the long-poll, so it is parked.
    #[arg(long, default_value_t = 5)]
    park_ms: u64,
    /// Threads of the driver's own runtime (1 = a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    driver_threads: usize,
    /// Where the servers' temporary data directories are made (default: the system temp dir).
    #[arg(long)]
    data_dir_parent: Option<PathBuf>,
    /// Milliseconds the memory phase lets the server settle before each reading.
    #[arg(long, default_value_t = 1_000)]
    settle_ms: u64,
    #[command(flatten)]
    backends: BackendArgs,
    /// Extra environment for the server, `NAME=VALUE` (repeatable), e.g.
    /// `COUNTERSIGN_DATABASE__SYNCHRONOUS=normal` to compare settings.
    #[arg(long, value_parser = parse_env)]
    server_env: Vec<(String, String)>,
}

fn parse_env(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, not {s:?}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Authorize,
    Poll,
    Flow,
    Latency,
    Memory,
}

fn parse_phase(s: &str) -> std::result::Result<Phase, String> {
    match s.trim() {
        "1" | "authorize" => Ok(Phase::Authorize),
        "2" | "poll" => Ok(Phase::Poll),
        "3" | "flow" => Ok(Phase::Flow),
        "4" | "latency" => Ok(Phase::Latency),
        "5" | "memory" => Ok(Phase::Memory),
        other => Err(format!(
            "unknown phase {other:?}: use authorize, poll, flow, latency, memory or 1-5"
        )),
    }
}

fn main() -> Result<()> {
    let opts = Opts::parse();
    ensure!(opts.duration > 0.0, "--duration must be positive");
    ensure!(
        !opts.concurrency.is_empty() && opts.concurrency.iter().all(|&c| c > 0),
        "--concurrency needs positive values"
    );
    ensure!(opts.poll_pool > 0, "--poll-pool must be positive");
    ensure!(
        opts.memory_concurrency > 0,
        "--memory-concurrency must be positive"
    );
    let runtime = if opts.driver_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.driver_threads)
            .enable_all()
            .build()?
    };
    let report = runtime.block_on(run(&opts))?;
    println!("{report}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The server child process

struct Server {
    servers: Servers,
    admin: HeaderValue,
}

fn random_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("bench_admin_{}", URL_SAFE_NO_PAD.encode(bytes))
}

impl Server {
    async fn start(opts: &Opts, group: Group, postgres: Option<&str>) -> Result<Server> {
        let key = random_key();
        let mut env = vec![
            // The same random secret lets the driver scrape `/metrics`.
            ("COUNTERSIGN_METRICS__TOKEN".to_string(), key.clone()),
        ];
        env.extend(opts.server_env.iter().cloned());
        let servers = Servers::start(Spec {
            bin: &opts.server_bin,
            group,
            postgres_base: postgres,
            admin_key: &key,
            env,
            dir_parent: opts.data_dir_parent.as_deref(),
        })
        .await?;
        Ok(Server {
            servers,
            admin: HeaderValue::from_str(&format!("Bearer {key}"))?,
        })
    }

    fn addr(&self) -> SocketAddr {
        self.servers.first().addr
    }

    /// CPU time (user + system) the server processes have used so far.
    fn cpu(&self, ticks: f64) -> Result<Duration> {
        let mut total = Duration::ZERO;
        for r in &self.servers.replicas {
            total += process_cpu(&format!("/proc/{}/stat", r.pid), ticks)?;
        }
        Ok(total)
    }

    /// Bytes of the files in the server's data directory.
    fn data_bytes(&self) -> Result<u64> {
        let mut total = 0;
        let dir = &self.servers.first().data_dir;
        if !dir.exists() {
            // On PostgreSQL the server may keep nothing on its own disk.
            return Ok(0);
        }
        for entry in std::fs::read_dir(dir)? {
            let meta = entry?.metadata()?;
            if meta.is_file() {
                total += meta.len();
            }
        }
        Ok(total)
    }

    fn memory(&self) -> Result<Memory> {
        let pid = self.servers.first().pid;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .ok_or_else(|| anyhow!("no {name} in /proc/{pid}/status"))
        };
        Ok(Memory {
            rss: field("VmRSS:")?,
            anon: field("RssAnon:")?,
            file: field("RssFile:")?,
            shmem: field("RssShmem:")?,
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    anon: u64,
    file: u64,
    shmem: u64,
}

fn process_cpu(stat_path: &str, ticks: f64) -> Result<Duration> {
    let stat = std::fs::read_to_string(stat_path)?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("malformed {stat_path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let get = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| anyhow!("malformed {stat_path}"))
    };
    Ok(Duration::from_secs_f64((get(11)? + get(12)?) / ticks))
}

/// CPU time all processors have spent outside idle and iowait since boot.
fn machine_busy(ticks: f64) -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu: Vec<f64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .ok_or_else(|| anyhow!("malformed /proc/stat"))?
        .split_whitespace()
        .filter_map(|v| v.parse::<f64>().ok())
        .collect();
    ensure!(cpu.len() >= 8, "malformed /proc/stat");
    // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    let busy = cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6] + cpu[7];
    Ok(Duration::from_secs_f64(busy / ticks))
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

// ---------------------------------------------------------------------------------------------
// HTTP: one keep-alive HTTP/1.1 connection, one request at a time

struct Conn {
    addr: SocketAddr,
    sender: http1::SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            addr,
            sender,
            host: HeaderValue::from_str(&addr.to_string())?,
        })
    }

    async fn reopen(&mut self) -> Result<()> {
        *self = Conn::open(self.addr).await?;
        Ok(())
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        auth: Option<&HeaderValue>,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes)> {
        let exchange = async {
            self.sender.ready().await?;
            let mut builder = Request::builder()
                .method(method)
                .uri(path)
                .header(HOST, self.host.clone());
            if let Some(auth) = auth {
                builder = builder.header(AUTHORIZATION, auth.clone());
            }
            let request = match body {
                Some(body) => builder
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .body(Full::new(body))?,
                None => builder.body(Full::new(Bytes::new()))?,
            };
            let response = self.sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("no answer within {REQUEST_TIMEOUT:?}"))?
    }

    /// Sends and requires a 2xx answer.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        auth: &HeaderValue,
        body: Option<Bytes>,
    ) -> Result<Bytes> {
        let (status, body) = self.send(method, path, Some(auth), body).await?;
        if !status.is_success() {
            bail!(
                "{path}: HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        Ok(body)
    }
}

fn bearer(key: &str) -> Result<HeaderValue> {
    Ok(HeaderValue::from_str(&format!("Bearer {key}"))?)
}

// ---------------------------------------------------------------------------------------------
// The API as the driver uses it

#[derive(Deserialize)]
struct Created {
    id: String,
}

#[derive(Deserialize)]
struct KeyCreated {
    key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Authorized {
    auth_req_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Token {
    status: String,
    #[serde(default)]
    access_token: Option<String>,
}

/// The principals and prepared bodies the phases share.
struct Ctx {
    /// Every replica; workers' connections alternate between them.
    addrs: Vec<SocketAddr>,
    agent: HeaderValue,
    reviewer: HeaderValue,
    authorize_body: Bytes,
}

async fn setup(server: &Server) -> Result<Ctx> {
    let mut conn = Conn::open(server.addr()).await?;
    let admin = &server.admin;
    let post = |v: serde_json::Value| -> Result<Bytes> { Ok(Bytes::from(serde_json::to_vec(&v)?)) };
    let user: Created = serde_json::from_slice(
        &conn
            .call(
                Method::POST,
                "/v1/admin/users",
                admin,
                Some(post(
                    json!({"email": "bench-reviewer@example.com", "name": "Bench Reviewer"}),
                )?),
            )
            .await?,
    )?;
    let agent: Created = serde_json::from_slice(
        &conn
            .call(
                Method::POST,
                "/v1/admin/agents",
                admin,
                Some(post(
                    json!({"name": "bench-agent", "trust_level": "standard"}),
                )?),
            )
            .await?,
    )?;
    let agent_key: KeyCreated = serde_json::from_slice(
        &conn
            .call(
                Method::POST,
                "/v1/admin/api-keys",
                admin,
                Some(post(json!({"role": "agent", "agent_id": agent.id}))?),
            )
            .await?,
    )?;
    let reviewer_key: KeyCreated = serde_json::from_slice(
        &conn
            .call(
                Method::POST,
                "/v1/admin/api-keys",
                admin,
                Some(post(json!({"role": "reviewer", "user_id": user.id}))?),
            )
            .await?,
    )?;
    let authorize_body = post(json!({
        "userId": user.id,
        "scope": "approve:payment",
        "bindingMessage": "Approve payment of $500 to Acme Corp?",
        "requestedExpiry": 3600,
        "context": {"amount": 500, "currency": "USD", "recipient": "Acme Corp"},
    }))?;
    Ok(Ctx {
        addrs: server.servers.addrs(),
        agent: bearer(&agent_key.key)?,
        reviewer: bearer(&reviewer_key.key)?,
        authorize_body,
    })
}

async fn authorize(ctx: &Ctx, conn: &mut Conn) -> Result<String> {
    let body = conn
        .call(
            Method::POST,
            "/ciba/authorize",
            &ctx.agent,
            Some(ctx.authorize_body.clone()),
        )
        .await?;
    Ok(serde_json::from_slice::<Authorized>(&body)?.auth_req_id)
}

async fn approve(ctx: &Ctx, conn: &mut Conn, auth_req_id: &str) -> Result<()> {
    let body = Bytes::from(format!("{{\"authReqId\":\"{auth_req_id}\"}}"));
    conn.call(Method::POST, "/ciba/approve", &ctx.reviewer, Some(body))
        .await?;
    Ok(())
}

fn token_path(auth_req_id: &str, wait: Option<u64>) -> String {
    match wait {
        Some(w) => format!("/ciba/token?authReqId={auth_req_id}&waitSeconds={w}"),
        None => format!("/ciba/token?authReqId={auth_req_id}"),
    }
}

fn parse_token(body: &[u8]) -> Result<Token> {
    Ok(serde_json::from_slice(body)?)
}

fn require_access_token(token: &Token) -> Result<()> {
    ensure!(
        token.status == "approved" && token.access_token.as_deref().is_some_and(|t| !t.is_empty()),
        "expected an approved token with an accessToken, got status {:?}",
        token.status
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Timed runs: `concurrency` workers, each on its own connection, until a deadline or a budget

#[derive(Clone, Copy, Debug)]
enum Op {
    Authorize,
    Poll,
    Flow,
}

struct RunResult {
    name: String,
    concurrency: usize,
    unit: &'static str,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    /// Microseconds, sorted.
    latencies: Vec<u32>,
    server_cpu: Duration,
    driver_cpu: Duration,
    /// CPU time the whole machine was busy (all processes).
    machine_cpu: Duration,
}

struct WorkerOut {
    latencies: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

async fn one_op(ctx: &Ctx, op: Op, conn: &mut Conn, pool: &[String], index: usize) -> Result<()> {
    match op {
        Op::Authorize => {
            authorize(ctx, conn).await?;
        }
        Op::Poll => {
            let id = &pool[index % pool.len()];
            let body = conn
                .call(Method::GET, &token_path(id, None), &ctx.agent, None)
                .await?;
            let token = parse_token(&body)?;
            ensure!(
                token.status == "pending",
                "expected pending, got {:?}",
                token.status
            );
        }
        Op::Flow => {
            let id = authorize(ctx, conn).await?;
            approve(ctx, conn, &id).await?;
            let body = conn
                .call(Method::GET, &token_path(&id, None), &ctx.agent, None)
                .await?;
            require_access_token(&parse_token(&body)?)?;
        }
    }
    Ok(())
}

/// What every worker of one timed run shares.
struct Plan {
    ctx: Arc<Ctx>,
    op: Op,
    pool: Arc<Vec<String>>,
    concurrency: usize,
    deadline: Instant,
    issued: AtomicU64,
    budget: u64,
}

async fn worker(plan: Arc<Plan>, mut conn: Conn, first_index: usize) -> WorkerOut {
    let mut out = WorkerOut {
        latencies: Vec::with_capacity(4096),
        errors: 0,
        first_error: None,
    };
    let mut index = first_index;
    while Instant::now() < plan.deadline
        && plan.issued.fetch_add(1, Ordering::Relaxed) < plan.budget
    {
        let start = Instant::now();
        match one_op(&plan.ctx, plan.op, &mut conn, &plan.pool, index).await {
            Ok(()) => out
                .latencies
                .push(u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX)),
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| format!("{e:#}"));
                // The connection may be broken; a failed reopen is counted on the next try.
                if conn.sender.is_closed() {
                    let _ = conn.reopen().await;
                }
            }
        }
        index = index.wrapping_add(plan.concurrency);
    }
    out
}

/// `n` connections, round-robin over the replicas.
async fn open_conns(addrs: &[SocketAddr], n: usize) -> Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        conns.push(Conn::open(addrs[i % addrs.len()]).await?);
    }
    Ok(conns)
}

/// One timed run: `concurrency` workers until `duration` passes or `budget` operations started.
struct Run<'a> {
    name: &'a str,
    unit: &'static str,
    op: Op,
    pool: Arc<Vec<String>>,
    concurrency: usize,
    duration: Duration,
    budget: u64,
}

async fn timed_run(server: &Server, ctx: &Arc<Ctx>, run: Run<'_>, ticks: f64) -> Result<RunResult> {
    let concurrency = run.concurrency;
    let conns = open_conns(&ctx.addrs, concurrency).await?;
    let server_cpu0 = server.cpu(ticks)?;
    let driver_cpu0 = process_cpu("/proc/self/stat", ticks)?;
    let machine_cpu0 = machine_busy(ticks)?;
    let start = Instant::now();
    let plan = Arc::new(Plan {
        ctx: ctx.clone(),
        op: run.op,
        pool: run.pool,
        concurrency,
        deadline: start + run.duration,
        issued: AtomicU64::new(0),
        budget: run.budget,
    });
    let handles: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| tokio::spawn(worker(plan.clone(), conn, i)))
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for h in handles {
        let out = h.await?;
        latencies.extend_from_slice(&out.latencies);
        errors += out.errors;
        if first_error.is_none() {
            first_error = out.first_error;
        }
    }
    let elapsed = start.elapsed();
    let server_cpu = server.cpu(ticks)?.saturating_sub(server_cpu0);
    let driver_cpu = process_cpu("/proc/self/stat", ticks)?.saturating_sub(driver_cpu0);
    let machine_cpu = machine_busy(ticks)?.saturating_sub(machine_cpu0);
    latencies.sort_unstable();
    Ok(RunResult {
        name: run.name.to_string(),
        concurrency,
        unit: run.unit,
        ok: latencies.len() as u64,
        errors,
        first_error,
        elapsed,
        latencies,
        server_cpu,
        driver_cpu,
        machine_cpu,
    })
}

/// Creates `count` pending requests at `concurrency`, bounded by count and `SETUP_TIMEOUT`.
async fn create_pending(
    ctx: &Arc<Ctx>,
    count: usize,
    concurrency: usize,
    keep_ids: bool,
) -> Result<(Vec<String>, Duration)> {
    let concurrency = concurrency.min(count).max(1);
    let conns = open_conns(&ctx.addrs, concurrency).await?;
    let issued = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let start = Instant::now();
    let handles: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let ctx = ctx.clone();
            let issued = issued.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                while Instant::now() < deadline
                    && issued.fetch_add(1, Ordering::Relaxed) < count as u64
                {
                    let id = authorize(&ctx, &mut conn).await?;
                    if keep_ids {
                        ids.push(id);
                    }
                }
                Ok::<_, anyhow::Error>(ids)
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(if keep_ids { count } else { 0 });
    for h in handles {
        ids.extend(h.await??);
    }
    let elapsed = start.elapsed();
    ensure!(
        Instant::now() < deadline,
        "creating {count} pending requests took longer than {SETUP_TIMEOUT:?}"
    );
    Ok((ids, elapsed))
}

// ---------------------------------------------------------------------------------------------
// Approve -> agent latency

struct LatencyResult {
    /// From just before sending approve to the long-poll's answer, microseconds, sorted.
    wake: Vec<u32>,
    /// Round trip of the approve call itself, microseconds, sorted.
    approve: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

async fn latency_phase(ctx: &Ctx, samples: usize, park: Duration) -> Result<LatencyResult> {
    // With replicas, the agent long-polls on the first and the reviewer approves on the last.
    let (first, last) = (ctx.addrs[0], ctx.addrs[ctx.addrs.len() - 1]);
    let mut setup = Conn::open(first).await?;
    let mut poller = Conn::open(first).await?;
    let mut reviewer = Conn::open(last).await?;
    let mut result = LatencyResult {
        wake: Vec::with_capacity(samples),
        approve: Vec::with_capacity(samples),
        errors: 0,
        first_error: None,
    };
    let deadline = Instant::now() + SETUP_TIMEOUT;
    for _ in 0..samples {
        if Instant::now() >= deadline {
            break;
        }
        let sample = async {
            let id = authorize(ctx, &mut setup).await?;
            let path = token_path(&id, Some(10));
            let long_poll = async {
                let answer = poller.call(Method::GET, &path, &ctx.agent, None).await;
                (answer, Instant::now())
            };
            tokio::pin!(long_poll);
            tokio::select! {
                (answer, _) = &mut long_poll => {
                    bail!("the long-poll answered before the approval: {:?}",
                        answer.map(|b| String::from_utf8_lossy(&b).into_owned()));
                }
                _ = tokio::time::sleep(park) => {}
            }
            let start = Instant::now();
            let approved = async {
                let r = approve(ctx, &mut reviewer, &id).await;
                (r, Instant::now())
            };
            let ((answer, woke), (approved, approved_at)) = tokio::join!(long_poll, approved);
            approved?;
            require_access_token(&parse_token(&answer?)?)?;
            Ok::<_, anyhow::Error>((woke - start, approved_at - start))
        };
        match sample.await {
            Ok((wake, approve)) => {
                result
                    .wake
                    .push(u32::try_from(wake.as_micros()).unwrap_or(u32::MAX));
                result
                    .approve
                    .push(u32::try_from(approve.as_micros()).unwrap_or(u32::MAX));
            }
            Err(e) => {
                result.errors += 1;
                result.first_error.get_or_insert_with(|| format!("{e:#}"));
                for c in [&mut setup, &mut poller, &mut reviewer] {
                    if c.sender.is_closed() {
                        c.reopen().await?;
                    }
                }
            }
        }
    }
    result.wake.sort_unstable();
    result.approve.sort_unstable();
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// Memory per pending request

struct MemoryResult {
    warmup: usize,
    created: usize,
    before: Memory,
    after: Memory,
    fill: Duration,
    pending_metric: Option<f64>,
    /// Bytes of the data directory (database, WAL) before and after the fill.
    disk_before: u64,
    disk_after: u64,
}

async fn pending_metric(addr: SocketAddr, token: &HeaderValue) -> Result<Option<f64>> {
    let mut conn = Conn::open(addr).await?;
    let (status, body) = conn
        .send(Method::GET, "/metrics", Some(token), None)
        .await?;
    if !status.is_success() {
        return Ok(None);
    }
    Ok(String::from_utf8_lossy(&body).lines().find_map(|l| {
        l.strip_prefix("countersign_approval_requests_pending ")
            .and_then(|v| v.trim().parse::<f64>().ok())
    }))
}

async fn memory_phase(opts: &Opts, group: Group, postgres: Option<&str>) -> Result<MemoryResult> {
    // A fresh server, so earlier phases' allocations and rows do not blur the difference.
    let server = Server::start(opts, group, postgres).await?;
    let ctx = Arc::new(setup(&server).await?);
    // Warm up at the same concurrency first, so connection buffers and allocator arenas that
    // do not depend on the number of pending requests are in the baseline.
    let warmup = (opts.pending_count / 20).clamp(1, 5_000);
    create_pending(&ctx, warmup, opts.memory_concurrency, false).await?;
    tokio::time::sleep(Duration::from_millis(opts.settle_ms)).await;
    let before = server.memory()?;
    let disk_before = server.data_bytes()?;
    let (_, fill) =
        create_pending(&ctx, opts.pending_count, opts.memory_concurrency, false).await?;
    tokio::time::sleep(Duration::from_millis(opts.settle_ms)).await;
    let after = server.memory()?;
    let disk_after = server.data_bytes()?;
    let pending_metric = pending_metric(server.addr(), &server.admin)
        .await
        .unwrap_or(None);
    Ok(MemoryResult {
        warmup,
        created: opts.pending_count,
        before,
        after,
        fill,
        pending_metric,
        disk_before,
        disk_after,
    })
}

// ---------------------------------------------------------------------------------------------
// The run and its report

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1]) / 1000.0
}

fn max_ms(sorted: &[u32]) -> f64 {
    sorted.last().map_or(f64::NAN, |v| f64::from(*v) / 1000.0)
}

fn machine_info(opts: &Opts) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or_else(
            || "unknown".into(),
            |kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0),
        );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let version = Command::new(&opts.server_bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    format!(
        "- CPU: {model}, nproc {nproc}\n- memory: {mem}, kernel {kernel}\n- server: {version} ({}), \
         data in {}, extra environment: {}\n- driver runtime threads: {}\n",
        opts.server_bin.display(),
        opts.data_dir_parent.as_deref().map_or_else(
            || std::env::temp_dir().display().to_string(),
            |p| p.display().to_string()
        ),
        if opts.server_env.is_empty() {
            "none (so SQLite synchronous=FULL, the default)".to_string()
        } else {
            opts.server_env
                .iter()
                .map(|(k, v)| format!("`{k}={v}`"))
                .collect::<Vec<_>>()
                .join(", ")
        },
        opts.driver_threads.max(1),
    )
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$\\".contains(c)) {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a
            }
        })
        .collect();
    let mut line = "cargo run --release -p countersign-bench --".to_string();
    for a in args {
        line.push(' ');
        line.push_str(&a);
    }
    line
}

fn run_row(out: &mut String, group: Group, r: &RunResult) -> Result<()> {
    let secs = r.elapsed.as_secs_f64();
    let per_op = |cpu: Duration| {
        if r.ok == 0 {
            f64::NAN
        } else {
            cpu.as_secs_f64() * 1e6 / r.ok as f64
        }
    };
    writeln!(
        out,
        "| {} | {group} | {} | {} | {:.0} {}/s | {:.2} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} |",
        r.name,
        r.concurrency,
        r.ok,
        r.ok as f64 / secs,
        r.unit,
        percentile(&r.latencies, 0.50),
        percentile(&r.latencies, 0.99),
        max_ms(&r.latencies),
        r.errors,
        r.server_cpu.as_secs_f64() / secs,
        r.driver_cpu.as_secs_f64() / secs,
        r.machine_cpu
            .saturating_sub(r.server_cpu + r.driver_cpu)
            .as_secs_f64()
            / secs,
        per_op(r.server_cpu),
        per_op(r.driver_cpu),
    )?;
    Ok(())
}

/// What one server group measured.
struct GroupResult {
    group: Group,
    runs: Vec<RunResult>,
    latency: Option<LatencyResult>,
    memory: Option<MemoryResult>,
}

async fn run_group(
    opts: &Opts,
    group: Group,
    postgres: Option<&str>,
    ticks: f64,
    notes: &mut Vec<String>,
) -> Result<GroupResult> {
    let duration = Duration::from_secs_f64(opts.duration);
    let top = opts.concurrency.iter().copied().max().unwrap_or(64);
    let wants = |p: Phase| opts.phases.contains(&p);
    let mut runs: Vec<RunResult> = Vec::new();
    let mut latency = None;

    if [Phase::Authorize, Phase::Poll, Phase::Flow, Phase::Latency]
        .iter()
        .any(|p| wants(*p))
    {
        let mut server = Server::start(opts, group, postgres).await?;
        let ctx = Arc::new(setup(&server).await?);
        let none = Arc::new(Vec::new());
        if wants(Phase::Authorize) {
            for &c in &opts.concurrency {
                eprintln!("{group}: authorize at concurrency {c} for {duration:?}");
                runs.push(
                    timed_run(
                        &server,
                        &ctx,
                        Run {
                            name: "1. authorize",
                            unit: "req",
                            op: Op::Authorize,
                            pool: none.clone(),
                            concurrency: c,
                            duration,
                            budget: opts.max_requests,
                        },
                        ticks,
                    )
                    .await?,
                );
            }
        }
        if wants(Phase::Poll) {
            eprintln!(
                "{group}: creating {} pending requests to poll",
                opts.poll_pool
            );
            let (pool, _) = create_pending(&ctx, opts.poll_pool, top, true).await?;
            ensure!(
                pool.len() == opts.poll_pool,
                "created only {} of {} pending requests",
                pool.len(),
                opts.poll_pool
            );
            eprintln!("{group}: poll at concurrency {top} for {duration:?}");
            runs.push(
                timed_run(
                    &server,
                    &ctx,
                    Run {
                        name: "2. poll (pending)",
                        unit: "req",
                        op: Op::Poll,
                        pool: Arc::new(pool),
                        concurrency: top,
                        duration,
                        budget: opts.max_requests,
                    },
                    ticks,
                )
                .await?,
            );
        }
        if wants(Phase::Flow) {
            eprintln!("{group}: complete flows at concurrency {top} for {duration:?}");
            runs.push(
                timed_run(
                    &server,
                    &ctx,
                    Run {
                        name: "3. flow (authorize, approve, token)",
                        unit: "flow",
                        op: Op::Flow,
                        pool: none.clone(),
                        concurrency: top,
                        duration,
                        budget: opts.max_requests,
                    },
                    ticks,
                )
                .await?,
            );
        }
        if wants(Phase::Latency) {
            eprintln!(
                "{group}: approve -> agent latency, {} samples",
                opts.latency_samples
            );
            latency = Some(
                latency_phase(
                    &ctx,
                    opts.latency_samples,
                    Duration::from_millis(opts.park_ms),
                )
                .await?,
            );
        }
        for r in &mut server.servers.replicas {
            if let Some(status) = r.exited() {
                notes.push(format!("{group}: a server exited early: {status}"));
            }
        }
        let log = server.servers.log_tail(10);
        if !log.trim().is_empty() {
            notes.push(format!(
                "{group}: server log (last lines):\n```\n{}\n```",
                log.trim_end()
            ));
        }
    }
    // Memory per pending request is one process's: measured with one replica only.
    let memory = if wants(Phase::Memory) && group.replicas == 1 {
        eprintln!(
            "{group}: memory: {} pending requests at concurrency {}",
            opts.pending_count, opts.memory_concurrency
        );
        Some(memory_phase(opts, group, postgres).await?)
    } else {
        None
    };
    Ok(GroupResult {
        group,
        runs,
        latency,
        memory,
    })
}

async fn run(opts: &Opts) -> Result<String> {
    let ticks = clock_ticks();
    let postgres = opts.backends.postgres_base()?;
    let mut notes = Vec::new();
    let mut results = Vec::new();
    for group in opts.backends.groups(true) {
        results.push(run_group(opts, group, postgres.as_deref(), ticks, &mut notes).await?);
    }

    let mut out = String::new();
    writeln!(out, "## Countersign load test\n")?;
    writeln!(out, "Command:\n\n```\n{}\n```\n", command_line())?;
    writeln!(out, "Machine (server and driver share it):\n")?;
    writeln!(out, "{}", machine_info(opts))?;
    // The same phase of every backend on adjacent rows.
    let mut runs: Vec<(Group, &RunResult)> = results
        .iter()
        .flat_map(|g| g.runs.iter().map(move |r| (g.group, r)))
        .collect();
    runs.sort_by(|a, b| (&a.1.name, a.1.concurrency).cmp(&(&b.1.name, b.1.concurrency)));
    if !runs.is_empty() {
        writeln!(
            out,
            "| phase | backend | conc. | ok | rate | p50 ms | p99 ms | max ms | errors | server cores | driver cores | other cores | server CPU µs/op | driver CPU µs/op |"
        )?;
        writeln!(
            out,
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        )?;
        for (group, r) in &runs {
            run_row(&mut out, *group, r)?;
        }
        writeln!(out)?;
        for (group, r) in &runs {
            if let Some(e) = &r.first_error {
                notes.push(format!(
                    "{group}: {} at concurrency {}: first error: {e}",
                    r.name, r.concurrency
                ));
            }
        }
    }
    if results.iter().any(|g| g.latency.is_some()) {
        writeln!(
            out,
            "| 4. approve -> agent | backend | samples | p50 ms | p99 ms | max ms | errors |"
        )?;
        writeln!(out, "| --- | --- | ---: | ---: | ---: | ---: | ---: |")?;
        for name in ["approve sent -> long-poll answered", "approve round trip"] {
            for g in &results {
                let Some(l) = &g.latency else { continue };
                let v = if name.starts_with("approve sent") {
                    &l.wake
                } else {
                    &l.approve
                };
                writeln!(
                    out,
                    "| {name} | {} | {} | {:.2} | {:.2} | {:.2} | {} |",
                    g.group,
                    v.len(),
                    percentile(v, 0.50),
                    percentile(v, 0.99),
                    max_ms(v),
                    l.errors
                )?;
            }
        }
        writeln!(out)?;
        for g in &results {
            if let Some(e) = g.latency.as_ref().and_then(|l| l.first_error.as_ref()) {
                notes.push(format!("{}: approve -> agent: first error: {e}", g.group));
            }
        }
    }
    if results.iter().any(|g| g.memory.is_some()) {
        writeln!(
            out,
            "| 5. memory | backend | pending created | VmRSS before | VmRSS after | bytes / pending (VmRSS) | anon | file | shmem | disk bytes / pending | fill rate |"
        )?;
        writeln!(
            out,
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        )?;
    }
    for g in &results {
        let Some(m) = &g.memory else { continue };
        let delta = m.after.rss as i64 - m.before.rss as i64;
        let per = delta as f64 / m.created as f64;
        let d = |a: u64, b: u64| (a as i64 - b as i64) as f64 / m.created as f64;
        // On PostgreSQL the rows are in the database server, not the data directory.
        let disk = match g.group.backend {
            Backend::Sqlite => format!("{:.0}", d(m.disk_after, m.disk_before)),
            Backend::Postgres => "—".to_string(),
        };
        writeln!(
            out,
            "| fresh server, after {} warm-up requests | {} | {} | {:.1} MiB | {:.1} MiB | {:.0} | {:.0} | {:.0} | {:.0} | {disk} | {:.0} req/s |",
            m.warmup,
            g.group,
            m.created,
            m.before.rss as f64 / 1048576.0,
            m.after.rss as f64 / 1048576.0,
            per,
            d(m.after.anon, m.before.anon),
            d(m.after.file, m.before.file),
            d(m.after.shmem, m.before.shmem),
            m.created as f64 / m.fill.as_secs_f64(),
        )?;
        if let Some(p) = m.pending_metric {
            notes.push(format!(
                "{}: memory: the server's countersign_approval_requests_pending gauge read {p} after the fill",
                g.group
            ));
        }
    }
    if results.iter().any(|g| g.memory.is_some()) {
        writeln!(out)?;
    }
    if !notes.is_empty() {
        writeln!(out, "Notes:\n")?;
        for n in notes {
            writeln!(out, "- {n}")?;
        }
    }
    Ok(out)
}
