//! Standard Webhooks: signed JSON events to the tenant's endpoints, with a `webhook-id` that
//! stays the same across retries.
//!
//! Each message carries `webhook-id` (`msg_` and the delivery's outbox id, so retries and
//! redeliveries keep it), `webhook-timestamp` (this attempt, unix seconds) and
//! `webhook-signature` (`v1,` and base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed
//! with the bytes after `whsec_`). The body is sent exactly as it was signed. Retries (on
//! network errors, 5xx and 429, honouring `Retry-After`) follow Svix's schedule in the
//! worker; other answers give up; a 410 Gone disables the endpoint.
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use countersign_core::Result;
use countersign_core::approval::ApprovalRequest;
use countersign_core::audit::Actor;
use countersign_core::notify::WebhookEndpoint;
use countersign_core::oidc::OutboxItem;
use serde_json::Value;

use super::outbound::check_target;
use super::worker::{Attempt, AttemptError, http_outcome, send_error};
use crate::state::AppState;

/// The prefix of a symmetric signing secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Why an endpoint that answered 410 is disabled.
pub const GONE_REASON: &str = "the endpoint answered 410 Gone";

/// The `data` of a webhook event: the request as the API shows it, and where to review it.
pub async fn data(state: &AppState, request: &ApprovalRequest) -> Result<Value> {
    let names = state
        .store
        .get_agent(&request.tenant_id, &request.agent_id)
        .await?
        .map(|a| (a.id, a.name))
        .into_iter()
        .collect();
    let view = crate::views::approval(request.clone(), &names, state.clock.now());
    let mut data = serde_json::to_value(view).map_err(countersign_core::Error::internal)?;
    data["review_url"] = Value::String(super::content::dashboard_url(state, &request.id));
    Ok(data)
}

/// The `webhook-id` of a delivery: the same for every attempt and redelivery.
pub fn message_id(outbox_id: i64) -> String {
    format!("msg_{outbox_id}")
}

/// The `webhook-signature` of a message (`v1,<base64>`); `None` when the secret is not a
/// `whsec_` secret.
pub fn signature(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = STANDARD
        .decode(secret.strip_prefix(SECRET_PREFIX)?)
        .ok()
        .filter(|k| !k.is_empty())?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let mut context = hmac::Context::with_key(&key);
    context.update(msg_id.as_bytes());
    context.update(b".");
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    Some(format!("v1,{}", STANDARD.encode(context.sign().as_ref())))
}

/// Sends one signed message to an endpoint, timestamped now; redirects are not followed.
pub async fn send(
    state: &AppState,
    endpoint: &WebhookEndpoint,
    msg_id: &str,
    body: Vec<u8>,
) -> std::result::Result<reqwest::Response, AttemptError> {
    check_target(&endpoint.url, &state.settings.outbound).map_err(AttemptError::give_up)?;
    let timestamp = state.clock.now().timestamp();
    let signature = signature(&endpoint.secret, msg_id, timestamp, &body)
        .ok_or_else(|| AttemptError::give_up("the endpoint's signing secret is unreadable"))?;
    state
        .notifier
        .http
        .post(&endpoint.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", msg_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(send_error)
}

/// Disables an endpoint that asked to hear no more (its pending deliveries then give up).
async fn disable(state: &AppState, mut endpoint: WebhookEndpoint, reason: &str) {
    let now = state.clock.now();
    endpoint.disabled_at = Some(now);
    endpoint.disabled_reason = Some(reason.to_string());
    endpoint.updated_at = now;
    let id = endpoint.id.clone();
    if let Err(e) = state
        .store
        .update_webhook(endpoint, "webhook.disabled", Actor::system("webhook"))
        .await
    {
        tracing::warn!(webhook_id = %id, error = %e, "disabling a gone webhook endpoint failed");
    }
}

/// Sends one delivery to its endpoint (the row's `recipient`).
pub async fn deliver(state: &AppState, item: &OutboxItem) -> Attempt {
    let endpoint_id = item
        .recipient
        .as_deref()
        .ok_or_else(|| AttemptError::give_up("the delivery names no endpoint"))?;
    let endpoint = state
        .store
        .get_webhook(&item.tenant_id, endpoint_id)
        .await?
        .ok_or_else(|| AttemptError::give_up("the endpoint was deleted"))?;
    if endpoint.disabled_at.is_some() {
        return Err(AttemptError::give_up("the endpoint is disabled"));
    }
    let payload = item
        .payload
        .as_ref()
        .ok_or_else(|| AttemptError::give_up("the delivery has no body"))?;
    let body = serde_json::to_vec(payload)
        .map_err(|e| AttemptError::give_up(format!("encoding the body: {e}")))?;
    let response = send(state, &endpoint, &message_id(item.id), body).await?;
    if response.status() == reqwest::StatusCode::GONE {
        disable(state, endpoint, GONE_REASON).await;
        return Err(AttemptError::GiveUp {
            error: format!("{GONE_REASON}; it is disabled"),
            status: Some(410),
        });
    }
    http_outcome(&response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_vector() {
        // The reference libraries' test vector.
        assert_eq!(
            signature(
                "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#,
            )
            .as_deref(),
            Some("v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=")
        );
        assert_eq!(signature("C2FVsBQIhrscChlQIMV", "msg_1", 1, b"{}"), None);
        assert_eq!(signature("whsec_", "msg_1", 1, b"{}"), None);
        assert_eq!(message_id(42), "msg_42");
    }
}
