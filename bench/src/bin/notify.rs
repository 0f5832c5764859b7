//! Bounded loopback benchmark of notification fan-out: tool calls that need the approval of a
//! five-person group, each person told by email, by Slack direct message and by a webhook,
//! against local receivers (an SMTP sink, a Slack Web API stand-in, a webhook endpoint) that
//! note when each delivery arrives.
//!
//! Phase 1 (throughput): `--requests` calls at `--concurrency`; deliveries per second from the
//! first call to the last delivery. Phase 2 (latency under light load): `--samples` calls one
//! at a time; for each channel, the time from the call's answer (request accepted) to its
//! first delivery arriving at the receiver.
//!
//! It starts `countersign serve` as child processes on 127.0.0.1, once per backend (durable
//! SQLite; PostgreSQL with one replica and with two, the callers alternating between them);
//! every wait stops at a deadline; the children are killed when the driver ends.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing;
use clap::Parser;
use countersign_bench::server::{BackendArgs, Group, Servers, Spec};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const ADMIN_KEY: &str = "csk_bench-admin-key-0123456789-abcdefghijklmnop";
const PEOPLE: usize = 5;
const WAIT: Duration = Duration::from_secs(300);

#[derive(Parser, Debug)]
#[command(
    name = "countersign-bench-notify",
    about = "Loopback benchmark of notification fan-out (email, Slack, webhooks)"
)]
struct Opts {
    #[arg(long, default_value = "target/release/countersign")]
    server_bin: PathBuf,
    /// Tool calls of the throughput phase (each makes 15 deliveries).
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// Concurrent callers in the throughput phase.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Calls of the light-load latency phase, one at a time.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Pause between latency samples, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pause_ms: u64,
    #[command(flatten)]
    backends: BackendArgs,
}

/// Where the receivers listen.
struct Receivers {
    arrivals: Arc<Arrivals>,
    smtp_port: u16,
    base: String,
}

/// What one server group measured: the throughput row and each channel's latency row.
struct Measured {
    throughput: String,
    latency: Vec<(Channel, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Channel {
    Email,
    Slack,
    Webhook,
}

/// When each delivery arrived, by approval id.
#[derive(Default)]
struct Arrivals {
    seen: Mutex<HashMap<(String, Channel), Vec<Instant>>>,
}

impl Arrivals {
    fn note(&self, channel: Channel, body: &[u8]) {
        let text = String::from_utf8_lossy(body);
        if let (Some(id), Ok(mut seen)) = (approval_id(&text), self.seen.lock()) {
            seen.entry((id, channel)).or_default().push(Instant::now());
        }
    }

    fn total(&self) -> usize {
        self.seen
            .lock()
            .map(|s| s.values().map(Vec::len).sum())
            .unwrap_or(0)
    }

    fn first(&self, id: &str, channel: Channel) -> Option<Instant> {
        self.seen
            .lock()
            .ok()?
            .get(&(id.to_string(), channel))
            .and_then(|v| v.iter().min().copied())
    }

    fn last(&self) -> Option<Instant> {
        self.seen
            .lock()
            .ok()?
            .values()
            .flat_map(|v| v.iter().copied())
            .max()
    }
}

/// The first `apr_…` id in a message.
fn approval_id(text: &str) -> Option<String> {
    let start = text.find("apr_")?;
    let id: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    Some(id)
}

/// A minimal SMTP sink: accepts every message and notes when its data ended.
async fn smtp_sink(listener: TcpListener, arrivals: Arc<Arrivals>) {
    while let Ok((stream, _)) = listener.accept().await {
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read);
            if write.write_all(b"220 sink ESMTP\r\n").await.is_err() {
                return;
            }
            let mut line = String::new();
            let mut data: Option<Vec<u8>> = None;
            loop {
                line.clear();
                match lines.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if let Some(body) = data.as_mut() {
                    if line == ".\r\n" {
                        arrivals.note(Channel::Email, body);
                        data = None;
                        if write.write_all(b"250 OK queued\r\n").await.is_err() {
                            return;
                        }
                    } else {
                        body.extend_from_slice(line.as_bytes());
                    }
                    continue;
                }
                let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                let answer: &[u8] = match verb.as_str() {
                    "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                    "DATA" => {
                        data = Some(Vec::new());
                        b"354 go ahead\r\n"
                    }
                    "QUIT" => {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        return;
                    }
                    _ => b"250 OK\r\n",
                };
                if write.write_all(answer).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn slack_post(State(arrivals): State<Arc<Arrivals>>, body: Bytes) -> axum::Json<Value> {
    arrivals.note(Channel::Slack, &body);
    axum::Json(json!({"ok": true, "channel": "D0BENCH", "ts": "1700000000.000100"}))
}

async fn slack_other() -> axum::Json<Value> {
    axum::Json(json!({"ok": true}))
}

async fn webhook(State(arrivals): State<Arc<Arrivals>>, body: Bytes) -> &'static str {
    arrivals.note(Channel::Webhook, &body);
    "ok"
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

fn percentile_ms(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn wait_for_total(arrivals: &Arrivals, total: usize) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while arrivals.total() < total {
        if Instant::now() > deadline {
            bail!("only {} of {total} deliveries arrived", arrivals.total());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<()> {
    let opts = Opts::parse();
    let postgres = opts.backends.postgres_base()?;
    let arrivals = Arc::new(Arrivals::default());
    let smtp = TcpListener::bind("127.0.0.1:0").await?;
    let smtp_port = smtp.local_addr()?.port();
    tokio::spawn(smtp_sink(smtp, arrivals.clone()));
    let receivers = Router::new()
        .route("/slack/chat.postMessage", routing::post(slack_post))
        .route("/slack/{method}", routing::post(slack_other))
        .route("/hooks/{n}", routing::post(webhook))
        .with_state(arrivals.clone());
    let http_listener = TcpListener::bind("127.0.0.1:0").await?;
    let receivers_base = format!("http://{}", http_listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(http_listener, receivers).await;
    });
    let receivers = Receivers {
        arrivals,
        smtp_port,
        base: receivers_base,
    };
    let mut measured = Vec::new();
    for group in opts.backends.groups(true) {
        let m = measure(&opts, group, postgres.as_deref(), &receivers).await?;
        measured.push(m);
    }
    println!(
        "| phase | backend | requests | deliveries | errors | requests accepted in | all delivered in | deliveries/s |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for m in &measured {
        println!("{}", m.throughput);
    }
    println!(
        "\n| 2. accepted -> first delivery | backend | samples | p50 ms | p99 ms | max ms |\n| --- | --- | ---: | ---: | ---: | ---: |"
    );
    for channel in [Channel::Webhook, Channel::Slack, Channel::Email] {
        for m in &measured {
            for (c, row) in &m.latency {
                if *c == channel {
                    println!("{row}");
                }
            }
        }
    }
    Ok(())
}

/// One server group: set up the tenant, then both phases.
async fn measure(
    opts: &Opts,
    group: Group,
    postgres: Option<&str>,
    receivers: &Receivers,
) -> Result<Measured> {
    let arrivals = &receivers.arrivals;
    let receivers_base = &receivers.base;
    let servers = Servers::start(Spec {
        bin: &opts.server_bin,
        group,
        postgres_base: postgres,
        admin_key: ADMIN_KEY,
        env: vec![
            (
                "COUNTERSIGN_NOTIFICATIONS__EMAIL__SMTP_URL".into(),
                format!("smtp://127.0.0.1:{}", receivers.smtp_port),
            ),
            (
                "COUNTERSIGN_NOTIFICATIONS__EMAIL__FROM".into(),
                "Countersign <countersign@example.com>".into(),
            ),
            (
                "COUNTERSIGN_NOTIFICATIONS__SLACK__API_BASE_URL".into(),
                format!("{receivers_base}/slack"),
            ),
            (
                "COUNTERSIGN_OUTBOUND__ALLOW_PRIVATE_NETWORKS".into(),
                "true".into(),
            ),
            ("COUNTERSIGN_OUTBOUND__ALLOW_HTTP".into(), "true".into()),
        ],
        dir_parent: None,
    })
    .await?;
    let base = servers.first().base();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency)
        .build()?;
    let admin = |method: reqwest::Method, path: &str, body: Value| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let res = http
                .request(method, &url)
                .bearer_auth(ADMIN_KEY)
                .json(&body)
                .send()
                .await?;
            let status = res.status();
            let value: Value = res.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!("{url}: {status} {value}");
            }
            Ok::<Value, anyhow::Error>(value)
        }
    };
    let mut members = Vec::new();
    for i in 0..PEOPLE {
        let email = format!("reviewer{i}@example.com");
        let user = admin(
            reqwest::Method::POST,
            "/v1/admin/users",
            json!({"email": email, "name": format!("Reviewer {i}")}),
        )
        .await?;
        let id = user["id"].as_str().context("no user id")?;
        // Slack users known up front, so no lookup is measured.
        admin(
            reqwest::Method::PUT,
            &format!("/v1/admin/users/{id}/notification-preferences"),
            json!({"slack": true, "slack_user_id": format!("U0BENCH{i}")}),
        )
        .await?;
        members.push(json!({"email": email, "role": "primary"}));
        admin(
            reqwest::Method::POST,
            "/v1/admin/webhooks",
            json!({"url": format!("{receivers_base}/hooks/{i}"), "events": ["approval.requested"]}),
        )
        .await?;
    }
    admin(
        reqwest::Method::PUT,
        "/v1/admin/notification-channels/slack",
        json!({"bot_token": "xoxb-bench", "signing_secret": "bench-signing-secret"}),
    )
    .await?;
    admin(
        reqwest::Method::POST,
        "/v1/guard/default/approval-groups",
        json!({"id": "group_finance", "name": "Finance", "members": members}),
    )
    .await?;
    admin(
        reqwest::Method::POST,
        "/v1/guard/default/policies",
        json!({"name": "payments", "tool_pattern": "payment_*", "action": "require_approval",
               "approval_config": {"approval_group_id": "group_finance",
                                   "notification_channels": ["email", "slack", "webhook"]}}),
    )
    .await?;
    let agent = admin(
        reqwest::Method::POST,
        "/v1/admin/agents",
        json!({"name": "bench", "trust_level": "standard"}),
    )
    .await?;
    let key = admin(
        reqwest::Method::POST,
        "/v1/admin/api-keys",
        json!({"role": "agent", "agent_id": agent["id"]}),
    )
    .await?;
    let key: Arc<str> = key["key"].as_str().context("no key")?.into();
    // The callers alternate between the replicas.
    let tool_urls: Vec<Arc<str>> = servers
        .bases()
        .iter()
        .map(|b| format!("{b}/v1/guard/default/tool").into())
        .collect();
    if tool_urls.len() > 1 {
        // The tenant's configuration, written on the first replica, reaches the others.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let baseline = arrivals.total();
    let call = |n: usize| json!({"session_id": "bench", "tool_call": {"name": "payment_refund", "arguments": {"amount": 5, "n": n}}});

    // 1. Throughput.
    let per_request = PEOPLE * 3;
    let total = baseline + opts.requests * per_request;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..opts.concurrency)
        .map(|w| {
            let (http, url, key, next) = (
                http.clone(),
                tool_urls[w % tool_urls.len()].clone(),
                key.clone(),
                next.clone(),
            );
            let requests = opts.requests;
            tokio::spawn(async move {
                let mut errors = 0usize;
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= requests {
                        return errors;
                    }
                    match post(&http, &url, &key, &call(n)).await {
                        Ok(v) if v["action"] == "require_approval" => {}
                        _ => errors += 1,
                    }
                }
            })
        })
        .collect();
    let mut errors = 0;
    for w in workers {
        errors += w.await.unwrap_or(1);
    }
    let accepted_in = start.elapsed();
    wait_for_total(arrivals, total).await?;
    let delivered_in = arrivals
        .last()
        .map(|t| t - start)
        .unwrap_or_else(|| start.elapsed());
    let delivered = arrivals.total() - baseline;
    let throughput = format!(
        "| 1. fan-out, concurrency {} | {group} | {} | {delivered} | {errors} | {:.2} s | {:.2} s | {:.0} |",
        opts.concurrency,
        opts.requests,
        accepted_in.as_secs_f64(),
        delivered_in.as_secs_f64(),
        delivered as f64 / delivered_in.as_secs_f64(),
    );

    // 2. Latency under light load: one call at a time.
    let mut samples: HashMap<Channel, Vec<f64>> = HashMap::new();
    let already = arrivals.total();
    for i in 0..opts.samples {
        let url = &tool_urls[i % tool_urls.len()];
        let answer = post(&http, url, &key, &call(opts.requests + i)).await?;
        let accepted = Instant::now();
        let id = answer["approval_id"]
            .as_str()
            .context("no approval id")?
            .to_string();
        wait_for_total(arrivals, already + (i + 1) * per_request).await?;
        for channel in [Channel::Email, Channel::Slack, Channel::Webhook] {
            if let Some(t) = arrivals.first(&id, channel) {
                let ms = t.saturating_duration_since(accepted).as_secs_f64() * 1000.0;
                samples.entry(channel).or_default().push(ms);
            }
        }
        tokio::time::sleep(Duration::from_millis(opts.pause_ms)).await;
    }
    let mut latency = Vec::new();
    for channel in [Channel::Webhook, Channel::Slack, Channel::Email] {
        let mut v = samples.remove(&channel).unwrap_or_default();
        v.sort_by(f64::total_cmp);
        latency.push((
            channel,
            format!(
                "| {channel:?} | {group} | {} | {:.2} | {:.2} | {:.2} |",
                v.len(),
                percentile_ms(&v, 0.5),
                percentile_ms(&v, 0.99),
                v.last().copied().unwrap_or(f64::NAN)
            ),
        ));
    }
    Ok(Measured {
        throughput,
        latency,
    })
}
