//! The reviewer API: `/v1/approvals`.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ApprovalStatus;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApprovalView {
    /// The public id (`apr_…`); safe to show and log.
    pub id: String,
    /// `ciba` for requests made through `/ciba/authorize`, `tool` for guard tool calls.
    pub kind: String,
    pub status: ApprovalStatus,
    pub scope: String,
    /// The agent's own words; show them as such.
    pub binding_message: String,
    #[schema(value_type = Object)]
    pub context: serde_json::Value,
    /// SHA-256 (hex) of the RFC 8785 canonical JSON of `context`.
    pub context_sha256: String,
    pub agent_id: String,
    pub agent_name: String,
    /// The addressed reviewer (CIBA requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Guard tool calls: the tool; its arguments are `context`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    /// Guard tool calls: the agent's session, so a waiting agent's request can be found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_score: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub threats_detected: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_matched: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_group: Option<String>,
    pub escalation_level: u32,
    pub required_approvals: u32,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// The reviewer's comment (approve) or reason (reject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 2000,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$"
    )]
    pub comment: Option<String>,
    /// Guard tool calls through MCP: the tool's annotations as the gateway sent them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<crate::guard::ToolAnnotations>,
    /// Guard tool calls through MCP: the server (and client) the call came through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<crate::guard::McpOrigin>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApprovalList {
    pub approvals: Vec<ApprovalView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ApprovalListQuery {
    /// pending, approved, rejected, expired or cancelled; `all` or empty for every status.
    #[serde(default)]
    #[param(pattern = "^(|all|pending|approved|rejected|expired|cancelled)$")]
    pub status: Option<String>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    #[param(pattern = r"^apr_[0-9a-hjkmnp-tv-z]{26}$")]
    pub cursor: Option<String>,
    /// 1 to 200, default 50.
    #[serde(default)]
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 2000,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$"
    )]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DenyBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 2000,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$"
    )]
    pub reason: Option<String>,
}
