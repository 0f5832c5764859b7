//! The OpenAPI description of every endpoint, served at `/openapi.json`.
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::webhooks;
use crate::routes::{admin, approvals, audit, ciba, guard, meta, notifications, oidc, oidc_admin};

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

#[derive(OpenApi)]
#[openapi(
    info(title = "Countersign", description = "Human-in-the-loop authorization for AI agents"),
    modifiers(&ApiKeyAuth),
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
