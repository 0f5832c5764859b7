//! Notification settings: a tenant's channels (`/v1/admin/notification-channels`), people's
//! preferences (`/v1/me/…`, `/v1/admin/users/{id}/…`), and a request's delivery log.
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use countersign_core::notify::{Delivery, EMAIL, SLACK, TEAMS};
use countersign_core::{Error, ids};
use countersign_proto::notify::{
    DeliveryList, DeliveryView, NotificationChannels, NotificationPreferencesView, PutEmailChannel,
    PutNotificationPreferences, PutSlackChannel, PutTeamsChannel, TestSent,
};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::Auth;
use crate::error::{ApiJson, ApiResult, OptionalJson};
use crate::notify::channels;
use crate::notify::worker::{Attempt, AttemptError};
use crate::state::AppState;

#[utoipa::path(get, path = "/v1/admin/notification-channels", tag = "notifications",
    responses((status = 200, body = NotificationChannels), (status = "4XX", body = countersign_proto::ErrorBody)),
    security(("api_key" = [])))]
pub async fn get_channels(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<NotificationChannels>> {
    Ok(Json(channels::view(&state, &caller).await?))
}

#[utoipa::path(put, path = "/v1/admin/notification-channels/email", tag = "notifications",
    request_body = PutEmailChannel,
    responses((status = 200, body = NotificationChannels), (status = "4XX", body = countersign_proto::ErrorBody)),
    security(("api_key" = [])))]
pub async fn put_email(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(input): ApiJson<PutEmailChannel>,
) -> ApiResult<Json<NotificationChannels>> {
    channels::put_email(&state, &caller, input).await?;
    Ok(Json(channels::view(&state, &caller).await?))
}

#[utoipa::path(put, path = "/v1/admin/notification-channels/slack", tag = "notifications",
    request_body = PutSlackChannel,
    responses((status = 200, body = NotificationChannels), (status = "4XX", body = countersign_proto::ErrorBody)),
    security(("api_key" = [])))]
pub async fn put_slack(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(input): ApiJson<PutSlackChannel>,
) -> ApiResult<Json<NotificationChannels>> {
    channels::put_slack(&state, &caller, input).await?;
    Ok(Json(channels::view(&state, &caller).await?))
}

#[utoipa::path(put, path = "/v1/admin/notification-channels/teams", tag = "notifications",
    request_body = PutTeamsChannel,
    responses((status = 200, body = NotificationChannels), (status = "4XX", body = countersign_proto::ErrorBody)),
    security(("api_key" = [])))]
pub async fn put_teams(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(input): ApiJson<PutTeamsChannel>,
) -> ApiResult<Json<NotificationChannels>> {
    channels::put_teams(&state, &caller, input).await?;
    Ok(Json(channels::view(&state, &caller).await?))
}

async fn delete_channel(
    state: &AppState,
    caller: &countersign_core::Principal,
    channel: &str,
) -> ApiResult<StatusCode> {
    channels::remove(state, caller, channel).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Email goes back to its defaults (on, when the server has SMTP).
#[utoipa::path(delete, path = "/v1/admin/notification-channels/email", tag = "notifications",
    responses((status = 204), (status = "4XX", body = countersign_proto::ErrorBody)),
    security(("api_key" = [])))]
pub async fn delete_email(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<StatusCode> {
    delete_channel(&state, &caller, EMAIL).await
}

#[utoipa::path(delete, path = "/v1/admin/notification-channels/slack", tag = "notifications",
    responses((status = 204), (status = "4XX", body = countersign_proto::ErrorBody)),
    security(("api_key" = [])))]
pub async fn delete_slack(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<StatusCode> {
    delete_channel(&state, &caller, SLACK).await
}

#[utoipa::path(delete, path = "/v1/admin/notification-channels/teams", tag = "notifications",
    responses((status = 204), (status = "4XX", body = countersign_proto::ErrorBody)),
    security(("api_key" = [])))]
pub async fn delete_teams(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<StatusCode> {
    delete_channel(&state, &caller, TEAMS).await
}

/// Where a test goes: an email address for email; Slack and Teams use the tenant's settings.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestChannel {
    #[serde(default)]
    pub to: Option<String>,
}

pub(crate) fn test_result(attempt: Attempt) -> TestSent {
    match attempt {
        Ok(sent) => TestSent {
            delivered: true,
            status_code: sent.status,
            error: None,
        },
        Err(AttemptError::Retry { error, status, .. } | AttemptError::GiveUp { error, status }) => {
            TestSent {
                delivered: false,
                status_code: status,
                error: Some(error),
            }
        }
    }
}

/// Sends a test message on a channel at once and says how it went.
#[utoipa::path(post, path = "/v1/admin/notification-channels/{channel}/test", tag = "notifications",
    params(("channel" = String, Path, description = "email, slack or teams")),
    request_body(content = TestChannel, description = "For email: `to`, the address to write to"),
    responses((status = 200, body = TestSent), (status = "4XX", body = countersign_proto::ErrorBody)),
    security(("api_key" = [])))]
pub async fn test_channel(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(channel): Path<String>,
    OptionalJson(input): OptionalJson<TestChannel>,
) -> ApiResult<Json<TestSent>> {
    caller.require_admin()?;
    channels::check_channel(&channel)?;
    let attempt = match channel.as_str() {
        EMAIL => {
            let to = input
                .to
                .ok_or_else(|| Error::invalid("`to`: the address to send the test to"))?;
            countersign_core::validate::email(&to)?;
            crate::notify::email::send_test(&state, &to).await
        }
        SLACK => crate::notify::slack::send_test(&state, &caller.tenant_id).await,
        TEAMS => crate::notify::teams::send_test(&state, &caller.tenant_id).await,
        _ => return Err(Error::NotFound("no such channel".into()).into()),
    };
    Ok(Json(test_result(attempt)))
}

#[utoipa::path(get, path = "/v1/me/notification-preferences", tag = "notifications",
    responses((status = 200, body = NotificationPreferencesView), (status = "4XX", body = countersign_proto::ErrorBody)),
    security(("api_key" = [])))]
pub async fn get_my_preferences(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<NotificationPreferencesView>> {
    Ok(Json(
        channels::get_preferences(&state, &caller, None).await?,
    ))
}

#[utoipa::path(put, path = "/v1/me/notification-preferences", tag = "notifications",
    request_body = PutNotificationPreferences,
    responses((status = 200, body = NotificationPreferencesView), (status = "4XX", body = countersign_proto::ErrorBody)),
    security(("api_key" = [])))]
pub async fn put_my_preferences(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(input): ApiJson<PutNotificationPreferences>,
) -> ApiResult<Json<NotificationPreferencesView>> {
    Ok(Json(
        channels::put_preferences(&state, &caller, None, input).await?,
    ))
}

#[utoipa::path(get, path = "/v1/admin/users/{id}/notification-preferences", tag = "notifications",
    params(("id" = String, Path)),
    responses((status = 200, body = NotificationPreferencesView), (status = "4XX", body = countersign_proto::ErrorBody)),
    security(("api_key" = [])))]
pub async fn get_user_preferences(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<NotificationPreferencesView>> {
    caller.require_admin()?;
    Ok(Json(
        channels::get_preferences(&state, &caller, Some(&id)).await?,
    ))
}

#[utoipa::path(put, path = "/v1/admin/users/{id}/notification-preferences", tag = "notifications",
    params(("id" = String, Path)), request_body = PutNotificationPreferences,
    responses((status = 200, body = NotificationPreferencesView), (status = "4XX", body = countersign_proto::ErrorBody)),
    security(("api_key" = [])))]
pub async fn put_user_preferences(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<PutNotificationPreferences>,
) -> ApiResult<Json<NotificationPreferencesView>> {
    caller.require_admin()?;
    Ok(Json(
        channels::put_preferences(&state, &caller, Some(&id), input).await?,
    ))
}

pub fn delivery_view(d: Delivery) -> DeliveryView {
    DeliveryView {
        next_attempt_at: d.is_pending().then_some(d.next_attempt_at),
        id: d.id,
        approval_id: d.approval_id,
        channel: d.channel,
        target: d.target,
        recipient: d.recipient,
        event: d.event,
        state: d.state,
        attempts: d.attempts,
        status_code: d.status_code,
        last_error: d.last_error,
        created_at: d.created_at,
        delivered_at: d.delivered_at,
    }
}

/// Who was told about a request, on which channel, when, and how it went (admins, and the
/// reviewers who may see the request).
#[utoipa::path(get, path = "/v1/approvals/{id}/deliveries", tag = "notifications",
    params(("id" = String, Path)),
    responses((status = 200, body = DeliveryList), (status = "4XX", body = countersign_proto::ErrorBody)),
    security(("api_key" = [])))]
pub async fn request_deliveries(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<DeliveryList>> {
    if !ids::is_id(&id, ids::APPROVAL) {
        return Err(Error::NotFound("no such approval request".into()).into());
    }
    // Whoever may see the request may see who was told about it.
    let request = crate::service::find(
        &state,
        &caller.tenant_id,
        &countersign_core::approval::RequestRef::PublicId(id.clone()),
    )
    .await?;
    let since = match &caller.role {
        countersign_core::Role::Reviewer { user_id } => {
            state.store.reviewer_since(&request.id, user_id).await?
        }
        _ => None,
    };
    caller.may_view(since, state.clock.now())?;
    let deliveries = state.store.list_deliveries(&caller.tenant_id, &id).await?;
    Ok(Json(DeliveryList {
        deliveries: deliveries.into_iter().map(delivery_view).collect(),
        next_cursor: None,
    }))
}
