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

/// The error answer of the OAuth and OpenID endpoints (`/oidc/*`): `{"error","error_description"}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OAuthErrorBody {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `authorization_pending`, … (RFC 6749
    /// §5.2, OpenID CIBA §13).
    pub error: String,
    pub error_description: String,
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
    /// 400: a tool pattern is not a valid glob (the message says why).
    InvalidPattern,
    /// 422: the body names something that does not exist (an approval group, a user).
    UnknownReference,
    /// 409: this reviewer already decided this request.
    AlreadyVoted,
    /// 409: the approval is not (or not yet) approved, so there is nothing to redeem.
    NotApproved,
    /// 409: something still refers to what is being deleted.
    InUse,
    /// 409: the user or webhook endpoint is disabled, which this needs it not to be.
    Disabled,
    /// 409: the delivery is still pending (being sent or waiting for its retry), so it cannot
    /// be sent again yet.
    DeliveryPending,
    /// 413: the body exceeds the size limit.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 400: a one-time dashboard link is unknown, used, expired or revoked.
    LinkUnusable,
    /// 403: a dashboard form came without its anti-forgery token, or from another site.
    CsrfFailed,
    /// 401: a signed callback (a Slack button click) has a bad signature or a stale timestamp,
    /// or names a tenant that has not set up that integration.
    InvalidSignature,
    /// 400: a number in arguments, context or authorization details would not keep its exact
    /// value in canonical JSON (an integer beyond ±(2^53 − 1)); the message names the field.
    InvalidNumber,
    /// 400: agent-supplied text (a tool name, an argument key, a binding message, a reason, a
    /// scope) holds a control character, a bidirectional override or another invisible
    /// formatting character; the message names the field.
    InvalidText,
    /// 400: the `Idempotency-Key` header is empty, longer than 255 characters or not
    /// printable ASCII.
    InvalidIdempotencyKey,
    /// 422: the `Idempotency-Key` was already used by this caller for a different request.
    IdempotencyKeyReused,
    /// 409: another request with the same `Idempotency-Key` is being processed.
    IdempotencyKeyInUse,
    /// 400: an outgoing endpoint (callback, webhook) is not https, or names a non-public
    /// address, and the operator has not allowed that.
    EndpointNotAllowed,
    /// 500: an internal error; the message carries only the request id.
    Internal,
    /// 503: the server is shutting down or its store is unavailable.
    Unavailable,
    /// 429: too many requests from this API key or client address, or too many failed
    /// attempts at a secret; `Retry-After` says when to try again.
    RateLimited,
    /// 429: the agent has as many pending requests as it may; `Retry-After` says when to
    /// try again.
    TooManyPending,
    // OpenID Connect CIBA and OAuth 2.0 error codes (sent as `{"error","error_description"}`
    // on the OpenID endpoints).
    /// 400: `scope` lacks `openid` or is malformed.
    InvalidScope,
    /// 400: the `login_hint_token` has expired.
    ExpiredLoginHintToken,
    /// 400: the client may not use this grant or flow.
    UnauthorizedClient,
    /// 400: the client requires a `user_code` and none was sent.
    MissingUserCode,
    /// 400: the `user_code` is wrong.
    InvalidUserCode,
    /// 400: the `binding_message` is too long or not printable.
    InvalidBindingMessage,
    /// 401: client authentication failed.
    InvalidClient,
    /// 403 at the backchannel endpoint, 400 at the token endpoint: the user denied.
    AccessDenied,
    /// 400: `authorization_details` has an unknown type or does not match its schema.
    InvalidAuthorizationDetails,
    /// 400: the user has not decided yet.
    AuthorizationPending,
    /// 400: the client polls faster than `interval`; the interval grows.
    SlowDown,
    /// 400: the `auth_req_id` expired.
    ExpiredToken,
    /// 400: the `auth_req_id` is unknown, another client's, or already redeemed.
    InvalidGrant,
    /// 400: the token endpoint does not know this `grant_type`.
    UnsupportedGrantType,
    /// 400: the `resource` (RFC 8707) is malformed or not an audience this tenant or policy
    /// allows grants for.
    InvalidTarget,
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
            ErrorCode::InvalidPattern => "invalid_pattern",
            ErrorCode::UnknownReference => "unknown_reference",
            ErrorCode::AlreadyVoted => "already_voted",
            ErrorCode::NotApproved => "not_approved",
            ErrorCode::InUse => "in_use",
            ErrorCode::Disabled => "disabled",
            ErrorCode::DeliveryPending => "delivery_pending",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::LinkUnusable => "link_unusable",
            ErrorCode::CsrfFailed => "csrf_failed",
            ErrorCode::InvalidSignature => "invalid_signature",
            ErrorCode::InvalidNumber => "invalid_number",
            ErrorCode::InvalidText => "invalid_text",
            ErrorCode::InvalidIdempotencyKey => "invalid_idempotency_key",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::IdempotencyKeyInUse => "idempotency_key_in_use",
            ErrorCode::EndpointNotAllowed => "endpoint_not_allowed",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyPending => "too_many_pending",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::ExpiredLoginHintToken => "expired_login_hint_token",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::MissingUserCode => "missing_user_code",
            ErrorCode::InvalidUserCode => "invalid_user_code",
            ErrorCode::InvalidBindingMessage => "invalid_binding_message",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::InvalidAuthorizationDetails => "invalid_authorization_details",
            ErrorCode::AuthorizationPending => "authorization_pending",
            ErrorCode::SlowDown => "slow_down",
            ErrorCode::ExpiredToken => "expired_token",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidTarget => "invalid_target",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidJson
            | ErrorCode::InvalidRequest
            | ErrorCode::InvalidPattern
            | ErrorCode::UnknownUserId
            | ErrorCode::InvalidScope
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
            | ErrorCode::LinkUnusable
            | ErrorCode::InvalidNumber
            | ErrorCode::InvalidText
            | ErrorCode::InvalidTarget
            | ErrorCode::InvalidIdempotencyKey
            | ErrorCode::EndpointNotAllowed => 400,
            ErrorCode::Unauthorized | ErrorCode::InvalidClient | ErrorCode::InvalidSignature => 401,
            ErrorCode::Forbidden | ErrorCode::CsrfFailed | ErrorCode::AccessDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::AlreadyDecided
            | ErrorCode::AlreadyExists
            | ErrorCode::AlreadyVoted
            | ErrorCode::NotApproved
            | ErrorCode::InUse
            | ErrorCode::IdempotencyKeyInUse
            | ErrorCode::Disabled
            | ErrorCode::DeliveryPending => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::InvalidBody
            | ErrorCode::InvalidCondition
            | ErrorCode::UnknownReference
            | ErrorCode::IdempotencyKeyReused => 422,
            ErrorCode::RateLimited | ErrorCode::TooManyPending => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }
}
