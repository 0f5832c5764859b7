//! The one place where the error taxonomy becomes HTTP.
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
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
        let (message, current_status) = match self.0 {
            Error::Internal(detail) => {
                // The detail may name internals; it goes to the log (with the request id of
                // the surrounding span), never to the caller.
                tracing::error!(error = %detail, "internal error");
                (
                    "internal error; the server log has the details under this response's x-request-id".to_string(),
                    None,
                )
            }
            Error::AlreadyDecided { status } => (
                format!("the request is already {}", status.as_str()),
                Some(status.as_str().to_string()),
            ),
            other => (other.to_string(), None),
        };
        let response = error_response(code, message, current_status);
        match retry {
            Some(e) => with_retry_after(&e, response),
            None => response,
        }
    }
}

/// JSON body extractor whose rejections use the API's error shape.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(ApiError(json_rejection(rejection))),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> Error {
    match &rejection {
        JsonRejection::JsonDataError(e) => {
            Error::invalid_with(ErrorCode::InvalidBody, e.body_text())
        }
        JsonRejection::JsonSyntaxError(e) => {
            Error::invalid_with(ErrorCode::InvalidJson, e.body_text())
        }
        JsonRejection::MissingJsonContentType(_) => Error::invalid_with(
            ErrorCode::UnsupportedMediaType,
            "the body must be JSON with `Content-Type: application/json`",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Error::invalid_with(
                ErrorCode::PayloadTooLarge,
                "the request body is larger than the server accepts",
            )
        }
        _ => Error::invalid(rejection.body_text()),
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
        let is_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json") || v.contains("+json"));
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError(Error::invalid_with(
                        ErrorCode::PayloadTooLarge,
                        "the request body is larger than the server accepts",
                    ))
                } else {
                    ApiError(Error::invalid(e.body_text()))
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        if !is_json {
            return Err(ApiError(Error::invalid_with(
                ErrorCode::UnsupportedMediaType,
                "the body must be JSON with `Content-Type: application/json`",
            )));
        }
        serde_json::from_slice(&bytes)
            .map(OptionalJson)
            .map_err(|e| {
                let code = match e.classify() {
                    serde_json::error::Category::Data => ErrorCode::InvalidBody,
                    _ => ErrorCode::InvalidJson,
                };
                ApiError(Error::invalid_with(code, format!("invalid JSON body: {e}")))
            })
    }
}
