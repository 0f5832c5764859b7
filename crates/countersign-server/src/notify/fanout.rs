//! Turns a `notify` outbox row into its deliveries: reads what the plan needs, lets the
//! domain's planner decide who is told on which channel, and stores the deliveries (and the
//! review-link tokens of the emails) in one transaction with the row marked done.
use std::collections::HashMap;

use countersign_core::approval::RequestRef;
use countersign_core::notify::{self, Event, PlanInput, ReviewToken};
use countersign_core::oidc::OutboxItem;
use countersign_core::{Result, secret};
use serde_json::Value;

use super::channels;
use crate::state::AppState;

pub async fn run(state: &AppState, item: &OutboxItem) -> Result<()> {
    let now = state.clock.now();
    let store = &state.store;
    let tenant = &item.tenant_id;
    let (Some(event), Some(request)) = (
        Event::parse(&item.event),
        store
            .find_request(tenant, &RequestRef::PublicId(item.approval_id.clone()))
            .await?,
    ) else {
        // Nothing to tell about: done, with no deliveries.
        return store.fan_out(item, Vec::new(), Vec::new(), now).await;
    };
    let channels = channels::tenant_channels(state, tenant).await?;
    let webhooks = store.list_webhooks(tenant).await?;
    let push = store.list_push_subscriptions(tenant).await?;
    let nowhere = channels.email.is_none()
        && channels.slack.is_none()
        && channels.teams.is_none()
        && push.is_empty()
        && !webhooks.iter().any(|w| w.wants(event));
    if nowhere {
        // Nothing could be told: skip reading who would be.
        return store.fan_out(item, Vec::new(), Vec::new(), now).await;
    }
    let reviewers = store.list_reviewers(&request.id).await?;
    let users: HashMap<_, _> = store
        .list_users(tenant)
        .await?
        .into_iter()
        .map(|u| (u.id.clone(), u))
        .collect();
    let preferences: HashMap<_, _> = store
        .list_preferences(tenant)
        .await?
        .into_iter()
        .map(|p| (p.user_id.clone(), p))
        .collect();
    let previous = store.list_deliveries(tenant, &request.id).await?;
    let webhook_data = if webhooks.iter().any(|w| w.wants(event)) {
        super::webhook::data(state, &request).await?
    } else {
        Value::Null
    };
    let escalation = item.payload.as_ref().and_then(|p| {
        let level = |k: &str| p.get(k).and_then(Value::as_u64).map(|v| v as u32);
        Some((level("from_level")?, level("to_level")?))
    });
    let plan = notify::plan(&PlanInput {
        notify_id: item.id,
        event,
        escalation,
        request: &request,
        reviewers: &reviewers,
        users: &users,
        preferences: &preferences,
        channels: &channels,
        webhooks: &webhooks,
        push: &push,
        previous: &previous,
        webhook_data: &webhook_data,
        now,
    });
    let tokens = plan
        .review_links
        .iter()
        .map(|user_id| ReviewToken {
            token_hash: secret::hash_secret(&state.notifier.review_token(&request.id, user_id)),
            tenant_id: tenant.clone(),
            approval_id: request.id.clone(),
            user_id: user_id.clone(),
            expires_at: request.expires_at,
            created_at: now,
        })
        .collect();
    store.fan_out(item, plan.deliveries, tokens, now).await
}
