//! The seed's agent API, exactly as the seed shows it (camelCase).
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use countersign_core::approval::{RequestRef, Verdict};
use countersign_proto::ciba::{
    ApproveRequest, AuthorizeRequest, AuthorizeResponse, DecisionResponse, DenyRequest, TokenQuery,
    TokenResponse,
};

use crate::auth::{Auth, Channel};
use crate::error::{ApiJson, ApiQuery, ApiResult};
use crate::service;
use crate::state::AppState;

/// Ask a reviewer to approve an action.
#[utoipa::path(post, path = "/ciba/authorize", tag = "ciba", request_body = AuthorizeRequest,
    responses((status = 200, body = AuthorizeResponse)),
    security(("agent_key" = [])))]
pub async fn authorize(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(input): ApiJson<AuthorizeRequest>,
) -> ApiResult<Json<AuthorizeResponse>> {
    Ok(Json(service::authorize(&state, &caller, input).await?))
}

/// Poll for the decision; `waitSeconds` (up to 30) long-polls.
#[utoipa::path(get, path = "/ciba/token", tag = "ciba", params(TokenQuery),
    responses((status = 200, body = TokenResponse), (status = 404, body = countersign_proto::ErrorBody, description = "`not_found`: no request with this `authReqId` or `approvalId`")),
    security(("agent_key" = [])))]
pub async fn token(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(query): ApiQuery<TokenQuery>,
) -> ApiResult<Json<TokenResponse>> {
    let wait = query
        .wait_seconds
        .unwrap_or(0)
        .min(state.settings.requests.max_wait_secs);
    Ok(Json(
        service::poll(
            &state,
            &caller,
            &query.auth_req_id,
            Duration::from_secs(wait),
        )
        .await?,
    ))
}

/// Approve, as the named reviewer or a tenant admin.
#[utoipa::path(post, path = "/ciba/approve", tag = "ciba", request_body = ApproveRequest,
    responses((status = 200, body = DecisionResponse), (status = 409, body = countersign_proto::ErrorBody, description = "`already_decided` (with `current_status`) or `already_voted`"), (status = 404, body = countersign_proto::ErrorBody, description = "`not_found`: no request with this `authReqId` or `approvalId`")),
    security(("reviewer_key" = []), ("admin_key" = [])))]
pub async fn approve(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Channel(channel): Channel,
    ApiJson(input): ApiJson<ApproveRequest>,
) -> ApiResult<Json<DecisionResponse>> {
    // Agents learn they may not decide before anything about the request is looked at.
    caller.require_reviewer_or_admin()?;
    let by = RequestRef::from_parts(input.auth_req_id.as_deref(), input.approval_id.as_deref())?;
    let decided = service::decide(
        &state,
        &caller,
        &by,
        Verdict::Approve,
        input.comment,
        channel,
    )
    .await?;
    Ok(Json(DecisionResponse {
        approval_id: decided.id,
        status: "approved".into(),
    }))
}

/// Deny, as the named reviewer or a tenant admin.
#[utoipa::path(post, path = "/ciba/deny", tag = "ciba", request_body = DenyRequest,
    responses((status = 200, body = DecisionResponse), (status = 409, body = countersign_proto::ErrorBody, description = "`already_decided` (with `current_status`) or `already_voted`"), (status = 404, body = countersign_proto::ErrorBody, description = "`not_found`: no request with this `authReqId` or `approvalId`")),
    security(("reviewer_key" = []), ("admin_key" = [])))]
pub async fn deny(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Channel(channel): Channel,
    ApiJson(input): ApiJson<DenyRequest>,
) -> ApiResult<Json<DecisionResponse>> {
    caller.require_reviewer_or_admin()?;
    let by = RequestRef::from_parts(input.auth_req_id.as_deref(), input.approval_id.as_deref())?;
    let decided =
        service::decide(&state, &caller, &by, Verdict::Reject, input.reason, channel).await?;
    Ok(Json(DecisionResponse {
        approval_id: decided.id,
        status: "denied".into(),
    }))
}
