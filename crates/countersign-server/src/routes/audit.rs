//! The audit trail and its verification.
use axum::Json;
use axum::extract::State;
use countersign_core::Error;
use countersign_core::audit::ChainVerifier;
use countersign_proto::audit::{AuditPage, AuditQuery, AuditVerifyReport, BrokenLink};

use crate::auth::Auth;
use crate::error::{ApiQuery, ApiResult};
use crate::state::AppState;
use crate::views;

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage)),
    security(("admin_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    caller.require_admin()?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Error::invalid("`limit` must be between 1 and 500").into());
    }
    let after = match query.cursor.as_deref() {
        None | Some("") => 0,
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| Error::invalid("`cursor` is not a cursor this server gave out"))?,
    };
    let mut events = state
        .store
        .list_audit(&caller.tenant_id, after, limit + 1)
        .await?;
    let has_more = events.len() > limit as usize;
    events.truncate(limit as usize);
    let next_cursor = if has_more {
        events.last().map(|e| e.seq.to_string())
    } else {
        None
    };
    Ok(Json(AuditPage {
        events: events.into_iter().map(views::audit_event).collect(),
        next_cursor,
    }))
}

/// Recomputes the tenant's hash chain and names the first broken link.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, body = AuditVerifyReport)), security(("admin_key" = [])))]
pub async fn verify(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<AuditVerifyReport>> {
    caller.require_admin()?;
    let mut verifier = ChainVerifier::default();
    let mut after = 0;
    'pages: loop {
        let batch = state
            .store
            .list_audit(&caller.tenant_id, after, 1000)
            .await?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for event in &batch {
            if !verifier.check(event)? {
                break 'pages;
            }
        }
    }
    Ok(Json(AuditVerifyReport {
        ok: verifier.first_broken.is_none(),
        events_checked: verifier.checked,
        first_broken: verifier
            .first_broken
            .map(|(seq, reason)| BrokenLink { seq, reason }),
    }))
}
