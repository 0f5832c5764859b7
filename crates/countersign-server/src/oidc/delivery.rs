//! CIBA ping and push callbacks from the durable outbox. Every replica runs a worker that
//! claims due rows, computes the payload at delivery time, POSTs it and records the outcome:
//! 2xx delivered; network errors and 5xx retried with exponential backoff; anything else
//! failed at once. Outgoing calls follow no redirects, time out, and refuse non-public
//! addresses (checked on the resolved address) unless the operator allows them.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::Duration;
use countersign_core::approval::RequestRef;
use countersign_core::oidc::{self, CHANNEL_PING, CHANNEL_PUSH, OutboxItem, OutboxOutcome};
use countersign_core::{Error, Result};
use countersign_proto::ApprovalStatus;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::service::issue_tokens;
use crate::settings::OutboundSettings;
use crate::state::AppState;

/// Most callbacks claimed at once.
const BATCH: u32 = 64;

/// Whether an address is on the public internet (not loopback, private, link-local,
/// carrier-grade NAT, documentation, multicast or otherwise reserved).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 198 && (18..20).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first == 0x2001 && v6.segments()[1] == 0x0db8)
                || first == 0x0064)
        }
    }
}

/// Resolves host names and keeps only the addresses callbacks may reach.
#[derive(Debug, Clone)]
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address (outbound.allow_private_networks is off)"
                )
                .into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The HTTP client of callbacks.
pub fn outbound_client(settings: &OutboundSettings) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(StdDuration::from_millis(settings.connect_timeout_ms))
        .timeout(StdDuration::from_millis(settings.timeout_ms))
        .dns_resolver(Arc::new(GuardedResolver {
            allow_private: settings.allow_private_networks,
        }))
        .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Refuses literal non-public addresses (the resolver only sees host names).
fn check_target(target: &str, allow_private: bool) -> std::result::Result<(), String> {
    let url = url::Url::parse(target).map_err(|e| format!("bad endpoint URL: {e}"))?;
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
        None => return Err("the endpoint has no host".into()),
    };
    match ip {
        Some(ip) if !allow_private && !is_public(ip) => Err(format!(
            "{ip} is not a public address (outbound.allow_private_networks is off)"
        )),
        _ => Ok(()),
    }
}

enum AttemptError {
    /// Worth another try later (network error, 5xx).
    Retry(String),
    /// Will not get better (4xx, redirect, refused address, request gone).
    GiveUp(String),
}

async fn payload(state: &AppState, item: &OutboxItem) -> std::result::Result<Value, AttemptError> {
    let internal = |e: Error| AttemptError::Retry(format!("store: {e}"));
    let auth_req_id = state.oidc.auth_req_id(&item.approval_id);
    if item.channel == CHANNEL_PING {
        return Ok(json!({ "auth_req_id": auth_req_id }));
    }
    if item.channel != CHANNEL_PUSH {
        return Err(AttemptError::GiveUp(format!(
            "unknown channel {}",
            item.channel
        )));
    }
    let status = ApprovalStatus::parse(&item.event).unwrap_or(ApprovalStatus::Rejected);
    if status != ApprovalStatus::Approved {
        return Ok(oidc::push_error_payload(&auth_req_id, status));
    }
    let request = state
        .store
        .find_request(
            &item.tenant_id,
            &RequestRef::PublicId(item.approval_id.clone()),
        )
        .await
        .map_err(internal)?
        .ok_or_else(|| AttemptError::GiveUp("the request is gone".into()))?;
    let oidc_state = state
        .store
        .get_oidc_request(&item.tenant_id, &item.approval_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| AttemptError::GiveUp("the request has no CIBA state".into()))?;
    // A retry sends the grant of the first attempt again (same `jti`), never a second grant.
    let mut issued = None;
    for _ in 0..2 {
        let previous = state
            .store
            .token_jti(&item.tenant_id, &item.approval_id)
            .await
            .map_err(internal)?;
        issued = issue_tokens(state, &request, &oidc_state, Some(&auth_req_id), previous)
            .await
            .map_err(internal)?;
        if issued.is_some() {
            break;
        }
    }
    let mut body = issued.ok_or_else(|| AttemptError::Retry("token issue raced".into()))?;
    body["auth_req_id"] = Value::String(auth_req_id);
    Ok(body)
}

async fn attempt(state: &AppState, item: &OutboxItem) -> std::result::Result<(), AttemptError> {
    check_target(&item.target, state.settings.outbound.allow_private_networks)
        .map_err(AttemptError::GiveUp)?;
    let body = payload(state, item).await?;
    let mut request = state.oidc.http.post(&item.target).json(&body);
    if let Some(token) = &item.secret {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| {
        // Connection failures, timeouts and refused resolutions; none carries a secret.
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
        AttemptError::Retry(text)
    })?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else if status.is_server_error() {
        Err(AttemptError::Retry(format!(
            "the endpoint answered {status}"
        )))
    } else {
        Err(AttemptError::GiveUp(format!(
            "the endpoint answered {status}"
        )))
    }
}

async fn deliver(state: &AppState, item: OutboxItem) -> Result<()> {
    let outcome = attempt(state, &item).await;
    let now = state.clock.now();
    let max = state.settings.outbound.max_attempts;
    let (outcome, label) = match outcome {
        Ok(()) => (OutboxOutcome::Delivered { at: now }, "delivered"),
        Err(AttemptError::Retry(error)) if item.attempts < max => (
            OutboxOutcome::Retry {
                at: now + oidc::backoff(item.attempts),
                error,
            },
            "retry",
        ),
        Err(AttemptError::Retry(error) | AttemptError::GiveUp(error)) => {
            tracing::warn!(outbox_id = item.id, approval_id = %item.approval_id, channel = %item.channel, %error, "callback failed for good");
            (OutboxOutcome::Failed { at: now, error }, "failed")
        }
    };
    metrics::counter!("countersign_callbacks_total", "channel" => item.channel.clone(), "outcome" => label)
        .increment(1);
    state.store.finish_outbox(item.id, outcome).await
}

/// Claims and delivers what is due now; returns how many were claimed.
pub async fn deliver_due(state: &AppState) -> Result<usize> {
    let now = state.clock.now();
    // Long enough for one attempt; a worker that dies leaves the row to others after that.
    let lease = Duration::milliseconds(
        (state.settings.outbound.connect_timeout_ms + state.settings.outbound.timeout_ms) as i64,
    ) + Duration::seconds(10);
    let items = state.store.claim_outbox(now, now + lease, BATCH).await?;
    let claimed = items.len();
    let results =
        futures::future::join_all(items.into_iter().map(|item| deliver(state, item))).await;
    for r in results {
        if let Err(e) = r {
            tracing::warn!(error = %e, "recording a callback outcome failed");
        }
    }
    Ok(claimed)
}

/// The delivery worker: woken by local state changes and hints from other replicas, and
/// every `outbound.poll_interval_ms` for retries.
pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let idle = StdDuration::from_millis(state.settings.outbound.poll_interval_ms.max(10));
    let wake = state.oidc.outbox_wake.clone();
    loop {
        if *stop.borrow() {
            return;
        }
        let busy = match deliver_due(&state).await {
            Ok(n) => n as u32 == BATCH,
            Err(e) => {
                tracing::warn!(error = %e, "outbox delivery failed; will retry");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_private_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "2606:4700::1111", "1.1.1.1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        assert!(check_target("http://127.0.0.1:9/cb", false).is_err());
        assert!(check_target("http://[::1]:9/cb", false).is_err());
        assert!(check_target("http://127.0.0.1:9/cb", true).is_ok());
        assert!(check_target("https://client.example.com/cb", false).is_ok());
    }
}
