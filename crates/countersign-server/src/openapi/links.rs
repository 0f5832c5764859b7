//! The links between operations (OpenAPI `links`), which let a stateful client (and the
//! fuzzer) carry an id from one answer into the next request.
use std::collections::BTreeMap;

use serde_json::{Value, json};

/// Links from the operations that create things to those that use their ids, so a stateful
/// client (and a reader) can follow them: `(from operationId, status, link name, to
/// operationId, parameter, runtime expression)`.
pub(super) const LINKS: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "ciba_authorize",
        "200",
        "PollToken",
        "ciba_token",
        "authReqId",
        "$response.body#/authReqId",
    ),
    (
        "admin_create_user",
        "201",
        "GetUser",
        "admin_get_user",
        "id",
        "$response.body#/id",
    ),
    (
        "admin_create_user",
        "201",
        "DisableUser",
        "admin_disable_user",
        "id",
        "$response.body#/id",
    ),
    (
        "admin_create_user",
        "201",
        "SetUserCode",
        "admin_set_user_code",
        "id",
        "$response.body#/id",
    ),
    (
        "admin_create_user",
        "201",
        "GetUserPreferences",
        "notifications_get_user_preferences",
        "id",
        "$response.body#/id",
    ),
    (
        "admin_create_user",
        "201",
        "PutUserPreferences",
        "notifications_put_user_preferences",
        "id",
        "$response.body#/id",
    ),
    (
        "admin_create_agent",
        "201",
        "GetAgent",
        "admin_get_agent",
        "id",
        "$response.body#/id",
    ),
    (
        "admin_create_agent",
        "201",
        "DisableAgent",
        "admin_disable_agent",
        "id",
        "$response.body#/id",
    ),
    (
        "admin_create_api_key",
        "201",
        "RevokeApiKey",
        "admin_revoke_api_key",
        "id",
        "$response.body#/id",
    ),
    (
        "admin_create_invitation",
        "201",
        "RevokeInvitation",
        "admin_revoke_invitation",
        "id",
        "$response.body#/id",
    ),
    (
        "admin_create",
        "201",
        "GetOidcClient",
        "admin_get",
        "id",
        "$response.body#/client_id",
    ),
    (
        "admin_create",
        "201",
        "DeleteOidcClient",
        "admin_delete",
        "id",
        "$response.body#/client_id",
    ),
    (
        "mcp_create",
        "201",
        "GetMcpServer",
        "mcp_get",
        "id",
        "$response.body#/id",
    ),
    (
        "mcp_create",
        "201",
        "UpdateMcpServer",
        "mcp_update",
        "id",
        "$response.body#/id",
    ),
    (
        "mcp_create",
        "201",
        "DeleteMcpServer",
        "mcp_delete",
        "id",
        "$response.body#/id",
    ),
    (
        "webhooks_create",
        "201",
        "GetWebhook",
        "webhooks_get",
        "id",
        "$response.body#/id",
    ),
    (
        "webhooks_create",
        "201",
        "UpdateWebhook",
        "webhooks_update",
        "id",
        "$response.body#/id",
    ),
    (
        "webhooks_create",
        "201",
        "DeleteWebhook",
        "webhooks_delete",
        "id",
        "$response.body#/id",
    ),
    (
        "webhooks_create",
        "201",
        "RotateWebhookSecret",
        "webhooks_rotate_secret",
        "id",
        "$response.body#/id",
    ),
    (
        "webhooks_create",
        "201",
        "WebhookDeliveries",
        "webhooks_deliveries",
        "id",
        "$response.body#/id",
    ),
    (
        "webhooks_create",
        "201",
        "TestWebhook",
        "webhooks_test",
        "id",
        "$response.body#/id",
    ),
    (
        "guard_create_policy",
        "201",
        "GetPolicy",
        "guard_get_policy",
        "policy_id",
        "$response.body#/id",
    ),
    (
        "guard_create_policy",
        "201",
        "UpdatePolicy",
        "guard_update_policy",
        "policy_id",
        "$response.body#/id",
    ),
    (
        "guard_create_policy",
        "201",
        "DeletePolicy",
        "guard_delete_policy",
        "policy_id",
        "$response.body#/id",
    ),
    (
        "guard_create_group",
        "201",
        "GetGroup",
        "guard_get_group",
        "group_id",
        "$response.body#/id",
    ),
    (
        "guard_create_group",
        "201",
        "UpdateGroup",
        "guard_update_group",
        "group_id",
        "$response.body#/id",
    ),
    (
        "guard_create_group",
        "201",
        "DeleteGroup",
        "guard_delete_group",
        "group_id",
        "$response.body#/id",
    ),
    (
        "guard_tool",
        "200",
        "GetApproval",
        "guard_get_approval",
        "approval_id",
        "$response.body#/approval_id",
    ),
    (
        "guard_tool",
        "200",
        "ApproveToolCall",
        "guard_approve",
        "approval_id",
        "$response.body#/approval_id",
    ),
    (
        "guard_tool",
        "200",
        "RejectToolCall",
        "guard_reject",
        "approval_id",
        "$response.body#/approval_id",
    ),
    (
        "guard_tool",
        "200",
        "CancelToolCall",
        "guard_cancel",
        "approval_id",
        "$response.body#/approval_id",
    ),
    (
        "guard_tool",
        "200",
        "GrantToolCall",
        "guard_grant",
        "approval_id",
        "$response.body#/approval_id",
    ),
    (
        "guard_approve",
        "200",
        "GrantApproved",
        "guard_grant",
        "approval_id",
        "$response.body#/approval_id",
    ),
    (
        "ciba_approve",
        "200",
        "GetApproved",
        "approvals_get",
        "id",
        "$response.body#/approvalId",
    ),
    (
        "ciba_deny",
        "200",
        "GetDenied",
        "approvals_get",
        "id",
        "$response.body#/approvalId",
    ),
];

/// Operations whose path also names the tenant (`{proxy_id}`): links carry it over.
const TENANT_PATH_PARAMETER: &str = "proxy_id";

/// Adds [`LINKS`] to the document. (utoipa's `Link` names its fields in snake_case, which
/// OpenAPI does not read, so links are written as JSON.)
pub(super) fn add_links(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    // operationId → whether its path names the tenant.
    let mut operations = BTreeMap::new();
    for item in paths.values() {
        for operation in item.as_object().into_iter().flat_map(|o| o.values()) {
            if let Some(id) = operation.get("operationId").and_then(Value::as_str) {
                let names_tenant = operation
                    .get("parameters")
                    .and_then(Value::as_array)
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == TENANT_PATH_PARAMETER));
                operations.insert(id.to_string(), names_tenant);
            }
        }
    }
    for item in paths.values_mut() {
        for operation in item
            .as_object_mut()
            .into_iter()
            .flat_map(|o| o.values_mut())
        {
            let Some(id) = operation.get("operationId").and_then(Value::as_str) else {
                continue;
            };
            let source_names_tenant = operations.get(id).copied().unwrap_or(false);
            let mut links: Vec<(&str, &str, Value)> = Vec::new();
            for (from, status, name, to, parameter, expression) in LINKS {
                let Some(target_names_tenant) = operations.get(*to) else {
                    continue;
                };
                if *from != id {
                    continue;
                }
                let mut parameters = serde_json::Map::new();
                parameters.insert(parameter.to_string(), json!(expression));
                if source_names_tenant && *target_names_tenant {
                    parameters.insert(
                        TENANT_PATH_PARAMETER.into(),
                        json!(format!("$request.path.{TENANT_PATH_PARAMETER}")),
                    );
                }
                links.push((
                    status,
                    name,
                    json!({"operationId": to, "parameters": parameters}),
                ));
            }
            for (status, name, link) in links {
                if let Some(response) = operation
                    .pointer_mut(&format!("/responses/{status}"))
                    .and_then(Value::as_object_mut)
                {
                    let entry = response.entry("links").or_insert_with(|| json!({}));
                    if let Some(map) = entry.as_object_mut() {
                        map.insert(name.to_string(), link);
                    }
                }
            }
        }
    }
}
