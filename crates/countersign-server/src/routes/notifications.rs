//! Notification settings: a tenant's channels (`/v1/admin/notification-channels`), people's
//! preferences (`/v1/me/…`, `/v1/admin/users/{id}/…`), and a request's delivery log.
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use countersign_core::notify::{EMAIL, SLACK, TEAMS};
use countersign_proto::notify::{
    DeliveryList, NotificationChannels, NotificationPreferencesView, PutEmailChannel,
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
    responses((status = 200, body = NotificationChannels)),
    security(("admin_key" = [])))]
pub async fn get_channels(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<NotificationChannels>> {
    Ok(Json(channels::view(&state, &caller).await?))
}

#[utoipa::path(put, path = "/v1/admin/notification-channels/email", tag = "notifications",
    request_body = PutEmailChannel,
    responses((status = 200, body = NotificationChannels)),
    security(("admin_key" = [])))]
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
    responses((status = 200, body = NotificationChannels)),
    security(("admin_key" = [])))]
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
    responses((status = 200, body = NotificationChannels)),
    security(("admin_key" = [])))]
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
    responses((status = 204)),
    security(("admin_key" = [])))]
pub async fn delete_email(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<StatusCode> {
    delete_channel(&state, &caller, EMAIL).await
}

#[utoipa::path(delete, path = "/v1/admin/notification-channels/slack", tag = "notifications",
    responses((status = 204)),
    security(("admin_key" = [])))]
pub async fn delete_slack(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<StatusCode> {
    delete_channel(&state, &caller, SLACK).await
}

#[utoipa::path(delete, path = "/v1/admin/notification-channels/teams", tag = "notifications",
    responses((status = 204)),
    security(("admin_key" = [])))]
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
    #[schema(
        max_length = 254,
        pattern = r"^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^@\s\x00-\x1f\x7f-\x9f]+@([^@.\s\x00-\x1f\x7f-\x9f]|[^@.\s\x00-\x1f\x7f-\x9f][^@\s\x00-\x1f\x7f-\x9f]*[^@.\s\x00-\x1f\x7f-\x9f])[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
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
    params(("channel" = String, Path, description = "email, slack or teams", pattern = "^(email|slack|teams)$")),
    request_body(content = TestChannel, description = "For email: `to`, the address to write to"),
    responses((status = 200, body = TestSent)),
    security(("admin_key" = [])))]
pub async fn test_channel(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(channel): Path<String>,
    OptionalJson(input): OptionalJson<TestChannel>,
) -> ApiResult<Json<TestSent>> {
    let attempt = channels::send_test(&state, &caller, &channel, input.to.as_deref()).await?;
    Ok(Json(test_result(attempt)))
}

#[utoipa::path(get, path = "/v1/me/notification-preferences", tag = "notifications",
    responses((status = 200, body = NotificationPreferencesView)),
    security(("reviewer_key" = [])))]
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
    responses((status = 200, body = NotificationPreferencesView), (status = 409, body = countersign_proto::ErrorBody, description = "`already_exists`: another user of the tenant has this Slack user id")),
    security(("reviewer_key" = [])))]
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
    responses((status = 200, body = NotificationPreferencesView)),
    security(("admin_key" = [])))]
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
    responses((status = 200, body = NotificationPreferencesView), (status = 409, body = countersign_proto::ErrorBody, description = "`already_exists`: another user of the tenant has this Slack user id")),
    security(("admin_key" = [])))]
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

/// Who was told about a request, on which channel, when, and how it went (admins, and the
/// reviewers who may see the request).
#[utoipa::path(get, path = "/v1/approvals/{id}/deliveries", tag = "notifications",
    params(("id" = String, Path)),
    responses((status = 200, body = DeliveryList)),
    security(("reviewer_key" = []), ("admin_key" = [])))]
pub async fn request_deliveries(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<DeliveryList>> {
    // Whoever may see the request may see who was told about it.
    let request = crate::service::visible(
        &state,
        &caller,
        countersign_core::approval::Face::Review,
        &id,
    )
    .await?;
    let deliveries = state
        .store
        .list_deliveries(&caller.tenant_id, &request.id)
        .await?;
    Ok(Json(DeliveryList {
        deliveries: deliveries.into_iter().map(crate::views::delivery).collect(),
        next_cursor: None,
    }))
}
