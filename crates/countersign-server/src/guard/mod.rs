//! The guard: tool calls checked against the tenant's policies, approvals routed to groups,
//! escalated, timed out and decided with a quorum. HTTP-free; the routes only map. The
//! planning rules are in `countersign_core::guard`; here they get their inputs and their
//! results are stored.
mod approvals;
mod config;
mod evaluate;
mod views;

use std::sync::Arc;

use countersign_core::policy::{Cached, GuardConfig, PolicySet};
use countersign_core::{Error, Principal, Result};
use countersign_proto::ErrorCode;

use crate::state::AppState;

pub use approvals::{cancel, grant, history};
pub use config::{delete_group, delete_policy, put_routing, put_settings, save_group, save_policy};
pub use evaluate::{check_tool, dry_run};
pub use views::{group_view, policy_view, view};

/// The guard API's `proxyId` is the tenant; any other value names nothing the caller can see.
pub fn check_proxy(caller: &Principal, proxy_id: &str) -> Result<()> {
    if caller.tenant_id == proxy_id {
        Ok(())
    } else {
        Err(Error::NotFound(format!(
            "no proxy {proxy_id:?} for this key"
        )))
    }
}

/// The tenant's compiled configuration, from the cache or freshly loaded.
pub async fn config(state: &AppState, tenant_id: &str) -> Result<Arc<GuardConfig>> {
    if let Cached::Hit(config) = state.guard.lookup(tenant_id) {
        return Ok(config);
    }
    // One load at a time: whoever waited finds the configuration the first one cached.
    let _loading = state.guard_loading.lock().await;
    let generation = match state.guard.lookup(tenant_id) {
        Cached::Hit(config) => return Ok(config),
        Cached::Miss(generation) => generation,
    };
    let policies = state.store.list_policies(tenant_id).await?;
    let (settings, routing) = state.store.guard_settings(tenant_id).await?;
    // Compiling dry-runs every condition: bounded, but not for the request threads.
    let policies = state
        .conditions
        .run(move || PolicySet::compile(policies))
        .await??;
    let config = Arc::new(GuardConfig {
        policies,
        settings,
        routing,
    });
    state.guard.put(tenant_id, generation, config.clone());
    Ok(config)
}

pub(super) fn changed(state: &AppState, tenant_id: &str) {
    state.guard.invalidate(tenant_id);
}

pub(super) fn unknown(message: String) -> Error {
    Error::Invalid {
        code: ErrorCode::UnknownReference,
        message,
    }
}

/// How long approvals may wait at most, for `wait` long-polls.
pub fn max_wait(state: &AppState, wait: Option<u64>) -> std::time::Duration {
    std::time::Duration::from_secs(wait.unwrap_or(0).min(state.settings.requests.max_wait_secs))
}
