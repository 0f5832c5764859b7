//! Bounded loopback benchmark of the guard's `POST /tool`: allow decisions and
//! require_approval decisions at a fixed concurrency, with 10 and with 1,000 policies in the
//! tenant, so the cost of policy evaluation as the policy count grows shows in one run.
//!
//! It starts `countersign serve` (durable SQLite) as a child process on 127.0.0.1; every phase
//! stops at a deadline and a request budget; the child is killed when the driver ends.
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "csk_bench-admin-key-0123456789-abcdefghijklmnop";
const MAX_OPS: u64 = 2_000_000;

#[derive(Parser, Debug)]
#[command(
    name = "countersign-bench-guard",
    about = "Loopback benchmark of POST /v1/guard/{proxyId}/tool"
)]
struct Opts {
    #[arg(long, default_value = "target/release/countersign")]
    server_bin: PathBuf,
    /// Seconds each timed phase lasts.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Stats {
    ops: u64,
    errors: u64,
    elapsed: Duration,
    micros: Vec<u32>,
}

impl Stats {
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.micros.is_empty() {
            return 0.0;
        }
        let i = ((self.micros.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.micros[i]) / 1000.0
    }
}

async fn post(http: &reqwest::Client, url: &str, key: &str, body: &Value) -> Result<Value> {
    let res = http.post(url).bearer_auth(key).json(body).send().await?;
    let status = res.status();
    let value: Value = res.json().await?;
    if !status.is_success() {
        bail!("{url}: {status} {value}");
    }
    Ok(value)
}

async fn run_phase(
    http: &reqwest::Client,
    url: Arc<str>,
    key: Arc<str>,
    tool: &'static str,
    expect: &'static str,
    opts: &Opts,
) -> Stats {
    let deadline = Instant::now() + Duration::from_secs_f64(opts.duration);
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..opts.concurrency)
        .map(|w| {
            let (http, url, key, counter) =
                (http.clone(), url.clone(), key.clone(), counter.clone());
            tokio::spawn(async move {
                let mut micros = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < deadline && counter.fetch_add(1, Ordering::Relaxed) < MAX_OPS
                {
                    let n = counter.load(Ordering::Relaxed);
                    let body = json!({"session_id": format!("s{w}"),
                        "tool_call": {"name": tool, "arguments": {"n": n, "worker": w}}});
                    let t = Instant::now();
                    match post(&http, &url, &key, &body).await {
                        Ok(v) if v["action"] == expect => {
                            micros.push(t.elapsed().as_micros() as u32)
                        }
                        _ => errors += 1,
                    }
                }
                (micros, errors)
            })
        })
        .collect();
    let mut micros = Vec::new();
    let mut errors = 0;
    for w in workers {
        if let Ok((m, e)) = w.await {
            micros.extend(m);
            errors += e;
        }
    }
    let elapsed = start.elapsed();
    micros.sort_unstable();
    Stats {
        ops: micros.len() as u64,
        errors,
        elapsed,
        micros,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<()> {
    let opts = Opts::parse();
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let child = Command::new(&opts.server_bin)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .env("COUNTERSIGN_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
        .env("COUNTERSIGN_LOG__LEVEL", "warn")
        // One driver on one address is the whole load: rate limits would measure themselves.
        .env("COUNTERSIGN_LIMITS__PER_KEY_PER_SECOND", "0")
        .env("COUNTERSIGN_LIMITS__PER_IP_PER_SECOND", "0")
        .env("COUNTERSIGN_LIMITS__MAX_PENDING_PER_AGENT", "0")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", opts.server_bin.display()))?;
    let _server = Guard(child);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency)
        .build()?;
    let ready = Instant::now() + Duration::from_secs(60);
    while http.get(format!("{base}/readyz")).send().await.is_err() {
        if Instant::now() > ready {
            bail!("the server did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = |path: &str, body: Value| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move { post(&http, &url, ADMIN_KEY, &body).await }
    };
    admin(
        "/v1/admin/users",
        json!({"email": "alice@example.com", "name": "Alice"}),
    )
    .await?;
    let agent = admin(
        "/v1/admin/agents",
        json!({"name": "bench", "trust_level": "standard"}),
    )
    .await?;
    let key = admin(
        "/v1/admin/api-keys",
        json!({"role": "agent", "agent_id": agent["id"]}),
    )
    .await?;
    let key: Arc<str> = key["key"].as_str().context("no key")?.into();
    admin(
        "/v1/guard/default/approval-groups",
        json!({"id": "group_finance", "name": "Finance", "members": [{"email": "alice@example.com", "role": "primary"}]}),
    )
    .await?;
    let policy = |i: usize| {
        json!({"name": format!("block tool family {i}"), "tool_pattern": format!("family_{i}_*"),
               "action": "block", "priority": i, "condition": "args.n >= 0"})
    };
    admin("/v1/guard/default/policies", json!({"name": "payments", "tool_pattern": "payment_*",
        "action": "require_approval", "priority": 5000, "approval_config": {"approval_group_id": "group_finance"}})).await?;
    admin(
        "/v1/guard/default/policies",
        json!({"name": "reads", "tool_pattern": "search_*", "action": "allow"}),
    )
    .await?;
    let url: Arc<str> = format!("{base}/v1/guard/default/tool").into();
    let mut report = String::from(
        "| policies | decision | concurrency | decisions | rate /s | p50 ms | p99 ms | errors |\n| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut count = 2;
    for target in [10, 1000] {
        while count < target {
            admin("/v1/guard/default/policies", policy(count)).await?;
            count += 1;
        }
        for (tool, expect) in [
            ("search_docs", "allow"),
            ("payment_refund", "require_approval"),
        ] {
            let s = run_phase(&http, url.clone(), key.clone(), tool, expect, &opts).await;
            report.push_str(&format!(
                "| {target} | {expect} | {} | {} | {:.0} | {:.2} | {:.2} | {} |\n",
                opts.concurrency,
                s.ops,
                s.ops as f64 / s.elapsed.as_secs_f64(),
                s.percentile_ms(0.5),
                s.percentile_ms(0.99),
                s.errors
            ));
        }
    }
    println!("{report}");
    Ok(())
}
