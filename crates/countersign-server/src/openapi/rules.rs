//! What the derived schemas cannot say by themselves: rules between fields, optional bodies,
//! https-only URLs and the hidden characters beyond the BMP.
use serde_json::{Value, json};

/// Rules between fields, which the derived schemas cannot say: which of several fields a body
/// needs, and what one field's value requires of another. Each mirrors a check of the server
/// (named beside it).
pub(super) fn add_field_rules(doc: &mut Value) {
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
pub(super) const TEXT: &str = r"^[^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^\s\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb][^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$";
/// `notify::validate_endpoint_url`: http(s), a host, no credentials, no spaces.
pub(super) const URL: &str =
    r"^https?://[^/?#@\s\x00-\x1f\x7f-\x9f]+([/?#][^\s\x00-\x1f\x7f-\x9f]*)?$";

pub(super) fn webhook_events() -> Vec<String> {
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

pub(super) fn mark_optional_bodies(doc: &mut Value) {
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

/// The hidden characters beyond the Basic Multilingual Plane (`validate::is_hidden`: tags,
/// Egyptian and musical format controls, …) join the text patterns' excluded characters as
/// literal characters: `\u` escapes reach only the BMP in every regex dialect, while a literal
/// character means the same in ECMA-262 (unicode mode), Python and Rust.
pub(super) fn exclude_astral_hidden(value: &mut Value) {
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
pub(super) fn require_https(value: &mut Value) {
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
