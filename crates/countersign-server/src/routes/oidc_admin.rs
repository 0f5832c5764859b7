//! The admin API of OpenID clients and users' user codes.
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use countersign_core::oidc::{self, AuthMethod, ClientRegistration, DeliveryMode, OidcClient};
use countersign_core::{Error, secret, validate};
use countersign_proto::oidc::{
    CreateOidcClient, OidcClientCreated, OidcClientList, OidcClientView, SetUserCode,
};

use crate::auth::Auth;
use crate::error::{ApiJson, ApiResult};
use crate::notify::outbound::check_registration;
use crate::state::AppState;

pub fn view(c: OidcClient) -> OidcClientView {
    OidcClientView {
        client_id: c.client_id,
        token_endpoint_auth_method: c.auth_method.as_str().into(),
        jwks: c.jwks,
        backchannel_token_delivery_mode: c.delivery_mode.as_str().into(),
        backchannel_client_notification_endpoint: c.notification_endpoint,
        backchannel_authentication_request_signing_alg: c.request_signing_alg,
        backchannel_user_code_parameter: c.user_code_parameter,
        grant_types: c.grant_types,
        created_at: c.created_at,
    }
}

#[utoipa::path(post, path = "/v1/admin/oidc-clients", tag = "admin", request_body = CreateOidcClient,
    responses((status = 201, body = OidcClientCreated), (status = 404, body = countersign_proto::ErrorBody, description = "`not_found`: no active agent with this id"), (status = 409, body = countersign_proto::ErrorBody, description = "`already_exists`: the agent is already an OpenID client")),
    security(("admin_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(input): ApiJson<CreateOidcClient>,
) -> ApiResult<(StatusCode, Json<OidcClientCreated>)> {
    caller.require_admin()?;
    let auth_method = AuthMethod::parse(&input.token_endpoint_auth_method).ok_or_else(|| {
        Error::invalid(
            "`token_endpoint_auth_method` must be client_secret_basic, client_secret_post or private_key_jwt",
        )
    })?;
    let delivery_mode =
        DeliveryMode::parse(&input.backchannel_token_delivery_mode).ok_or_else(|| {
            Error::invalid("`backchannel_token_delivery_mode` must be poll, ping or push")
        })?;
    let new = oidc::new_client(
        &caller.tenant_id,
        &input.agent_id,
        ClientRegistration {
            auth_method,
            jwks: input.jwks,
            delivery_mode,
            notification_endpoint: input.backchannel_client_notification_endpoint,
            request_signing_alg: input.backchannel_authentication_request_signing_alg,
            user_code_parameter: input.backchannel_user_code_parameter,
            grant_types: input
                .grant_types
                .unwrap_or_else(|| vec![oidc::CIBA_GRANT.to_string()]),
        },
        state.clock.now(),
    )?;
    if let Some(endpoint) = &new.client.notification_endpoint {
        check_registration(
            "backchannel_client_notification_endpoint",
            endpoint,
            &state.settings.outbound,
        )?;
    }
    let client = state
        .store
        .create_oidc_client(new.client, caller.actor())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(OidcClientCreated {
            view: view(client),
            client_secret: new.secret,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/admin/oidc-clients", tag = "admin",
    responses((status = 200, body = OidcClientList)), security(("admin_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<OidcClientList>> {
    caller.require_admin()?;
    let clients = state.store.list_oidc_clients(&caller.tenant_id).await?;
    Ok(Json(OidcClientList {
        oidc_clients: clients.into_iter().map(view).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/admin/oidc-clients/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = OidcClientView), (status = 404, body = countersign_proto::ErrorBody)),
    security(("admin_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<OidcClientView>> {
    caller.require_admin()?;
    let client = state
        .store
        .get_oidc_client(&caller.tenant_id, &id)
        .await?
        .ok_or_else(|| Error::NotFound("no such OpenID client".into()))?;
    Ok(Json(view(client)))
}

#[utoipa::path(delete, path = "/v1/admin/oidc-clients/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = countersign_proto::ErrorBody)),
    security(("admin_key" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    state
        .store
        .delete_oidc_client(&caller.tenant_id, &id, caller.actor(), state.clock.now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets the user's `user_code`, which clients that require it must send (stored hashed).
#[utoipa::path(put, path = "/v1/admin/users/{id}/user-code", tag = "admin", params(("id" = String, Path)),
    request_body = SetUserCode,
    responses((status = 204)),
    security(("admin_key" = [])))]
pub async fn set_user_code(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<SetUserCode>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    validate::text("user_code", &input.user_code, 100)?;
    if input.user_code.chars().count() < 4 {
        return Err(Error::invalid("`user_code` must be at least 4 characters").into());
    }
    state
        .store
        .set_user_code(
            &caller.tenant_id,
            &id,
            &secret::hash_secret(&input.user_code),
            caller.actor(),
            state.clock.now(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
