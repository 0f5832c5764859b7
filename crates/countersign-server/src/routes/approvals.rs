//! The reviewer API: find and decide requests by their public id.
use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use countersign_core::approval::{Face, Verdict};
use countersign_core::{Error, ids};
use countersign_proto::ApprovalStatus;
use countersign_proto::approvals::{
    ApprovalList, ApprovalListQuery, ApprovalView, ApproveBody, DenyBody,
};
use countersign_store::RequestFilter;

use crate::auth::{Auth, Channel};
use crate::error::{ApiQuery, ApiResult, OptionalJson};
use crate::state::AppState;
use crate::{service, views};

async fn agent_names(state: &AppState, tenant_id: &str) -> Result<HashMap<String, String>, Error> {
    Ok(state
        .store
        .list_agents(tenant_id)
        .await?
        .into_iter()
        .map(|a| (a.id, a.name))
        .collect())
}

/// Requests the caller may decide: a reviewer sees those addressed to them, an admin all.
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", params(ApprovalListQuery),
    responses((status = 200, body = ApprovalList)),
    security(("reviewer_key" = []), ("admin_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(query): ApiQuery<ApprovalListQuery>,
) -> ApiResult<Json<ApprovalList>> {
    let user_id = caller.visible_reviewer()?.map(str::to_string);
    let status = match query.status.as_deref() {
        None | Some("") | Some("all") => None,
        Some(s) => Some(ApprovalStatus::parse(s).ok_or_else(|| {
            Error::invalid(format!(
                "`status` must be pending, approved, rejected, expired or cancelled; got {s:?}"
            ))
        })?),
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(Error::invalid("`limit` must be between 1 and 200").into());
    }
    if query
        .cursor
        .as_deref()
        .is_some_and(|c| !ids::is_id(c, ids::APPROVAL))
    {
        return Err(Error::invalid("`cursor` is not a cursor this server gave out").into());
    }
    let now = state.clock.now();
    let mut filter = RequestFilter::new(now, limit);
    filter.status = status;
    filter.user_id = user_id;
    filter.before_id = query.cursor;
    let page = state
        .store
        .list_requests(&caller.tenant_id, &filter)
        .await?;
    let names = agent_names(&state, &caller.tenant_id).await?;
    let next_cursor = if page.has_more {
        page.items.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(Json(ApprovalList {
        approvals: page
            .items
            .into_iter()
            .map(|r| views::approval(r, &names, now))
            .collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "approvals", params(("id" = String, Path)),
    responses((status = 200, body = ApprovalView)),
    security(("reviewer_key" = []), ("admin_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<ApprovalView>> {
    let request = service::visible(&state, &caller, Face::Review, &id).await?;
    let names = agent_names(&state, &caller.tenant_id).await?;
    Ok(Json(views::approval(request, &names, state.clock.now())))
}

#[utoipa::path(post, path = "/v1/approvals/{id}/approve", tag = "approvals", params(("id" = String, Path)),
    request_body = ApproveBody,
    responses((status = 200, body = ApprovalView),
        (status = 403, description = "the caller may not decide it: not an eligible reviewer, the person it acts for, an admin deciding an OpenID request or a tool call where admins may not, or an admin key toward a quorum of several people", body = countersign_proto::ErrorBody),
        (status = 409, body = countersign_proto::ErrorBody, description = "`already_decided` (with `current_status`) or `already_voted`")),
    security(("reviewer_key" = []), ("admin_key" = [])))]
pub async fn approve(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Channel(channel): Channel,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<ApproveBody>,
) -> ApiResult<Json<ApprovalView>> {
    let comment = body.comment;
    let decided = service::decide(
        &state,
        &caller,
        Face::Review,
        &service::public_ref(&id)?,
        Verdict::Approve,
        comment,
        channel,
    )
    .await?;
    let names = agent_names(&state, &caller.tenant_id).await?;
    Ok(Json(views::approval(decided, &names, state.clock.now())))
}

#[utoipa::path(post, path = "/v1/approvals/{id}/deny", tag = "approvals", params(("id" = String, Path)),
    request_body = DenyBody,
    responses((status = 200, body = ApprovalView),
        (status = 403, description = "the caller may not decide it: not an eligible reviewer, the person it acts for, or an admin deciding an OpenID request or a tool call where admins may not", body = countersign_proto::ErrorBody),
        (status = 409, body = countersign_proto::ErrorBody, description = "`already_decided` (with `current_status`) or `already_voted`")),
    security(("reviewer_key" = []), ("admin_key" = [])))]
pub async fn deny(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Channel(channel): Channel,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<DenyBody>,
) -> ApiResult<Json<ApprovalView>> {
    let reason = body.reason;
    let decided = service::decide(
        &state,
        &caller,
        Face::Review,
        &service::public_ref(&id)?,
        Verdict::Reject,
        reason,
        channel,
    )
    .await?;
    let names = agent_names(&state, &caller.tenant_id).await?;
    Ok(Json(views::approval(decided, &names, state.clock.now())))
}
