//! The OpenAPI description of every endpoint, served at `/openapi.json`.
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::webhooks;
use crate::routes::{
    admin, approvals, audit, ciba, guard, meta, notifications, oauth, oidc, oidc_admin,
};

struct ApiKeyAuth;

impl Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("the operator's `metrics.token`"))
                    .build(),
            ),
        );
    }
}

/// Every operation a rate limit can stop (all but the probes and the public documents)
/// declares its 429 answer with `Retry-After`.
struct RateLimits;

impl Modify for RateLimits {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{Content, Ref, ResponseBuilder, header::Header};
        for (path, item) in openapi.paths.paths.iter_mut() {
            let never_limited = ["/healthz", "/readyz", "/metrics", "/openapi.json"]
                .contains(&path.as_str())
                || path.starts_with("/.well-known/");
            if never_limited {
                continue;
            }
            let body = if path.starts_with("/oidc/") {
                Content::new(Some(ObjectBuilder::new().schema_type(Type::Object).build()))
            } else {
                Content::new(Some(Ref::from_schema_name("ErrorBody")))
            };
            let answer = ResponseBuilder::new()
                .description(
                    "Too many requests (`rate_limited`), too many pending requests \
                     (`too_many_pending`) or too many failed attempts; retry after `Retry-After`",
                )
                .header(
                    "Retry-After",
                    Header::new(
                        ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .minimum(Some(1)),
                    ),
                )
                .content("application/json", body)
                .build();
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
                operation
                    .responses
                    .responses
                    .entry("429".to_string())
                    .or_insert_with(|| answer.clone().into());
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Countersign", description = "Human-in-the-loop authorization for AI agents"),
    modifiers(&ApiKeyAuth, &RateLimits),
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
    ),
    components(schemas(countersign_proto::ErrorBody, countersign_proto::ErrorCode))
)]
struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
