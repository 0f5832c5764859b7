use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error answer: `{"error":{"code","message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code (see [`ErrorCode`]).
    pub code: String,
    /// A human-readable explanation; never contains secrets.
    pub message: String,
    /// For conflicts on approval requests: the request's current status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_status: Option<String>,
}

/// The stable error codes of the API, with the HTTP status each one is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body is not valid JSON.
    InvalidJson,
    /// 400: a query parameter or field has a value the server cannot accept.
    InvalidRequest,
    /// 422: the JSON is well formed but a field is missing or has the wrong type.
    InvalidBody,
    /// 400: the `userId` does not name an active reviewer of the tenant.
    UnknownUserId,
    /// 401: no credential, or one that is unknown, revoked or disabled.
    Unauthorized,
    /// 403: the credential is valid but may not do this.
    Forbidden,
    /// 404: nothing with this id exists in the caller's tenant.
    NotFound,
    /// 405: the path exists but not with this method.
    MethodNotAllowed,
    /// 409: the approval request is no longer pending.
    AlreadyDecided,
    /// 409: something with the same unique name already exists.
    AlreadyExists,
    /// 422: a policy condition is not valid CEL (the message says where).
    InvalidCondition,
    /// 422: the body names something that does not exist (an approval group, a user).
    UnknownReference,
    /// 409: this reviewer already decided this request.
    AlreadyVoted,
    /// 409: the approval is not (or not yet) approved, so there is nothing to redeem.
    NotApproved,
    /// 409: something still refers to what is being deleted.
    InUse,
    /// 413: the body exceeds the size limit.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 400: a one-time dashboard link is unknown, used, expired or revoked.
    LinkUnusable,
    /// 403: a dashboard form came without its anti-forgery token, or from another site.
    CsrfFailed,
    /// 500: an internal error; the message carries only the request id.
    Internal,
    /// 503: the server is shutting down or its store is unavailable.
    Unavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::UnknownUserId => "unknown_user_id",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::AlreadyDecided => "already_decided",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::InvalidCondition => "invalid_condition",
            ErrorCode::UnknownReference => "unknown_reference",
            ErrorCode::AlreadyVoted => "already_voted",
            ErrorCode::NotApproved => "not_approved",
            ErrorCode::InUse => "in_use",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::LinkUnusable => "link_unusable",
            ErrorCode::CsrfFailed => "csrf_failed",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidJson
            | ErrorCode::InvalidRequest
            | ErrorCode::UnknownUserId
            | ErrorCode::LinkUnusable => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden | ErrorCode::CsrfFailed => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::AlreadyDecided
            | ErrorCode::AlreadyExists
            | ErrorCode::AlreadyVoted
            | ErrorCode::NotApproved
            | ErrorCode::InUse => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::InvalidBody | ErrorCode::InvalidCondition | ErrorCode::UnknownReference => {
                422
            }
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }
}
