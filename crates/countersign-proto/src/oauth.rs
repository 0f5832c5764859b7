//! Grant introspection (RFC 7662) and revocation (RFC 7009): form bodies in, OAuth answers out.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /oauth/introspect` (`application/x-www-form-urlencoded`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct IntrospectForm {
    /// The grant (access token) to check.
    #[schema(min_length = 1)]
    pub token: String,
    /// `access_token`, or left out; other hints are ignored (RFC 7662 §2.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type_hint: Option<String>,
    /// `true`: an active grant is marked used by this answer, so every later introspection
    /// answers `{"active":false}` (single use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, pattern = "^(true|false)?$")]
    pub consume: Option<bool>,
}

/// `POST /oauth/revoke` (`application/x-www-form-urlencoded`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RevokeForm {
    /// The grant (access token) to revoke.
    #[schema(min_length = 1)]
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type_hint: Option<String>,
}

/// The answer of `POST /oauth/introspect`: exactly `{"active":false}` unless the grant is
/// active for the caller; then `active: true` with the grant's claims.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Introspection {
    pub active: bool,
    /// The grant's claims (`iss`, `sub`, `aud`, `tid`, `client_id`, `scope`, `jti`, `iat`,
    /// `exp`, `approval_id`, `approved_by`, `authorization_details`) and `token_type`.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub claims: serde_json::Map<String, serde_json::Value>,
}
