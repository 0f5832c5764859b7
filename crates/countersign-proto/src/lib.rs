//! Wire types of the Countersign HTTP API.
//!
//! The `/ciba/*` agent API speaks camelCase JSON exactly like the seed document; every `/v1/*`
//! API speaks snake_case. Every error has the shape `{"error":{"code","message"}}`.

pub mod admin;
pub mod approvals;
pub mod audit;
pub mod ciba;
pub mod error;
pub mod guard;
pub mod mcp;
pub mod notify;
pub mod oauth;
pub mod oidc;

pub use error::{ErrorBody, ErrorCode, ErrorDetail, OAuthErrorBody};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How much an agent is trusted; policies and tenant rules key on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrustLevel {
    Development,
    Standard,
    Elevated,
    Restricted,
    Critical,
}

impl TrustLevel {
    pub const ALL: [TrustLevel; 5] = [
        TrustLevel::Development,
        TrustLevel::Standard,
        TrustLevel::Elevated,
        TrustLevel::Restricted,
        TrustLevel::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TrustLevel::Development => "development",
            TrustLevel::Standard => "standard",
            TrustLevel::Elevated => "elevated",
            TrustLevel::Restricted => "restricted",
            TrustLevel::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<TrustLevel> {
        TrustLevel::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// The lifecycle state of an approval request. Terminal states never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Rejected,
    Expired,
    Cancelled,
}

impl ApprovalStatus {
    pub const ALL: [ApprovalStatus; 5] = [
        ApprovalStatus::Pending,
        ApprovalStatus::Approved,
        ApprovalStatus::Rejected,
        ApprovalStatus::Expired,
        ApprovalStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<ApprovalStatus> {
        ApprovalStatus::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        self != ApprovalStatus::Pending
    }
}

/// The liveness and readiness answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    pub status: String,
}
