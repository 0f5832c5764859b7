//! Upstream MCP servers for the in-server gateway (`/v1/admin/mcp-servers`): the gateway at
//! `/mcp/{id}` forwards to the registered URL with the registered headers. Header values are
//! secrets: accepted, never shown again.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/admin/mcp-servers`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMcpServer {
    /// The id agents connect to at `/mcp/{id}`: a lowercase letter or digit, then up to 62
    /// lowercase letters, digits, `_` or `-`.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub id: String,
    /// The upstream's streamable-HTTP endpoint, e.g. `https://mcp.example.com/mcp`.
    #[schema(
        max_length = 2000,
        pattern = r"^https?://[^/?#@\s\x00-\x1f\x7f-\x9f]+([/?#][^\s\x00-\x1f\x7f-\x9f]*)?$"
    )]
    pub url: String,
    /// Sent with every request to the upstream (e.g. `Authorization`): at most 20; names are
    /// HTTP tokens of at most 100 characters, values at most 4096 visible ASCII characters or
    /// spaces. The transport's and MCP's own headers (Host, Content-Length, Content-Type,
    /// Accept, Connection, Transfer-Encoding, Mcp-Session-Id, Mcp-Protocol-Version,
    /// Last-Event-ID) are refused. The values are never shown again.
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub headers: Option<BTreeMap<String, String>>,
}

/// `PUT /v1/admin/mcp-servers/{id}`: the new URL and headers (which replace all the old ones;
/// absent means none).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMcpServer {
    #[schema(
        max_length = 2000,
        pattern = r"^https?://[^/?#@\s\x00-\x1f\x7f-\x9f]+([/?#][^\s\x00-\x1f\x7f-\x9f]*)?$"
    )]
    pub url: String,
    /// As in `POST`.
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub headers: Option<BTreeMap<String, String>>,
}

/// A registered MCP server: the names of its headers, never their values.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct McpServerView {
    pub id: String,
    pub url: String,
    pub header_names: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct McpServerList {
    pub mcp_servers: Vec<McpServerView>,
}
