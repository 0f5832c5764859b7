//! Tenant channel settings and people's preferences: reading them for deliveries, and the
//! admin and self-service operations the API and the dashboard share.
use countersign_core::notify::{
    self, EMAIL, EmailConfig, Preferences, SLACK, SlackConfig, TEAMS, TeamsConfig, TenantChannels,
};
use countersign_core::{Error, Principal, Result, Role, validate};
use countersign_proto::notify::{
    EmailChannelView, NotificationChannels, NotificationPreferencesView, PutEmailChannel,
    PutNotificationPreferences, PutSlackChannel, PutTeamsChannel, SlackChannelView,
    TeamsChannelView,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::state::AppState;

fn parse<T: DeserializeOwned>(channel: &str, config: &Value) -> Result<T> {
    serde_json::from_value(config.clone())
        .map_err(|e| Error::internal_msg(format!("stored {channel} settings are unreadable: {e}")))
}

/// The tenant's stored settings of each channel.
pub struct Stored {
    pub email: EmailConfig,
    pub slack: Option<(SlackConfig, chrono::DateTime<chrono::Utc>)>,
    pub teams: Option<(TeamsConfig, chrono::DateTime<chrono::Utc>)>,
}

pub async fn stored(state: &AppState, tenant_id: &str) -> Result<Stored> {
    let mut out = Stored {
        email: EmailConfig::default(),
        slack: None,
        teams: None,
    };
    for record in state.store.channel_configs(tenant_id).await? {
        match record.channel.as_str() {
            EMAIL => out.email = parse(EMAIL, &record.config)?,
            SLACK => out.slack = Some((parse(SLACK, &record.config)?, record.updated_at)),
            TEAMS => out.teams = Some((parse(TEAMS, &record.config)?, record.updated_at)),
            _ => {}
        }
    }
    Ok(out)
}

/// What the planner may use: email only when the server can send it and the tenant wants it.
pub async fn tenant_channels(state: &AppState, tenant_id: &str) -> Result<TenantChannels> {
    let s = stored(state, tenant_id).await?;
    Ok(TenantChannels {
        email: (state.notifier.mailer.is_some() && s.email.enabled).then_some(s.email),
        slack: s.slack.map(|(c, _)| c),
        teams: s.teams.map(|(c, _)| c),
    })
}

pub async fn slack_config(state: &AppState, tenant_id: &str) -> Result<Option<SlackConfig>> {
    Ok(stored(state, tenant_id).await?.slack.map(|(c, _)| c))
}

pub async fn teams_config(state: &AppState, tenant_id: &str) -> Result<Option<TeamsConfig>> {
    Ok(stored(state, tenant_id).await?.teams.map(|(c, _)| c))
}

/// The URL Slack sends a tenant's button clicks to.
pub fn slack_interactivity_url(state: &AppState, tenant_id: &str) -> String {
    format!(
        "{}/integrations/slack/{tenant_id}/interactivity",
        state.issuer
    )
}

/// `GET /v1/admin/notification-channels`: the settings, never their secrets.
pub async fn view(state: &AppState, caller: &Principal) -> Result<NotificationChannels> {
    caller.require_admin()?;
    let s = stored(state, &caller.tenant_id).await?;
    let email_settings = &state.settings.notifications.email;
    Ok(NotificationChannels {
        email: EmailChannelView {
            enabled: s.email.enabled,
            smtp_configured: state.notifier.mailer.is_some(),
            from: email_settings
                .smtp_url
                .as_ref()
                .and(email_settings.from.clone()),
            require_sign_in_above_risk: s.email.require_sign_in_above_risk,
        },
        slack: s.slack.map(|(c, at)| SlackChannelView {
            bot_token_set: !c.bot_token.is_empty(),
            signing_secret_set: !c.signing_secret.is_empty(),
            channel: c.channel,
            team_id: c.team_id,
            group_channels: c.group_channels,
            interactivity_url: slack_interactivity_url(state, &caller.tenant_id),
            updated_at: at,
        }),
        teams: s.teams.map(|(c, at)| TeamsChannelView {
            webhook_url_set: c.webhook_url.is_some(),
            groups_with_webhooks: c.group_webhook_urls.into_keys().collect(),
            updated_at: at,
        }),
    })
}

async fn save(state: &AppState, caller: &Principal, channel: &str, config: Value) -> Result<()> {
    state
        .store
        .put_channel_config(
            &caller.tenant_id,
            channel,
            Some(config),
            caller.actor(),
            state.clock.now(),
        )
        .await
}

fn to_value<T: serde::Serialize>(config: &T) -> Result<Value> {
    serde_json::to_value(config).map_err(Error::internal)
}

pub async fn put_email(state: &AppState, caller: &Principal, input: PutEmailChannel) -> Result<()> {
    caller.require_admin()?;
    if let Some(r) = input.require_sign_in_above_risk
        && !(0.0..=1.0).contains(&r)
    {
        return Err(Error::invalid(
            "`require_sign_in_above_risk` must be between 0 and 1",
        ));
    }
    let config = EmailConfig {
        enabled: input.enabled,
        require_sign_in_above_risk: input.require_sign_in_above_risk,
    };
    save(state, caller, EMAIL, to_value(&config)?).await
}

/// A Slack channel id (`C…`, `G…`) or a `#name`.
fn check_slack_channel(field: &str, channel: &str) -> Result<()> {
    let name = channel.strip_prefix('#').unwrap_or(channel);
    if !name.is_empty()
        && name.len() <= 80
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "`{field}` must be a Slack channel id (C024BE91L) or name (#approvals)"
        )))
    }
}

async fn check_groups<'a>(
    state: &AppState,
    tenant_id: &str,
    ids: impl Iterator<Item = &'a String>,
) -> Result<()> {
    let groups = state.store.list_groups(tenant_id).await?;
    for id in ids {
        if !groups.iter().any(|g| g.id == *id) {
            return Err(Error::coded(
                countersign_proto::ErrorCode::UnknownReference,
                format!("approval group {id:?} does not exist in this tenant"),
            ));
        }
    }
    Ok(())
}

pub async fn put_slack(state: &AppState, caller: &Principal, input: PutSlackChannel) -> Result<()> {
    caller.require_admin()?;
    let previous = slack_config(state, &caller.tenant_id).await?;
    let secret = |given: Option<String>, kept: Option<String>, field: &str| -> Result<String> {
        match given.or(kept) {
            Some(s) if !s.trim().is_empty() => {
                validate::text(field, &s, 500)?;
                Ok(s)
            }
            _ => Err(Error::invalid(format!("`{field}` is required"))),
        }
    };
    let bot_token = secret(
        input.bot_token,
        previous.as_ref().map(|p| p.bot_token.clone()),
        "bot_token",
    )?;
    let signing_secret = secret(
        input.signing_secret,
        previous.as_ref().map(|p| p.signing_secret.clone()),
        "signing_secret",
    )?;
    if let Some(c) = &input.channel {
        check_slack_channel("channel", c)?;
    }
    if let Some(t) = &input.team_id
        && !(t.starts_with('T') && t.len() <= 32 && t.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return Err(Error::invalid(
            "`team_id` must be a Slack team id such as T0001",
        ));
    }
    for (group, channel) in &input.group_channels {
        check_slack_channel(&format!("group_channels.{group}"), channel)?;
    }
    check_groups(state, &caller.tenant_id, input.group_channels.keys()).await?;
    let config = SlackConfig {
        bot_token,
        signing_secret,
        channel: input.channel,
        team_id: input.team_id,
        group_channels: input.group_channels,
    };
    save(state, caller, SLACK, to_value(&config)?).await
}

pub async fn put_teams(state: &AppState, caller: &Principal, input: PutTeamsChannel) -> Result<()> {
    caller.require_admin()?;
    let previous = teams_config(state, &caller.tenant_id).await?;
    let webhook_url = input
        .webhook_url
        .or_else(|| previous.as_ref().and_then(|p| p.webhook_url.clone()));
    let group_webhook_urls = match input.group_webhook_urls {
        Some(urls) => urls,
        None => previous.map(|p| p.group_webhook_urls).unwrap_or_default(),
    };
    let rules = &state.settings.outbound;
    if let Some(url) = &webhook_url {
        notify::validate_endpoint_url("webhook_url", url)?;
        super::outbound::check_registration("webhook_url", url, rules)?;
    }
    for (group, url) in &group_webhook_urls {
        let field = format!("group_webhook_urls.{group}");
        notify::validate_endpoint_url(&field, url)?;
        super::outbound::check_registration(&field, url, rules)?;
    }
    check_groups(state, &caller.tenant_id, group_webhook_urls.keys()).await?;
    if webhook_url.is_none() && group_webhook_urls.is_empty() {
        return Err(Error::invalid(
            "give `webhook_url` or at least one of `group_webhook_urls`",
        ));
    }
    let config = TeamsConfig {
        webhook_url,
        group_webhook_urls,
    };
    save(state, caller, TEAMS, to_value(&config)?).await
}

/// Removes a channel's settings (email goes back to its defaults).
pub async fn remove(state: &AppState, caller: &Principal, channel: &str) -> Result<()> {
    caller.require_admin()?;
    check_channel(channel)?;
    state
        .store
        .put_channel_config(
            &caller.tenant_id,
            channel,
            None,
            caller.actor(),
            state.clock.now(),
        )
        .await
}

/// Sends a test message on one of the tenant's channels at once (the "send a test" of the
/// API and the settings page); email needs the address `to` write to.
pub async fn send_test(
    state: &AppState,
    caller: &Principal,
    channel: &str,
    to: Option<&str>,
) -> Result<super::worker::Attempt> {
    caller.require_admin()?;
    check_channel(channel)?;
    // A `to` that is given is an address on every channel, even where it is not used.
    let to = to.map(validate::email).transpose()?;
    Ok(match channel {
        EMAIL => {
            let to = to.ok_or_else(|| Error::invalid("`to`: the address to send the test to"))?;
            super::email::send_test(state, &to).await
        }
        SLACK => super::slack::send_test(state, &caller.tenant_id).await,
        _ => super::teams::send_test(state, &caller.tenant_id).await,
    })
}

/// The channels tenants configure.
pub fn check_channel(channel: &str) -> Result<()> {
    if matches!(channel, EMAIL | SLACK | TEAMS) {
        Ok(())
    } else {
        Err(Error::NotFound(format!(
            "no notification channel {channel:?}; use email, slack or teams"
        )))
    }
}

/// A user's preferences, or the defaults.
pub async fn preferences(state: &AppState, tenant_id: &str, user_id: &str) -> Result<Preferences> {
    Ok(state
        .store
        .get_preferences(tenant_id, user_id)
        .await?
        .unwrap_or_else(|| Preferences::defaults(tenant_id, user_id, state.clock.now())))
}

/// Whose preferences a caller may read and change: their own (a reviewer key or a dashboard
/// session) or, for an admin, anyone's in the tenant.
fn subject(caller: &Principal, user_id: Option<&str>) -> Result<String> {
    match (user_id, &caller.role, &caller.user_id) {
        (Some(id), Role::Admin, _) => Ok(id.to_string()),
        (Some(id), _, Some(own)) if id == own => Ok(id.to_string()),
        (None, _, Some(own)) => Ok(own.clone()),
        (None, Role::Reviewer { user_id }, None) => Ok(user_id.clone()),
        (_, Role::Agent { .. }, _) => Err(Error::forbidden(
            "agent keys have no notification preferences",
        )),
        (None, _, None) => Err(Error::forbidden(
            "this key belongs to no person; name the user (admin keys use /v1/admin/users/{id}/notification-preferences)",
        )),
        (Some(_), _, _) => Err(Error::forbidden(
            "only admins change other people's preferences",
        )),
    }
}

async fn preferences_view(
    state: &AppState,
    prefs: Preferences,
) -> Result<NotificationPreferencesView> {
    let devices = state
        .store
        .list_push_subscriptions(&prefs.tenant_id)
        .await?
        .into_iter()
        .filter(|s| s.user_id == prefs.user_id)
        .count();
    Ok(NotificationPreferencesView {
        user_id: prefs.user_id,
        email: prefs.email,
        slack: prefs.slack,
        push: prefs.push,
        slack_user_id: prefs.slack_user_id,
        push_devices: devices as u32,
    })
}

pub async fn get_preferences(
    state: &AppState,
    caller: &Principal,
    user_id: Option<&str>,
) -> Result<NotificationPreferencesView> {
    let user_id = subject(caller, user_id)?;
    if state
        .store
        .get_user(&caller.tenant_id, &user_id)
        .await?
        .is_none()
    {
        return Err(Error::NotFound("no such user".into()));
    }
    let prefs = preferences(state, &caller.tenant_id, &user_id).await?;
    preferences_view(state, prefs).await
}

pub async fn put_preferences(
    state: &AppState,
    caller: &Principal,
    user_id: Option<&str>,
    input: PutNotificationPreferences,
) -> Result<NotificationPreferencesView> {
    let user_id = subject(caller, user_id)?;
    if state
        .store
        .get_user(&caller.tenant_id, &user_id)
        .await?
        .is_none()
    {
        return Err(Error::NotFound("no such user".into()));
    }
    let mut prefs = preferences(state, &caller.tenant_id, &user_id).await?;
    if let Some(v) = input.email {
        prefs.email = v;
    }
    if let Some(v) = input.slack {
        prefs.slack = v;
    }
    if let Some(v) = input.push {
        prefs.push = v;
    }
    if let Some(id) = input.slack_user_id {
        if let Some(id) = &id {
            notify::validate_slack_user_id(id)?;
        }
        prefs.slack_user_id = id;
    }
    prefs.updated_at = state.clock.now();
    let saved = state.store.put_preferences(prefs, caller.actor()).await?;
    preferences_view(state, saved).await
}

/// Remembers a Slack user id found for a person (by email), unless one is set already.
pub async fn remember_slack_user(
    state: &AppState,
    tenant_id: &str,
    user_id: &str,
    slack_user_id: &str,
) -> Result<()> {
    let mut prefs = preferences(state, tenant_id, user_id).await?;
    if prefs.slack_user_id.is_some() || notify::validate_slack_user_id(slack_user_id).is_err() {
        return Ok(());
    }
    prefs.slack_user_id = Some(slack_user_id.to_string());
    prefs.updated_at = state.clock.now();
    let actor = countersign_core::audit::Actor::system("slack");
    match state.store.put_preferences(prefs, actor).await {
        // Someone else has it: an admin decides who is who.
        Ok(_) | Err(Error::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
