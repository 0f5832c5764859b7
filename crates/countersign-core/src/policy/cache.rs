//! Compiled guard configurations per tenant, and when a cached one may be used.
use std::collections::HashMap;
use std::sync::Arc;

use super::PolicySet;

/// A tenant's guard configuration, compiled for evaluation.
#[derive(Debug)]
pub struct GuardConfig {
    pub policies: PolicySet,
    pub settings: countersign_proto::guard::GuardSettings,
    pub routing: countersign_proto::guard::RoutingRules,
}

/// Compiled configurations per tenant, dropped when a tenant's configuration changes (here,
/// or on another replica: its change hint reaches this one).
///
/// Loading is not atomic with caching: a change can land after a reader loaded the old
/// configuration and before it stores what it loaded. Every change therefore bumps the
/// tenant's generation, and a load is cached only if the generation it started under is still
/// current; otherwise the stale load is used once and dropped.
#[derive(Debug, Default)]
pub struct GuardCache {
    tenants: parking_lot::Mutex<HashMap<String, CacheSlot>>,
}

#[derive(Debug, Default)]
struct CacheSlot {
    generation: u64,
    config: Option<Arc<GuardConfig>>,
}

/// What a reader takes before loading a tenant's configuration from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Generation(u64);

/// Either the cached configuration, or the generation to load under.
#[derive(Debug)]
pub enum Cached {
    Hit(Arc<GuardConfig>),
    Miss(Generation),
}

impl GuardCache {
    /// The cached configuration, or the generation a fresh load must be stored with. Take it
    /// before reading the store, so a change committed meanwhile makes the load stale.
    pub fn lookup(&self, tenant_id: &str) -> Cached {
        let mut tenants = self.tenants.lock();
        let slot = tenants.entry(tenant_id.to_string()).or_default();
        match &slot.config {
            Some(config) => Cached::Hit(config.clone()),
            None => Cached::Miss(Generation(slot.generation)),
        }
    }

    /// Caches a configuration loaded under `generation`, unless a change arrived since;
    /// returns whether it was cached.
    pub fn put(&self, tenant_id: &str, generation: Generation, config: Arc<GuardConfig>) -> bool {
        let mut tenants = self.tenants.lock();
        let slot = tenants.entry(tenant_id.to_string()).or_default();
        if slot.generation != generation.0 {
            return false;
        }
        slot.config = Some(config);
        true
    }

    /// The tenant's configuration changed: drop it, and make every load in flight stale.
    pub fn invalidate(&self, tenant_id: &str) {
        let mut tenants = self.tenants.lock();
        let slot = tenants.entry(tenant_id.to_string()).or_default();
        slot.generation += 1;
        slot.config = None;
    }

    /// Every tenant may have changed (change hints were lost).
    pub fn clear(&self) {
        for slot in self.tenants.lock().values_mut() {
            slot.generation += 1;
            slot.config = None;
        }
    }
}
