//! The outbox worker. Every replica runs one: it claims due rows, fans state changes out into
//! deliveries, sends each delivery on its channel, and records the outcome. Transient
//! failures are retried with backoff and jitter (webhooks on Svix's schedule); a crash loses
//! nothing, because a claimed row that was never finished is claimed again after its lease.
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use countersign_core::Result;
use countersign_core::notify::{self, EMAIL, NOTIFY, PUSH, SLACK, TEAMS, WEBHOOK};
use countersign_core::oidc::{self, CHANNEL_PING, CHANNEL_PUSH, OutboxItem, OutboxOutcome};
use countersign_store::{OutboxClaim, OutboxRows};
use rand::Rng;
use tokio::sync::{Semaphore, watch};

use crate::state::AppState;

/// Most deliveries in flight at once.
const CONCURRENCY: usize = 256;
/// Most rows claimed at once.
const BATCH: usize = 128;
/// How long a wake-up waits for more changes before claiming.
const GATHER: StdDuration = StdDuration::from_millis(2);
/// The longest a `Retry-After` may postpone a delivery.
const MAX_RETRY_AFTER_SECS: i64 = 24 * 3600;

/// What a successful attempt learned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sent {
    /// The HTTP status or SMTP reply code.
    pub status: Option<u16>,
    /// What later updates of the message need (a Slack channel and `ts`).
    pub external_ref: Option<String>,
}

impl Sent {
    pub fn status(status: u16) -> Sent {
        Sent {
            status: Some(status),
            external_ref: None,
        }
    }
}

/// Why an attempt did not deliver. Errors never carry secrets (tokens, URLs with keys).
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptError {
    /// Worth another try later (network error, 5xx, 429); `after` is the receiver's
    /// `Retry-After`.
    Retry {
        error: String,
        status: Option<u16>,
        after: Option<Duration>,
    },
    /// Will not get better (4xx, refused address, nothing left to send to).
    GiveUp { error: String, status: Option<u16> },
}

impl AttemptError {
    pub fn retry(error: impl Into<String>) -> AttemptError {
        AttemptError::Retry {
            error: error.into(),
            status: None,
            after: None,
        }
    }

    pub fn give_up(error: impl Into<String>) -> AttemptError {
        AttemptError::GiveUp {
            error: error.into(),
            status: None,
        }
    }
}

/// The store failing is worth another try; a record that is gone is not.
impl From<countersign_core::Error> for AttemptError {
    fn from(e: countersign_core::Error) -> AttemptError {
        match e {
            countersign_core::Error::NotFound(m) => AttemptError::give_up(m),
            other => AttemptError::retry(format!("store: {other}")),
        }
    }
}

pub type Attempt = std::result::Result<Sent, AttemptError>;

/// Describes a failed HTTP call without its URL (which may hold a key).
pub fn send_error(e: reqwest::Error) -> AttemptError {
    let text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        format!(
            "cannot connect: {}",
            std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_default()
        )
    } else {
        "request failed".to_string()
    };
    AttemptError::retry(text)
}

/// The common reading of an HTTP answer: 2xx delivered; 429 and 5xx retried (honouring
/// `Retry-After`); anything else given up.
pub fn http_outcome(response: &reqwest::Response) -> Attempt {
    let status = response.status();
    let code = Some(status.as_u16());
    if status.is_success() {
        return Ok(Sent::status(status.as_u16()));
    }
    let error = format!("the endpoint answered {status}");
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        Err(AttemptError::Retry {
            error,
            status: code,
            after: retry_after(response.headers()),
        })
    } else {
        Err(AttemptError::GiveUp {
            error,
            status: code,
        })
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare from these services and ignored).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<i64>()
        .ok()
        .map(|s| Duration::seconds(s.clamp(0, MAX_RETRY_AFTER_SECS)))
}

/// When to try again, if at all.
fn next_attempt(
    state: &AppState,
    item: &OutboxItem,
    after: Option<Duration>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let max = state.settings.outbound.max_attempts;
    let base = match item.channel.as_str() {
        WEBHOOK => notify::webhook_backoff(item.attempts)?,
        CHANNEL_PING | CHANNEL_PUSH if item.attempts < max => oidc::backoff(item.attempts),
        // A fan-out fails only when the store does; it is retried until the store is back.
        NOTIFY => notify::jittered_backoff(item.attempts, rand::rng().random()),
        _ if item.attempts < max => notify::jittered_backoff(item.attempts, rand::rng().random()),
        _ => return None,
    };
    Some(now + after.map_or(base, |a| a.max(base)))
}

/// One attempt on the row's channel.
async fn attempt(state: &AppState, item: &OutboxItem) -> Attempt {
    match item.channel.as_str() {
        CHANNEL_PING | CHANNEL_PUSH => crate::oidc::delivery::attempt(state, item).await,
        EMAIL => super::email::deliver(state, item).await,
        SLACK => super::slack::deliver(state, item).await,
        TEAMS => super::teams::deliver(state, item).await,
        WEBHOOK => super::webhook::deliver(state, item).await,
        PUSH => super::push::deliver(state, item).await,
        other => Err(AttemptError::give_up(format!("unknown channel {other}"))),
    }
}

fn metric_name(channel: &str) -> &'static str {
    match channel {
        CHANNEL_PING | CHANNEL_PUSH => "countersign_callbacks_total",
        _ => "countersign_notifications_total",
    }
}

/// One delivery: an attempt and its recorded outcome.
async fn deliver(state: &AppState, item: OutboxItem) -> Result<()> {
    let result = attempt(state, &item).await;
    record(state, &item, result).await
}

/// Fans a batch of state changes out into their deliveries in one transaction (under load,
/// one write for many requests); rows that could not be planned are retried.
async fn fan_out(state: &AppState, items: Vec<OutboxItem>) {
    let retry = match super::fanout::run(state, &items).await {
        Ok(failed) => failed,
        Err(e) => items.iter().map(|i| (i, e.clone())).collect(),
    };
    for (item, e) in retry {
        let result = Err(AttemptError::retry(format!("fan-out: {e}")));
        if let Err(e) = record(state, item, result).await {
            tracing::warn!(error = %e, "recording a fan-out failure failed");
        }
    }
}

/// Records how an attempt went: delivered, retried later, or failed for good.
async fn record(state: &AppState, item: &OutboxItem, result: Attempt) -> Result<()> {
    let now = state.clock.now();
    let (outcome, label) = match result {
        Ok(sent) => (
            OutboxOutcome::Delivered {
                at: now,
                status_code: sent.status.map(i64::from),
                external_ref: sent.external_ref,
            },
            "delivered",
        ),
        Err(AttemptError::Retry {
            error,
            status,
            after,
        }) => match next_attempt(state, item, after, now) {
            Some(at) => (
                OutboxOutcome::Retry {
                    at,
                    error,
                    status_code: status.map(i64::from),
                },
                "retry",
            ),
            None => failed(item, now, error, status),
        },
        Err(AttemptError::GiveUp { error, status }) => failed(item, now, error, status),
    };
    metrics::counter!(metric_name(&item.channel), "channel" => item.channel.clone(), "outcome" => label)
        .increment(1);
    state.store.finish_outbox(item.id, outcome).await
}

fn failed(
    item: &OutboxItem,
    now: DateTime<Utc>,
    error: String,
    status: Option<u16>,
) -> (OutboxOutcome, &'static str) {
    tracing::warn!(outbox_id = item.id, approval_id = %item.approval_id, channel = %item.channel, %error, "delivery failed for good");
    (
        OutboxOutcome::Failed {
            at: now,
            error,
            status_code: status.map(i64::from),
        },
        "failed",
    )
}

/// The outbox worker: woken by local state changes and hints from other replicas, and every
/// `outbound.poll_interval_ms` for retries. One loop fans state changes out in batches; the
/// other sends, each delivery as its own task (at most `CONCURRENCY` at once), so one slow
/// receiver never holds up the others and a callback never waits for a fan-out.
pub async fn run(state: AppState, stop: watch::Receiver<bool>) {
    let changes = tokio::spawn(fan_out_loop(state.clone(), stop.clone()));
    send_loop(state, stop).await;
    let _ = changes.await;
}

async fn fan_out_loop(state: AppState, mut stop: watch::Receiver<bool>) {
    let idle = StdDuration::from_millis(state.settings.outbound.poll_interval_ms.max(10));
    let wake = state.notifier.changes_handle();
    loop {
        if *stop.borrow() {
            return;
        }
        let claimed = match claim(&state, OutboxRows::Changes, BATCH as u32).await {
            Ok(items) => {
                let n = items.len();
                if n > 0 {
                    fan_out(&state, items).await;
                    // Their deliveries are due now.
                    state.notifier.wake_sends();
                }
                n
            }
            Err(e) => {
                tracing::warn!(error = %e, "claiming state changes failed; will retry");
                0
            }
        };
        if claimed == BATCH {
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {
                // In a burst (the last claim found several changes), let more gather, so
                // that one claim and one fan-out write serve many of them; a light load
                // goes on at once.
                if claimed > 1 {
                    tokio::time::sleep(GATHER).await;
                }
            }
            _ = tokio::time::sleep(idle) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn send_loop(state: AppState, mut stop: watch::Receiver<bool>) {
    let idle = StdDuration::from_millis(state.settings.outbound.poll_interval_ms.max(10));
    let wake = state.notifier.sends_handle();
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    loop {
        if *stop.borrow() {
            return;
        }
        // Wait for a free slot before claiming, so claimed rows start at once.
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        let free = slots.available_permits() + 1;
        let want = free.min(BATCH);
        let busy = match claim(&state, OutboxRows::Sends, want as u32).await {
            Ok(items) => {
                let full = items.len() == want;
                let mut first = Some(first);
                for item in items {
                    let permit = match first.take() {
                        Some(p) => p,
                        None => match slots.clone().acquire_owned().await {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                    };
                    let state = state.clone();
                    tokio::spawn(async move {
                        if let Err(e) = deliver(&state, item).await {
                            tracing::warn!(error = %e, "recording a delivery outcome failed");
                        }
                        drop(permit);
                    });
                }
                full
            }
            Err(e) => {
                tracing::warn!(error = %e, "claiming outbox rows failed; will retry");
                false
            }
        };
        if busy {
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(idle) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Claims up to `limit` due rows, each leased for long enough to finish one attempt (a
/// worker that dies leaves its rows to others after that).
async fn claim(state: &AppState, rows: OutboxRows, limit: u32) -> Result<Vec<OutboxItem>> {
    let now = state.clock.now();
    let outbound = &state.settings.outbound;
    let longest = (outbound.connect_timeout_ms + outbound.timeout_ms)
        .max(state.settings.notifications.email.timeout_ms);
    let lease = Duration::milliseconds(longest as i64) + Duration::seconds(10);
    state
        .store
        .claim_outbox(OutboxClaim::new(rows, now, now + lease, limit))
        .await
}
