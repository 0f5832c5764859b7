//! The OpenID Connect CIBA endpoints. They speak OAuth: form bodies in, and errors as
//! `{"error","error_description"}` with `Cache-Control: no-store`.
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, PRAGMA, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use countersign_core::Error;
use countersign_proto::ErrorCode;
use serde_json::{Value, json};

use crate::idempotency;
use crate::oidc::form::FormParams;
use crate::oidc::service;
use crate::state::AppState;

/// Which endpoint answers: `access_denied` is 403 at the backchannel endpoint and 400 at the
/// token endpoint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Backchannel,
    Token,
}

/// The OAuth code and HTTP status of an error.
fn oauth_error(error: &Error, endpoint: Endpoint) -> (StatusCode, &'static str, String) {
    let code = error.code();
    let (status, name) = match code {
        ErrorCode::InvalidScope
        | ErrorCode::ExpiredLoginHintToken
        | ErrorCode::UnauthorizedClient
        | ErrorCode::MissingUserCode
        | ErrorCode::InvalidUserCode
        | ErrorCode::InvalidBindingMessage
        | ErrorCode::InvalidAuthorizationDetails
        | ErrorCode::AuthorizationPending
        | ErrorCode::SlowDown
        | ErrorCode::ExpiredToken
        | ErrorCode::InvalidGrant
        | ErrorCode::UnsupportedGrantType
        | ErrorCode::InvalidTarget
        | ErrorCode::UnknownUserId
        | ErrorCode::InvalidIdempotencyKey => (StatusCode::BAD_REQUEST, code.as_str()),
        ErrorCode::IdempotencyKeyReused => (StatusCode::UNPROCESSABLE_ENTITY, code.as_str()),
        ErrorCode::IdempotencyKeyInUse => (StatusCode::CONFLICT, code.as_str()),
        ErrorCode::InvalidClient | ErrorCode::Unauthorized => {
            (StatusCode::UNAUTHORIZED, "invalid_client")
        }
        ErrorCode::AccessDenied if endpoint == Endpoint::Backchannel => {
            (StatusCode::FORBIDDEN, "access_denied")
        }
        ErrorCode::AccessDenied => (StatusCode::BAD_REQUEST, "access_denied"),
        ErrorCode::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        ErrorCode::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"),
        ErrorCode::RateLimited | ErrorCode::TooManyPending => {
            (StatusCode::TOO_MANY_REQUESTS, code.as_str())
        }
        _ => (StatusCode::BAD_REQUEST, "invalid_request"),
    };
    let description = crate::error::public_message(error);
    (status, name, description)
}

pub(crate) fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// An OAuth error answer (`{"error","error_description"}`), with `Retry-After` when rate
/// limited.
pub(crate) fn error_response(error: Error, endpoint: Endpoint) -> Response {
    let (status, name, description) = oauth_error(&error, endpoint);
    let mut response = (
        status,
        Json(json!({"error": name, "error_description": description})),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"countersign\""),
        );
    }
    no_store(crate::error::with_retry_after(&error, response))
}

/// The form body and the Authorization header of an OAuth request.
fn form(headers: &HeaderMap, body: &Bytes) -> Result<(FormParams, Option<String>), Error> {
    let form = FormParams::from_body(headers, body)?;
    let authorization = headers
        .get(AUTHORIZATION)
        .map(|v| {
            v.to_str().map(str::to_string).map_err(|_| {
                Error::coded(ErrorCode::InvalidClient, "malformed Authorization header")
            })
        })
        .transpose()?;
    Ok((form, authorization))
}

/// CIBA §7: the backchannel authentication endpoint.
#[utoipa::path(post, path = "/oidc/bc-authorize", tag = "oidc",
    request_body(content_type = "application/x-www-form-urlencoded", content = Object),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[\x20-\x7E]+$",
        description = "Makes a retry safe: the same key with the same body answers as the first call did (with `Idempotent-Replayed: true`); with another body, 422 `idempotency_key_reused`. Keys are per caller and kept for 24 hours.")),
    responses((status = 200, body = Object, headers(("Idempotent-Replayed" = String, description = "`true` when this answer was replayed from an earlier call with the same `Idempotency-Key`"))),
        (status = 400, body = countersign_proto::OAuthErrorBody, description = "Not a form body, or a parameter the server does not accept"),
        (status = 401, body = countersign_proto::OAuthErrorBody, description = "`invalid_client`: client authentication failed"),
        (status = 403, body = countersign_proto::OAuthErrorBody, description = "`access_denied`"),
        (status = 409, body = countersign_proto::OAuthErrorBody, description = "another call with this `Idempotency-Key` is still being processed (`idempotency_key_in_use`)"),
        (status = 422, body = countersign_proto::OAuthErrorBody, description = "the `Idempotency-Key` was used for a different request (`idempotency_key_reused`)"),
        (status = 429, body = countersign_proto::OAuthErrorBody, description = "`rate_limited`: too many requests or failed user codes; `too_many_pending`: too many pending requests; retry after `Retry-After` seconds",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 500, body = countersign_proto::OAuthErrorBody, description = "`server_error`"),
        (status = 503, body = countersign_proto::OAuthErrorBody, description = "`temporarily_unavailable`")))]
pub async fn bc_authorize(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let (form, authorization) = form(&headers, &body)?;
        let key = idempotency::key_from(&headers)?;
        service::bc_authorize(&state, &form, authorization.as_deref(), key).await
    }
    .await;
    match result {
        Ok(answer) => no_store(answer.into_response()),
        Err(e) => error_response(e, Endpoint::Backchannel),
    }
}

/// CIBA §10: the token endpoint, grant `urn:openid:params:grant-type:ciba`.
#[utoipa::path(post, path = "/oidc/token", tag = "oidc",
    request_body(content_type = "application/x-www-form-urlencoded", content = Object),
    responses((status = 200, body = Object),
        (status = 400, body = countersign_proto::OAuthErrorBody, description = "Not a form body, a pending or denied request, or a parameter the server does not accept"),
        (status = 401, body = countersign_proto::OAuthErrorBody, description = "`invalid_client`: client authentication failed"),
        (status = 429, body = countersign_proto::OAuthErrorBody, description = "`rate_limited`: too many requests or failed user codes; `too_many_pending`: too many pending requests; retry after `Retry-After` seconds",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 500, body = countersign_proto::OAuthErrorBody, description = "`server_error`"),
        (status = 503, body = countersign_proto::OAuthErrorBody, description = "`temporarily_unavailable`")))]
pub async fn token(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let (form, authorization) = form(&headers, &body)?;
        service::token(&state, &form, authorization.as_deref()).await
    }
    .await;
    match result {
        Ok(tokens) => no_store((StatusCode::OK, Json(tokens)).into_response()),
        Err(e) => error_response(e, Endpoint::Token),
    }
}

/// OpenID Connect Discovery 1.0 with the CIBA metadata.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "oidc",
    responses((status = 200, body = Object)))]
pub async fn discovery(State(state): State<AppState>) -> Json<Value> {
    Json(service::discovery(&state))
}
