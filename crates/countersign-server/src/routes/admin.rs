//! The admin API: users, agents, API keys and tenants, all confined to the key's tenant.
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use countersign_core::directory::MintedKey;
use countersign_core::{Error, Principal};
use countersign_proto::admin::{
    AgentList, AgentView, ApiKeyCreated, ApiKeyList, ApiKeyView, CreateAgent, CreateApiKey,
    CreateTenant, CreateUser, TenantCreated, UserList, UserView,
};

use countersign_core::dashboard::LinkKind;
use countersign_proto::admin::{
    CreateInvitation, CreateSignInLink, InvitationList, LoginLinkCreated, LoginLinkView,
    RotateSigningKey, SigningKeyView,
};

use crate::accounts;
use crate::auth::Auth;
use crate::directory::{self, NewKey};
use crate::error::{ApiJson, ApiResult, OptionalJson};
use crate::state::AppState;
use crate::views;

pub use crate::directory::ROOT_TENANT;

fn admin(caller: &Principal) -> Result<(), Error> {
    caller.require_admin()
}

fn created(key: MintedKey) -> ApiKeyCreated {
    ApiKeyCreated {
        key: key.secret,
        view: views::api_key(key.record),
    }
}

#[utoipa::path(post, path = "/v1/admin/users", tag = "admin", request_body = CreateUser,
    responses((status = 201, body = UserView), (status = 409, body = countersign_proto::ErrorBody, description = "`already_exists`: a user with this email exists")),
    security(("admin_key" = [])))]
pub async fn create_user(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(input): ApiJson<CreateUser>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let user =
        directory::create_user(&state, &caller, &input.email, &input.name, input.is_admin).await?;
    Ok((StatusCode::CREATED, Json(views::user(user))))
}

#[utoipa::path(get, path = "/v1/admin/users", tag = "admin",
    responses((status = 200, body = UserList)), security(("admin_key" = [])))]
pub async fn list_users(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<UserList>> {
    let users = directory::users(&state, &caller).await?;
    Ok(Json(UserList {
        users: users.into_iter().map(views::user).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/admin/users/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = UserView), (status = 404, body = countersign_proto::ErrorBody)),
    security(("admin_key" = [])))]
pub async fn get_user(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<UserView>> {
    let user = directory::user(&state, &caller, &id).await?;
    Ok(Json(views::user(user)))
}

#[utoipa::path(post, path = "/v1/admin/users/{id}/disable", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = UserView), (status = 404, body = countersign_proto::ErrorBody)),
    security(("admin_key" = [])))]
pub async fn disable_user(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<UserView>> {
    let user = directory::disable_user(&state, &caller, &id).await?;
    Ok(Json(views::user(user)))
}

#[utoipa::path(post, path = "/v1/admin/agents", tag = "admin", request_body = CreateAgent,
    responses((status = 201, body = AgentView), (status = 409, body = countersign_proto::ErrorBody, description = "`already_exists`: an agent with this name exists")),
    security(("admin_key" = [])))]
pub async fn create_agent(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(input): ApiJson<CreateAgent>,
) -> ApiResult<(StatusCode, Json<AgentView>)> {
    let agent = directory::create_agent(&state, &caller, &input.name, input.trust_level).await?;
    Ok((StatusCode::CREATED, Json(views::agent(agent))))
}

#[utoipa::path(get, path = "/v1/admin/agents", tag = "admin",
    responses((status = 200, body = AgentList)), security(("admin_key" = [])))]
pub async fn list_agents(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<AgentList>> {
    let agents = directory::agents(&state, &caller).await?;
    Ok(Json(AgentList {
        agents: agents.into_iter().map(views::agent).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/admin/agents/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = AgentView), (status = 404, body = countersign_proto::ErrorBody)),
    security(("admin_key" = [])))]
pub async fn get_agent(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentView>> {
    let agent = directory::agent(&state, &caller, &id).await?;
    Ok(Json(views::agent(agent)))
}

#[utoipa::path(post, path = "/v1/admin/agents/{id}/disable", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = AgentView), (status = 404, body = countersign_proto::ErrorBody)),
    security(("admin_key" = [])))]
pub async fn disable_agent(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentView>> {
    let agent = directory::disable_agent(&state, &caller, &id).await?;
    Ok(Json(views::agent(agent)))
}

#[utoipa::path(post, path = "/v1/admin/api-keys", tag = "admin", request_body = CreateApiKey,
    responses((status = 201, body = ApiKeyCreated), (status = 404, body = countersign_proto::ErrorBody, description = "`not_found`: no active user or agent with this id")),
    security(("admin_key" = [])))]
pub async fn create_api_key(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(input): ApiJson<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<ApiKeyCreated>)> {
    let new = NewKey {
        role: input.role,
        user_id: input.user_id,
        agent_id: input.agent_id,
        name: input.name,
        audiences: input.audiences,
    };
    let minted = directory::create_api_key(&state, &caller, new).await?;
    Ok((StatusCode::CREATED, Json(created(minted))))
}

#[utoipa::path(get, path = "/v1/admin/api-keys", tag = "admin",
    responses((status = 200, body = ApiKeyList)), security(("admin_key" = [])))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<ApiKeyList>> {
    let keys = directory::api_keys(&state, &caller).await?;
    Ok(Json(ApiKeyList {
        api_keys: keys.into_iter().map(views::api_key).collect(),
    }))
}

#[utoipa::path(post, path = "/v1/admin/api-keys/{id}/revoke", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = ApiKeyView), (status = 404, body = countersign_proto::ErrorBody)),
    security(("admin_key" = [])))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<ApiKeyView>> {
    let key = directory::revoke_api_key(&state, &caller, &id).await?;
    Ok(Json(views::api_key(key)))
}

/// Creates another tenant with its own admin key; only admins of `default` may.
#[utoipa::path(post, path = "/v1/admin/tenants", tag = "admin", request_body = CreateTenant,
    responses((status = 201, body = TenantCreated), (status = 409, body = countersign_proto::ErrorBody, description = "`already_exists`: a tenant with this id exists")),
    security(("admin_key" = [])))]
pub async fn create_tenant(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(input): ApiJson<CreateTenant>,
) -> ApiResult<(StatusCode, Json<TenantCreated>)> {
    let (tenant, key) =
        directory::create_tenant(&state, &caller, &input.id, input.name.as_deref()).await?;
    Ok((
        StatusCode::CREATED,
        Json(TenantCreated {
            tenant: views::tenant(tenant),
            admin_key: created(key),
        }),
    ))
}

/// Makes a new token-signing key active on every replica; earlier keys stay in the JWKS so
/// tokens already issued still verify. Server-wide, so only admins of `default` may.
#[utoipa::path(post, path = "/v1/admin/signing-keys/rotate", tag = "admin", request_body = RotateSigningKey,
    responses((status = 200, body = SigningKeyView)),
    security(("admin_key" = [])))]
pub async fn rotate_signing_key(
    State(state): State<AppState>,
    Auth(caller): Auth,
    OptionalJson(input): OptionalJson<RotateSigningKey>,
) -> ApiResult<Json<SigningKeyView>> {
    directory::require_root_admin(&caller, "rotate signing keys")?;
    let algorithm = input
        .algorithm
        .unwrap_or_else(|| state.settings.tokens.algorithm.clone());
    let key = state
        .signer
        .rotate(
            &state.store,
            &algorithm,
            state.clock.as_ref(),
            caller.actor(),
            &caller.tenant_id,
        )
        .await?;
    Ok(Json(SigningKeyView {
        kid: key.kid,
        alg: key.alg,
        created_at: key.created_at,
    }))
}

fn link_created(
    issued: crate::accounts::IssuedLink,
    now: chrono::DateTime<chrono::Utc>,
) -> LoginLinkCreated {
    LoginLinkCreated {
        view: views::login_link(issued.link, now),
        email: issued.user.email,
        url: issued.url,
    }
}

/// Invites a person to the dashboard (creating the user when needed); the one-time link is
/// in the answer and nowhere else.
#[utoipa::path(post, path = "/v1/admin/invitations", tag = "admin", request_body = CreateInvitation,
    responses((status = 201, body = LoginLinkCreated), (status = 409, body = countersign_proto::ErrorBody, description = "`disabled`: the user with this email is disabled")),
    security(("admin_key" = [])))]
pub async fn create_invitation(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(input): ApiJson<CreateInvitation>,
) -> ApiResult<(StatusCode, Json<LoginLinkCreated>)> {
    let issued = accounts::invite(
        &state,
        &caller,
        &input.email,
        input.name.as_deref(),
        input.is_admin,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(link_created(issued, state.clock.now())),
    ))
}

#[utoipa::path(get, path = "/v1/admin/invitations", tag = "admin",
    responses((status = 200, body = InvitationList)), security(("admin_key" = [])))]
pub async fn list_invitations(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<InvitationList>> {
    admin(&caller)?;
    let now = state.clock.now();
    let links = state
        .store
        .list_login_links(&caller.tenant_id, LinkKind::Invitation)
        .await?;
    Ok(Json(InvitationList {
        invitations: links
            .into_iter()
            .map(|l| views::login_link(l, now))
            .collect(),
    }))
}

#[utoipa::path(post, path = "/v1/admin/invitations/{id}/revoke", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = LoginLinkView), (status = 404, body = countersign_proto::ErrorBody)),
    security(("admin_key" = [])))]
pub async fn revoke_invitation(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<LoginLinkView>> {
    admin(&caller)?;
    let now = state.clock.now();
    let link = state
        .store
        .revoke_login_link(&caller.tenant_id, &id, caller.actor(), now)
        .await?;
    Ok(Json(views::login_link(link, now)))
}

/// A one-time sign-in link for an existing user, by `user_id` or `email`.
#[utoipa::path(post, path = "/v1/admin/sign-in-links", tag = "admin", request_body = CreateSignInLink,
    responses((status = 201, body = LoginLinkCreated), (status = 404, body = countersign_proto::ErrorBody, description = "`not_found`: no such user"), (status = 409, body = countersign_proto::ErrorBody, description = "`disabled`: the user is disabled")),
    security(("admin_key" = [])))]
pub async fn create_sign_in_link(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiJson(input): ApiJson<CreateSignInLink>,
) -> ApiResult<(StatusCode, Json<LoginLinkCreated>)> {
    let issued = accounts::sign_in_link(
        &state,
        &caller,
        input.user_id.as_deref(),
        input.email.as_deref(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(link_created(issued, state.clock.now())),
    ))
}
