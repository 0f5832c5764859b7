//! Bounded loopback benchmark of the guard's `POST /tool`: allow decisions and
//! require_approval decisions at a fixed concurrency, with 10 and with 1,000 policies in the
//! tenant, so the cost of policy evaluation as the policy count grows shows in one run.
//!
//! It starts `countersign serve` as child processes on 127.0.0.1, once per backend (durable
//! SQLite; PostgreSQL with one replica and with two, the workers alternating between them);
//! every phase stops at a deadline and a request budget; the children are killed when the
//! driver ends.
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use countersign_bench::server::{BackendArgs, Group, Servers, Spec};
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
    /// Policy counts of the tenant, in increasing order (at least 2: the allow and the
    /// require_approval policy; the rest are block policies with a condition).
    #[arg(long, value_delimiter = ',', default_value = "10,1000")]
    policies: Vec<usize>,
    #[command(flatten)]
    backends: BackendArgs,
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
    urls: Arc<Vec<String>>,
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
            let (http, key, counter) = (http.clone(), key.clone(), counter.clone());
            // The workers alternate between the replicas.
            let url = urls[w % urls.len()].clone();
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

/// Waits until every replica answers `tool` with `expect`: the policies set up on the first
/// have reached the others.
async fn settle(
    http: &reqwest::Client,
    urls: &[String],
    key: &str,
    tool: &str,
    expect: &str,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = json!({"session_id": "settle", "tool_call": {"name": tool, "arguments": {"n": 0}}});
    for url in urls {
        loop {
            if let Ok(v) = post(http, url, key, &body).await
                && v["action"] == expect
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("{url} did not answer {expect} for {tool} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// One server group: set up, then every policy count and decision. Rows of the report.
async fn measure(
    opts: &Opts,
    group: Group,
    postgres: Option<&str>,
    http: &reqwest::Client,
) -> Result<Vec<(usize, usize, String)>> {
    let servers = Servers::start(Spec {
        bin: &opts.server_bin,
        group,
        postgres_base: postgres,
        admin_key: ADMIN_KEY,
        env: Vec::new(),
        dir_parent: None,
    })
    .await?;
    let base = servers.first().base();
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
    let urls: Arc<Vec<String>> = Arc::new(
        servers
            .bases()
            .iter()
            .map(|b| format!("{b}/v1/guard/default/tool"))
            .collect(),
    );
    let mut rows = Vec::new();
    let mut count = 2;
    for &target in &opts.policies {
        while count < target {
            admin("/v1/guard/default/policies", policy(count)).await?;
            count += 1;
        }
        // The last policy added decides its probe on every replica once it is loaded there.
        if count > 2 {
            let probe = format!("family_{}_probe", count - 1);
            settle(http, &urls, &key, &probe, "block").await?;
        } else {
            settle(http, &urls, &key, "search_docs", "allow").await?;
        }
        for (i, (tool, expect)) in [
            ("search_docs", "allow"),
            ("payment_refund", "require_approval"),
        ]
        .into_iter()
        .enumerate()
        {
            eprintln!("{group}: {count} policies, {expect}");
            let s = run_phase(http, urls.clone(), key.clone(), tool, expect, opts).await;
            rows.push((
                target,
                i,
                format!(
                    "| {target} | {expect} | {group} | {} | {} | {:.0} | {:.2} | {:.2} | {} |\n",
                    opts.concurrency,
                    s.ops,
                    s.ops as f64 / s.elapsed.as_secs_f64(),
                    s.percentile_ms(0.5),
                    s.percentile_ms(0.99),
                    s.errors
                ),
            ));
        }
    }
    Ok(rows)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<()> {
    let opts = Opts::parse();
    if opts.policies.is_empty() || opts.policies.iter().any(|&p| p < 2) {
        bail!("--policies needs counts of at least 2");
    }
    let postgres = opts.backends.postgres_base()?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency)
        .build()?;
    let mut rows = Vec::new();
    for group in opts.backends.groups(true) {
        rows.extend(measure(&opts, group, postgres.as_deref(), &http).await?);
    }
    // The same policy count and decision of every backend on adjacent rows.
    rows.sort_by_key(|(policies, decision, _)| (*policies, *decision));
    let mut report = String::from(
        "| policies | decision | backend | concurrency | decisions | rate /s | p50 ms | p99 ms | errors |\n| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (_, _, row) in rows {
        report.push_str(&row);
    }
    println!("{report}");
    Ok(())
}
