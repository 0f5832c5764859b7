//! API keys already checked, and the agents the guard reads, remembered for a moment so that
//! a request costs no database lookup. Disabling a user or an agent, or revoking a key,
//! forgets them all: at once on this replica, and on the others as soon as the store's change
//! hint arrives. Should hints be lost (a listener reconnecting says so and forgets too), an
//! entry still lives no longer than `FRESH_FOR`.
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use countersign_core::Principal;
use countersign_core::directory::Agent;
use parking_lot::{RwLock, RwLockWriteGuard};

/// How long a checked key (or an agent read) is trusted without asking the store again.
const FRESH_FOR: Duration = Duration::from_secs(2);
/// Most entries remembered of each kind; past that the memory starts over.
const MOST: usize = 10_000;

/// Keys' principals and agents, remembered together: the changes that must forget one
/// (revoking a key, disabling its owner) forget both.
#[derive(Debug, Default)]
pub struct Principals {
    keys: Memory<String, Principal>,
    /// By agent id (ids are unique across tenants; the tenant is checked on reading).
    /// Agents never change but to be disabled.
    agents: Memory<String, Agent>,
    /// Moves on at every forgetting, so that a lookup a change overtook is not remembered.
    generation: AtomicU64,
}

#[derive(Debug)]
struct Memory<K, V>(RwLock<HashMap<K, (V, Instant)>>);

impl<K, V> Default for Memory<K, V> {
    fn default() -> Self {
        Memory(RwLock::new(HashMap::new()))
    }
}

impl<K: Hash + Eq, V: Clone> Memory<K, V> {
    fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let entries = self.0.read();
        let (value, at) = entries.get(key)?;
        (at.elapsed() < FRESH_FOR).then(|| value.clone())
    }

    /// Remembers `value` unless a forgetting happened since `generation` (checked under
    /// the lock that forgetting takes too).
    fn remember(&self, key: K, value: &V, generation: u64, current: &AtomicU64) {
        let mut entries = self.0.write();
        if current.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= MOST {
            entries.clear();
        }
        entries.insert(key, (value.clone(), Instant::now()));
    }

    fn lock(&self) -> RwLockWriteGuard<'_, HashMap<K, (V, Instant)>> {
        self.0.write()
    }
}

impl Principals {
    /// The remembered principal of a key hash, while fresh.
    pub fn get(&self, key_hash: &str) -> Option<Principal> {
        self.keys.get(key_hash)
    }

    /// Where forgetting stands; take it before asking the store.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Remembers what the store said, unless something was forgotten since `generation`.
    pub fn remember(&self, key_hash: &str, principal: &Principal, generation: u64) {
        self.keys.remember(
            key_hash.to_string(),
            principal,
            generation,
            &self.generation,
        );
    }

    /// The remembered agent, while fresh.
    pub fn agent(&self, tenant_id: &str, agent_id: &str) -> Option<Agent> {
        self.agents
            .get(agent_id)
            .filter(|agent| agent.tenant_id == tenant_id)
    }

    /// Remembers an agent the store returned, unless something was forgotten since
    /// `generation`.
    pub fn remember_agent(&self, agent: &Agent, generation: u64) {
        self.agents
            .remember(agent.id.clone(), agent, generation, &self.generation);
    }

    /// Forgets every key and agent: a key was revoked, or its owner disabled.
    pub fn forget_all(&self) {
        let mut keys = self.keys.lock();
        let mut agents = self.agents.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        keys.clear();
        agents.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use countersign_core::Role;

    fn admin() -> Principal {
        Principal {
            key_id: "k1".into(),
            tenant_id: "t".into(),
            role: Role::Admin,
            user_id: None,
        }
    }

    #[test]
    fn a_lookup_that_a_forgetting_overtook_is_not_remembered() {
        let principals = Principals::default();
        let seen = principals.generation();
        principals.forget_all();
        principals.remember("h", &admin(), seen);
        assert!(principals.get("h").is_none());
        let seen = principals.generation();
        principals.remember("h", &admin(), seen);
        assert_eq!(principals.get("h").map(|p| p.key_id), Some("k1".into()));
        principals.forget_all();
        assert!(principals.get("h").is_none());
    }

    #[test]
    fn an_agent_is_remembered_for_its_own_tenant_until_a_forgetting() {
        let principals = Principals::default();
        let agent = Agent {
            id: "agt_1".into(),
            tenant_id: "t".into(),
            name: "bot".into(),
            trust_level: countersign_proto::TrustLevel::Standard,
            disabled: false,
            created_at: chrono::Utc::now(),
        };
        let seen = principals.generation();
        principals.remember_agent(&agent, seen);
        assert_eq!(principals.agent("t", "agt_1"), Some(agent.clone()));
        assert_eq!(principals.agent("other", "agt_1"), None);
        principals.forget_all();
        assert_eq!(principals.agent("t", "agt_1"), None);
        // A read that a disabling overtook is not remembered.
        principals.remember_agent(&agent, seen);
        assert_eq!(principals.agent("t", "agt_1"), None);
    }
}
