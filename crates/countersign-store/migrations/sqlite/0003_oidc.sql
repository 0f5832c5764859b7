-- OpenID Connect CIBA: agents registered as clients, the state of CIBA requests, replay
-- protection for client assertions, server-wide secrets, and the durable outbox.
CREATE TABLE oidc_clients (
    client_id            TEXT PRIMARY KEY REFERENCES agents(id),
    tenant_id            TEXT NOT NULL REFERENCES tenants(id),
    auth_method          TEXT NOT NULL,
    secret_hash          TEXT,
    jwks                 TEXT,
    delivery_mode        TEXT NOT NULL,
    notification_endpoint TEXT,
    request_signing_alg  TEXT,
    user_code_parameter  INTEGER NOT NULL DEFAULT 0,
    grant_types          TEXT NOT NULL,
    created_at           INTEGER NOT NULL
);
CREATE INDEX oidc_clients_tenant ON oidc_clients (tenant_id, client_id);

CREATE TABLE oidc_requests (
    approval_id    TEXT PRIMARY KEY REFERENCES approval_requests(id),
    tenant_id      TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    delivery_mode  TEXT NOT NULL,
    scope          TEXT NOT NULL,
    acr            TEXT,
    interval_secs  INTEGER NOT NULL,
    last_poll_at   INTEGER
);

-- A user's user code (CIBA §7.1 `user_code`), stored hashed.
CREATE TABLE oidc_user_codes (
    user_id     TEXT PRIMARY KEY REFERENCES users(id),
    tenant_id   TEXT NOT NULL,
    code_hash   TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- `jti`s of client assertions and signed requests, kept until they expire.
CREATE TABLE oidc_jtis (
    client_id   TEXT NOT NULL,
    jti         TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
) WITHOUT ROWID;
CREATE INDEX oidc_jtis_expiry ON oidc_jtis (expires_at);

CREATE TABLE server_secrets (
    name        TEXT PRIMARY KEY,
    value       BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Who wants to hear about a request's state changes (CIBA ping/push; later email, chat,
-- webhooks). Written with the request.
CREATE TABLE request_subscriptions (
    approval_id  TEXT NOT NULL REFERENCES approval_requests(id),
    tenant_id    TEXT NOT NULL,
    channel      TEXT NOT NULL,
    target       TEXT NOT NULL,
    secret       TEXT,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (approval_id, channel, target)
);

-- One row per subscription per state change, written in the transaction of the change.
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id        TEXT NOT NULL,
    approval_id      TEXT NOT NULL,
    channel          TEXT NOT NULL,
    target           TEXT NOT NULL,
    secret           TEXT,
    event            TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    delivered_at     INTEGER,
    last_error       TEXT
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX outbox_by_request ON outbox (approval_id);
