-- OpenID Connect CIBA: agents registered as clients, the state of CIBA requests, replay
-- protection for client assertions, server-wide secrets, and the durable outbox.
CREATE TABLE oidc_clients (
    client_id            TEXT COLLATE "C" PRIMARY KEY REFERENCES agents(id),
    tenant_id            TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    auth_method          TEXT NOT NULL,
    secret_hash          TEXT,
    jwks                 TEXT,
    delivery_mode        TEXT NOT NULL,
    notification_endpoint TEXT,
    request_signing_alg  TEXT,
    user_code_parameter  BOOLEAN NOT NULL DEFAULT FALSE,
    grant_types          TEXT NOT NULL,
    created_at           BIGINT NOT NULL
);
CREATE INDEX oidc_clients_tenant ON oidc_clients (tenant_id, client_id);

CREATE TABLE oidc_requests (
    approval_id    TEXT COLLATE "C" PRIMARY KEY REFERENCES approval_requests(id),
    tenant_id      TEXT COLLATE "C" NOT NULL,
    client_id      TEXT COLLATE "C" NOT NULL,
    delivery_mode  TEXT NOT NULL,
    scope          TEXT NOT NULL,
    acr            TEXT,
    interval_secs  BIGINT NOT NULL,
    last_poll_at   BIGINT
);

-- A user's user code (CIBA §7.1 `user_code`), stored hashed.
CREATE TABLE oidc_user_codes (
    user_id     TEXT COLLATE "C" PRIMARY KEY REFERENCES users(id),
    tenant_id   TEXT COLLATE "C" NOT NULL,
    code_hash   TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- `jti`s of client assertions and signed requests, kept until they expire.
CREATE TABLE oidc_jtis (
    client_id   TEXT COLLATE "C" NOT NULL,
    jti         TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX oidc_jtis_expiry ON oidc_jtis (expires_at);

CREATE TABLE server_secrets (
    name        TEXT PRIMARY KEY,
    value       BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Who wants to hear about a request's state changes (CIBA ping/push; later email, chat,
-- webhooks). Written with the request.
CREATE TABLE request_subscriptions (
    approval_id  TEXT COLLATE "C" NOT NULL REFERENCES approval_requests(id),
    tenant_id    TEXT COLLATE "C" NOT NULL,
    channel      TEXT NOT NULL,
    target       TEXT NOT NULL,
    secret       TEXT,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (approval_id, channel, target)
);

-- One row per subscription per state change, written in the transaction of the change.
CREATE TABLE outbox (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        TEXT COLLATE "C" NOT NULL,
    approval_id      TEXT COLLATE "C" NOT NULL,
    channel          TEXT NOT NULL,
    target           TEXT NOT NULL,
    secret           TEXT,
    event            TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending',
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    delivered_at     BIGINT,
    last_error       TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_by_request ON outbox (approval_id);
