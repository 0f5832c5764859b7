//! Bearer API keys.
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use countersign_core::principal::executor_only;
use countersign_core::{Error, Principal, Role, secret};

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller, of any role but `executor` (executor keys serve only the grant
/// endpoints, which take [`GrantAuth`]).
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = authenticate(parts, state).await?;
        if matches!(principal.role, Role::Executor { .. }) {
            return Err(executor_only().into());
        }
        Ok(Auth(principal))
    }
}

/// The authenticated caller of the grant endpoints (introspection, revocation): any role,
/// executors included.
pub struct GrantAuth(pub Principal);

impl FromRequestParts<AppState> for GrantAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(GrantAuth(authenticate(parts, state).await?))
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, Error> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| Error::unauthorized("missing `Authorization: Bearer <api key>`"))?;
    let value = header
        .to_str()
        .map_err(|_| Error::unauthorized("malformed Authorization header"))?;
    let key = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            Error::unauthorized("the Authorization header must be `Bearer <api key>`")
        })?;
    let key_hash = secret::hash_secret(key);
    let principal = match state.principals.get(&key_hash) {
        Some(principal) => principal,
        None => {
            let generation = state.principals.generation();
            let principal = state
                .store
                .authenticate(&key_hash)
                .await?
                .ok_or_else(|| Error::unauthorized("unknown, revoked or disabled API key"))?;
            state.principals.remember(&key_hash, &principal, generation);
            principal
        }
    };
    state.throttle.check_key(&principal.key_id)?;
    record_tenant(&principal.tenant_id);
    Ok(principal)
}

/// The channel a decision arrives through: `cli` when the command line says so, else `api`.
pub struct Channel(pub &'static str);

impl<S: Send + Sync> FromRequestParts<S> for Channel {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let cli = parts
            .headers
            .get("x-countersign-client")
            .is_some_and(|v| v.as_bytes() == b"cli");
        Ok(Channel(if cli { "cli" } else { "api" }))
    }
}

/// Names the caller's tenant on the request's span, so every line the request logs says it.
pub fn record_tenant(tenant_id: &str) {
    tracing::Span::current().record("tenant_id", tracing::field::display(tenant_id));
}
