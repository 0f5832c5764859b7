//! The OpenAPI description of every endpoint, served at `/openapi.json`. It is the API's
//! contract: `scripts/fuzz-api` checks the server against it.
//!
//! Each operation declares its success answers, the keys it takes (`security`) and the errors
//! only it can answer (409, 422, and 400/404 where no body, query or path explains them);
//! [`StandardErrors`] adds the errors every operation of its shape can answer, so operations
//! added later are covered too.
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

mod links;
mod rules;

use links::add_links;
use rules::{add_field_rules, exclude_astral_hidden, mark_optional_bodies, require_https};

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

#[cfg(test)]
mod tests {
    use super::links::LINKS;
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
