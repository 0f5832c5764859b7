-- Grants that can be checked and spent: executor keys are bound to the audiences they verify,
-- and a grant consumed (single use) or revoked is remembered by its `jti` until it expires.
ALTER TABLE api_keys ADD COLUMN audiences TEXT;

CREATE TABLE ended_grants (
    jti          TEXT PRIMARY KEY,
    tenant_id    TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    approval_id  TEXT NOT NULL,
    audience     TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    ended_at     BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX ended_grants_expiry ON ended_grants (expires_at);
