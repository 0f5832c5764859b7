//! Turns `notify` outbox rows into their deliveries: reads what the plan needs, lets the
//! domain's planner decide who is told on which channel, and stores the deliveries (and the
//! review-link tokens of the emails) of a whole batch of rows in one transaction, each row
//! marked done with its deliveries.
use std::collections::HashMap;

use countersign_core::approval::RequestRef;
use countersign_core::directory::User;
use countersign_core::notify::{
    self, Event, FanOut, PlanInput, Preferences, PushSubscription, ReviewToken, TenantChannels,
    WebhookEndpoint,
};
use countersign_core::oidc::OutboxItem;
use countersign_core::{Result, secret};
use serde_json::Value;

use super::channels;
use crate::state::AppState;

/// A tenant's ways of telling anyone, read once per batch; its people and their
/// preferences are read on first need.
struct Targets {
    channels: TenantChannels,
    webhooks: Vec<WebhookEndpoint>,
    push: Vec<PushSubscription>,
    people: Option<People>,
}

struct People {
    users: HashMap<String, User>,
    preferences: HashMap<String, Preferences>,
}

impl People {
    async fn read(state: &AppState, tenant: &str) -> Result<People> {
        Ok(People {
            users: state
                .store
                .list_users(tenant)
                .await?
                .into_iter()
                .map(|u| (u.id.clone(), u))
                .collect(),
            preferences: state
                .store
                .list_preferences(tenant)
                .await?
                .into_iter()
                .map(|p| (p.user_id.clone(), p))
                .collect(),
        })
    }
}

impl Targets {
    async fn read(state: &AppState, tenant: &str) -> Result<Targets> {
        Ok(Targets {
            channels: channels::tenant_channels(state, tenant).await?,
            webhooks: state.store.list_webhooks(tenant).await?,
            push: state.store.list_push_subscriptions(tenant).await?,
            people: None,
        })
    }

    /// Whether anything could be told of `event`.
    fn reach(&self, event: Event) -> bool {
        self.channels.email.is_some()
            || self.channels.slack.is_some()
            || self.channels.teams.is_some()
            || !self.push.is_empty()
            || self.webhooks.iter().any(|w| w.wants(event))
    }
}

/// Plans and stores a batch of `notify` rows. Rows whose plan could not be read are left
/// out of the batch and returned with their error, for a retry.
pub async fn run<'a>(
    state: &AppState,
    items: &'a [OutboxItem],
) -> Result<Vec<(&'a OutboxItem, countersign_core::Error)>> {
    let now = state.clock.now();
    let mut targets: HashMap<String, Targets> = HashMap::new();
    let mut batch = Vec::with_capacity(items.len());
    let mut failed = Vec::new();
    for item in items {
        if !targets.contains_key(&item.tenant_id) {
            match Targets::read(state, &item.tenant_id).await {
                Ok(t) => {
                    targets.insert(item.tenant_id.clone(), t);
                }
                Err(e) => {
                    failed.push((item, e));
                    continue;
                }
            }
        }
        let Some(t) = targets.get_mut(&item.tenant_id) else {
            continue;
        };
        match plan_one(state, item, t, now).await {
            Ok(fan_out) => batch.push(fan_out),
            Err(e) => failed.push((item, e)),
        }
    }
    if !batch.is_empty() {
        state.store.fan_out(batch, now).await?;
    }
    Ok(failed)
}

async fn plan_one(
    state: &AppState,
    item: &OutboxItem,
    targets: &mut Targets,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<FanOut> {
    let store = &state.store;
    let tenant = &item.tenant_id;
    let nothing = || FanOut {
        notify: item.clone(),
        deliveries: Vec::new(),
        tokens: Vec::new(),
    };
    let Some(event) = Event::parse(&item.event) else {
        return Ok(nothing());
    };
    // Nothing could be told: skip reading who would be.
    if !targets.reach(event) {
        return Ok(nothing());
    }
    let Some(request) = store
        .find_request(tenant, &RequestRef::PublicId(item.approval_id.clone()))
        .await?
    else {
        return Ok(nothing());
    };
    let reviewers = store.list_reviewers(&request.id).await?;
    if targets.people.is_none() {
        targets.people = Some(People::read(state, tenant).await?);
    }
    let Some(people) = targets.people.as_ref() else {
        return Ok(nothing());
    };
    let previous = store.list_deliveries(tenant, &request.id).await?;
    let webhook_data = if targets.webhooks.iter().any(|w| w.wants(event)) {
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
        users: &people.users,
        preferences: &people.preferences,
        channels: &targets.channels,
        webhooks: &targets.webhooks,
        push: &targets.push,
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
    Ok(FanOut {
        notify: item.clone(),
        deliveries: plan.deliveries,
        tokens,
    })
}
