//! Appending to a tenant's audit chain on PostgreSQL in one round trip.
//!
//! Each replica remembers the head it last wrote for each tenant. An append chains its events
//! on that head in memory and sends one statement that moves the head only if it is still
//! there (`seq = remembered`) and inserts the events only if it moved. The head row stays
//! locked until the transaction ends, so a second append waits in PostgreSQL for the first to
//! commit and then finds the head it expected; if the first rolled back, or another replica
//! moved the head, the statement changes nothing and the append falls back to reading the
//! head under `FOR UPDATE`. A remembered head that never committed costs only that fallback.
//! Appends of one replica to one tenant take turns in memory (a stripe lock held for the one
//! statement) rather than all queueing on the row lock, which PostgreSQL serves expensively
//! when many wait.
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use countersign_core::audit::{self, AuditRecord, ChainedEvent, GENESIS_HASH};
use countersign_core::{Error, Result};
use sqlx::{PgConnection, Row};
use tokio::sync::Mutex;

use super::errors::{ms, pg_error};

const STRIPES: usize = 64;

/// Moves the head from `$4` to `($2, $3)` and inserts the events, or does nothing.
const APPEND: &str = "WITH head AS (\
     UPDATE audit_heads SET seq = $2, hash = $3 WHERE tenant_id = $1 AND seq = $4 RETURNING tenant_id) \
     INSERT INTO audit_events (tenant_id, seq, at, actor_type, actor_id, action, subject, details, prev_hash, hash) \
     SELECT head.tenant_id, e.* FROM head, UNNEST($5::BIGINT[], $6::BIGINT[], $7::TEXT[], $8::TEXT[], \
     $9::TEXT[], $10::TEXT[], $11::TEXT[], $12::TEXT[], $13::TEXT[]) AS e";

/// A chain head: the last event's sequence number and hash (`0` and the genesis hash when
/// the chain is empty).
type Head = (i64, String);

/// The heads this replica last wrote, by tenant, in stripes that each take one append at a
/// time.
#[derive(Debug)]
pub struct Chains {
    stripes: Vec<Mutex<HashMap<String, Head>>>,
    hasher: RandomState,
}

impl Default for Chains {
    fn default() -> Self {
        Chains {
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Chains {
    fn stripe(&self, tenant_id: &str) -> &Mutex<HashMap<String, Head>> {
        let index = self.hasher.hash_one(tenant_id) as usize % STRIPES;
        &self.stripes[index]
    }

    /// Appends `records` (in order) to their tenants' chains inside the caller's transaction.
    pub async fn append(
        &self,
        conn: &mut PgConnection,
        records: Vec<AuditRecord>,
    ) -> Result<Vec<ChainedEvent>> {
        // One statement per tenant; tenants in a fixed order, so two transactions that touch
        // the same two chains cannot wait for each other.
        let mut by_tenant: Vec<(String, Vec<AuditRecord>)> = Vec::new();
        for record in records {
            match by_tenant.iter_mut().find(|(t, _)| *t == record.tenant_id) {
                Some((_, list)) => list.push(record),
                None => by_tenant.push((record.tenant_id.clone(), vec![record])),
            }
        }
        by_tenant.sort_by(|a, b| a.0.cmp(&b.0));
        let mut events = Vec::new();
        for (tenant_id, records) in by_tenant {
            events.extend(self.append_to(conn, &tenant_id, records).await?);
        }
        Ok(events)
    }

    async fn append_to(
        &self,
        conn: &mut PgConnection,
        tenant_id: &str,
        records: Vec<AuditRecord>,
    ) -> Result<Vec<ChainedEvent>> {
        let mut heads = self.stripe(tenant_id).lock().await;
        // Taken out while appending: an append that fails leaves nothing remembered.
        let events = match heads.remove(tenant_id) {
            Some(head) => match try_append(conn, tenant_id, &head, records).await? {
                Ok(events) => events,
                Err(records) => append_locked(conn, tenant_id, records).await?,
            },
            None => append_locked(conn, tenant_id, records).await?,
        };
        if let Some(last) = events.last() {
            heads.insert(tenant_id.to_string(), (last.seq, last.hash.clone()));
        }
        Ok(events)
    }
}

/// The fallback: reads the head under `FOR UPDATE` (creating it for a tenant's first event)
/// and appends after it.
async fn append_locked(
    conn: &mut PgConnection,
    tenant_id: &str,
    records: Vec<AuditRecord>,
) -> Result<Vec<ChainedEvent>> {
    let head = match read_head(conn, tenant_id).await? {
        Some(head) => head,
        None => {
            sqlx::query("INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2) ON CONFLICT DO NOTHING")
                .bind(tenant_id)
                .bind(GENESIS_HASH)
                .execute(&mut *conn)
                .await
                .map_err(pg_error)?;
            read_head(conn, tenant_id)
                .await?
                .ok_or_else(|| Error::internal_msg("the audit chain head vanished"))?
        }
    };
    try_append(conn, tenant_id, &head, records)
        .await?
        .map_err(|_| Error::internal_msg("the locked audit chain head moved"))
}

async fn read_head(conn: &mut PgConnection, tenant_id: &str) -> Result<Option<Head>> {
    let row = sqlx::query("SELECT seq, hash FROM audit_heads WHERE tenant_id = $1 FOR UPDATE")
        .bind(tenant_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(pg_error)?;
    row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .transpose()
        .map_err(pg_error)
}

/// Appends after `head` if it is still the tenant's head; when it is not, gives the records
/// back.
async fn try_append(
    conn: &mut PgConnection,
    tenant_id: &str,
    head: &Head,
    records: Vec<AuditRecord>,
) -> Result<std::result::Result<Vec<ChainedEvent>, Vec<AuditRecord>>> {
    let mut previous = head.clone();
    let mut events = Vec::with_capacity(records.len());
    for record in records {
        let event = audit::chain(record, Some(previous))?;
        previous = (event.seq, event.hash.clone());
        events.push(event);
    }
    let column = |f: fn(&ChainedEvent) -> String| events.iter().map(f).collect::<Vec<_>>();
    let details = events
        .iter()
        .map(|e| serde_json::to_string(&e.record.details))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(Error::internal)?;
    let inserted = sqlx::query(APPEND)
        .bind(tenant_id)
        .bind(previous.0)
        .bind(&previous.1)
        .bind(head.0)
        .bind(events.iter().map(|e| e.seq).collect::<Vec<_>>())
        .bind(events.iter().map(|e| ms(e.record.at)).collect::<Vec<_>>())
        .bind(column(|e| e.record.actor_type.clone()))
        .bind(column(|e| e.record.actor_id.clone()))
        .bind(column(|e| e.record.action.clone()))
        .bind(column(|e| e.record.subject.clone()))
        .bind(details)
        .bind(column(|e| e.prev_hash.clone()))
        .bind(column(|e| e.hash.clone()))
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?
        .rows_affected();
    if inserted == events.len() as u64 {
        Ok(Ok(events))
    } else {
        Ok(Err(events.into_iter().map(|e| e.record).collect()))
    }
}
