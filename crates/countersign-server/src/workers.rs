//! The server's background work: expiry and escalation sweeps, following other replicas'
//! changes, and the notification outbox worker (which lives in `notify::worker`). Started
//! with the server and stopped with it. The sweeps also run inline where a request needs an
//! overdue state recorded before it goes on.
use std::time::Duration;

use countersign_core::Result;
use countersign_store::Change;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::after_commit::{Committed, announce};
use crate::state::AppState;

/// The running background tasks.
pub struct Workers {
    sweeper: JoinHandle<()>,
    follower: JoinHandle<()>,
    delivery: JoinHandle<()>,
}

impl Workers {
    /// Starts every background task; each returns once `stop` turns true.
    pub fn start(state: &AppState, stop: &watch::Sender<bool>) -> Workers {
        Workers {
            sweeper: tokio::spawn(run_sweeper(state.clone(), stop.subscribe())),
            follower: tokio::spawn(follow_changes(state.clone(), stop.subscribe())),
            delivery: tokio::spawn(crate::notify::worker::run(state.clone(), stop.subscribe())),
        }
    }

    /// Waits for every task to return (after `stop` was sent).
    pub async fn join(self) {
        let _ = self.sweeper.await;
        let _ = self.follower.await;
        let _ = self.delivery.await;
    }
}

/// Times out overdue requests and records due escalations in the background, so waiters and
/// lists see them.
async fn run_sweeper(state: AppState, mut stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(state.settings.requests.sweep_interval_ms.max(10));
    // Expired idempotency answers are already ignored; deleting them can wait a little.
    let answers_every = (Duration::from_secs(60).as_millis() / interval.as_millis().max(1)).max(1);
    let mut round: u128 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = sweep_expired(&state).await {
            tracing::warn!(error = %e, "expiry sweep failed; will retry");
        }
        if let Err(e) = run_escalations(&state).await {
            tracing::warn!(error = %e, "escalation sweep failed; will retry");
        }
        state.throttle.forget_idle();
        if round.is_multiple_of(answers_every)
            && let Err(e) = state.store.forget_expired_answers(state.clock.now()).await
        {
            tracing::warn!(error = %e, "idempotency sweep failed; will retry");
        }
        round = round.wrapping_add(1);
    }
}

/// Applies hints from other replicas: wake the waiters of a changed request, reload keys,
/// and after a lost listener wake everyone so they re-read the store.
async fn follow_changes(state: AppState, mut stop: watch::Receiver<bool>) {
    let Some(mut changes) = state.store.changes() else {
        return;
    };
    loop {
        let change = tokio::select! {
            c = changes.recv() => c,
            _ = stop.changed() => return,
        };
        match change {
            Ok(Change::Request(id)) => announce(&state, Committed::Remote(&id)),
            Ok(Change::SigningKeys) => reload_keys(&state).await,
            Ok(Change::Guard(tenant)) => state.guard.invalidate(&tenant),
            Ok(Change::Keys) => state.principals.forget_all(),
            Ok(Change::Resync) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                announce(&state, Committed::Resync);
                state.guard.clear();
                state.principals.forget_all();
                reload_keys(&state).await;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn reload_keys(state: &AppState) {
    if let Err(e) = state.signer.reload(&state.store).await {
        tracing::warn!(error = %e, "reloading signing keys failed");
    }
}

/// Marks overdue requests expired and wakes their waiters; returns how many expired.
pub async fn sweep_expired(state: &AppState) -> Result<usize> {
    let mut total = 0;
    loop {
        let expired = state.store.expire_due(state.clock.now(), 500).await?;
        for e in &expired {
            announce(state, Committed::TimedOut(&e.request));
        }
        total += expired.len();
        if expired.len() < 500 {
            break;
        }
    }
    Ok(total)
}

/// Records escalation steps that came due; returns how many requests escalated.
pub async fn run_escalations(state: &AppState) -> Result<usize> {
    let escalated = state.store.escalate_due(state.clock.now(), 500).await?;
    for r in &escalated {
        announce(state, Committed::Escalated(r));
    }
    Ok(escalated.len())
}
