-- Answers remembered under an `Idempotency-Key`, so a retried call gets the first answer.
-- Written in the transaction that creates the request the answer names. The key itself is
-- not stored (only its SHA-256), and the answer is sealed with a key derived from it.
CREATE TABLE idempotency_keys (
    tenant_id    TEXT NOT NULL,
    owner        TEXT NOT NULL,
    key_hash     TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    status       INTEGER NOT NULL,
    answer       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, owner, key_hash)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
