-- Times are unix milliseconds (UTC), as in the SQLite dialect. Ids sort bytewise (COLLATE "C"),
-- so that cursor pagination agrees with SQLite.
CREATE TABLE tenants (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id          TEXT COLLATE "C" PRIMARY KEY,
    tenant_id   TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    email       TEXT NOT NULL,
    name        TEXT NOT NULL,
    disabled    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL,
    UNIQUE (tenant_id, email)
);

CREATE TABLE agents (
    id           TEXT COLLATE "C" PRIMARY KEY,
    tenant_id    TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    name         TEXT NOT NULL,
    trust_level  TEXT NOT NULL,
    disabled     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE api_keys (
    id          TEXT COLLATE "C" PRIMARY KEY,
    tenant_id   TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    key_hash    TEXT NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    role        TEXT NOT NULL,
    user_id     TEXT COLLATE "C" REFERENCES users(id),
    agent_id    TEXT COLLATE "C" REFERENCES agents(id),
    name        TEXT,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id);

CREATE TABLE approval_requests (
    id               TEXT COLLATE "C" PRIMARY KEY,
    tenant_id        TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    kind             TEXT NOT NULL,
    auth_req_hash    TEXT UNIQUE,
    agent_id         TEXT COLLATE "C" NOT NULL REFERENCES agents(id),
    user_id          TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    scope            TEXT NOT NULL,
    binding_message  TEXT NOT NULL,
    context          TEXT NOT NULL,
    context_sha256   TEXT NOT NULL,
    status           TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    decided_at       BIGINT,
    decided_by       TEXT,
    comment          TEXT,
    token_issued_at  BIGINT,
    token_jti        TEXT
);
CREATE INDEX approval_requests_sweep ON approval_requests (expires_at) WHERE status = 'pending';
CREATE INDEX approval_requests_by_status ON approval_requests (tenant_id, status, id);
CREATE INDEX approval_requests_by_reviewer ON approval_requests (tenant_id, user_id, status, id);

CREATE TABLE audit_events (
    tenant_id   TEXT COLLATE "C" NOT NULL,
    seq         BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    actor_type  TEXT NOT NULL,
    actor_id    TEXT NOT NULL,
    action      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    details     TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

-- The end of each tenant's chain. Appending locks this row, so concurrent writers on any
-- replica extend the chain one after another.
CREATE TABLE audit_heads (
    tenant_id  TEXT COLLATE "C" PRIMARY KEY,
    seq        BIGINT NOT NULL,
    hash       TEXT NOT NULL
);

CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    alg          TEXT NOT NULL,
    private_der  BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    active       BOOLEAN NOT NULL
);
