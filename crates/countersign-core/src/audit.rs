//! The audit trail: one event per state change, hash-chained per tenant, so that an edited,
//! removed or reordered event breaks the chain at a point `verify` can name.
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::{Result, canonical};

/// The `prev_hash` of a tenant's first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    Admin,
    Reviewer,
    Agent,
    Executor,
    System,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Admin => "admin",
            ActorKind::Reviewer => "reviewer",
            ActorKind::Agent => "agent",
            ActorKind::Executor => "executor",
            ActorKind::System => "system",
        }
    }
}

/// Who caused a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: String,
}

impl Actor {
    pub fn new(kind: ActorKind, id: impl Into<String>) -> Actor {
        Actor {
            kind,
            id: id.into(),
        }
    }

    pub fn system(id: impl Into<String>) -> Actor {
        Actor::new(ActorKind::System, id)
    }
}

/// What happened, before the store places it in the chain.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub tenant_id: String,
    pub at: DateTime<Utc>,
    pub actor_type: String,
    pub actor_id: String,
    pub action: String,
    pub subject: String,
    pub details: Value,
}

impl AuditRecord {
    pub fn new(
        tenant_id: &str,
        at: DateTime<Utc>,
        actor: &Actor,
        action: &str,
        subject: &str,
        details: Value,
    ) -> AuditRecord {
        AuditRecord {
            tenant_id: tenant_id.to_string(),
            at,
            actor_type: actor.kind.as_str().to_string(),
            actor_id: actor.id.clone(),
            action: action.to_string(),
            subject: subject.to_string(),
            details,
        }
    }
}

/// An event as stored: its place in the chain and the hashes that link it.
#[derive(Debug, Clone)]
pub struct ChainedEvent {
    pub seq: i64,
    pub record: AuditRecord,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of an event: SHA-256 over the canonical JSON of every field and the previous hash.
pub fn event_hash(seq: i64, prev_hash: &str, record: &AuditRecord) -> Result<String> {
    let body = json!({
        "seq": seq,
        "prev_hash": prev_hash,
        "tenant_id": record.tenant_id,
        "at_ms": record.at.timestamp_millis(),
        "actor_type": record.actor_type,
        "actor_id": record.actor_id,
        "action": record.action,
        "subject": record.subject,
        "details": record.details,
    });
    canonical::canonical_sha256(&body)
}

/// Places a record after the event `(prev_seq, prev_hash)`; `None` starts the chain.
pub fn chain(record: AuditRecord, previous: Option<(i64, String)>) -> Result<ChainedEvent> {
    let (seq, prev_hash) = match previous {
        Some((s, h)) => (s + 1, h),
        None => (1, GENESIS_HASH.to_string()),
    };
    let hash = event_hash(seq, &prev_hash, &record)?;
    Ok(ChainedEvent {
        seq,
        record,
        prev_hash,
        hash,
    })
}

/// Walks a tenant's chain in order; feed it every event, then read the outcome.
#[derive(Debug)]
pub struct ChainVerifier {
    expected_seq: i64,
    expected_prev: String,
    pub checked: i64,
    pub first_broken: Option<(i64, String)>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier {
            expected_seq: 1,
            expected_prev: GENESIS_HASH.to_string(),
            checked: 0,
            first_broken: None,
        }
    }
}

impl ChainVerifier {
    /// Checks one event; returns false once the chain is broken (later events are not checked).
    pub fn check(&mut self, event: &ChainedEvent) -> Result<bool> {
        if self.first_broken.is_some() {
            return Ok(false);
        }
        self.checked += 1;
        let problem = if event.seq != self.expected_seq {
            Some(format!(
                "expected event {} but found {}: an event is missing or out of order",
                self.expected_seq, event.seq
            ))
        } else if event.prev_hash != self.expected_prev {
            Some("prev_hash does not match the hash of the previous event".to_string())
        } else if event_hash(event.seq, &event.prev_hash, &event.record)? != event.hash {
            Some("the event's content does not match its hash: it was altered".to_string())
        } else {
            None
        };
        if let Some(reason) = problem {
            self.first_broken = Some((event.seq, reason));
            return Ok(false);
        }
        self.expected_seq += 1;
        self.expected_prev = event.hash.clone();
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: &str) -> AuditRecord {
        AuditRecord::new(
            "t",
            Utc::now(),
            &Actor::system("test"),
            action,
            "apr_x",
            json!({"k": 1}),
        )
    }

    #[test]
    fn a_chain_verifies_and_an_edit_breaks_it_where_it_happened() {
        let mut events = Vec::new();
        let mut prev = None;
        for a in ["a", "b", "c"] {
            let e = chain(record(a), prev).unwrap();
            prev = Some((e.seq, e.hash.clone()));
            events.push(e);
        }
        let mut v = ChainVerifier::default();
        for e in &events {
            assert!(v.check(e).unwrap());
        }
        assert_eq!(v.checked, 3);

        events[1].record.details = json!({"k": 2});
        let mut v = ChainVerifier::default();
        for e in &events {
            v.check(e).unwrap();
        }
        assert_eq!(v.first_broken.as_ref().map(|b| b.0), Some(2));
    }

    #[test]
    fn a_removed_event_is_detected() {
        let a = chain(record("a"), None).unwrap();
        let b = chain(record("b"), Some((a.seq, a.hash.clone()))).unwrap();
        let c = chain(record("c"), Some((b.seq, b.hash.clone()))).unwrap();
        let mut v = ChainVerifier::default();
        v.check(&a).unwrap();
        assert!(!v.check(&c).unwrap());
        assert_eq!(v.first_broken.map(|b| b.0), Some(3));
    }
}
