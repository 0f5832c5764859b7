//! The guard over the HTTP API, for `countersign mcp wrap`.
use std::time::Duration;

use countersign_client::Client;
use countersign_proto::guard::{GuardApprovalView, ToolDecision};

use crate::guard::{Guard, GuardFailure, McpCall};

pub struct HttpGuard {
    client: Client,
    proxy_id: String,
}

impl HttpGuard {
    pub fn new(client: Client, proxy_id: impl Into<String>) -> HttpGuard {
        HttpGuard {
            client,
            proxy_id: proxy_id.into(),
        }
    }
}

fn failure(e: countersign_client::ClientError) -> GuardFailure {
    GuardFailure(e.to_string())
}

impl Guard for HttpGuard {
    async fn check(&self, call: &McpCall) -> Result<ToolDecision, GuardFailure> {
        self.client
            .guard_tool(&self.proxy_id, &call.tool_request())
            .await
            .map_err(failure)
    }

    async fn wait(
        &self,
        approval_id: &str,
        wait: Duration,
    ) -> Result<GuardApprovalView, GuardFailure> {
        self.client
            .guard_approval(&self.proxy_id, approval_id, Some(wait.as_secs()))
            .await
            .map_err(failure)
    }

    async fn cancel(&self, approval_id: &str) -> Result<(), GuardFailure> {
        match self.client.guard_cancel(&self.proxy_id, approval_id).await {
            Ok(_) => Ok(()),
            // Decided meanwhile: nothing left to withdraw.
            Err(e) if e.status() == Some(409) => Ok(()),
            Err(e) => Err(failure(e)),
        }
    }

    fn review_url(&self, approval_id: &str) -> Option<String> {
        let base = self.client.base_url().as_str().trim_end_matches('/');
        Some(format!("{base}/ui/requests/{approval_id}"))
    }
}
