//! What the proxy asks of the guard, whichever way it reaches it.
use std::future::Future;
use std::time::Duration;

use countersign_proto::guard::{
    self as proto, GuardApprovalView, McpOrigin, ToolDecision, ToolRequest,
};
use rmcp::model::{JsonObject, ToolAnnotations};

/// One `tools/call` as the guard sees it.
#[derive(Debug, Clone)]
pub struct McpCall {
    pub name: String,
    pub arguments: JsonObject,
    /// The annotations the upstream declared for this tool in `tools/list`.
    pub annotations: Option<ToolAnnotations>,
    /// The upstream server, as reviewers know it.
    pub server: String,
    /// The MCP client's `clientInfo`: name and version.
    pub client: Option<String>,
    pub session_id: String,
}

impl McpCall {
    /// The guard's `ToolRequest` for this call.
    pub fn tool_request(&self) -> ToolRequest {
        ToolRequest {
            session_id: self.session_id.clone(),
            tool_call: serde_json::json!({"name": self.name, "arguments": self.arguments}),
            scope: None,
            reason: None,
            on_behalf_of: None,
            annotations: self.annotations.as_ref().map(|a| proto::ToolAnnotations {
                read_only_hint: a.read_only_hint,
                destructive_hint: a.destructive_hint,
                idempotent_hint: a.idempotent_hint,
                open_world_hint: a.open_world_hint,
            }),
            mcp: Some(McpOrigin {
                server: self.server.clone(),
                client: self.client.clone(),
            }),
        }
    }
}

/// Why the guard could not be asked; the call fails closed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GuardFailure(pub String);

/// The guard's three operations the proxy needs.
pub trait Guard: Send + Sync + 'static {
    /// Allow, block, or open an approval request.
    fn check(
        &self,
        call: &McpCall,
    ) -> impl Future<Output = Result<ToolDecision, GuardFailure>> + Send;

    /// The approval as it stands, waiting up to `wait` for a decision.
    fn wait(
        &self,
        approval_id: &str,
        wait: Duration,
    ) -> impl Future<Output = Result<GuardApprovalView, GuardFailure>> + Send;

    /// Withdraw a pending approval (the client cancelled its call).
    fn cancel(&self, approval_id: &str) -> impl Future<Output = Result<(), GuardFailure>> + Send;

    /// Where a reviewer decides this approval, when the guard knows.
    fn review_url(&self, _approval_id: &str) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_becomes_a_tool_request_with_its_origin_and_the_hints_it_declared() {
        let mut annotations = ToolAnnotations::new();
        annotations.read_only_hint = Some(true);
        annotations.title = Some("Look up".into());
        let call = McpCall {
            name: "lookup".into(),
            arguments: serde_json::json!({"q": "x"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            annotations: Some(annotations),
            server: "files".into(),
            client: Some("claude-desktop 1.2.0".into()),
            session_id: "mcp-1".into(),
        };
        let request = serde_json::to_value(call.tool_request()).unwrap_or_default();
        assert_eq!(
            request,
            serde_json::json!({
                "session_id": "mcp-1",
                "tool_call": {"name": "lookup", "arguments": {"q": "x"}},
                "scope": null, "reason": null, "on_behalf_of": null,
                // Only hints travel; the title is display text.
                "annotations": {"readOnlyHint": true},
                "mcp": {"server": "files", "client": "claude-desktop 1.2.0"},
            })
        );
    }
}
