//! Statements both dialects run with the same text, written once with SQLite's `?N`
//! placeholders; [`pg`] renders one for PostgreSQL. Statements still written out in a
//! backend either differ between the dialects (locking, `RETURNING`, boolean literals, casts)
//! or are built with `format!` from a column list.
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

/// A column list with each column qualified by a table or its alias (`a.id, a.name`).
pub fn prefixed(columns: &str, alias: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

// ----- column lists, in the order the row readers expect -----

pub const TENANT_COLUMNS: &str = "id, name, created_at";
pub const USER_COLUMNS: &str = "id, tenant_id, email, name, disabled, created_at, is_admin";
pub const AGENT_COLUMNS: &str = "id, tenant_id, name, trust_level, disabled, created_at";
pub const API_KEY_COLUMNS: &str = "id, tenant_id, key_hash, prefix, role, user_id, agent_id, name, created_at, revoked_at, audiences";
pub const DECISION_COLUMNS: &str = "reviewer_id, reviewer, verdict, comment, channel, decided_at";
pub const AUDIT_COLUMNS: &str =
    "tenant_id, seq, at, actor_type, actor_id, action, subject, details, prev_hash, hash";
pub const LINK_COLUMNS: &str =
    "id, tenant_id, user_id, kind, created_at, expires_at, used_at, revoked_at";
pub const PASSKEY_COLUMNS: &str =
    "id, tenant_id, user_id, credential_id, name, credential, created_at, last_used_at";
pub const STATE_COLUMNS: &str =
    "approval_id, tenant_id, client_id, delivery_mode, scope, acr, interval_secs, last_poll_at";
pub const REQUEST_COLUMNS: &str = "id, tenant_id, kind, agent_id, user_id, scope, binding_message, \
     context, context_sha256, status, created_at, expires_at, decided_at, decided_by, comment, \
     token_issued_at, tool_name, session_id, reason, risk_score, threats, policy_id, policy_name, \
     notification_channels, on_behalf_of, approval_group_id, required_approvals, \
     allow_self_approval, default_on_timeout, escalation_level, escalation_plan, annotations, \
     mcp_server, mcp_client";
pub const POLICY_COLUMNS: &str = "id, tenant_id, name, description, tool_pattern, action, priority, \
     is_active, condition, approval_config, created_at, updated_at";
pub const SESSION_COLUMNS: &str = "id, tenant_id, user_id, method, user_agent, created_at, \
     last_seen_at, expires_at, revoked_at";
pub const CLIENT_COLUMNS: &str = "client_id, tenant_id, auth_method, secret_hash, jwks, delivery_mode, \
     notification_endpoint, request_signing_alg, user_code_parameter, grant_types, created_at";

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

// ----- dashboard accounts -----

pub const INSERT_PASSKEY: &str = "INSERT INTO passkeys (id, tenant_id, user_id, credential_id, name, credential, created_at, last_used_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)";
pub const SPEND_LOGIN_LINK: &str = "UPDATE login_links SET used_at = ?1 WHERE token_hash = ?2 AND kind = ?3 \
     AND tenant_id = ?4 AND user_id = ?5 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > ?1";
pub const REPLACE_PASSKEY_CREDENTIAL: &str = "UPDATE passkeys SET credential = ?1, last_used_at = ?2 \
     WHERE credential_id = ?3 AND tenant_id = ?4 AND user_id = ?5";
pub const SET_USER_ADMIN: &str =
    "UPDATE users SET is_admin = ?3 WHERE tenant_id = ?1 AND id = ?2 AND is_admin <> ?3";
pub const INSERT_LOGIN_LINK: &str = "INSERT INTO login_links (id, tenant_id, user_id, kind, token_hash, created_at, expires_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
pub const REVOKE_LOGIN_LINK: &str = "UPDATE login_links SET revoked_at = ?3 WHERE tenant_id = ?1 AND id = ?2 \
     AND revoked_at IS NULL AND used_at IS NULL";
pub const INSERT_SESSION: &str = "INSERT INTO sessions (id, tenant_id, user_id, token_hash, method, user_agent, created_at, last_seen_at, expires_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)";
pub const TOUCH_SESSION: &str =
    "UPDATE sessions SET last_seen_at = ?2 WHERE id = ?1 AND last_seen_at < ?2";
pub const REVOKE_SESSION: &str = "UPDATE sessions SET revoked_at = ?4 WHERE tenant_id = ?1 AND user_id = ?2 AND id = ?3 AND revoked_at IS NULL";
pub const DELETE_PASSKEY: &str =
    "DELETE FROM passkeys WHERE tenant_id = ?1 AND user_id = ?2 AND id = ?3";
pub const FORGET_EXPIRED_CEREMONIES: &str =
    "DELETE FROM webauthn_ceremonies WHERE expires_at <= ?1";
pub const INSERT_CEREMONY: &str =
    "INSERT INTO webauthn_ceremonies (id_hash, state, expires_at) VALUES (?1, ?2, ?3)";
pub const TAKE_CEREMONY: &str =
    "DELETE FROM webauthn_ceremonies WHERE id_hash = ?1 RETURNING state, expires_at";

// ----- tenants, users, agents, keys -----

pub const HAS_TENANTS: &str = "SELECT EXISTS (SELECT 1 FROM tenants)";
pub const INSERT_TENANT: &str = "INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3)";
pub const REVOKE_API_KEY: &str =
    "UPDATE api_keys SET revoked_at = ?3 WHERE tenant_id = ?1 AND id = ?2 AND revoked_at IS NULL";

// ----- guard configuration -----

pub const UPSERT_POLICY: &str = "INSERT INTO policies (id, tenant_id, name, description, tool_pattern, action, priority, is_active, \
     condition, approval_config, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";
pub const DELETE_POLICY: &str = "DELETE FROM policies WHERE tenant_id = ?1 AND id = ?2";
pub const GROUP_IDS: &str = "SELECT id FROM approval_groups WHERE tenant_id = ?1 ORDER BY id";
pub const INSERT_GROUP: &str = "INSERT INTO approval_groups (tenant_id, id, name, escalation_minutes, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
pub const UPDATE_GROUP: &str = "UPDATE approval_groups SET name = ?3, escalation_minutes = ?4, updated_at = ?5 WHERE tenant_id = ?1 AND id = ?2";
pub const DELETE_GROUP_MEMBERS: &str =
    "DELETE FROM approval_group_members WHERE tenant_id = ?1 AND group_id = ?2";
pub const INSERT_GROUP_MEMBER: &str = "INSERT INTO approval_group_members (tenant_id, group_id, user_id, role) VALUES (?1, ?2, ?3, ?4)";
pub const DELETE_GROUP: &str = "DELETE FROM approval_groups WHERE tenant_id = ?1 AND id = ?2";
pub const TENANT_SETTINGS: &str = "SELECT guard, routing FROM tenant_settings WHERE tenant_id = ?1";
pub const UPSERT_TENANT_SETTINGS: &str = "INSERT INTO tenant_settings (tenant_id, guard, routing, updated_at) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (tenant_id) DO UPDATE SET guard = excluded.guard, routing = excluded.routing, updated_at = excluded.updated_at";

// ----- notifications -----

pub const ENQUEUE_NOTIFICATION: &str = "INSERT INTO outbox (tenant_id, approval_id, channel, target, event, payload, next_attempt_at, created_at) \
     SELECT tenant_id, id, ?2, '', ?3, ?4, ?5, ?5 FROM approval_requests WHERE id = ?1";
pub const ENQUEUE_DELIVERY: &str = "INSERT INTO outbox (tenant_id, approval_id, channel, target, recipient, event, payload, dedupe_key, \
     next_attempt_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9) \
     ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING";
pub const CHANNELS: &str = "SELECT channel, config, updated_at FROM notification_channels WHERE tenant_id = ?1 ORDER BY channel";
pub const UPSERT_CHANNEL: &str = "INSERT INTO notification_channels (tenant_id, channel, config, updated_at) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (tenant_id, channel) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at";
pub const DELETE_CHANNEL: &str =
    "DELETE FROM notification_channels WHERE tenant_id = ?1 AND channel = ?2";
pub const USER_EXISTS: &str =
    "SELECT EXISTS (SELECT 1 FROM users WHERE tenant_id = ?1 AND id = ?2)";
pub const UPDATE_WEBHOOK: &str = "UPDATE webhook_endpoints SET url = ?3, events = ?4, secret = ?5, description = ?6, \
     disabled_at = ?7, disabled_reason = ?8, updated_at = ?9 WHERE tenant_id = ?1 AND id = ?2";
pub const DELETE_WEBHOOK: &str = "DELETE FROM webhook_endpoints WHERE tenant_id = ?1 AND id = ?2";
pub const FAIL_DELETED_WEBHOOK_DELIVERIES: &str = "UPDATE outbox SET state = 'failed', last_error = 'the endpoint was deleted' \
     WHERE channel = 'webhook' AND recipient = ?1 AND state = 'pending'";
pub const DELETE_PUSH_SUBSCRIPTION_BY_ENDPOINT: &str =
    "DELETE FROM push_subscriptions WHERE endpoint = ?1";
pub const DELETE_PUSH_SUBSCRIPTION: &str =
    "DELETE FROM push_subscriptions WHERE tenant_id = ?1 AND id = ?2";
pub const REVIEW_TOKEN: &str = "SELECT token_hash, tenant_id, approval_id, user_id, expires_at, created_at FROM review_tokens WHERE token_hash = ?1";
pub const REVIEWERS: &str =
    "SELECT user_id, since FROM approval_reviewers WHERE approval_id = ?1 ORDER BY since, user_id";
pub const INSERT_REVIEW_TOKEN: &str = "INSERT INTO review_tokens (token_hash, tenant_id, approval_id, user_id, expires_at, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (token_hash) DO NOTHING";
/// Deletes `n` fanned-out notification rows, ids `?1` to `?n`.
pub fn delete_notify_jobs(n: usize) -> String {
    let ids: Vec<String> = (1..=n).map(|i| format!("?{i}")).collect();
    format!(
        "DELETE FROM outbox WHERE channel = 'notify' AND id IN ({})",
        ids.join(", ")
    )
}
pub const RETRY_DELIVERY: &str = "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?3, last_error = NULL \
     WHERE id = ?1 AND tenant_id = ?2 AND channel <> 'notify' AND state <> 'pending'";

// ----- OpenID Connect, CIBA and signing keys -----

pub const ENQUEUE_CALLBACK: &str = "INSERT INTO outbox (tenant_id, approval_id, channel, target, secret, event, next_attempt_at, created_at) \
     SELECT tenant_id, approval_id, channel, target, secret, ?2, ?3, ?3 FROM request_subscriptions WHERE approval_id = ?1";
pub const AGENT_DISABLED: &str = "SELECT disabled FROM agents WHERE tenant_id = ?1 AND id = ?2";
pub const DELETE_OIDC_CLIENT: &str =
    "DELETE FROM oidc_clients WHERE tenant_id = ?1 AND client_id = ?2";
pub const INSERT_SUBSCRIPTION: &str = "INSERT INTO request_subscriptions (approval_id, tenant_id, channel, target, secret, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
/// Records a poll only if the polling state is still the one it was judged on (?4, ?5).
pub const RECORD_POLL_IF_UNCHANGED: &str = "UPDATE oidc_requests SET last_poll_at = ?2, interval_secs = ?3 \
     WHERE approval_id = ?1 AND interval_secs = ?4 AND COALESCE(last_poll_at, -1) = COALESCE(?5, -1)";
pub const POLL_SEEN: &str =
    "SELECT interval_secs, last_poll_at FROM oidc_requests WHERE approval_id = ?1";
pub const FORGET_EXPIRED_JTIS: &str = "DELETE FROM oidc_jtis WHERE expires_at < ?1";
pub const INSERT_JTI: &str =
    "INSERT INTO oidc_jtis (client_id, jti, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING";
pub const UPSERT_USER_CODE: &str = "INSERT INTO oidc_user_codes (user_id, tenant_id, code_hash, updated_at) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (user_id) DO UPDATE SET code_hash = excluded.code_hash, updated_at = excluded.updated_at";
pub const USER_CODE_HASH: &str =
    "SELECT code_hash FROM oidc_user_codes WHERE tenant_id = ?1 AND user_id = ?2";
pub const INSERT_SERVER_SECRET: &str = "INSERT INTO server_secrets (name, value, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING";
pub const SERVER_SECRET: &str = "SELECT value FROM server_secrets WHERE name = ?1";
pub const TOKEN_JTI: &str =
    "SELECT token_jti FROM approval_requests WHERE tenant_id = ?1 AND id = ?2";
pub const INSERT_SIGNING_KEY: &str = "INSERT INTO signing_keys (kid, alg, private_der, created_at, active) VALUES (?1, ?2, ?3, ?4, ?5)";
pub const SIGNING_KEYS: &str =
    "SELECT kid, alg, private_der, created_at, active FROM signing_keys ORDER BY created_at";

// ----- approval requests and grants -----

pub const REVIEWER_SINCE: &str =
    "SELECT since FROM approval_reviewers WHERE approval_id = ?1 AND user_id = ?2";
pub const SET_ESCALATION: &str =
    "UPDATE approval_requests SET escalation_level = ?2, next_escalation_at = ?3 WHERE id = ?1";
pub const INSERT_DECISION: &str = "INSERT INTO approval_decisions (approval_id, tenant_id, reviewer_id, reviewer, verdict, comment, channel, decided_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
pub const COUNT_APPROVALS: &str =
    "SELECT COUNT(*) FROM approval_decisions WHERE approval_id = ?1 AND verdict = 'approve'";
pub const SETTLE_REQUEST: &str = "UPDATE approval_requests SET status = ?3, decided_at = ?4, decided_by = ?5, comment = ?6 \
     WHERE tenant_id = ?1 AND id = ?2 AND status = 'pending'";
pub const MARK_TOKEN_ISSUED: &str = "UPDATE approval_requests SET token_issued_at = ?3, token_jti = ?4 \
     WHERE tenant_id = ?1 AND id = ?2 AND status = 'approved' AND token_issued_at IS NULL";
pub const FORGET_EXPIRED_ENDED_GRANTS: &str = "DELETE FROM ended_grants WHERE expires_at < ?1";
pub const INSERT_ENDED_GRANT: &str = "INSERT INTO ended_grants (jti, tenant_id, approval_id, audience, outcome, ended_at, expires_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (jti) DO NOTHING";
pub const GRANT_ENDED: &str = "SELECT 1 FROM ended_grants WHERE jti = ?1";
pub const TIME_OUT_REQUEST: &str = "UPDATE approval_requests SET status = ?2, decided_at = ?3, decided_by = ?4 WHERE id = ?1 AND status = 'pending'";
pub const PENDING_COUNT: &str = "SELECT COUNT(*) FROM approval_requests WHERE status = 'pending'";

// ----- audit trail, migrations and shared inserts -----

pub const MIGRATION_APPLIED: &str = "SELECT version FROM schema_migrations WHERE version = ?1";
pub const INSERT_AUDIT_EVENT: &str = "INSERT INTO audit_events (tenant_id, seq, at, actor_type, actor_id, action, subject, \
     details, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
pub const INSERT_API_KEY: &str = "INSERT INTO api_keys (id, tenant_id, key_hash, prefix, role, user_id, agent_id, name, \
     created_at, revoked_at, audiences) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, ?10)";
pub const INSERT_REVIEWER: &str =
    "INSERT INTO approval_reviewers (approval_id, user_id, since) VALUES (?1, ?2, ?3)";
pub const INSERT_REQUEST: &str = "INSERT INTO approval_requests (id, tenant_id, kind, auth_req_hash, agent_id, user_id, scope, \
     binding_message, context, context_sha256, status, created_at, expires_at, tool_name, session_id, \
     reason, risk_score, threats, policy_id, policy_name, notification_channels, on_behalf_of, \
     approval_group_id, required_approvals, allow_self_approval, default_on_timeout, escalation_level, \
     escalation_plan, next_escalation_at, annotations, mcp_server, mcp_client) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, \
     ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32)";
pub const GROUP: &str = "SELECT id, tenant_id, name, escalation_minutes, created_at, updated_at FROM approval_groups WHERE tenant_id = ?1 AND id = ?2";
pub const GROUP_MEMBERS: &str = "SELECT m.user_id, u.email, m.role FROM approval_group_members m JOIN users u ON u.id = m.user_id \
     WHERE m.tenant_id = ?1 AND m.group_id = ?2 ORDER BY m.role DESC, u.email";

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
