//! Standard Webhooks endpoints of a tenant (`/v1/admin/webhooks`): admin keys only, confined
//! to the caller's tenant. The signing secret is shown when an endpoint is made and when it
//! is rotated, never again.
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use countersign_proto::notify::{
    CreateWebhook, DeliveryList, DeliveryView, TestSent, UpdateWebhook, WebhookList, WebhookView,
    WebhookWithSecret,
};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Auth;
use crate::error::{ApiJson, ApiQuery, ApiResult};
use crate::notify::webhooks_admin;
use crate::routes::notifications::test_result;
use crate::state::AppState;

#[utoipa::path(post, path = "/v1/admin/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, body = WebhookWithSecret, description = "The endpoint and its signing secret, shown only now")),
    security(("admin_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(input): ApiJson<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<WebhookWithSecret>)> {
    let created = webhooks_admin::create(&state, &caller, input).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/v1/admin/webhooks", tag = "webhooks",
    responses((status = 200, body = WebhookList)),
    security(("admin_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<WebhookList>> {
    Ok(Json(webhooks_admin::list(&state, &caller).await?))
}

#[utoipa::path(get, path = "/v1/admin/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = WebhookView)),
    security(("admin_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookView>> {
    Ok(Json(webhooks_admin::get(&state, &caller, &id).await?))
}

#[utoipa::path(patch, path = "/v1/admin/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    request_body = UpdateWebhook,
    responses((status = 200, body = WebhookView)),
    security(("admin_key" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<UpdateWebhook>,
) -> ApiResult<Json<WebhookView>> {
    Ok(Json(
        webhooks_admin::update(&state, &caller, &id, input).await?,
    ))
}

#[utoipa::path(delete, path = "/v1/admin/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted; its pending deliveries fail")),
    security(("admin_key" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    webhooks_admin::delete(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/admin/webhooks/{id}/rotate-secret", tag = "webhooks",
    params(("id" = String, Path)),
    responses((status = 200, body = WebhookWithSecret, description = "The new signing secret, shown only now; later attempts are signed with it")),
    security(("admin_key" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookWithSecret>> {
    Ok(Json(
        webhooks_admin::rotate_secret(&state, &caller, &id).await?,
    ))
}

/// A page of an endpoint's deliveries.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// The `next_cursor` of the page before.
    #[serde(default)]
    #[param(pattern = r"^(|\+?0*[1-9][0-9]{0,17})$")]
    pub cursor: Option<String>,
    /// At most this many (1 to 200; 50 when absent).
    #[serde(default)]
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/admin/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path), DeliveriesQuery),
    responses((status = 200, body = DeliveryList, description = "Newest first, with attempts, status codes, the last error and the next retry")),
    security(("admin_key" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> ApiResult<Json<DeliveryList>> {
    Ok(Json(
        webhooks_admin::deliveries(&state, &caller, &id, q.cursor.as_deref(), q.limit).await?,
    ))
}

#[utoipa::path(post, path = "/v1/admin/webhooks/{id}/deliveries/{delivery_id}/redeliver", tag = "webhooks",
    params(("id" = String, Path), ("delivery_id" = String, Path)),
    responses((status = 202, body = DeliveryView, description = "Due again now, with the same `webhook-id`"), (status = 409, body = countersign_proto::ErrorBody, description = "`disabled`: the endpoint is disabled; `delivery_pending`: the delivery is still pending")),
    security(("admin_key" = [])))]
pub async fn redeliver(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<DeliveryView>)> {
    let delivery = webhooks_admin::redeliver(&state, &caller, &id, &delivery_id).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery)))
}

#[utoipa::path(post, path = "/v1/admin/webhooks/{id}/test", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = TestSent, description = "How a signed `webhook.test` event sent at once went")),
    security(("admin_key" = [])))]
pub async fn test(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<TestSent>> {
    let attempt = webhooks_admin::send_test(&state, &caller, &id).await?;
    Ok(Json(test_result(attempt)))
}
