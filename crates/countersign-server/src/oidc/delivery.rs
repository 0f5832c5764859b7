//! CIBA ping and push callbacks, delivered by the outbox worker: the payload is computed at
//! delivery time (a push carries the tokens, issued once), then POSTed to the client's
//! notification endpoint through the guarded outbound client.
use countersign_core::approval::RequestRef;
use countersign_core::oidc::{self, CHANNEL_PING, CHANNEL_PUSH, OutboxItem};
use countersign_proto::ApprovalStatus;
use serde_json::{Value, json};

use super::service::issue_tokens;
use crate::notify::outbound::check_target;
use crate::notify::worker::{Attempt, AttemptError, http_outcome, send_error};
use crate::state::AppState;

async fn payload(state: &AppState, item: &OutboxItem) -> std::result::Result<Value, AttemptError> {
    let oidc_state = state
        .store
        .get_oidc_request(&item.tenant_id, &item.approval_id)
        .await?
        .ok_or_else(|| AttemptError::give_up("the request has no CIBA state"))?;
    // A client whose agent was disabled (or that was deleted) since it asked hears nothing,
    // and gets no token.
    let active = state
        .store
        .find_active_oidc_client(&oidc_state.client_id)
        .await?
        .is_some_and(|c| c.tenant_id == item.tenant_id);
    if !active {
        return Err(AttemptError::give_up("the client is no longer active"));
    }
    let auth_req_id = state.oidc.auth_req_id(&item.approval_id);
    if item.channel == CHANNEL_PING {
        return Ok(json!({ "auth_req_id": auth_req_id }));
    }
    if item.channel != CHANNEL_PUSH {
        return Err(AttemptError::give_up(format!(
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
        .await?
        .ok_or_else(|| AttemptError::give_up("the request is gone"))?;
    // A retry sends the grant of the first attempt again (same `jti`), never a second grant.
    let mut issued = None;
    for _ in 0..2 {
        let previous = state
            .store
            .token_jti(&item.tenant_id, &item.approval_id)
            .await?;
        // Push clients name no resource: the grant is for the tenant's audience.
        let audience = countersign_core::grant::tenant_audience(&item.tenant_id);
        issued = issue_tokens(
            state,
            &request,
            &oidc_state,
            audience,
            Some(&auth_req_id),
            previous,
        )
        .await?;
        if issued.is_some() {
            break;
        }
    }
    let mut body = issued.ok_or_else(|| AttemptError::retry("token issue raced"))?;
    body["auth_req_id"] = Value::String(auth_req_id);
    Ok(body)
}

/// One attempt at a CIBA ping or push callback.
pub async fn attempt(state: &AppState, item: &OutboxItem) -> Attempt {
    check_target(&item.target, &state.settings.outbound).map_err(AttemptError::give_up)?;
    let body = payload(state, item).await?;
    let mut request = state.notifier.http.post(&item.target).json(&body);
    if let Some(token) = &item.secret {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(send_error)?;
    http_outcome(&response)
}
