//! The tenant's registered upstream MCP servers (admins only, confined to the caller's
//! tenant): the in-server gateway forwards `/mcp/{id}` to them. Header values are secrets:
//! they never appear in answers, logs, audit details or error messages.
use countersign_core::mcp::{self, McpServerRecord};
use countersign_core::{Error, Principal, Result};
use countersign_proto::mcp::{CreateMcpServer, McpServerList, McpServerView, UpdateMcpServer};

use crate::notify::outbound::check_registration;
use crate::state::AppState;

pub fn view(record: McpServerRecord) -> McpServerView {
    McpServerView {
        header_names: record.header_names(),
        id: record.id,
        url: record.url,
        created_at: record.created_at,
        updated_at: record.updated_at,
    }
}

fn no_such_server() -> Error {
    Error::NotFound("no such MCP server".into())
}

/// Unless the operator allows them, the upstream must be https and may not name a literal
/// private address, like webhook endpoints.
fn check_reachable(state: &AppState, url: &str) -> Result<()> {
    check_registration("url", url, &state.settings.outbound)
}

async fn find(state: &AppState, caller: &Principal, id: &str) -> Result<McpServerRecord> {
    caller.require_admin()?;
    if !mcp::is_server_id(id) {
        return Err(no_such_server());
    }
    state
        .store
        .get_mcp_server(&caller.tenant_id, id)
        .await?
        .ok_or_else(no_such_server)
}

pub async fn create(
    state: &AppState,
    caller: &Principal,
    input: CreateMcpServer,
) -> Result<McpServerView> {
    caller.require_admin()?;
    let record = mcp::new_server(
        &caller.tenant_id,
        &input.id,
        &input.url,
        input.headers.unwrap_or_default(),
        state.clock.now(),
    )?;
    check_reachable(state, &record.url)?;
    match state.store.create_mcp_server(&record, caller.actor()).await {
        Ok(()) => Ok(view(record)),
        Err(Error::AlreadyExists(_)) => Err(Error::AlreadyExists(format!(
            "an MCP server with id {:?} already exists",
            record.id
        ))),
        Err(other) => Err(other),
    }
}

pub async fn list(state: &AppState, caller: &Principal) -> Result<McpServerList> {
    caller.require_admin()?;
    let servers = state.store.list_mcp_servers(&caller.tenant_id).await?;
    Ok(McpServerList {
        mcp_servers: servers.into_iter().map(view).collect(),
    })
}

pub async fn get(state: &AppState, caller: &Principal, id: &str) -> Result<McpServerView> {
    Ok(view(find(state, caller, id).await?))
}

/// Replaces the URL and the headers (absent headers: none).
pub async fn update(
    state: &AppState,
    caller: &Principal,
    id: &str,
    input: UpdateMcpServer,
) -> Result<McpServerView> {
    let existing = find(state, caller, id).await?;
    let record = mcp::replace_server(
        existing,
        &input.url,
        input.headers.unwrap_or_default(),
        state.clock.now(),
    )?;
    check_reachable(state, &record.url)?;
    if !state
        .store
        .update_mcp_server(&record, caller.actor())
        .await?
    {
        return Err(no_such_server());
    }
    Ok(view(record))
}

pub async fn delete(state: &AppState, caller: &Principal, id: &str) -> Result<()> {
    caller.require_admin()?;
    if !mcp::is_server_id(id) {
        return Err(no_such_server());
    }
    let deleted = state
        .store
        .delete_mcp_server(&caller.tenant_id, id, caller.actor(), state.clock.now())
        .await?;
    if deleted {
        Ok(())
    } else {
        Err(no_such_server())
    }
}
