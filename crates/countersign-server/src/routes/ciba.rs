//! The seed's agent API, exactly as the seed shows it (camelCase).
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use countersign_core::approval::{Face, RequestRef, Verdict};
use countersign_proto::ciba::{
    ApproveRequest, AuthorizeRequest, AuthorizeResponse, DecisionResponse, DenyRequest, TokenQuery,
    TokenResponse,
};

use crate::auth::{Auth, Channel};
use crate::error::{ApiJson, ApiQuery, ApiResult};
use crate::idempotency::KeyHeader;
use crate::service;
use crate::state::AppState;

/// Ask a reviewer to approve an action.
#[utoipa::path(post, path = "/ciba/authorize", tag = "ciba", request_body = AuthorizeRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[\x20-\x7E]+$",
        description = "Makes a retry safe: the same key with the same body answers as the first call did (with `Idempotent-Replayed: true`); with another body, 422 `idempotency_key_reused`. Keys are per caller and kept for 24 hours.")),
    responses((status = 200, body = AuthorizeResponse, headers(("Idempotent-Replayed" = String, description = "`true` when this answer was replayed from an earlier call with the same `Idempotency-Key`"))),
        (status = 400, description = "`invalid_number`: a number in `context` that canonical JSON cannot keep exactly; `invalid_text`: hidden characters in `scope`, `bindingMessage` or a `context` key; `invalid_request`: another bad value", body = countersign_proto::ErrorBody),
        (status = 409, description = "another call with this `Idempotency-Key` is still being processed (`idempotency_key_in_use`)", body = countersign_proto::ErrorBody),
        (status = 422, description = "the `Idempotency-Key` was used for a different request (`idempotency_key_reused`), or the body is malformed", body = countersign_proto::ErrorBody)),
    security(("agent_key" = [])))]
pub async fn authorize(
    State(state): State<AppState>,
    Auth(caller): Auth,
    KeyHeader(key): KeyHeader,
    ApiJson(input): ApiJson<AuthorizeRequest>,
) -> ApiResult<Response> {
    Ok(service::authorize(&state, &caller, input, key)
        .await?
        .into_response())
}

/// Poll for the decision; `waitSeconds` (up to 30) long-polls; `resource` names the audience
/// of the access token (RFC 8707; `invalid_target` when the tenant does not allow it).
#[utoipa::path(get, path = "/ciba/token", tag = "ciba", params(TokenQuery),
    responses((status = 200, body = TokenResponse),
        (status = 404, description = "no seed CIBA request with this `authReqId` (OpenID requests are redeemed only at `/oidc/token`, tool calls only through the guard)", body = countersign_proto::ErrorBody)),
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
            query.resource.as_deref(),
        )
        .await?,
    ))
}

/// Approve, as the named reviewer or a tenant admin.
#[utoipa::path(post, path = "/ciba/approve", tag = "ciba", request_body = ApproveRequest,
    responses((status = 200, body = DecisionResponse),
        (status = 403, description = "the caller may not decide this request (not the user it names, an agent key)", body = countersign_proto::ErrorBody),
        (status = 404, description = "no seed CIBA request with this id (tool calls and OpenID requests are decided elsewhere)", body = countersign_proto::ErrorBody),
        (status = 409, body = countersign_proto::ErrorBody)),
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
        Face::Ciba,
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
    responses((status = 200, body = DecisionResponse),
        (status = 403, description = "the caller may not decide this request (not the user it names, an agent key)", body = countersign_proto::ErrorBody),
        (status = 404, description = "no seed CIBA request with this id (tool calls and OpenID requests are decided elsewhere)", body = countersign_proto::ErrorBody),
        (status = 409, body = countersign_proto::ErrorBody)),
    security(("reviewer_key" = []), ("admin_key" = [])))]
pub async fn deny(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Channel(channel): Channel,
    ApiJson(input): ApiJson<DenyRequest>,
) -> ApiResult<Json<DecisionResponse>> {
    caller.require_reviewer_or_admin()?;
    let by = RequestRef::from_parts(input.auth_req_id.as_deref(), input.approval_id.as_deref())?;
    let decided = service::decide(
        &state,
        &caller,
        Face::Ciba,
        &by,
        Verdict::Reject,
        input.reason,
        channel,
    )
    .await?;
    Ok(Json(DecisionResponse {
        approval_id: decided.id,
        status: "denied".into(),
    }))
}
