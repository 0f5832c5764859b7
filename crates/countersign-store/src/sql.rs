//! Statements both dialects run with the same text, written once with SQLite's `?N`
//! placeholders; [`pg`] renders one for PostgreSQL. A statement stays in its backend only
//! where the dialects really differ (locking, `RETURNING`, boolean literals, casts).
use crate::records::MCP_SERVER_COLUMNS;

/// The PostgreSQL form of a statement: `?N` becomes `$N` (no statement here has a `?` in a
/// string literal).
pub fn pg(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

// ----- idempotency keys -----

pub const ANSWER_COLUMNS: &str =
    "tenant_id, owner, key_hash, fingerprint, status, answer, created_at, expires_at";

/// Takes over a key whose answer has expired; inserts nothing while it is live.
pub fn insert_answer() -> String {
    format!(
        "INSERT INTO idempotency_keys ({ANSWER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT (tenant_id, owner, key_hash) DO UPDATE SET fingerprint = excluded.fingerprint, \
         status = excluded.status, answer = excluded.answer, created_at = excluded.created_at, \
         expires_at = excluded.expires_at WHERE idempotency_keys.expires_at <= excluded.created_at"
    )
}

pub fn live_answer() -> String {
    format!(
        "SELECT {ANSWER_COLUMNS} FROM idempotency_keys \
         WHERE tenant_id = ?1 AND owner = ?2 AND key_hash = ?3 AND expires_at > ?4"
    )
}

pub const FORGET_EXPIRED_ANSWERS: &str = "DELETE FROM idempotency_keys WHERE expires_at <= ?1";

// ----- MCP servers -----

pub fn insert_mcp_server() -> String {
    format!("INSERT INTO mcp_servers ({MCP_SERVER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
}

pub fn list_mcp_servers() -> String {
    format!("SELECT {MCP_SERVER_COLUMNS} FROM mcp_servers WHERE tenant_id = ?1 ORDER BY id")
}

pub fn get_mcp_server() -> String {
    format!("SELECT {MCP_SERVER_COLUMNS} FROM mcp_servers WHERE tenant_id = ?1 AND id = ?2")
}

pub const UPDATE_MCP_SERVER: &str = "UPDATE mcp_servers SET url = ?3, headers = ?4, updated_at = ?5 \
     WHERE tenant_id = ?1 AND id = ?2";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_numbered_dollars() {
        assert_eq!(
            pg("UPDATE t SET a = ?12 WHERE b = ?1 AND c IS NULL"),
            "UPDATE t SET a = $12 WHERE b = $1 AND c IS NULL"
        );
        assert_eq!(
            pg(FORGET_EXPIRED_ANSWERS),
            "DELETE FROM idempotency_keys WHERE expires_at <= $1"
        );
    }
}
