-- Reviewer notifications through the one durable outbox. A state change writes a `notify`
-- row in its own transaction; the worker fans it out into one row per delivery (email,
-- Slack, Teams, webhook, push), each retried on its own.
ALTER TABLE outbox ADD COLUMN recipient TEXT;
ALTER TABLE outbox ADD COLUMN payload TEXT;
ALTER TABLE outbox ADD COLUMN dedupe_key TEXT;
ALTER TABLE outbox ADD COLUMN status_code INTEGER;
ALTER TABLE outbox ADD COLUMN external_ref TEXT;
CREATE UNIQUE INDEX outbox_dedupe ON outbox (dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX outbox_by_recipient ON outbox (recipient, id) WHERE recipient IS NOT NULL;

-- A tenant's Slack, Teams and email settings (JSON; secrets never leave the server).
CREATE TABLE notification_channels (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    channel     TEXT NOT NULL,
    config      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, channel)
);

-- How each person wants to be told; absent means the defaults.
CREATE TABLE notification_preferences (
    user_id        TEXT PRIMARY KEY REFERENCES users(id),
    tenant_id      TEXT NOT NULL,
    email          INTEGER NOT NULL,
    slack          INTEGER NOT NULL,
    push           INTEGER NOT NULL,
    slack_user_id  TEXT,
    updated_at     INTEGER NOT NULL
);
CREATE UNIQUE INDEX notification_preferences_slack ON notification_preferences (tenant_id, slack_user_id)
    WHERE slack_user_id IS NOT NULL;

CREATE TABLE webhook_endpoints (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    url              TEXT NOT NULL,
    events           TEXT NOT NULL,
    secret           TEXT NOT NULL,
    description      TEXT,
    disabled_at      INTEGER,
    disabled_reason  TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX webhook_endpoints_by_tenant ON webhook_endpoints (tenant_id, id);

CREATE TABLE push_subscriptions (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    user_id     TEXT NOT NULL REFERENCES users(id),
    endpoint    TEXT NOT NULL UNIQUE,
    p256dh      TEXT NOT NULL,
    auth        TEXT NOT NULL,
    user_agent  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX push_subscriptions_by_user ON push_subscriptions (tenant_id, user_id);

-- One-click review links: one token per (request, reviewer), stored hashed, expiring with
-- the request.
CREATE TABLE review_tokens (
    token_hash   TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    approval_id  TEXT NOT NULL REFERENCES approval_requests(id),
    user_id      TEXT NOT NULL REFERENCES users(id),
    expires_at   INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX review_tokens_by_request ON review_tokens (approval_id);
