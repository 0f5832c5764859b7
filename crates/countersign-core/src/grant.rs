//! The claims of an access token (grant): exactly what was approved, for whom and by whom.
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::approval::ApprovalRequest;
use crate::{ids, secret};

/// The RFC 9396 `type` of the authorization detail that describes an approved CIBA request.
pub const DETAIL_TYPE: &str = "countersign_approval";
/// The RFC 9396 `type` of the authorization detail that describes an approved tool call.
pub const TOOL_DETAIL_TYPE: &str = "countersign_tool_call";

/// RFC 9396 authorization details of a grant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AuthorizationDetail {
    Approval {
        #[serde(rename = "type")]
        kind: String,
        scope: String,
        binding_message: String,
        context: Value,
        /// Hex SHA-256 of the RFC 8785 canonical JSON of `context`.
        context_sha256: String,
    },
    ToolCall {
        #[serde(rename = "type")]
        kind: String,
        tool: String,
        arguments: Value,
        /// Hex SHA-256 of the RFC 8785 canonical JSON of `arguments`: the executor hashes the
        /// arguments it is about to run the same way and compares.
        arguments_sha256: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantClaims {
    pub iss: String,
    /// The reviewer the request was addressed to.
    pub sub: String,
    /// The agent that asked and may use the token.
    pub client_id: String,
    pub scope: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    pub approval_id: String,
    /// Who decided (a user id, or an admin key id).
    pub approved_by: String,
    pub authorization_details: Vec<AuthorizationDetail>,
}

impl GrantClaims {
    /// The claims for an approved request; `jti` is fresh and random.
    pub fn for_approval(
        issuer: &str,
        request: &ApprovalRequest,
        now: DateTime<Utc>,
        lifetime: Duration,
    ) -> GrantClaims {
        let detail = match &request.tool {
            Some(tool) => AuthorizationDetail::ToolCall {
                kind: TOOL_DETAIL_TYPE.to_string(),
                tool: tool.tool_name.clone(),
                arguments: request.context.clone(),
                arguments_sha256: request.context_sha256.clone(),
            },
            None => AuthorizationDetail::Approval {
                kind: DETAIL_TYPE.to_string(),
                scope: request.scope.clone(),
                binding_message: request.binding_message.clone(),
                context: request.context.clone(),
                context_sha256: request.context_sha256.clone(),
            },
        };
        // The subject: the user who was asked (CIBA), or the user the agent acts for, or the
        // agent itself.
        let sub = request
            .user_id
            .clone()
            .or_else(|| request.tool.as_ref().and_then(|t| t.on_behalf_of.clone()))
            .unwrap_or_else(|| request.agent_id.clone());
        GrantClaims {
            iss: issuer.to_string(),
            sub,
            client_id: request.agent_id.clone(),
            scope: request.scope.clone(),
            jti: format!("{}.{}", ids::new_id("grt"), &secret::random_token()[..16]),
            iat: now.timestamp(),
            exp: (now + lifetime).timestamp(),
            approval_id: request.id.clone(),
            approved_by: request.decided_by.clone().unwrap_or_default(),
            authorization_details: vec![detail],
        }
    }
}
