//! Standard Webhooks: signed JSON events to the tenant's endpoints, with a `webhook-id` that
//! stays the same across retries.
use countersign_core::Result;
use countersign_core::approval::ApprovalRequest;
use countersign_core::oidc::OutboxItem;
use serde_json::Value;

use super::worker::{Attempt, AttemptError};
use crate::state::AppState;

/// The `data` of a webhook event: the request as the API shows it, and where to review it.
pub async fn data(state: &AppState, request: &ApprovalRequest) -> Result<Value> {
    let names = state
        .store
        .list_agents(&request.tenant_id)
        .await?
        .into_iter()
        .filter(|a| a.id == request.agent_id)
        .map(|a| (a.id, a.name))
        .collect();
    let view = crate::views::approval(request.clone(), &names, state.clock.now());
    let mut data = serde_json::to_value(view).map_err(countersign_core::Error::internal)?;
    data["review_url"] = Value::String(super::content::dashboard_url(state, &request.id));
    Ok(data)
}

pub async fn deliver(_state: &AppState, _item: &OutboxItem) -> Attempt {
    Err(AttemptError::give_up(
        "webhook delivery is not available yet",
    ))
}
