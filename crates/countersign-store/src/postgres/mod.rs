//! The PostgreSQL backend, for several replicas on one database.
mod chain;
mod errors;
mod notify;
mod oidc;
mod tx;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use countersign_core::{Error, Result};
use errors::pg_error;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::Change;
use crate::sql;

const MIGRATIONS: &[(i64, &str)] = migrations!("postgres");

/// Prepared statements kept per connection: more than the store has.
const STATEMENT_CACHE: usize = 1024;

/// The channel replicas tell each other about changes on.
const CHANNEL: &str = "countersign_changes";
/// Serialises migrations when several replicas start at once.
const MIGRATION_LOCK: i64 = 0x0063_6f75_6e74_6572;

pub fn migration_versions() -> Vec<i64> {
    MIGRATIONS.iter().map(|(v, _)| *v).collect()
}

#[derive(Debug, Clone)]
pub struct PostgresOptions {
    pub url: String,
    pub max_connections: u32,
}

impl PostgresOptions {
    pub fn new(url: impl Into<String>) -> PostgresOptions {
        PostgresOptions {
            url: url.into(),
            max_connections: 16,
        }
    }
}

/// What this store's connections share.
#[derive(Debug)]
pub struct Replica {
    /// The audit-chain heads this replica wrote last.
    chains: chain::Chains,
    /// Marks this replica's change hints, so its listener skips its own (the change was
    /// announced here when it committed).
    origin: String,
}

#[derive(Debug)]
pub struct PgStore {
    pool: PgPool,
    replica: Arc<Replica>,
    changes: broadcast::Sender<Change>,
    listener: JoinHandle<()>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

async fn migrate(pool: &PgPool) -> Result<()> {
    let mut conn = pool.acquire().await.map_err(pg_error)?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
    let outcome = apply_migrations(&mut conn).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(pg_error);
    outcome.and(unlocked.map(|_| ()))
}

async fn apply_migrations(conn: &mut PgConnection) -> Result<()> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await
    .map_err(pg_error)?;
    for (version, sql) in MIGRATIONS {
        let applied: Option<i64> = sqlx::query_scalar(&sql::pg(sql::MIGRATION_APPLIED))
            .bind(version)
            .fetch_optional(&mut *conn)
            .await
            .map_err(pg_error)?;
        if applied.is_some() {
            continue;
        }
        sqlx::raw_sql("BEGIN")
            .execute(&mut *conn)
            .await
            .map_err(pg_error)?;
        let applied = async {
            sqlx::raw_sql(sql).execute(&mut *conn).await?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(Utc::now().timestamp_millis())
                .execute(&mut *conn)
                .await?;
            sqlx::raw_sql("COMMIT").execute(&mut *conn).await
        }
        .await;
        if let Err(e) = applied {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
            return Err(Error::internal_msg(format!(
                "migration {version} failed: {e}"
            )));
        }
        tracing::info!(version, "applied migration");
    }
    Ok(())
}

/// Forwards NOTIFY hints; after a lost connection it says `Resync`, because hints sent
/// meanwhile are gone and waiters must read the truth again.
async fn listen(pool: PgPool, changes: broadcast::Sender<Change>, origin: String) {
    let mut reconnecting = false;
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "change listener cannot connect; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        if reconnecting {
            let _ = changes.send(Change::Resync);
        }
        reconnecting = true;
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    let payload = match n.payload().split_once('|') {
                        Some((from, _)) if from == origin => continue,
                        Some((_, payload)) => payload,
                        None => n.payload(),
                    };
                    let change = match payload.split_once(':') {
                        Some(("r", id)) => Change::Request(id.to_string()),
                        Some(("g", tenant)) => Change::Guard(tenant.to_string()),
                        _ if payload == "k" => Change::SigningKeys,
                        _ if payload == "a" => Change::Keys,
                        _ => Change::Resync,
                    };
                    let _ = changes.send(change);
                }
                // The connection was lost: reconnect and resync.
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "change listener lost its connection");
                    break;
                }
            }
        }
        let _ = changes.send(Change::Resync);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a change hint as `origin|payload`.
async fn notify(conn: &mut PgConnection, origin: &str, payload: &str) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2 || '|' || $3)")
        .bind(CHANNEL)
        .bind(origin)
        .bind(payload)
        .execute(conn)
        .await
        .map_err(pg_error)?;
    Ok(())
}

impl PgStore {
    pub async fn open(options: PostgresOptions) -> Result<PgStore> {
        let connect = options
            .url
            .parse::<PgConnectOptions>()
            .map_err(|e| Error::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?
            // Every statement the store runs stays prepared on each connection (sqlx keeps
            // 100 by default, fewer than the store has, so they were parsed again and again).
            .statement_cache_capacity(STATEMENT_CACHE);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            // A connection used within the last second is alive; pinging it on every
            // checkout cost each request another round trip.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > Duration::from_secs(1) {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect)
            .await
            .map_err(|e| Error::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        migrate(&pool).await?;
        let (changes, _) = broadcast::channel(4096);
        let replica = Arc::new(Replica {
            chains: chain::Chains::default(),
            origin: countersign_core::ids::new_id("replica"),
        });
        let listener = tokio::spawn(listen(
            pool.clone(),
            changes.clone(),
            replica.origin.clone(),
        ));
        Ok(PgStore {
            pool,
            replica,
            changes,
            listener,
        })
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.pool.begin().await.map_err(pg_error)
    }
}
