//! API keys already checked, remembered for a moment so that a request costs no database
//! lookup. Disabling a user or an agent, or revoking a key, forgets them all: at once on this
//! replica, and on the others as soon as the store's change hint arrives. Should hints be lost
//! (a listener reconnecting says so and forgets too), an entry still lives no longer than
//! `FRESH_FOR`.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use countersign_core::Principal;
use parking_lot::RwLock;

/// How long a checked key is trusted without asking the store again.
const FRESH_FOR: Duration = Duration::from_secs(2);
/// Most keys remembered; past that the memory starts over.
const MOST: usize = 10_000;

#[derive(Debug, Default)]
pub struct Principals {
    entries: RwLock<HashMap<String, (Principal, Instant)>>,
    /// Moves on at every forgetting, so that a lookup a change overtook is not remembered.
    generation: AtomicU64,
}

impl Principals {
    /// The remembered principal of a key hash, while fresh.
    pub fn get(&self, key_hash: &str) -> Option<Principal> {
        let entries = self.entries.read();
        let (principal, at) = entries.get(key_hash)?;
        (at.elapsed() < FRESH_FOR).then(|| principal.clone())
    }

    /// Where forgetting stands; take it before asking the store.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Remembers what the store said, unless something was forgotten since `generation`.
    pub fn remember(&self, key_hash: &str, principal: &Principal, generation: u64) {
        let mut entries = self.entries.write();
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= MOST {
            entries.clear();
        }
        entries.insert(key_hash.to_string(), (principal.clone(), Instant::now()));
    }

    /// Forgets every key: one was revoked, or its owner disabled.
    pub fn forget_all(&self) {
        let mut entries = self.entries.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
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
}
