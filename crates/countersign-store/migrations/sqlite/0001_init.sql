-- Times are unix milliseconds (UTC). Ids are prefixed UUIDv7s, so they sort by creation time.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    email       TEXT NOT NULL,
    name        TEXT NOT NULL,
    disabled    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    UNIQUE (tenant_id, email)
);

CREATE TABLE agents (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    name         TEXT NOT NULL,
    trust_level  TEXT NOT NULL,
    disabled     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    key_hash    TEXT NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    role        TEXT NOT NULL,
    user_id     TEXT REFERENCES users(id),
    agent_id    TEXT REFERENCES agents(id),
    name        TEXT,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id);

CREATE TABLE approval_requests (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    kind             TEXT NOT NULL,
    auth_req_hash    TEXT UNIQUE,
    agent_id         TEXT NOT NULL REFERENCES agents(id),
    user_id          TEXT NOT NULL REFERENCES users(id),
    scope            TEXT NOT NULL,
    binding_message  TEXT NOT NULL,
    context          TEXT NOT NULL,
    context_sha256   TEXT NOT NULL,
    status           TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    decided_at       INTEGER,
    decided_by       TEXT,
    comment          TEXT,
    token_issued_at  INTEGER,
    token_jti        TEXT
);
CREATE INDEX approval_requests_sweep ON approval_requests (status, expires_at);
CREATE INDEX approval_requests_by_status ON approval_requests (tenant_id, status, id);
CREATE INDEX approval_requests_by_reviewer ON approval_requests (tenant_id, user_id, status, id);

CREATE TABLE audit_events (
    tenant_id   TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    actor_type  TEXT NOT NULL,
    actor_id    TEXT NOT NULL,
    action      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    details     TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
) WITHOUT ROWID;

CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    alg          TEXT NOT NULL,
    private_der  BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    active       INTEGER NOT NULL
);
