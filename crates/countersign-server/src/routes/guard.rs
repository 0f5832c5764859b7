//! The guard API under `/v1/guard/{proxyId}` (snake_case), shaped like the seed.
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use countersign_core::Error;
use countersign_core::approval::{Face, Verdict};
use countersign_proto::guard::{
    CommentBody, EvaluateRequest, GrantQuery, GrantResponse, GroupInput, GroupList, GroupView,
    GuardApprovalView, GuardSettings, History, HistoryQuery, PolicyInput, PolicyList, PolicyView,
    ReasonBody, RoutingRules, ToolDecision, ToolRequest, WaitQuery,
};

use crate::auth::{Auth, Channel};
use crate::error::{ApiJson, ApiQuery, ApiResult, OptionalJson};
use crate::guard::{self, check_proxy};
use crate::idempotency::KeyHeader;
use crate::service;
use crate::state::AppState;

/// Check a tool call: allow, block, or require approval.
#[utoipa::path(post, path = "/v1/guard/{proxy_id}/tool", tag = "guard", params(("proxy_id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[\x20-\x7E]+$",
        description = "Makes a retry safe: the same key with the same body answers as the first call did (with `Idempotent-Replayed: true`); with another body, 422 `idempotency_key_reused`. Keys are per caller and kept for 24 hours.")),
    request_body = ToolRequest,
    responses((status = 200, body = ToolDecision, headers(("Idempotent-Replayed" = String, description = "`true` when this answer was replayed from an earlier call with the same `Idempotency-Key`"))),
        (status = 400, description = "`invalid_number`: an argument that canonical JSON cannot keep exactly; `invalid_text`: hidden characters in the tool name, an argument key, `reason` or `scope`; `invalid_request`: another bad value", body = countersign_proto::ErrorBody),
        (status = 409, description = "another call with this `Idempotency-Key` is still being processed (`idempotency_key_in_use`)", body = countersign_proto::ErrorBody),
        (status = 422, description = "the `Idempotency-Key` was used for a different request (`idempotency_key_reused`), or the body is malformed", body = countersign_proto::ErrorBody)), security(("agent_key" = [])))]
pub async fn tool(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(proxy_id): Path<String>,
    KeyHeader(key): KeyHeader,
    ApiJson(input): ApiJson<ToolRequest>,
) -> ApiResult<Response> {
    check_proxy(&caller, &proxy_id)?;
    Ok(guard::check_tool(&state, &caller, input, key)
        .await?
        .into_response())
}

/// An approval and its decisions; `wait` long-polls until it is decided.
#[utoipa::path(get, path = "/v1/guard/{proxy_id}/approvals/{approval_id}", tag = "guard",
    params(("proxy_id" = String, Path), ("approval_id" = String, Path), WaitQuery),
    responses((status = 200, body = GuardApprovalView)), security(("agent_key" = []), ("reviewer_key" = []), ("admin_key" = [])))]
pub async fn get_approval(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((proxy_id, approval_id)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<WaitQuery>,
) -> ApiResult<Json<GuardApprovalView>> {
    check_proxy(&caller, &proxy_id)?;
    let mut request = service::visible(&state, &caller, Face::Guard, &approval_id).await?;
    let wait = guard::max_wait(&state, query.wait);
    if !wait.is_zero() {
        request = service::wait_for_decision(&state, &caller.tenant_id, request, wait).await?;
    }
    Ok(Json(guard::view(&state, request).await?))
}

#[utoipa::path(post, path = "/v1/guard/{proxy_id}/approvals/{approval_id}/approve", tag = "guard",
    params(("proxy_id" = String, Path), ("approval_id" = String, Path)), request_body = CommentBody,
    responses((status = 200, body = GuardApprovalView),
        (status = 403, description = "the caller may not decide it: not an eligible reviewer, the person it acts for, an admin where admins may not decide, or an admin key toward a quorum of several people", body = countersign_proto::ErrorBody),
        (status = 404, description = "no tool-call approval with this id", body = countersign_proto::ErrorBody),
        (status = 409, body = countersign_proto::ErrorBody, description = "`already_decided` (with `current_status`) or `already_voted`")), security(("reviewer_key" = []), ("admin_key" = [])))]
pub async fn approve(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Channel(channel): Channel,
    Path((proxy_id, approval_id)): Path<(String, String)>,
    OptionalJson(body): OptionalJson<CommentBody>,
) -> ApiResult<Json<GuardApprovalView>> {
    check_proxy(&caller, &proxy_id)?;
    let by = service::public_ref(&approval_id)?;
    let decided = service::decide(
        &state,
        &caller,
        Face::Guard,
        &by,
        Verdict::Approve,
        body.comment,
        channel,
    )
    .await?;
    Ok(Json(guard::view(&state, decided).await?))
}

#[utoipa::path(post, path = "/v1/guard/{proxy_id}/approvals/{approval_id}/reject", tag = "guard",
    params(("proxy_id" = String, Path), ("approval_id" = String, Path)), request_body = ReasonBody,
    responses((status = 200, body = GuardApprovalView),
        (status = 403, description = "the caller may not decide it: not an eligible reviewer, the person it acts for, or an admin where admins may not decide", body = countersign_proto::ErrorBody),
        (status = 404, description = "no tool-call approval with this id", body = countersign_proto::ErrorBody),
        (status = 409, body = countersign_proto::ErrorBody, description = "`already_decided` (with `current_status`) or `already_voted`")), security(("reviewer_key" = []), ("admin_key" = [])))]
pub async fn reject(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Channel(channel): Channel,
    Path((proxy_id, approval_id)): Path<(String, String)>,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> ApiResult<Json<GuardApprovalView>> {
    check_proxy(&caller, &proxy_id)?;
    let by = service::public_ref(&approval_id)?;
    let decided = service::decide(
        &state,
        &caller,
        Face::Guard,
        &by,
        Verdict::Reject,
        body.reason,
        channel,
    )
    .await?;
    Ok(Json(guard::view(&state, decided).await?))
}

/// Withdraw a pending approval (the requesting agent or an admin).
#[utoipa::path(post, path = "/v1/guard/{proxy_id}/approvals/{approval_id}/cancel", tag = "guard",
    params(("proxy_id" = String, Path), ("approval_id" = String, Path)),
    responses((status = 200, body = GuardApprovalView), (status = 409, body = countersign_proto::ErrorBody, description = "`already_decided`: the approval is no longer pending")), security(("agent_key" = []), ("admin_key" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((proxy_id, approval_id)): Path<(String, String)>,
) -> ApiResult<Json<GuardApprovalView>> {
    check_proxy(&caller, &proxy_id)?;
    let cancelled = guard::cancel(&state, &caller, &approval_id).await?;
    Ok(Json(guard::view(&state, cancelled).await?))
}

/// Redeem an approved tool call, once, for a signed grant bound to its arguments and to the
/// audience `resource` names (RFC 8707; `invalid_target` when it is not allowed).
#[utoipa::path(post, path = "/v1/guard/{proxy_id}/approvals/{approval_id}/grant", tag = "guard",
    params(("proxy_id" = String, Path), ("approval_id" = String, Path), GrantQuery),
    responses((status = 200, body = GrantResponse),
        (status = 409, body = countersign_proto::ErrorBody, description = "`not_approved`, or the grant was already issued")), security(("agent_key" = [])))]
pub async fn grant(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((proxy_id, approval_id)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<GrantQuery>,
) -> ApiResult<Json<GrantResponse>> {
    check_proxy(&caller, &proxy_id)?;
    Ok(Json(
        guard::grant(&state, &caller, &approval_id, query.resource.as_deref()).await?,
    ))
}

#[utoipa::path(get, path = "/v1/guard/{proxy_id}/approvals/history", tag = "guard",
    params(("proxy_id" = String, Path), HistoryQuery),
    responses((status = 200, body = History)), security(("reviewer_key" = []), ("admin_key" = [])))]
pub async fn history(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(proxy_id): Path<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<History>> {
    check_proxy(&caller, &proxy_id)?;
    Ok(Json(guard::history(&state, &caller, query).await?))
}

// ----- policies -----

#[utoipa::path(post, path = "/v1/guard/{proxy_id}/policies", tag = "guard", params(("proxy_id" = String, Path)),
    request_body = PolicyInput,
    responses((status = 201, body = PolicyView), (status = 409, body = countersign_proto::ErrorBody, description = "`already_exists`: a policy with this name exists")), security(("admin_key" = [])))]
pub async fn create_policy(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(proxy_id): Path<String>,
    ApiJson(input): ApiJson<PolicyInput>,
) -> ApiResult<(StatusCode, Json<PolicyView>)> {
    check_proxy(&caller, &proxy_id)?;
    let saved = guard::save_policy(&state, &caller, None, input).await?;
    Ok((StatusCode::CREATED, Json(guard::policy_view(saved))))
}

#[utoipa::path(get, path = "/v1/guard/{proxy_id}/policies", tag = "guard", params(("proxy_id" = String, Path)),
    responses((status = 200, body = PolicyList)), security(("admin_key" = [])))]
pub async fn list_policies(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(proxy_id): Path<String>,
) -> ApiResult<Json<PolicyList>> {
    check_proxy(&caller, &proxy_id)?;
    caller.require_admin()?;
    let mut policies = state.store.list_policies(&caller.tenant_id).await?;
    policies.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
    Ok(Json(PolicyList {
        policies: policies.into_iter().map(guard::policy_view).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/guard/{proxy_id}/policies/{policy_id}", tag = "guard",
    params(("proxy_id" = String, Path), ("policy_id" = String, Path)),
    responses((status = 200, body = PolicyView)), security(("admin_key" = [])))]
pub async fn get_policy(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((proxy_id, policy_id)): Path<(String, String)>,
) -> ApiResult<Json<PolicyView>> {
    check_proxy(&caller, &proxy_id)?;
    caller.require_admin()?;
    let policy = state
        .store
        .get_policy(&caller.tenant_id, &policy_id)
        .await?
        .ok_or_else(|| Error::NotFound("no such policy".into()))?;
    Ok(Json(guard::policy_view(policy)))
}

#[utoipa::path(put, path = "/v1/guard/{proxy_id}/policies/{policy_id}", tag = "guard",
    params(("proxy_id" = String, Path), ("policy_id" = String, Path)), request_body = PolicyInput,
    responses((status = 200, body = PolicyView), (status = 409, body = countersign_proto::ErrorBody, description = "`already_exists`: a policy with this name exists")), security(("admin_key" = [])))]
pub async fn update_policy(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((proxy_id, policy_id)): Path<(String, String)>,
    ApiJson(input): ApiJson<PolicyInput>,
) -> ApiResult<Json<PolicyView>> {
    check_proxy(&caller, &proxy_id)?;
    let saved = guard::save_policy(&state, &caller, Some(&policy_id), input).await?;
    Ok(Json(guard::policy_view(saved)))
}

#[utoipa::path(delete, path = "/v1/guard/{proxy_id}/policies/{policy_id}", tag = "guard",
    params(("proxy_id" = String, Path), ("policy_id" = String, Path)),
    responses((status = 204)), security(("admin_key" = [])))]
pub async fn delete_policy(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((proxy_id, policy_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    check_proxy(&caller, &proxy_id)?;
    guard::delete_policy(&state, &caller, &policy_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What `POST /tool` would answer for a sample call, creating nothing.
#[utoipa::path(post, path = "/v1/guard/{proxy_id}/policies/evaluate", tag = "guard",
    params(("proxy_id" = String, Path)), request_body = EvaluateRequest,
    responses((status = 200, body = ToolDecision),
        (status = 400, description = "`invalid_number`, `invalid_text` or `invalid_request`: the sample call is refused as `POST /tool` would refuse it", body = countersign_proto::ErrorBody)), security(("admin_key" = [])))]
pub async fn evaluate(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(proxy_id): Path<String>,
    ApiJson(input): ApiJson<EvaluateRequest>,
) -> ApiResult<Json<ToolDecision>> {
    check_proxy(&caller, &proxy_id)?;
    Ok(Json(guard::dry_run(&state, &caller, input).await?))
}

// ----- approval groups -----

#[utoipa::path(post, path = "/v1/guard/{proxy_id}/approval-groups", tag = "guard", params(("proxy_id" = String, Path)),
    request_body = GroupInput,
    responses((status = 201, body = GroupView), (status = 409, body = countersign_proto::ErrorBody, description = "`already_exists`: a group with this id exists")), security(("admin_key" = [])))]
pub async fn create_group(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(proxy_id): Path<String>,
    ApiJson(input): ApiJson<GroupInput>,
) -> ApiResult<(StatusCode, Json<GroupView>)> {
    check_proxy(&caller, &proxy_id)?;
    let saved = guard::save_group(&state, &caller, None, input).await?;
    Ok((StatusCode::CREATED, Json(guard::group_view(saved))))
}

#[utoipa::path(get, path = "/v1/guard/{proxy_id}/approval-groups", tag = "guard", params(("proxy_id" = String, Path)),
    responses((status = 200, body = GroupList)), security(("admin_key" = [])))]
pub async fn list_groups(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(proxy_id): Path<String>,
) -> ApiResult<Json<GroupList>> {
    check_proxy(&caller, &proxy_id)?;
    caller.require_admin()?;
    let groups = state.store.list_groups(&caller.tenant_id).await?;
    Ok(Json(GroupList {
        approval_groups: groups.into_iter().map(guard::group_view).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/guard/{proxy_id}/approval-groups/{group_id}", tag = "guard",
    params(("proxy_id" = String, Path), ("group_id" = String, Path)),
    responses((status = 200, body = GroupView)), security(("admin_key" = [])))]
pub async fn get_group(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((proxy_id, group_id)): Path<(String, String)>,
) -> ApiResult<Json<GroupView>> {
    check_proxy(&caller, &proxy_id)?;
    caller.require_admin()?;
    let group = state
        .store
        .get_group(&caller.tenant_id, &group_id)
        .await?
        .ok_or_else(|| Error::NotFound("no such approval group".into()))?;
    Ok(Json(guard::group_view(group)))
}

#[utoipa::path(put, path = "/v1/guard/{proxy_id}/approval-groups/{group_id}", tag = "guard",
    params(("proxy_id" = String, Path), ("group_id" = String, Path)), request_body = GroupInput,
    responses((status = 200, body = GroupView), (status = 409, body = countersign_proto::ErrorBody, description = "`already_exists`: a group with this id exists")), security(("admin_key" = [])))]
pub async fn update_group(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((proxy_id, group_id)): Path<(String, String)>,
    ApiJson(input): ApiJson<GroupInput>,
) -> ApiResult<Json<GroupView>> {
    check_proxy(&caller, &proxy_id)?;
    let saved = guard::save_group(&state, &caller, Some(&group_id), input).await?;
    Ok(Json(guard::group_view(saved)))
}

#[utoipa::path(delete, path = "/v1/guard/{proxy_id}/approval-groups/{group_id}", tag = "guard",
    params(("proxy_id" = String, Path), ("group_id" = String, Path)),
    responses((status = 204), (status = 409, body = countersign_proto::ErrorBody, description = "`in_use`: a policy, routing rule or setting still names the group")), security(("admin_key" = [])))]
pub async fn delete_group(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((proxy_id, group_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    check_proxy(&caller, &proxy_id)?;
    guard::delete_group(&state, &caller, &group_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- routing and settings -----

#[utoipa::path(get, path = "/v1/guard/{proxy_id}/routing-rules", tag = "guard", params(("proxy_id" = String, Path)),
    responses((status = 200, body = RoutingRules)), security(("admin_key" = [])))]
pub async fn get_routing(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(proxy_id): Path<String>,
) -> ApiResult<Json<RoutingRules>> {
    check_proxy(&caller, &proxy_id)?;
    caller.require_admin()?;
    Ok(Json(state.store.guard_settings(&caller.tenant_id).await?.1))
}

#[utoipa::path(put, path = "/v1/guard/{proxy_id}/routing-rules", tag = "guard", params(("proxy_id" = String, Path)),
    request_body = RoutingRules,
    responses((status = 200, body = RoutingRules)), security(("admin_key" = [])))]
pub async fn put_routing(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(proxy_id): Path<String>,
    ApiJson(input): ApiJson<RoutingRules>,
) -> ApiResult<Json<RoutingRules>> {
    check_proxy(&caller, &proxy_id)?;
    Ok(Json(guard::put_routing(&state, &caller, input).await?))
}

#[utoipa::path(get, path = "/v1/guard/{proxy_id}/settings", tag = "guard", params(("proxy_id" = String, Path)),
    responses((status = 200, body = GuardSettings)), security(("admin_key" = [])))]
pub async fn get_settings(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(proxy_id): Path<String>,
) -> ApiResult<Json<GuardSettings>> {
    check_proxy(&caller, &proxy_id)?;
    caller.require_admin()?;
    Ok(Json(state.store.guard_settings(&caller.tenant_id).await?.0))
}

#[utoipa::path(put, path = "/v1/guard/{proxy_id}/settings", tag = "guard", params(("proxy_id" = String, Path)),
    request_body = GuardSettings,
    responses((status = 200, body = GuardSettings)), security(("admin_key" = [])))]
pub async fn put_settings(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(proxy_id): Path<String>,
    ApiJson(input): ApiJson<GuardSettings>,
) -> ApiResult<Json<GuardSettings>> {
    check_proxy(&caller, &proxy_id)?;
    Ok(Json(guard::put_settings(&state, &caller, input).await?))
}
