//! Microsoft Teams (a Workflows webhook): an Adaptive Card 1.4 with the request's facts and
//! buttons that open the confirmation pages; a follow-up card reports the outcome.
use countersign_core::oidc::OutboxItem;

use super::worker::{Attempt, AttemptError};
use crate::state::AppState;

pub async fn deliver(_state: &AppState, _item: &OutboxItem) -> Attempt {
    Err(AttemptError::give_up("Teams delivery is not available yet"))
}

/// Sends a test message at once (the settings page's "send a test").
pub async fn send_test(_state: &AppState, _tenant_id: &str) -> Attempt {
    Err(AttemptError::give_up("not available yet"))
}
