//! PostgreSQL's errors in the one taxonomy, and times as stored.
use chrono::{DateTime, Utc};
use countersign_core::Error;
use countersign_core::error::Internal;

pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Maps a database error into the one taxonomy.
pub fn pg_error(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            Error::AlreadyExists("something with the same unique name already exists".into())
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            Error::Unavailable(format!("database unavailable: {e}"))
        }
        _ => Error::Internal(Internal::caused_by("database", e)),
    }
}
