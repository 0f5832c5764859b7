//! SQLite's errors in the one taxonomy, and times as stored.
use chrono::{DateTime, Utc};
use countersign_core::Error;
use countersign_core::error::Internal;

pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Maps a database error into the one taxonomy: unique violations are conflicts, the rest is
/// internal.
pub fn db_error(e: rusqlite::Error) -> Error {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            Error::AlreadyExists("something with the same unique name already exists".into())
        }
        _ => Error::Internal(Internal::caused_by("database", e)),
    }
}
