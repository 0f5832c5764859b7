//! What both backends share besides audit records: errors they raise alike, how stored
//! settings are read, and the column lists of the smaller tables.
use countersign_core::{Error, Result};
use countersign_proto::ErrorCode;
use countersign_proto::guard::{GuardSettings, RoutingRules};

/// A poll of a CIBA request the store does not hold.
pub fn no_ciba_request() -> Error {
    Error::NotFound("no such CIBA request".into())
}

pub fn already_voted() -> Error {
    Error::Conflict {
        code: ErrorCode::AlreadyVoted,
        message: "you already decided this request".into(),
    }
}

/// Stored guard settings, or the defaults.
pub fn parse_settings(stored: Option<(String, String)>) -> Result<(GuardSettings, RoutingRules)> {
    match stored {
        None => Ok((GuardSettings::default(), RoutingRules::default())),
        Some((guard, routing)) => Ok((
            serde_json::from_str(&guard).map_err(Error::internal)?,
            serde_json::from_str(&routing).map_err(Error::internal)?,
        )),
    }
}

// ----- notifications -----

pub const DELIVERY_COLUMNS: &str = "id, tenant_id, approval_id, channel, target, recipient, event, state, \
     attempts, created_at, next_attempt_at, delivered_at, last_error, status_code, external_ref, payload";
pub const PREFERENCE_COLUMNS: &str =
    "tenant_id, user_id, email, slack, push, slack_user_id, updated_at";
pub const WEBHOOK_COLUMNS: &str = "id, tenant_id, url, events, secret, description, disabled_at, \
     disabled_reason, created_at, updated_at";
pub const PUSH_COLUMNS: &str =
    "id, tenant_id, user_id, endpoint, p256dh, auth, user_agent, created_at";

pub fn slack_id_taken() -> Error {
    Error::AlreadyExists("another user of this tenant already has this Slack user id".into())
}

// ----- MCP servers -----

pub const MCP_SERVER_COLUMNS: &str = "tenant_id, id, url, headers, created_at, updated_at";

/// The stored form of a server's headers: a JSON array of `[name, value]` pairs.
pub fn headers_json(headers: &[(String, String)]) -> Result<String, Error> {
    serde_json::to_string(headers).map_err(Error::internal)
}

pub fn headers_from_json(text: &str) -> Result<Vec<(String, String)>, Error> {
    serde_json::from_str(text).map_err(|_| Error::internal_msg("stored MCP server headers"))
}
