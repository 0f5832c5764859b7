//! The one place where the error taxonomy becomes HTTP.
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use countersign_core::Error;
use countersign_proto::{ErrorBody, ErrorCode, ErrorDetail};
use serde::de::DeserializeOwned;

/// An error on its way to the caller.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// What the caller of the JSON API, the OAuth endpoints, the dashboard or the MCP gateway may
/// read of an error. An internal error's detail goes to the log instead, once, inside the
/// request's span (its operation, tenant and request id), and the caller reads where to look.
pub fn public_message(error: &Error) -> String {
    match error {
        Error::Internal(detail) => {
            tracing::error!(error = %detail, "internal error");
            INTERNAL_MESSAGE.to_string()
        }
        other => other.to_string(),
    }
}

/// The message of every internal error.
const INTERNAL_MESSAGE: &str =
    "internal error; the server log has the details under this response's x-request-id";

pub fn error_response(
    code: ErrorCode,
    message: String,
    current_status: Option<String>,
) -> Response {
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.as_str().to_string(),
            message,
            current_status,
        },
    };
    let mut response = (status, Json(body)).into_response();
    if code == ErrorCode::Unauthorized {
        response.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// Adds `Retry-After` to the answer of a rate-limited request.
pub fn with_retry_after(error: &Error, mut response: Response) -> Response {
    if let Error::RateLimited {
        retry_after_secs, ..
    } = error
    {
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(*retry_after_secs),
        );
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = matches!(self.0, Error::RateLimited { .. }).then(|| self.0.clone());
        let code = self.0.code();
        let message = public_message(&self.0);
        let current_status = match &self.0 {
            Error::AlreadyDecided { status } => Some(status.as_str().to_string()),
            _ => None,
        };
        let response = error_response(code, message, current_status);
        match retry {
            Some(e) => with_retry_after(&e, response),
            None => response,
        }
    }
}

/// JSON body extractor whose rejections use the API's error shape. Every body of the API is a
/// JSON object: an array, which serde would otherwise read into a struct field by field, is
/// refused like any other wrong type.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = has_json_content_type(&req);
        let bytes = body_bytes(req, state).await?;
        if !is_json {
            return Err(ApiError(unsupported_media_type()));
        }
        parse_json_object(&bytes).map(ApiJson)
    }
}

/// `application/json` or `application/<anything>+json`, with any parameters.
fn has_json_content_type(req: &Request) -> bool {
    req.headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase())
        .is_some_and(|t| {
            t == "application/json" || (t.starts_with("application/") && t.ends_with("+json"))
        })
}

fn unsupported_media_type() -> Error {
    Error::coded(
        ErrorCode::UnsupportedMediaType,
        "the body must be JSON with `Content-Type: application/json`",
    )
}

async fn body_bytes<S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<axum::body::Bytes, ApiError> {
    axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError(Error::coded(
                    ErrorCode::PayloadTooLarge,
                    "the request body is larger than the server accepts",
                ))
            } else {
                ApiError(Error::invalid(e.body_text()))
            }
        })
}

/// Parses a body that must be one JSON object of `T`'s shape. JSON does not tell `3` from
/// `3.0`, so a whole number written with a fraction is read as the integer it is.
fn parse_json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut value = serde_json::from_slice::<serde_json::Value>(bytes).map_err(|e| {
        ApiError(Error::coded(
            ErrorCode::InvalidJson,
            format!("invalid JSON body: {e}"),
        ))
    })?;
    if !value.is_object() {
        return Err(ApiError(Error::coded(
            ErrorCode::InvalidBody,
            "the body must be a JSON object",
        )));
    }
    integral_floats_as_integers(&mut value);
    serde_json::from_value(value).map_err(|e| {
        ApiError(Error::coded(
            ErrorCode::InvalidBody,
            format!("invalid JSON body: {e}"),
        ))
    })
}

/// Rewrites `3.0` as `3` wherever it appears (exactly representable whole numbers only), so
/// integer fields accept every JSON spelling of an integer. Canonical JSON (RFC 8785) writes
/// both the same way, so digests do not change.
fn integral_floats_as_integers(value: &mut serde_json::Value) {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() <= EXACT
            {
                *value = serde_json::Value::from(f as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        serde_json::Value::Object(map) => map.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

/// Query-string extractor whose rejections use the API's error shape.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(rejection) => Err(ApiError(query_rejection(rejection))),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> Error {
    Error::invalid(rejection.body_text())
}

pub async fn not_found_fallback() -> Response {
    error_response(ErrorCode::NotFound, "no such endpoint".into(), None)
}

pub async fn method_not_allowed_fallback() -> Response {
    error_response(
        ErrorCode::MethodNotAllowed,
        "this endpoint does not take this method".into(),
        None,
    )
}

/// A JSON body that may be left out entirely (then `T::default()`); a body that is present
/// must be valid JSON of the right shape.
pub struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = has_json_content_type(&req);
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        if !is_json {
            return Err(ApiError(unsupported_media_type()));
        }
        parse_json_object(&bytes).map(OptionalJson)
    }
}
