//! Grant introspection (RFC 7662) and revocation (RFC 7009): form bodies, authenticated by an
//! API key (executor, admin; for revocation also the grant's agent).
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use countersign_core::Error;
use countersign_proto::oauth::{IntrospectForm, Introspection, RevokeForm};

use crate::auth::GrantAuth;
use crate::error::ApiResult;
use crate::grants;
use crate::oidc::form::FormParams;
use crate::routes::oidc::no_store;
use crate::state::AppState;

type ErrorBody = countersign_proto::ErrorBody;

fn token(form: &FormParams) -> Result<&str, Error> {
    form.get("token")?
        .ok_or_else(|| Error::invalid("`token` is required"))
}

/// Whether a grant is active for the caller (an executor of its audience, or an admin of its
/// tenant); `consume=true` spends it, so that every later answer is `{"active":false}`.
#[utoipa::path(post, path = "/oauth/introspect", tag = "grants",
    request_body(content_type = "application/x-www-form-urlencoded", content = IntrospectForm),
    responses(
        (status = 200, description = "`{\"active\":false}`, or `active: true` with the grant's claims", body = Introspection),
        (status = 400, description = "no `token`, or a `consume` that is not true or false", body = ErrorBody),
        (status = 401, description = "no or an unknown API key", body = ErrorBody),
        (status = 403, description = "neither an executor nor an admin key", body = ErrorBody),
        (status = 415, description = "the body is not form-encoded", body = ErrorBody)),
    security(("executor_key" = []), ("admin_key" = [])))]
pub async fn introspect(
    State(state): State<AppState>,
    GrantAuth(caller): GrantAuth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let form = FormParams::from_body(&headers, &body)?;
    let consume = match form.get("consume")? {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(Error::invalid("`consume` must be true or false").into()),
    };
    let answer = grants::introspect(&state, &caller, token(&form)?, consume).await?;
    Ok(no_store(Json(answer).into_response()))
}

/// Revoke a grant: its agent, an executor of its audience or an admin of its tenant. Unknown,
/// expired and other tenants' tokens are answered 200 too (RFC 7009 §2.2).
#[utoipa::path(post, path = "/oauth/revoke", tag = "grants",
    request_body(content_type = "application/x-www-form-urlencoded", content = RevokeForm),
    responses(
        (status = 200, description = "revoked, or nothing to revoke"),
        (status = 400, description = "no `token`", body = ErrorBody),
        (status = 401, description = "no or an unknown API key", body = ErrorBody),
        (status = 403, description = "the caller may not revoke this grant", body = ErrorBody),
        (status = 415, description = "the body is not form-encoded", body = ErrorBody)),
    security(("executor_key" = []), ("admin_key" = []), ("agent_key" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    GrantAuth(caller): GrantAuth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let form = FormParams::from_body(&headers, &body)?;
    grants::revoke(&state, &caller, token(&form)?).await?;
    Ok(no_store(StatusCode::OK.into_response()))
}
