//! What follows a committed change to an approval request, in one place: long-polls wake,
//! the dashboard's live views hear of it, the outbox worker looks for the rows the change
//! wrote (callbacks and notifications), and the counters count. Services and workers call
//! [`announce`] after the store said yes; nothing else does any of this.
use countersign_core::approval::{ApprovalRequest, Verdict};

use crate::events::RequestEventKind;
use crate::state::AppState;

/// A change that committed.
pub enum Committed<'a> {
    Created(&'a ApprovalRequest),
    /// A reviewer's vote (the request may still be pending, waiting for a quorum).
    Decided(&'a ApprovalRequest, Verdict),
    Cancelled(&'a ApprovalRequest),
    /// Timed out (expired, or approved when its policy says so).
    TimedOut(&'a ApprovalRequest),
    Escalated(&'a ApprovalRequest),
    /// Another replica changed this request; read the store to learn how.
    Remote(&'a str),
    /// Hints from other replicas may have been lost: everyone re-reads.
    Resync,
}

pub fn announce(state: &AppState, change: Committed<'_>) {
    let (kind, request) = match change {
        Committed::Created(r) => {
            metrics::counter!("countersign_approval_requests_created_total", "kind" => r.kind.as_str())
                .increment(1);
            (RequestEventKind::Created, Some(r))
        }
        Committed::Decided(r, verdict) => {
            let label = match verdict {
                Verdict::Approve => "approved",
                Verdict::Reject => "rejected",
            };
            metrics::counter!("countersign_decisions_total", "verdict" => label).increment(1);
            (RequestEventKind::Decided, Some(r))
        }
        Committed::Cancelled(r) => {
            metrics::counter!("countersign_approval_requests_cancelled_total").increment(1);
            (RequestEventKind::Decided, Some(r))
        }
        Committed::TimedOut(r) => {
            metrics::counter!("countersign_approval_requests_expired_total").increment(1);
            (RequestEventKind::Expired, Some(r))
        }
        Committed::Escalated(r) => {
            metrics::counter!("countersign_escalations_total").increment(1);
            // Newly eligible reviewers' queues show it now.
            (RequestEventKind::Changed, Some(r))
        }
        Committed::Remote(id) => {
            state.waiters.wake(id);
            state.events.publish(RequestEventKind::Changed, None, id);
            state.notifier.wake();
            return;
        }
        Committed::Resync => {
            state.waiters.wake_all();
            state.events.resync();
            state.notifier.wake();
            return;
        }
    };
    if let Some(r) = request {
        if kind != RequestEventKind::Created {
            state.waiters.wake(&r.id);
        }
        state.events.publish(kind, Some(&r.tenant_id), &r.id);
    }
    // Every change wrote its notification to the outbox; all but a creation may also have
    // written callbacks (CIBA ping and push), which go out at once.
    if kind == RequestEventKind::Created {
        state.notifier.wake_changes();
    } else {
        state.notifier.wake();
    }
}
