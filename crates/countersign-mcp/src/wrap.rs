//! `countersign mcp wrap`: a stdio MCP server in front of another, checking through the API.
use std::sync::Arc;

use countersign_client::Client;
use rmcp::ServiceExt;

use crate::http_guard::HttpGuard;
use crate::proxy::{Proxy, SessionOrigin};
use crate::upstream::Upstream;

pub struct WrapOptions {
    /// The Countersign server's base URL.
    pub url: String,
    /// An agent API key.
    pub key: String,
    pub proxy_id: String,
    /// The guard session of every call; a fresh one per run when not given.
    pub session_id: Option<String>,
    /// The name reviewers see; the command's file name or the URL's host when not given.
    pub server_name: Option<String>,
    pub upstream: Upstream,
}

/// Serve one MCP session on stdin and stdout until the client closes it.
pub async fn wrap(options: WrapOptions) -> Result<(), String> {
    let client = Client::new(&options.url, Some(options.key))
        .map_err(|e| format!("--url {:?}: {e}", options.url))?;
    let guard = Arc::new(HttpGuard::new(client, options.proxy_id));
    let origin = SessionOrigin {
        server: options
            .server_name
            .unwrap_or_else(|| options.upstream.default_name()),
        session_id: options
            .session_id
            .unwrap_or_else(|| format!("mcp-{}", uuid::Uuid::new_v4())),
    };
    let proxy = Proxy::new(guard, options.upstream, origin);
    let running = proxy
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("the MCP client did not initialise: {e}"))?;
    running
        .waiting()
        .await
        .map_err(|e| format!("the MCP session ended abnormally: {e}"))?;
    Ok(())
}
