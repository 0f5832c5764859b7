//! Managing a tenant's Standard Webhooks endpoints (admins only, confined to the caller's
//! tenant): create, list, change, delete, rotate the signing secret, read the delivery log,
//! send a delivery again, and send a test event. The signing secret is shown only when it is
//! made; everything is checked before anything changes.
use countersign_core::notify::{
    self, WEBHOOK, WEBHOOK_ID, WebhookEndpoint, new_webhook_secret, validate_endpoint_url,
};
use countersign_core::{Error, Principal, Result, ids, validate};
use countersign_proto::notify::{
    CreateWebhook, DeliveryList, DeliveryView, UpdateWebhook, WebhookList, WebhookView,
    WebhookWithSecret,
};
use serde_json::json;

use super::outbound::check_registration;
use super::webhook;
use super::worker::Attempt;
use crate::state::AppState;

/// Deliveries listed at once unless the caller asks for fewer.
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 200;

pub fn view(e: WebhookEndpoint) -> WebhookView {
    WebhookView {
        disabled: e.disabled_at.is_some(),
        id: e.id,
        url: e.url,
        events: e.events,
        description: e.description,
        disabled_reason: e.disabled_reason,
        created_at: e.created_at,
        updated_at: e.updated_at,
    }
}

fn with_secret(e: WebhookEndpoint) -> WebhookWithSecret {
    let secret = e.secret.clone();
    WebhookWithSecret {
        view: view(e),
        secret,
    }
}

fn no_such_endpoint() -> Error {
    Error::NotFound("no such webhook endpoint".into())
}

fn no_such_delivery() -> Error {
    Error::NotFound("no such delivery of this endpoint".into())
}

/// Unless the operator allows them, a URL must be https and may not name a literal private
/// address (host names are checked when they resolve, at every attempt).
fn check_reachable(state: &AppState, url: &str) -> Result<()> {
    check_registration("url", url, &state.settings.outbound)
}

/// The caller's endpoint with this id (another tenant's is not found).
async fn find(state: &AppState, caller: &Principal, id: &str) -> Result<WebhookEndpoint> {
    caller.require_admin()?;
    if !ids::is_id(id, WEBHOOK_ID) {
        return Err(no_such_endpoint());
    }
    state
        .store
        .get_webhook(&caller.tenant_id, id)
        .await?
        .ok_or_else(no_such_endpoint)
}

pub async fn create(
    state: &AppState,
    caller: &Principal,
    input: CreateWebhook,
) -> Result<WebhookWithSecret> {
    caller.require_admin()?;
    let endpoint = notify::new_webhook(
        &caller.tenant_id,
        &input.url,
        &input.events,
        input.description,
        state.clock.now(),
    )?;
    check_reachable(state, &endpoint.url)?;
    let endpoint = state.store.create_webhook(endpoint, caller.actor()).await?;
    Ok(with_secret(endpoint))
}

pub async fn list(state: &AppState, caller: &Principal) -> Result<WebhookList> {
    caller.require_admin()?;
    let webhooks = state.store.list_webhooks(&caller.tenant_id).await?;
    Ok(WebhookList {
        webhooks: webhooks.into_iter().map(view).collect(),
    })
}

pub async fn get(state: &AppState, caller: &Principal, id: &str) -> Result<WebhookView> {
    Ok(view(find(state, caller, id).await?))
}

/// Changes an endpoint; `disabled: false` enables it again, `disabled: true` stops it.
pub async fn update(
    state: &AppState,
    caller: &Principal,
    id: &str,
    input: UpdateWebhook,
) -> Result<WebhookView> {
    let mut endpoint = find(state, caller, id).await?;
    let now = state.clock.now();
    let mut action = "webhook.updated";
    if let Some(url) = input.url {
        validate_endpoint_url("url", &url)?;
        check_reachable(state, &url)?;
        endpoint.url = url;
    }
    if let Some(events) = input.events {
        endpoint.events = notify::webhook_events(&events)?;
    }
    if let Some(description) = input.description {
        // An empty description removes it.
        endpoint.description = if description.is_empty() {
            None
        } else {
            validate::text("description", &description, 500)?;
            Some(description)
        };
    }
    match input.disabled {
        Some(false) if endpoint.disabled_at.is_some() => {
            endpoint.disabled_at = None;
            endpoint.disabled_reason = None;
            action = "webhook.enabled";
        }
        Some(true) if endpoint.disabled_at.is_none() => {
            endpoint.disabled_at = Some(now);
            endpoint.disabled_reason = Some("disabled by an admin".into());
            action = "webhook.disabled";
        }
        _ => {}
    }
    endpoint.updated_at = now;
    let endpoint = state
        .store
        .update_webhook(endpoint, action, caller.actor())
        .await?;
    Ok(view(endpoint))
}

/// Removes an endpoint; its pending deliveries fail.
pub async fn delete(state: &AppState, caller: &Principal, id: &str) -> Result<()> {
    let endpoint = find(state, caller, id).await?;
    state
        .store
        .delete_webhook(
            &caller.tenant_id,
            &endpoint.id,
            caller.actor(),
            state.clock.now(),
        )
        .await
}

/// A new signing secret, shown this once; later attempts are signed with it only.
pub async fn rotate_secret(
    state: &AppState,
    caller: &Principal,
    id: &str,
) -> Result<WebhookWithSecret> {
    let mut endpoint = find(state, caller, id).await?;
    endpoint.secret = new_webhook_secret();
    endpoint.updated_at = state.clock.now();
    let endpoint = state
        .store
        .update_webhook(endpoint, "webhook.secret_rotated", caller.actor())
        .await?;
    Ok(with_secret(endpoint))
}

/// The endpoint's deliveries, newest first; `cursor` is the `next_cursor` of the page before.
pub async fn deliveries(
    state: &AppState,
    caller: &Principal,
    id: &str,
    cursor: Option<&str>,
    limit: Option<u32>,
) -> Result<DeliveryList> {
    let endpoint = find(state, caller, id).await?;
    let before = match cursor.filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(c.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            Error::invalid("`cursor` must be the `next_cursor` of an earlier page")
        })?),
    };
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::invalid(format!(
            "`limit` must be between 1 and {MAX_PAGE}"
        )));
    }
    let rows = state
        .store
        .webhook_deliveries(&caller.tenant_id, &endpoint.id, before, limit)
        .await?;
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|d| d.id.to_string()))
        .flatten();
    Ok(DeliveryList {
        deliveries: rows.into_iter().map(crate::views::delivery).collect(),
        next_cursor,
    })
}

/// Makes a finished delivery of the endpoint due again now, with the same `webhook-id`.
pub async fn redeliver(
    state: &AppState,
    caller: &Principal,
    id: &str,
    delivery_id: &str,
) -> Result<DeliveryView> {
    let endpoint = find(state, caller, id).await?;
    let delivery_id: i64 = delivery_id.parse().map_err(|_| no_such_delivery())?;
    let belongs = |d: &notify::Delivery| {
        d.channel == WEBHOOK && d.recipient.as_deref() == Some(endpoint.id.as_str())
    };
    state
        .store
        .get_delivery(&caller.tenant_id, delivery_id)
        .await?
        .filter(belongs)
        .ok_or_else(no_such_delivery)?;
    if endpoint.disabled_at.is_some() {
        return Err(Error::coded(
            countersign_proto::ErrorCode::Disabled,
            "the endpoint is disabled; enable it first (PATCH with `disabled: false`)",
        ));
    }
    state
        .store
        .redeliver(&caller.tenant_id, delivery_id, state.clock.now())
        .await?;
    state.notifier.wake();
    let delivery = state
        .store
        .get_delivery(&caller.tenant_id, delivery_id)
        .await?
        .ok_or_else(no_such_delivery)?;
    Ok(crate::views::delivery(delivery))
}

/// Sends a signed `webhook.test` event to the endpoint at once (even a disabled one, so an
/// admin can check it before enabling it again).
pub async fn send_test(state: &AppState, caller: &Principal, id: &str) -> Result<Attempt> {
    let endpoint = find(state, caller, id).await?;
    let now = state.clock.now();
    let body = json!({
        "type": "webhook.test",
        "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": {
            "webhook_id": endpoint.id,
            "message": "A test event from Countersign: this endpoint receives signed events.",
        },
    });
    let body = serde_json::to_vec(&body).map_err(Error::internal)?;
    let msg_id = format!("msg_{}", ids::new_id("test"));
    Ok(match webhook::send(state, &endpoint, &msg_id, body).await {
        Ok(response) => super::worker::http_outcome(&response),
        Err(e) => Err(e),
    })
}
