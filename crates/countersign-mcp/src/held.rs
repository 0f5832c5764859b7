//! A call that needs a person: held until the decision, with the client kept informed.
use std::time::Duration;

use countersign_proto::ApprovalStatus;
use countersign_proto::guard::{GuardApprovalView, ToolDecision};
// Logging is deprecated after protocol 2025-11-25, the versions the proxy relays still have it.
#[allow(deprecated)]
use rmcp::model::{
    ElicitRequest, ElicitRequestParams, LoggingLevel, LoggingMessageNotificationParam,
    ProgressNotificationParam, ServerRequest,
};
use rmcp::service::{PeerRequestOptions, RequestContext, RequestHandle, RoleServer};

use crate::guard::Guard;

/// How long one long-poll waits (the server holds at most 30 s).
const POLL: Duration = Duration::from_secs(25);
/// Consecutive failures to reach the guard before the held call gives up (fails closed).
const MAX_FAILURES: u32 = 5;

pub(crate) enum Held {
    Approved(Box<GuardApprovalView>),
    /// Not approved: the text says why, for the model and the person behind it.
    Refused(String),
    /// The client cancelled its call; the approval was withdrawn.
    Cancelled,
}

/// Who was asked, in words.
fn asked(view: &GuardApprovalView) -> String {
    match &view.approval_group {
        Some(group) => format!("the reviewers of group {group}"),
        None => "the tenant's reviewers".to_string(),
    }
}

/// The text a refused call returns.
pub(crate) fn refusal(tool: &str, view: &GuardApprovalView) -> String {
    let id = &view.approval_id;
    match view.status {
        ApprovalStatus::Rejected => {
            let by = view.decided_by.as_deref().unwrap_or("a reviewer");
            match view.reason.as_deref().or(view.comment.as_deref()) {
                Some(reason) => format!("Rejected by {by} (approval {id}): {reason}"),
                None => format!("Rejected by {by} (approval {id})"),
            }
        }
        ApprovalStatus::Expired => {
            format!("No one approved `{tool}` in time: approval {id} expired")
        }
        ApprovalStatus::Cancelled => format!("Approval {id} was cancelled"),
        ApprovalStatus::Pending | ApprovalStatus::Approved => {
            format!("Approval {id} is {:?}", view.status)
        }
    }
}

/// Whether the client can open a URL for its user (URL-mode elicitation, protocol 2025-11-25).
fn takes_url_elicitation(context: &RequestContext<RoleServer>) -> bool {
    context.peer.peer_info().is_some_and(|info| {
        info.capabilities
            .elicitation
            .as_ref()
            .is_some_and(|e| e.url.is_some())
    })
}

/// Offer the review page to the client's user. The answer changes nothing: only a reviewer's
/// decision on the server does; the request is withdrawn once the approval is decided.
async fn offer_review_page(
    context: &RequestContext<RoleServer>,
    tool: &str,
    approval_id: &str,
    url: String,
) -> Option<RequestHandle<RoleServer>> {
    let params = ElicitRequestParams::UrlElicitationParams {
        meta: None,
        message: format!("`{tool}` needs approval in Countersign (approval {approval_id})"),
        url,
        elicitation_id: approval_id.to_string(),
    };
    let request = ServerRequest::ElicitRequest(ElicitRequest::new(params));
    match context
        .peer
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
    {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::debug!(error = %e, "could not offer the review page");
            None
        }
    }
}

/// Wait for the decision on `decision`'s approval, withdrawing the review page offered to the
/// client's user (if any) once it is decided.
pub(crate) async fn hold<G: Guard>(
    guard: &G,
    tool: &str,
    decision: &ToolDecision,
    approval_id: &str,
    context: &RequestContext<RoleServer>,
) -> Held {
    let mut offer = None;
    let held = wait(guard, tool, decision, approval_id, context, &mut offer).await;
    if let Some(mut offer) = offer
        && offer.rx.try_recv().is_err()
    {
        let _ = offer.cancel(Some("the approval was decided".into())).await;
    }
    held
}

/// Wait for the decision on `decision`'s approval. While waiting, the client hears one log
/// message naming who was asked and, when it gave a progress token, a progress notification
/// after each poll. A cancelled call withdraws the approval.
async fn wait<G: Guard>(
    guard: &G,
    tool: &str,
    decision: &ToolDecision,
    approval_id: &str,
    context: &RequestContext<RoleServer>,
    offer: &mut Option<RequestHandle<RoleServer>>,
) -> Held {
    let progress_token = context.meta.get_progress_token();
    let mut step = 0u32;
    let mut failures = 0u32;
    let mut wait = Duration::ZERO;
    loop {
        let polled = tokio::select! {
            _ = context.ct.cancelled() => {
                if let Err(e) = guard.cancel(approval_id).await {
                    tracing::warn!(approval_id, error = %e, "could not withdraw a cancelled call's approval");
                }
                return Held::Cancelled;
            }
            polled = guard.wait(approval_id, wait) => polled,
        };
        let view = match polled {
            Ok(view) => view,
            Err(e) => {
                failures += 1;
                if failures >= MAX_FAILURES {
                    return Held::Refused(format!(
                        "Countersign could not be reached while `{tool}` waited for approval \
                         {approval_id}, so it was not run: {e}"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
                continue;
            }
        };
        failures = 0;
        match view.status {
            ApprovalStatus::Approved => return Held::Approved(Box::new(view)),
            ApprovalStatus::Pending => {}
            _ => return Held::Refused(refusal(tool, &view)),
        }
        let asked = asked(&view);
        if step == 0 {
            let review_url = guard.review_url(approval_id);
            if let Some(url) = &review_url
                && takes_url_elicitation(context)
            {
                *offer = offer_review_page(context, tool, approval_id, url.clone()).await;
            }
            let mut data = serde_json::json!({
                "message": format!(
                    "`{tool}` needs approval: {asked} were asked (approval {approval_id}, expires {})",
                    view.expires_at.to_rfc3339()
                ),
                "approval_id": approval_id,
                "asked": asked,
                "expires_at": view.expires_at,
                "policy": decision.policy_matched,
            });
            if let Some(url) = review_url {
                data["review_url"] = url.into();
            }
            #[allow(deprecated)]
            let log = LoggingMessageNotificationParam::new(LoggingLevel::Notice, data)
                .with_logger("countersign");
            #[allow(deprecated)]
            let sent = context.peer.notify_logging_message(log).await;
            if let Err(e) = sent {
                tracing::debug!(error = %e, "could not send the held call's log message");
            }
        }
        if let Some(token) = &progress_token {
            let note = ProgressNotificationParam::new(token.clone(), f64::from(step))
                .with_message(format!("waiting for approval {approval_id} by {asked}"));
            if let Err(e) = context.peer.notify_progress(note).await {
                tracing::debug!(error = %e, "could not send progress");
            }
        }
        step += 1;
        wait = POLL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(status: ApprovalStatus) -> GuardApprovalView {
        let raw = serde_json::json!({
            "approval_id": "apr_1", "status": status, "approved_by": null, "approved_at": null,
            "comment": null, "tool_name": "echo", "arguments": {}, "arguments_sha256": "",
            "session_id": null, "agent_reason": null, "agent_id": "agt_1", "risk_score": 0.0,
            "threats_detected": [], "policy_matched": null, "approval_group": "ops",
            "escalation_level": 0, "required_approvals": 1, "decisions": [],
            "requested_at": "2026-01-01T00:00:00Z", "decided_at": null,
            "decided_by": "ana@example.com", "expires_at": "2026-01-01T00:30:00Z",
        });
        serde_json::from_value(raw).unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn refusals_say_who_refused_and_why() {
        let mut rejected = view(ApprovalStatus::Rejected);
        rejected.reason = Some("not today".into());
        assert_eq!(
            refusal("echo", &rejected),
            "Rejected by ana@example.com (approval apr_1): not today"
        );
        assert_eq!(
            refusal("echo", &view(ApprovalStatus::Expired)),
            "No one approved `echo` in time: approval apr_1 expired"
        );
        assert_eq!(
            refusal("echo", &view(ApprovalStatus::Cancelled)),
            "Approval apr_1 was cancelled"
        );
        assert_eq!(
            asked(&view(ApprovalStatus::Pending)),
            "the reviewers of group ops"
        );
    }
}
