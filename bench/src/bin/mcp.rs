//! Bounded loopback benchmark of `countersign mcp wrap`: the latency it adds to an allowed
//! `tools/call`. One MCP client calls a small upstream directly and through `wrap` (which asks
//! the guard of a running `countersign serve` before forwarding), in interleaved blocks of the
//! same run, and reports the percentiles of both and their difference.
//!
//! The upstream is this same program started with `--upstream` (an rmcp stdio server with one
//! read-only `echo` tool), so both paths pay the same upstream cost. A third series times the
//! guard's `POST /tool` alone, the bound of what `wrap` adds.
//!
//! The calls are sequential, one client at a time, so there is no load to spread over
//! replicas: with `--backends postgres` it measures one replica on PostgreSQL only.
#![allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
use std::borrow::Cow;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use countersign_bench::server::{BackendArgs, Group, Servers, Spec};
use rmcp::ServiceExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, Tool, ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleClient, RoleServer, RunningService};
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "csk_bench-admin-key-0123456789-abcdefghijklmnop";

#[derive(Parser, Debug)]
#[command(
    name = "countersign-bench-mcp",
    about = "Loopback benchmark of the latency `countersign mcp wrap` adds",
    long_about = "Loopback benchmark of the latency `countersign mcp wrap` adds.\n\nThe calls \
        are sequential, so there is no load to spread over replicas: with `--backends postgres` \
        it measures one replica on PostgreSQL (no `PostgreSQL x2`)."
)]
struct Opts {
    #[arg(long, default_value = "target/release/countersign")]
    server_bin: PathBuf,
    /// Calls measured on each path.
    #[arg(long, default_value_t = 10_000)]
    calls: usize,
    /// Calls per block; the paths alternate block by block.
    #[arg(long, default_value_t = 500)]
    block: usize,
    /// Calls on each path (and guard checks) before the measured ones.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    #[command(flatten)]
    backends: BackendArgs,
    /// Run as the upstream MCP server on stdin/stdout (used by the driver itself).
    #[arg(long, hide = true)]
    upstream: bool,
}

/// The upstream: one read-only tool that echoes its arguments.
struct Echo;

impl rmcp::ServerHandler for Echo {
    async fn list_tools(
        &self,
        _params: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, rmcp::ErrorData> {
        let schema = json!({"type": "object"});
        let Value::Object(schema) = schema else {
            return Err(rmcp::ErrorData::internal_error("schema", None));
        };
        let mut annotations = ToolAnnotations::new();
        annotations.read_only_hint = Some(true);
        let tool = Tool::new("echo", "Echo the arguments", Arc::new(schema)).annotate(annotations);
        Ok(ListToolsResult::with_all_items(vec![tool]))
    }

    async fn call_tool(
        &self,
        params: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, rmcp::ErrorData> {
        let text = serde_json::to_string(&params.arguments).unwrap_or_default();
        Ok(CallToolResponse::Complete(CallToolResult::success(vec![
            ContentBlock::text(text),
        ])))
    }
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Result<Value> {
    let res = http
        .post(url)
        .bearer_auth(ADMIN_KEY)
        .json(body)
        .send()
        .await?;
    let status = res.status();
    let value: Value = res.json().await?;
    if !status.is_success() {
        bail!("{url}: {status} {value}");
    }
    Ok(value)
}

/// Start `countersign serve` with an agent key and a tenant whose policies allow `echo`.
async fn start_server(
    opts: &Opts,
    group: Group,
    postgres: Option<&str>,
) -> Result<(Servers, String, String)> {
    let server = Servers::start(Spec {
        bin: &opts.server_bin,
        group,
        postgres_base: postgres,
        admin_key: ADMIN_KEY,
        env: Vec::new(),
        dir_parent: None,
    })
    .await?;
    let base = server.first().base();
    let http = reqwest::Client::new();
    let agent = post(
        &http,
        &format!("{base}/v1/admin/agents"),
        &json!({"name": "bench", "trust_level": "standard"}),
    )
    .await?;
    let key = post(
        &http,
        &format!("{base}/v1/admin/api-keys"),
        &json!({"role": "agent", "agent_id": agent["id"]}),
    )
    .await?;
    let key = key["key"].as_str().context("no key")?.to_string();
    // The policy every MCP deployment starts with, evaluated on each call.
    post(
        &http,
        &format!("{base}/v1/guard/default/policies"),
        &json!({"name": "destructive tools are blocked", "tool_pattern": "*",
                "condition": "tool.annotations.destructiveHint", "action": "block"}),
    )
    .await?;
    Ok((server, base, key))
}

type Client = RunningService<RoleClient, ()>;

async fn connect(program: &std::ffi::OsStr, args: &[&std::ffi::OsStr]) -> Result<Client> {
    let mut command = tokio::process::Command::new(program);
    command.args(args).stderr(Stdio::inherit());
    let transport = TokioChildProcess::new(command)?;
    Ok(().serve(transport).await?)
}

/// `n` sequential calls of `echo`; the latency of each in microseconds.
async fn calls(client: &Client, n: usize, offset: usize) -> Result<Vec<u32>> {
    let mut micros = Vec::with_capacity(n);
    for i in 0..n {
        let args = json!({"n": offset + i, "text": "hello"});
        let Value::Object(args) = args else {
            bail!("arguments");
        };
        let params = CallToolRequestParams::new(Cow::Borrowed("echo")).with_arguments(args);
        let t = Instant::now();
        let result = client.call_tool(params).await?;
        let elapsed = t.elapsed().as_micros() as u32;
        if result.is_error == Some(true) {
            bail!("the call failed: {result:?}");
        }
        micros.push(elapsed);
    }
    Ok(micros)
}

/// `n` sequential `POST /v1/guard/default/tool` of the same allowed call: the part of the added
/// latency that is the guard's own answer over HTTP.
async fn guard_checks(base: &str, key: &str, n: usize, offset: usize) -> Result<Vec<u32>> {
    let http = reqwest::Client::new();
    let url = format!("{base}/v1/guard/default/tool");
    let mut micros = Vec::with_capacity(n);
    for i in 0..n {
        let body = json!({"session_id": "bench", "tool_call": {"name": "echo",
            "arguments": {"n": offset + i, "text": "hello"}},
            "annotations": {"readOnlyHint": true}, "mcp": {"server": "bench"}});
        let t = Instant::now();
        let res = http.post(&url).bearer_auth(key).json(&body).send().await?;
        let ok = res.status().is_success();
        let value: Value = res.json().await?;
        let elapsed = t.elapsed().as_micros() as u32;
        if !ok || value["action"] != "allow" {
            bail!("the guard did not allow: {value}");
        }
        micros.push(elapsed);
    }
    Ok(micros)
}

fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<()> {
    let opts = Opts::parse();
    if opts.upstream {
        let running = Echo.serve(rmcp::transport::stdio()).await?;
        running.waiting().await?;
        return Ok(());
    }
    let postgres = opts.backends.postgres_base()?;
    let mut rows = Vec::new();
    for group in opts.backends.groups(false) {
        let (elapsed, lines) = measure(&opts, group, postgres.as_deref()).await?;
        println!(
            "{group}: {} calls on each path, interleaved in blocks of {}, sequential, {:.1} s",
            opts.calls,
            opts.block.max(1),
            elapsed.as_secs_f64()
        );
        rows.push(lines);
    }
    println!(
        "\n| path | backend | p50 ms | p90 ms | p99 ms | max ms |\n| --- | --- | ---: | ---: | ---: | ---: |"
    );
    // The same path of every backend on adjacent rows.
    for path in 0..4 {
        for lines in &rows {
            println!("{}", lines[path]);
        }
    }
    Ok(())
}

/// One backend: the three series, as report rows (direct, wrapped, added, guard alone).
async fn measure(
    opts: &Opts,
    group: Group,
    postgres: Option<&str>,
) -> Result<(Duration, Vec<String>)> {
    let (_server, base, key) = start_server(opts, group, postgres).await?;
    let me = std::env::current_exe()?;
    let direct = connect(me.as_os_str(), &["--upstream".as_ref()]).await?;
    let server_bin = opts.server_bin.as_os_str();
    let wrapped = connect(
        server_bin,
        &[
            "mcp".as_ref(),
            "wrap".as_ref(),
            "--url".as_ref(),
            base.as_ref(),
            "--key".as_ref(),
            key.as_ref(),
            "--server-name".as_ref(),
            "bench".as_ref(),
            "--".as_ref(),
            me.as_os_str(),
            "--upstream".as_ref(),
        ],
    )
    .await?;
    // Warm both paths (connections, caches, the tool list the proxy learns annotations from).
    calls(&direct, opts.warmup, 0).await?;
    calls(&wrapped, opts.warmup, 0).await?;
    let block = opts.block.max(1);
    guard_checks(&base, &key, opts.warmup, 0).await?;
    let (mut d, mut w, mut g) = (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    while d.len() < opts.calls {
        let n = block.min(opts.calls - d.len());
        d.extend(calls(&direct, n, d.len()).await?);
        w.extend(calls(&wrapped, n, w.len()).await?);
        g.extend(guard_checks(&base, &key, n, g.len()).await?);
    }
    let elapsed = started.elapsed();
    d.sort_unstable();
    w.sort_unstable();
    g.sort_unstable();
    let mut lines = Vec::new();
    for (name, v) in [("direct", &d), ("through `mcp wrap`", &w)] {
        lines.push(format!(
            "| {name} | {group} | {:.3} | {:.3} | {:.3} | {:.3} |",
            percentile_ms(v, 0.5),
            percentile_ms(v, 0.9),
            percentile_ms(v, 0.99),
            percentile_ms(v, 1.0)
        ));
    }
    lines.push(format!(
        "| added by `wrap` | {group} | {:.3} | {:.3} | {:.3} | |",
        percentile_ms(&w, 0.5) - percentile_ms(&d, 0.5),
        percentile_ms(&w, 0.9) - percentile_ms(&d, 0.9),
        percentile_ms(&w, 0.99) - percentile_ms(&d, 0.99)
    ));
    lines.push(format!(
        "| of which the guard's answer (`POST /tool` alone) | {group} | {:.3} | {:.3} | {:.3} | {:.3} |",
        percentile_ms(&g, 0.5),
        percentile_ms(&g, 0.9),
        percentile_ms(&g, 0.99),
        percentile_ms(&g, 1.0)
    ));
    let _ = direct.cancel().await;
    let _ = wrapped.cancel().await;
    Ok((elapsed, lines))
}
