//! The OpenAPI description of every endpoint, served at `/openapi.json`. It is the API's
//! contract: `scripts/fuzz-api` checks the server against it.
//!
//! Each operation declares its success answers, the keys it takes (`security`) and the errors
//! only it can answer (409, 422, and 400/404 where no body, query or path explains them);
//! [`StandardErrors`] adds the errors every operation of its shape can answer, so operations
//! added later are covered too.
use std::collections::BTreeMap;

use serde_json::{Value, json};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, HeaderBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    admin, approvals, audit, ciba, guard, meta, notifications, oauth, oidc, oidc_admin,
};
use crate::routes::{mcp_servers, webhooks};

/// The bearer keys, one scheme per role, so each operation says which role it needs.
pub const ADMIN_KEY: &str = "admin_key";
pub const REVIEWER_KEY: &str = "reviewer_key";
pub const AGENT_KEY: &str = "agent_key";
pub const EXECUTOR_KEY: &str = "executor_key";
/// Not an API key: the operator's `metrics.token`, for `/metrics` only.
pub const METRICS_TOKEN: &str = "metrics_token";

struct ApiKeys;

impl Modify for ApiKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, description) in [
            (
                ADMIN_KEY,
                "An API key with the `admin` role (a tenant admin).",
            ),
            (
                REVIEWER_KEY,
                "An API key with the `reviewer` role: it acts for one user of the tenant.",
            ),
            (
                AGENT_KEY,
                "An API key with the `agent` role: it acts for one agent of the tenant.",
            ),
            (
                EXECUTOR_KEY,
                "An API key with the `executor` role: it introspects and revokes the grants of its audiences, nothing else.",
            ),
            (
                METRICS_TOKEN,
                "The operator's `metrics.token` (not an API key).",
            ),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(description))
                        .build(),
                ),
            );
        }
    }
}

/// An error answer as a reusable response: `(status, component name, description)`.
const STANDARD_RESPONSES: [(&str, &str, &str); 10] = [
    (
        "400",
        "BadRequest",
        "`invalid_json`, or `invalid_request`: a field, query parameter or value the server does not accept (the message names it)",
    ),
    (
        "401",
        "Unauthorized",
        "`unauthorized`: no API key, or one that is unknown, revoked or disabled",
    ),
    (
        "403",
        "Forbidden",
        "`forbidden`: the key is valid but its role may not do this",
    ),
    (
        "404",
        "NotFound",
        "`not_found`: nothing with this id exists in the caller's tenant (or the caller may not see it)",
    ),
    (
        "413",
        "PayloadTooLarge",
        "`payload_too_large`: the body exceeds `http.max_body_bytes`",
    ),
    (
        "415",
        "UnsupportedMediaType",
        "`unsupported_media_type`: the body is not `application/json`",
    ),
    (
        "422",
        "UnprocessableEntity",
        "`invalid_body`: the JSON is well formed but a field is missing, unknown or of the wrong type",
    ),
    (
        "429",
        "TooManyRequests",
        "`rate_limited`: too many requests or failed attempts at a secret; `too_many_pending`: the agent has too many pending requests; retry after `Retry-After` seconds",
    ),
    (
        "500",
        "InternalError",
        "`internal`: an internal error; the message carries only the request id",
    ),
    (
        "503",
        "Unavailable",
        "`unavailable`: the server is shutting down or its store is unavailable",
    ),
];

/// Adds to every operation the errors its shape can answer: 401/403 with a key, 400/413/415/422
/// with a JSON body, 400 with query parameters, 404 with ids in the path, and 429/500/503
/// always. Statuses an operation documents itself are kept. Also gives every operation a unique
/// `operationId` (`<tag>_<function>`), which links name.
struct StandardErrors;

impl Modify for StandardErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (status, name, description) in STANDARD_RESPONSES {
            let mut response = ResponseBuilder::new().description(description).content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            );
            if status == "429" {
                response = response.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(
                            utoipa::openapi::ObjectBuilder::new()
                                .schema_type(utoipa::openapi::schema::Type::Integer),
                        )
                        .description(Some("Seconds to wait before retrying"))
                        .build(),
                );
            }
            components
                .responses
                .insert(name.to_string(), RefOr::T(response.build()));
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let limited = !never_rate_limited(path);
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                add_standard_errors(operation, limited);
                if let (Some(tag), Some(id)) = (
                    operation.tags.as_ref().and_then(|t| t.first()),
                    operation.operation_id.as_ref(),
                ) {
                    operation.operation_id = Some(format!("{tag}_{id}"));
                }
            }
        }
    }
}

/// The probes and the public documents answer whatever the load: no rate limit applies to them
/// (`throttle.rs` limits keys and the keyless ceremony endpoints only).
fn never_rate_limited(path: &str) -> bool {
    ["/healthz", "/readyz", "/metrics", "/openapi.json"].contains(&path)
        || path.starts_with("/.well-known/")
}

fn add_standard_errors(operation: &mut Operation, rate_limited: bool) {
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let json_body = operation
        .request_body
        .as_ref()
        .is_some_and(|b| b.content.contains_key("application/json"));
    let parameters = operation.parameters.as_deref().unwrap_or_default();
    let in_query = parameters
        .iter()
        .any(|p| p.parameter_in == ParameterIn::Query);
    let in_path = parameters
        .iter()
        .any(|p| p.parameter_in == ParameterIn::Path);
    let mut statuses = vec!["500", "503"];
    if rate_limited {
        statuses.push("429");
    }
    if secured {
        statuses.extend(["401", "403"]);
    }
    if json_body {
        statuses.extend(["400", "413", "415", "422"]);
    }
    if in_query {
        statuses.push("400");
    }
    if in_path {
        statuses.push("404");
    }
    let responses = &mut operation.responses.responses;
    for status in statuses {
        if let Some((_, name, _)) = STANDARD_RESPONSES.iter().find(|(s, _, _)| *s == status) {
            responses
                .entry(status.to_string())
                .or_insert_with(|| RefOr::Ref(Ref::from_response_name(*name)));
        }
    }
}

/// Links from the operations that create things to those that use their ids, so a stateful
/// client (and a reader) can follow them: `(from operationId, status, link name, to
/// operationId, parameter, runtime expression)`.
const LINKS: &[(&str, &str, &str, &str, &str, &str)] = &[
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
fn add_links(doc: &mut Value) {
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

#[derive(OpenApi)]
#[openapi(
    info(title = "Countersign", description = "Human-in-the-loop authorization for AI agents"),
    modifiers(&ApiKeys, &StandardErrors),
    paths(
        ciba::authorize, ciba::token, ciba::approve, ciba::deny,
        approvals::list, approvals::get, approvals::approve, approvals::deny,
        admin::create_user, admin::list_users, admin::get_user, admin::disable_user,
        admin::create_agent, admin::list_agents, admin::get_agent, admin::disable_agent,
        admin::create_api_key, admin::list_api_keys, admin::revoke_api_key, admin::create_tenant, admin::rotate_signing_key,
        admin::create_invitation, admin::list_invitations, admin::revoke_invitation, admin::create_sign_in_link,
        guard::tool, guard::get_approval, guard::approve, guard::reject, guard::cancel, guard::grant, guard::history,
        guard::create_policy, guard::list_policies, guard::get_policy, guard::update_policy, guard::delete_policy,
        guard::evaluate, guard::create_group, guard::list_groups, guard::get_group, guard::update_group,
        guard::delete_group, guard::get_routing, guard::put_routing, guard::get_settings, guard::put_settings,
        audit::list, audit::verify,
        oidc::discovery, oidc::bc_authorize, oidc::token,
        oauth::introspect, oauth::revoke,
        oidc_admin::create, oidc_admin::list, oidc_admin::get, oidc_admin::delete, oidc_admin::set_user_code,
        meta::healthz, meta::readyz, meta::metrics, meta::jwks,
        notifications::get_channels, notifications::put_email, notifications::put_slack, notifications::put_teams,
        notifications::delete_email, notifications::delete_slack, notifications::delete_teams,
        notifications::test_channel, notifications::get_my_preferences, notifications::put_my_preferences,
        notifications::get_user_preferences, notifications::put_user_preferences, notifications::request_deliveries,
        crate::routes::slack::interactivity,
        webhooks::create, webhooks::list, webhooks::get, webhooks::update, webhooks::delete, webhooks::rotate_secret,
        webhooks::deliveries, webhooks::redeliver, webhooks::test,
        mcp_servers::create, mcp_servers::list, mcp_servers::get, mcp_servers::update, mcp_servers::delete,
    ),
    components(schemas(countersign_proto::ErrorBody, countersign_proto::ErrorCode, countersign_proto::OAuthErrorBody))
)]
struct ApiDoc;

/// Rules between fields, which the derived schemas cannot say: which of several fields a body
/// needs, and what one field's value requires of another. Each mirrors a check of the server
/// (named beside it).
fn add_field_rules(doc: &mut Value) {
    // Left out, or null.
    let absent = || json!({"type": "null"});
    let either = |a: &str, b: &str| {
        json!([
            {"required": [a], "properties": {a: {"type": "string"}, b: absent()}},
            {"required": [b], "properties": {b: {"type": "string"}, a: absent()}},
        ])
    };
    let text =
        |max: usize| json!({"type": "string", "minLength": 1, "maxLength": max, "pattern": TEXT});
    let tool_name = json!({"type": "string", "minLength": 1, "maxLength": 200, "pattern": TEXT});
    let arguments = json!({"type": ["object", "null"],
        "description": "The arguments (a JSON object, or the same encoded as a JSON string)"});
    // `grant::check_audiences`: absolute URIs without a fragment, never a tenant's own URN.
    let audiences = json!({"type": "array", "maxItems": countersign_core::grant::MAX_AUDIENCES,
        "items": {"type": "string", "maxLength": 500,
            "pattern": "^(?!urn:countersign:tenant:)[A-Za-z][A-Za-z0-9+.-]*:[!-\"$-~]+$"}});
    let rules: [(&str, &str, Value); 18] = [
        // `RequestRef::from_parts`: exactly one of the two names the request.
        ("ApproveRequest", "oneOf", either("authReqId", "approvalId")),
        ("DenyRequest", "oneOf", either("authReqId", "approvalId")),
        // `accounts::sign_in_link`: a user id or an email, not both.
        ("CreateSignInLink", "oneOf", either("user_id", "email")),
        // `directory::mint_key`: the owner must match the role.
        (
            "CreateApiKey",
            "oneOf",
            json!([
                {"properties": {"role": {"const": "admin"}, "user_id": absent(), "agent_id": absent(), "audiences": {"maxItems": 0}}},
                {"required": ["user_id"],
                 "properties": {"role": {"const": "reviewer"}, "user_id": {"type": "string"}, "agent_id": absent(), "audiences": {"maxItems": 0}}},
                {"required": ["agent_id"],
                 "properties": {"role": {"const": "agent"}, "agent_id": {"type": "string"}, "user_id": absent(), "audiences": {"maxItems": 0}}},
                {"required": ["audiences"],
                 "properties": {"role": {"const": "executor"}, "audiences": {"type": "array", "minItems": 1},
                    "user_id": absent(), "agent_id": absent()}},
            ]),
        ),
        // `policy::from_input`: approval needs a group to ask.
        (
            "PolicyInput",
            "if",
            json!({"required": ["action"], "properties": {"action": {"const": "require_approval"}}}),
        ),
        (
            "PolicyInput",
            "then",
            json!({"required": ["approval_config"], "properties": {"approval_config": {
                "type": "object", "required": ["approval_group_id"],
                "properties": {"approval_group_id": {"type": "string"}}}}}),
        ),
        // `policy::validate_settings`: a trust rule names tools or scopes.
        (
            "TrustRule",
            "anyOf",
            json!([
                {"required": ["tool_patterns"], "properties": {"tool_patterns": {"minItems": 1}}},
                {"required": ["scopes"], "properties": {"scopes": {"minItems": 1}}},
            ]),
        ),
        // `oidc::new_client`: signed requests and `private_key_jwt` need the client's keys;
        // ping and push need an endpoint, poll takes none.
        (
            "CreateOidcClient",
            "allOf",
            json!([
                {"if": {"required": ["token_endpoint_auth_method"],
                        "properties": {"token_endpoint_auth_method": {"const": "private_key_jwt"}}},
                 "then": {"required": ["jwks"], "properties": {"jwks": {"type": "object"}}}},
                {"if": {"required": ["backchannel_authentication_request_signing_alg"],
                        "properties": {"backchannel_authentication_request_signing_alg": {"type": "string"}}},
                 "then": {"required": ["jwks"], "properties": {"jwks": {"type": "object"}}}},
                {"if": {"required": ["backchannel_token_delivery_mode"],
                        "properties": {"backchannel_token_delivery_mode": {"enum": ["ping", "push"]}}},
                 "then": {"required": ["backchannel_client_notification_endpoint"],
                          "properties": {"backchannel_client_notification_endpoint": {"type": "string"}}},
                 "else": {"properties": {"backchannel_client_notification_endpoint": absent()}}},
            ]),
        ),
        // `toolcall::normalize`: the three shapes of a tool call.
        (
            "ToolRequest",
            "properties",
            json!({"tool_call": {"type": "object", "oneOf": [
                {"title": "plain", "required": ["name"],
                 "properties": {"type": {"type": "null"}, "name": tool_name, "arguments": arguments}},
                {"title": "OpenAI", "required": ["type", "function"],
                 "properties": {"type": {"const": "function"}, "function": {"type": "object", "required": ["name"],
                    "properties": {"name": tool_name, "arguments": arguments}}}},
                {"title": "Anthropic", "required": ["type", "name"],
                 "properties": {"type": {"const": "tool_use"}, "name": tool_name, "input": arguments}},
            ]}}),
        ),
        (
            "EvaluateRequest",
            "properties",
            json!({"tool_call": {"$ref": "#/components/schemas/ToolRequest/properties/tool_call"}}),
        ),
        // `policy::validate_settings`: every trust rule pattern is a tool-name glob.
        (
            "TrustRule",
            "properties",
            json!({"tool_patterns": {"items": text(200)}}),
        ),
        // `notify::webhook_events`.
        (
            "CreateWebhook",
            "properties",
            json!({"events": {"items": {"enum": webhook_events()}}}),
        ),
        (
            "UpdateWebhook",
            "properties",
            json!({"events": {"items": {"enum": webhook_events()}}}),
        ),
        // `channels::put_teams`, `channels::put_slack`: each group's own target.
        (
            "PutTeamsChannel",
            "properties",
            json!({"group_webhook_urls": {"additionalProperties":
                {"type": "string", "maxLength": 2000, "pattern": URL}}}),
        ),
        (
            "PutSlackChannel",
            "properties",
            json!({"group_channels": {"additionalProperties":
                {"type": "string", "pattern": "^#?[A-Za-z0-9._-]{1,80}$"}}}),
        ),
        // `oidc::new_client`: each grant type is a plain text.
        (
            "CreateOidcClient",
            "properties",
            json!({"grant_types": {"items": text(200)}}),
        ),
        // The enums the server parses from strings.
        (
            "ApprovalConfig",
            "properties",
            json!({"notification_channels": {"type": "array", "items": {"enum": countersign_core::policy::CHANNELS}}}),
        ),
        (
            "CreateOidcClient",
            "properties",
            json!({
                "token_endpoint_auth_method": {"enum": ["client_secret_basic", "client_secret_post", "private_key_jwt"]},
                "backchannel_token_delivery_mode": {"enum": ["poll", "ping", "push"]},
                "backchannel_authentication_request_signing_alg": {
                    "enum": countersign_core::oidc::ASYMMETRIC_ALGS.iter().map(|a| json!(a))
                        .chain([Value::Null]).collect::<Vec<_>>()},
                "jwks": {"type": ["object", "null"], "required": ["keys"], "properties": {"keys": {
                    "type": "array", "minItems": 1,
                    "items": {"type": "object", "not": {"anyOf": [{"required": ["d"]}, {"required": ["k"]}]}}}}},
            }),
        ),
    ];
    // `mcp::check_headers`: HTTP token names, visible ASCII values, never a header the
    // gateway sets itself.
    let reserved: Vec<String> = countersign_core::mcp::RESERVED_HEADERS
        .iter()
        .map(|name| {
            name.chars()
                .map(|c| {
                    if c.is_ascii_alphabetic() {
                        format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
                    } else {
                        c.to_string()
                    }
                })
                .collect::<String>()
        })
        .collect();
    let headers = json!({"headers": {
        "type": ["object", "null"],
        "maxProperties": countersign_core::mcp::MAX_HEADERS,
        "propertyNames": {"pattern": format!(
            "^(?!({})$)[!#$%&'*+.^_`|~0-9A-Za-z-]{{1,{}}}$",
            reserved.join("|"),
            countersign_core::mcp::MAX_HEADER_NAME_CHARS
        )},
        "additionalProperties": {"type": "string",
            "maxLength": countersign_core::mcp::MAX_HEADER_VALUE_CHARS, "pattern": "^[ -~]*$"},
    }});
    let rules = rules.into_iter().chain([
        ("CreateMcpServer", "properties", headers.clone()),
        ("UpdateMcpServer", "properties", headers),
        (
            "CreateApiKey",
            "properties",
            json!({"audiences": audiences.clone()}),
        ),
        (
            "GuardSettings",
            "properties",
            json!({"grant_audiences": audiences.clone()}),
        ),
        (
            "ApprovalConfig",
            "properties",
            json!({"audiences": audiences}),
        ),
    ]);
    for (schema, keyword, rule) in rules {
        let Some(target) = doc
            .pointer_mut(&format!("/components/schemas/{schema}"))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        match (keyword, target.get_mut(keyword)) {
            // Properties merge into the derived ones.
            ("properties", Some(Value::Object(existing))) => {
                if let Value::Object(extra) = rule {
                    for (name, constraint) in extra {
                        match (existing.get_mut(&name), constraint) {
                            (Some(Value::Object(field)), Value::Object(more)) => field.extend(more),
                            (_, constraint) => {
                                existing.insert(name, constraint);
                            }
                        }
                    }
                }
            }
            _ => {
                target.insert(keyword.to_string(), rule);
            }
        }
    }
}

/// `validate::text`: not blank, no control characters.
const TEXT: &str = r"^[^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^\s\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb][^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$";
/// `notify::validate_endpoint_url`: http(s), a host, no credentials, no spaces.
const URL: &str = r"^https?://[^/?#@\s\x00-\x1f\x7f-\x9f]+([/?#][^\s\x00-\x1f\x7f-\x9f]*)?$";

fn webhook_events() -> Vec<String> {
    countersign_core::notify::Event::ALL
        .iter()
        .map(|e| e.webhook_type())
        .collect()
}

/// Operations whose JSON body may be left out (`OptionalJson`).
const OPTIONAL_BODIES: [&str; 6] = [
    "admin_rotate_signing_key",
    "approvals_approve",
    "approvals_deny",
    "guard_approve",
    "guard_reject",
    "notifications_test_channel",
];

fn mark_optional_bodies(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for operation in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
    {
        let optional = operation
            .get("operationId")
            .and_then(Value::as_str)
            .is_some_and(|id| OPTIONAL_BODIES.contains(&id));
        if let (true, Some(body)) = (optional, operation.get_mut("requestBody")) {
            body["required"] = json!(false);
        }
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as served: [`document`] with its links, and the limits this server is
/// configured with (the defaults are in the schemas).
pub fn document_for(settings: &crate::settings::Settings) -> Value {
    let mut doc = serde_json::to_value(document()).unwrap_or_default();
    add_links(&mut doc);
    add_field_rules(&mut doc);
    mark_optional_bodies(&mut doc);
    if let Some(expiry) =
        doc.pointer_mut("/components/schemas/AuthorizeRequest/properties/requestedExpiry")
    {
        expiry["minimum"] = json!(settings.requests.min_expiry_secs);
        expiry["maximum"] = json!(settings.requests.max_expiry_secs);
    }
    if !settings.outbound.allow_http {
        require_https(&mut doc);
    }
    exclude_astral_hidden(&mut doc);
    doc
}

/// The hidden characters beyond the Basic Multilingual Plane (`validate::is_hidden`: tags,
/// Egyptian and musical format controls, …) join the text patterns' excluded characters as
/// literal characters: `\u` escapes reach only the BMP in every regex dialect, while a literal
/// character means the same in ECMA-262 (unicode mode), Python and Rust.
fn exclude_astral_hidden(value: &mut Value) {
    const ASTRAL_HIDDEN: [(char, char); 7] = [
        ('\u{110BD}', '\u{110BD}'),
        ('\u{110CD}', '\u{110CD}'),
        ('\u{13430}', '\u{1343F}'),
        ('\u{1BCA0}', '\u{1BCA3}'),
        ('\u{1D173}', '\u{1D17A}'),
        ('\u{E0001}', '\u{E0001}'),
        ('\u{E0020}', '\u{E007F}'),
    ];
    fn walk(value: &mut Value, with_astral: &str) {
        match value {
            Value::Object(map) => {
                for (key, item) in map.iter_mut() {
                    match item {
                        Value::String(pattern)
                            if key == "pattern" && pattern.contains(BMP_HIDDEN_END) =>
                        {
                            *pattern = pattern.replace(BMP_HIDDEN_END, with_astral);
                        }
                        other => walk(other, with_astral),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| walk(item, with_astral)),
            _ => {}
        }
    }
    let class: String = ASTRAL_HIDDEN
        .iter()
        .map(|(from, to)| format!("{from}-{to}"))
        .collect();
    walk(value, &format!("{BMP_HIDDEN_END}{class}"));
}

/// How every text pattern's class of excluded hidden characters ends (see the proto types).
const BMP_HIDDEN_END: &str = r"\ufff9-\ufffb";

/// Outgoing endpoints (webhooks, callbacks, Teams, push) must be https unless the operator
/// allows http (`outbound.allow_http`): the URL patterns say so.
fn require_https(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                match item {
                    Value::String(pattern)
                        if key == "pattern" && pattern.starts_with("^https?://") =>
                    {
                        *pattern = pattern.replacen("^https?://", "^https://", 1);
                    }
                    other => require_https(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(require_https),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text patterns are written out by hand in the proto types (and their characters
    /// beyond the BMP added here): a validator must refuse exactly what `validate::is_hidden`
    /// refuses, or the document and the server say different things.
    #[test]
    fn text_patterns_refuse_exactly_the_hidden_characters() {
        let doc = document_for(&crate::settings::Settings::default());
        let pattern = doc
            .pointer("/components/schemas/AuthorizeRequest/properties/scope/pattern")
            .and_then(Value::as_str)
            .expect("scope has a pattern");
        let schema = json!({"type": "string", "pattern": pattern});
        let validator = jsonschema::validator_for(&schema).expect("the pattern compiles");
        let near_hidden = (0..0x3100)
            .chain(0xFE00..0x10000)
            .chain(0x11000..0x11100)
            .chain(0x13400..0x13500)
            .chain(0x1BC00..0x1BD00)
            .chain(0x1D100..0x1D200)
            .chain(0xE0000..0xE0100);
        for c in near_hidden.filter_map(char::from_u32) {
            let text = format!("a{c}a");
            assert_eq!(
                validator.is_valid(&json!(text)),
                !countersign_core::validate::is_hidden(c),
                "U+{:04X}",
                c as u32
            );
        }
    }

    fn operations(doc: &utoipa::openapi::OpenApi) -> Vec<(String, String, &Operation)> {
        let mut all = Vec::new();
        for (path, item) in doc.paths.paths.iter() {
            for (method, operation) in [
                ("get", &item.get),
                ("put", &item.put),
                ("post", &item.post),
                ("delete", &item.delete),
                ("patch", &item.patch),
            ] {
                if let Some(operation) = operation {
                    all.push((method.to_string(), path.clone(), operation));
                }
            }
        }
        all
    }

    /// Endpoints that take no API key: they are public or authenticate otherwise (OAuth client
    /// authentication, Slack's signature).
    const WITHOUT_API_KEY: &[&str] = &[
        "/healthz",
        "/readyz",
        "/metrics",
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
        "/oidc/bc-authorize",
        "/oidc/token",
        "/integrations/slack/{tenant}/interactivity",
    ];

    #[test]
    fn every_operation_names_its_keys_and_exact_error_statuses() {
        let doc = document();
        let mut ids = std::collections::BTreeSet::new();
        for (method, path, operation) in operations(&doc) {
            let label = format!("{method} {path}");
            let id = operation.operation_id.clone().unwrap_or_default();
            assert!(
                ids.insert(id.clone()),
                "{label}: operationId {id} is not unique"
            );
            let schemes: Vec<String> = operation
                .security
                .iter()
                .flatten()
                .flat_map(|r| {
                    serde_json::to_value(r)
                        .ok()
                        .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()))
                        .unwrap_or_default()
                })
                .collect();
            if WITHOUT_API_KEY.contains(&path.as_str()) {
                assert!(
                    schemes.iter().all(|s| s == METRICS_TOKEN),
                    "{label} takes no API key"
                );
            } else {
                assert!(!schemes.is_empty(), "{label} must name the keys it takes");
                for scheme in &schemes {
                    assert!(
                        [ADMIN_KEY, REVIEWER_KEY, AGENT_KEY, EXECUTOR_KEY]
                            .contains(&scheme.as_str()),
                        "{label}: unknown security scheme {scheme}"
                    );
                }
                for status in ["401", "403", "429", "500", "503"] {
                    assert!(
                        operation.responses.responses.contains_key(status),
                        "{label} does not document {status}"
                    );
                }
            }
            for status in operation.responses.responses.keys() {
                assert!(
                    status.parse::<u16>().is_ok(),
                    "{label}: status {status} must be exact, not a range"
                );
            }
        }
    }

    #[test]
    fn links_name_operations_that_exist() {
        let doc = document();
        let ids: Vec<String> = operations(&doc)
            .iter()
            .filter_map(|(_, _, o)| o.operation_id.clone())
            .collect();
        for (from, _, name, to, _, _) in LINKS {
            assert!(
                ids.contains(&from.to_string()),
                "link {name}: no operation {from}"
            );
            assert!(
                ids.contains(&to.to_string()),
                "link {name}: no operation {to}"
            );
        }
    }

    #[test]
    fn the_served_document_carries_the_configured_expiry_range() {
        let mut settings = crate::settings::Settings::default();
        settings.requests.min_expiry_secs = 30;
        settings.requests.max_expiry_secs = 600;
        let doc = document_for(&settings);
        let expiry =
            &doc["components"]["schemas"]["AuthorizeRequest"]["properties"]["requestedExpiry"];
        assert_eq!(expiry["minimum"], 30);
        assert_eq!(expiry["maximum"], 600);
    }
}
