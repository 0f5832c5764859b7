//! Slack (a Slack app with a bot token): Block Kit messages with Approve and Reject buttons,
//! posted to a channel or as direct messages, and kept up to date as the request changes.
use countersign_core::oidc::OutboxItem;

use super::worker::{Attempt, AttemptError};
use crate::state::AppState;

pub async fn deliver(_state: &AppState, _item: &OutboxItem) -> Attempt {
    Err(AttemptError::give_up("Slack delivery is not available yet"))
}

/// Sends a test message at once (the settings page's "send a test").
pub async fn send_test(_state: &AppState, _tenant_id: &str) -> Attempt {
    Err(AttemptError::give_up("not available yet"))
}
