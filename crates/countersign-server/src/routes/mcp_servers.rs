//! Upstream MCP servers of a tenant (`/v1/admin/mcp-servers`): admin keys only, confined to
//! the caller's tenant. Header values are accepted and never shown again.
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use countersign_proto::mcp::{CreateMcpServer, McpServerList, McpServerView, UpdateMcpServer};

use crate::auth::Auth;
use crate::error::{ApiJson, ApiResult};
use crate::mcp_servers;
use crate::state::AppState;

#[utoipa::path(post, path = "/v1/admin/mcp-servers", tag = "mcp", request_body = CreateMcpServer,
    responses(
        (status = 201, body = McpServerView, description = "Registered; agents reach it at `/mcp/{id}`"),
        (status = 400, body = countersign_proto::ErrorBody, description = "`invalid_request`: a bad id, URL or header (the message names the header, never its value); `endpoint_not_allowed`: the URL is not https or names a non-public address, and the operator has not allowed that"),
        (status = 409, body = countersign_proto::ErrorBody, description = "`already_exists`: the tenant already has an MCP server with this id"),
    ),
    security(("admin_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(input): ApiJson<CreateMcpServer>,
) -> ApiResult<(StatusCode, Json<McpServerView>)> {
    let created = mcp_servers::create(&state, &caller, input).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/v1/admin/mcp-servers", tag = "mcp",
    responses((status = 200, body = McpServerList, description = "The tenant's MCP servers by id, with header names only")),
    security(("admin_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<McpServerList>> {
    Ok(Json(mcp_servers::list(&state, &caller).await?))
}

#[utoipa::path(get, path = "/v1/admin/mcp-servers/{id}", tag = "mcp",
    params(("id" = String, Path, description = "The server's id")),
    responses((status = 200, body = McpServerView)),
    security(("admin_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<McpServerView>> {
    Ok(Json(mcp_servers::get(&state, &caller, &id).await?))
}

#[utoipa::path(put, path = "/v1/admin/mcp-servers/{id}", tag = "mcp",
    params(("id" = String, Path, description = "The server's id")),
    request_body = UpdateMcpServer,
    responses(
        (status = 200, body = McpServerView, description = "The new URL and headers replace the old ones"),
        (status = 400, body = countersign_proto::ErrorBody, description = "`invalid_request`: a bad URL or header (the message names the header, never its value); `endpoint_not_allowed`: the URL is not https or names a non-public address, and the operator has not allowed that"),
    ),
    security(("admin_key" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<UpdateMcpServer>,
) -> ApiResult<Json<McpServerView>> {
    Ok(Json(
        mcp_servers::update(&state, &caller, &id, input).await?,
    ))
}

#[utoipa::path(delete, path = "/v1/admin/mcp-servers/{id}", tag = "mcp",
    params(("id" = String, Path, description = "The server's id")),
    responses((status = 204, description = "Deleted; `/mcp/{id}` answers 404 from now on")),
    security(("admin_key" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    mcp_servers::delete(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
