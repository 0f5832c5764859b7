//! Rate limits: per API key, per client address on the endpoints that take no API key, and
//! much tighter failure budgets for guessing secrets (a `user_code`, a sign-in, invitation or
//! review link, a passkey). Every refusal is a 429 with `Retry-After`.
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use countersign_core::{Error, Result};
use countersign_proto::ErrorCode;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;
use crate::settings::LimitSettings;
use crate::state::AppState;

/// Failure windows remembered at most; beyond this, expired ones are dropped first.
const MAX_TRACKED_FAILURES: usize = 100_000;
/// How often idle rate-limit state is dropped.
const FORGET_EVERY: Duration = Duration::from_secs(60);

pub struct Throttle {
    per_key: Option<DefaultKeyedRateLimiter<String>>,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    failures: Failures,
    max_pending_per_agent: u64,
    clock: DefaultClock,
    last_forget: parking_lot::Mutex<Instant>,
}

fn limiter<K: std::hash::Hash + Eq + Clone>(
    per_second: u32,
    burst: u32,
) -> Option<DefaultKeyedRateLimiter<K>> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
    Some(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

fn rate_limited(message: String, wait: Duration) -> Error {
    Error::RateLimited {
        code: ErrorCode::RateLimited,
        message,
        retry_after_secs: retry_secs(wait),
    }
}

/// Whole seconds to wait, rounded up, at least one.
fn retry_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl Throttle {
    pub fn new(limits: &LimitSettings) -> Throttle {
        Throttle {
            per_key: limiter(limits.per_key_per_second, limits.per_key_burst),
            per_ip: limiter(limits.per_ip_per_second, limits.per_ip_burst),
            failures: Failures::new(
                limits.failures_per_window,
                Duration::from_secs(limits.failure_window_secs.max(1)),
            ),
            max_pending_per_agent: limits.max_pending_per_agent,
            clock: DefaultClock::default(),
            last_forget: parking_lot::Mutex::new(Instant::now()),
        }
    }

    /// One request made with an API key (identified by its id).
    pub fn check_key(&self, key_id: &str) -> Result<()> {
        let Some(limiter) = &self.per_key else {
            return Ok(());
        };
        limiter.check_key(&key_id.to_string()).map_err(|not_until| {
            rate_limited(
                "this API key makes more requests than the server allows; slow down".into(),
                not_until.wait_time_from(self.clock.now()),
            )
        })
    }

    /// One request from a client address to an endpoint that takes no API key.
    pub fn check_ip(&self, ip: IpAddr) -> Result<()> {
        let Some(limiter) = &self.per_ip else {
            return Ok(());
        };
        limiter.check_key(&ip).map_err(|not_until| {
            rate_limited(
                "too many requests from this address; slow down".into(),
                not_until.wait_time_from(self.clock.now()),
            )
        })
    }

    /// Refuses an attempt at a secret while `subject` has used up its failure budget.
    pub fn check_failures(&self, subject: &str) -> Result<()> {
        self.failures.check(subject, Instant::now())
    }

    /// Counts a failed attempt at a secret against `subject`.
    pub fn record_failure(&self, subject: &str) {
        self.failures.record(subject, Instant::now());
    }

    /// Refuses a new request from an agent that has `pending` requests already.
    pub fn check_pending(&self, pending: u64) -> Result<()> {
        if self.max_pending_per_agent == 0 || pending < self.max_pending_per_agent {
            return Ok(());
        }
        Err(Error::RateLimited {
            code: ErrorCode::TooManyPending,
            message: format!(
                "this agent has {pending} pending requests, as many as it may; wait until some are decided or expire"
            ),
            retry_after_secs: 30,
        })
    }

    /// The most pending requests worth counting for one agent (0: no limit).
    pub fn max_pending_per_agent(&self) -> u64 {
        self.max_pending_per_agent
    }

    /// Drops the state of keys and addresses that have been idle (at most once a minute).
    pub fn forget_idle(&self) {
        {
            let mut last = self.last_forget.lock();
            if last.elapsed() < FORGET_EVERY {
                return;
            }
            *last = Instant::now();
        }
        if let Some(l) = &self.per_key {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
        self.failures.forget_expired(Instant::now());
    }
}

/// Refuses a new request from an agent (or OpenID client) that has as many pending requests
/// as it may.
pub async fn check_pending(state: &AppState, tenant_id: &str, agent_id: &str) -> Result<()> {
    let max = state.throttle.max_pending_per_agent();
    if max == 0 {
        return Ok(());
    }
    let pending = state
        .store
        .agent_pending_count(tenant_id, agent_id, state.clock.now(), max)
        .await?;
    state.throttle.check_pending(pending)
}

/// Fixed windows of failed attempts per subject: after `limit` failures, every attempt is
/// refused until the window that saw the first of them ends.
struct Failures {
    limit: u32,
    window: Duration,
    windows: parking_lot::Mutex<HashMap<String, FailureWindow>>,
}

#[derive(Debug, Clone, Copy)]
struct FailureWindow {
    started: Instant,
    count: u32,
}

impl Failures {
    fn new(limit: u32, window: Duration) -> Failures {
        Failures {
            limit,
            window,
            windows: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    fn check(&self, subject: &str, now: Instant) -> Result<()> {
        if self.limit == 0 {
            return Ok(());
        }
        let windows = self.windows.lock();
        match windows.get(subject) {
            Some(w) if w.count >= self.limit && now < w.started + self.window => Err(rate_limited(
                "too many failed attempts; wait before trying again".into(),
                w.started + self.window - now,
            )),
            _ => Ok(()),
        }
    }

    fn record(&self, subject: &str, now: Instant) {
        if self.limit == 0 {
            return;
        }
        let mut windows = self.windows.lock();
        if windows.len() >= MAX_TRACKED_FAILURES && !windows.contains_key(subject) {
            let window = self.window;
            windows.retain(|_, w| now < w.started + window);
        }
        let entry = windows.entry(subject.to_string()).or_insert(FailureWindow {
            started: now,
            count: 0,
        });
        if now >= entry.started + self.window {
            *entry = FailureWindow {
                started: now,
                count: 0,
            };
        }
        entry.count = entry.count.saturating_add(1);
    }

    fn forget_expired(&self, now: Instant) {
        let window = self.window;
        self.windows.lock().retain(|_, w| now < w.started + window);
    }
}

/// Endpoints anyone may call without an API key.
fn takes_no_key(path: &str) -> bool {
    path.starts_with("/oidc/")
        || path.starts_with("/ui/sign-in")
        || path.starts_with("/ui/invite")
        || path.starts_with("/ui/review")
        || path.starts_with("/integrations/slack/")
}

/// Ceremonies that check a secret from the caller: a failed answer counts against the
/// address's failure budget.
fn checks_a_secret(path: &str) -> bool {
    path == "/ui/sign-in/link"
        || path == "/ui/sign-in/passkey/finish"
        || path.starts_with("/ui/invite")
        || path.starts_with("/ui/review")
}

/// Applies the per-address limit (and, on ceremonies, the failure budget) to the endpoints
/// that take no API key.
pub async fn by_address(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if !takes_no_key(&path) {
        return next.run(request).await;
    }
    let Some(ip) = client_address(&state, &request) else {
        return next.run(request).await;
    };
    let ceremony = checks_a_secret(&path);
    let subject = format!("address:{ip}");
    let checked = state.throttle.check_ip(ip).and_then(|()| {
        if ceremony {
            state.throttle.check_failures(&subject)
        } else {
            Ok(())
        }
    });
    if let Err(e) = checked {
        return refusal(&path, e);
    }
    let response = next.run(request).await;
    let status = response.status();
    // A refused secret (unusable link, unknown passkey, forged form); not a conflict or a
    // malformed body.
    if ceremony && matches!(status.as_u16(), 400 | 401 | 403 | 404) {
        state.throttle.record_failure(&subject);
    }
    response
}

/// The client's address: from the proxy's header when one is configured, else the
/// connection's.
fn client_address(state: &AppState, request: &Request) -> Option<IpAddr> {
    if let Some(name) = &state.settings.limits.client_ip_header {
        return request
            .headers()
            .get_all(name.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(|last| last.trim().parse().ok());
    }
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// A refusal in the format of the endpoint it stops.
fn refusal(path: &str, e: Error) -> Response {
    if path.starts_with("/oidc/") {
        crate::routes::oidc::error_response(e, crate::routes::oidc::Endpoint::Backchannel)
    } else if path.starts_with("/ui/") {
        crate::ui::UiError::Failed(e).into_response()
    } else {
        ApiError(e).into_response()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_failure_budget_refuses_until_its_window_ends() {
        let failures = Failures::new(2, Duration::from_secs(60));
        let start = Instant::now();
        failures.record("a", start);
        assert!(failures.check("a", start).is_ok());
        failures.record("a", start + Duration::from_secs(10));
        match failures.check("a", start + Duration::from_secs(20)) {
            Err(Error::RateLimited {
                code,
                retry_after_secs,
                ..
            }) => {
                assert_eq!(code, ErrorCode::RateLimited);
                assert_eq!(retry_after_secs, 40);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Other subjects have their own budget; the window's end restores this one.
        assert!(failures.check("b", start).is_ok());
        assert!(failures.check("a", start + Duration::from_secs(60)).is_ok());
        failures.record("a", start + Duration::from_secs(61));
        assert!(failures.check("a", start + Duration::from_secs(62)).is_ok());
        failures.forget_expired(start + Duration::from_secs(200));
        assert!(failures.windows.lock().is_empty());
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(retry_secs(Duration::ZERO), 1);
        assert_eq!(retry_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_secs(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_secs(Duration::from_secs(3)), 3);
    }

    #[test]
    fn the_pending_cap_counts_up_to_its_limit() {
        let throttle = Throttle::new(&LimitSettings {
            max_pending_per_agent: 3,
            ..LimitSettings::default()
        });
        assert!(throttle.check_pending(2).is_ok());
        let refused = throttle.check_pending(3).unwrap_err();
        assert_eq!(refused.code(), ErrorCode::TooManyPending);
        let off = Throttle::new(&LimitSettings {
            max_pending_per_agent: 0,
            ..LimitSettings::default()
        });
        assert!(off.check_pending(u64::MAX).is_ok());
    }
}
