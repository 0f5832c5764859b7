//! The admin API of OpenID clients: `/v1/admin/oidc-clients`.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

fn default_auth_method() -> String {
    "client_secret_basic".into()
}

fn default_delivery_mode() -> String {
    "poll".into()
}

/// Registers an agent as an OpenID client; its `client_id` is the agent's id.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOidcClient {
    /// An active agent of the tenant.
    #[schema(pattern = "^agt_[0-9a-hjkmnp-tv-z]{26}$")]
    pub agent_id: String,
    /// `client_secret_basic` (default), `client_secret_post` or `private_key_jwt`.
    #[serde(default = "default_auth_method")]
    pub token_endpoint_auth_method: String,
    /// The client's public keys (a JWK Set), for `private_key_jwt` and signed requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<serde_json::Value>,
    /// `poll` (default), `ping` or `push`.
    #[serde(default = "default_delivery_mode")]
    pub backchannel_token_delivery_mode: String,
    /// Required for ping and push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 2000,
        pattern = r"^https?://[^/@#\s\x00-\x1f\x7f-\x9f]+(/[^#\s\x00-\x1f\x7f-\x9f]*)?$"
    )]
    pub backchannel_client_notification_endpoint: Option<String>,
    /// When set, every authentication request must be signed with this algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backchannel_authentication_request_signing_alg: Option<String>,
    /// When true, every authentication request must carry the user's `user_code`.
    #[serde(default)]
    pub backchannel_user_code_parameter: bool,
    /// Defaults to `["urn:openid:params:grant-type:ciba"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_types: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OidcClientView {
    pub client_id: String,
    pub token_endpoint_auth_method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<serde_json::Value>,
    pub backchannel_token_delivery_mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backchannel_client_notification_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backchannel_authentication_request_signing_alg: Option<String>,
    pub backchannel_user_code_parameter: bool,
    pub grant_types: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// The answer to registration: the only time the client secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OidcClientCreated {
    #[serde(flatten)]
    pub view: OidcClientView,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OidcClientList {
    pub oidc_clients: Vec<OidcClientView>,
}

/// `PUT /v1/admin/users/{id}/user-code`: the code the user tells a client (CIBA `user_code`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetUserCode {
    #[schema(
        min_length = 4,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^\s\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb][^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$"
    )]
    pub user_code: String,
}
