//! The audit trail: `/v1/audit`.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEventView {
    /// Position in the tenant's chain, from 1.
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// `admin`, `reviewer`, `agent` or `system`.
    pub actor_type: String,
    pub actor_id: String,
    /// e.g. `approval.created`, `approval.approved`, `token.issued`, `api_key.revoked`.
    pub action: String,
    /// The id of what changed.
    pub subject: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// Hex SHA-256 of the previous event (64 zeros for the first).
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEventView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    #[param(pattern = r"^(|\+?0*[0-9]{1,18})$")]
    pub cursor: Option<String>,
    /// 1 to 500, default 100.
    #[serde(default)]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditVerifyReport {
    pub ok: bool,
    pub events_checked: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_broken: Option<BrokenLink>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BrokenLink {
    pub seq: i64,
    pub reason: String,
}
