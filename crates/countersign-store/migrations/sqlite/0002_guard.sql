-- The guard: tool-call approvals with policies, groups, routing, escalation and quorum.
-- approval_requests is rebuilt because `user_id` becomes optional (tool calls are routed to
-- groups, not addressed to one user).
CREATE TABLE approval_requests_v2 (
    id                     TEXT PRIMARY KEY,
    tenant_id              TEXT NOT NULL REFERENCES tenants(id),
    kind                   TEXT NOT NULL,
    auth_req_hash          TEXT UNIQUE,
    agent_id               TEXT NOT NULL REFERENCES agents(id),
    user_id                TEXT REFERENCES users(id),
    scope                  TEXT NOT NULL,
    binding_message        TEXT NOT NULL,
    context                TEXT NOT NULL,
    context_sha256         TEXT NOT NULL,
    status                 TEXT NOT NULL,
    created_at             INTEGER NOT NULL,
    expires_at             INTEGER NOT NULL,
    decided_at             INTEGER,
    decided_by             TEXT,
    comment                TEXT,
    token_issued_at        INTEGER,
    token_jti              TEXT,
    tool_name              TEXT,
    session_id             TEXT,
    reason                 TEXT,
    risk_score             REAL,
    threats                TEXT,
    policy_id              TEXT,
    policy_name            TEXT,
    notification_channels  TEXT,
    on_behalf_of           TEXT,
    approval_group_id      TEXT,
    required_approvals     INTEGER NOT NULL DEFAULT 1,
    allow_self_approval    INTEGER NOT NULL DEFAULT 0,
    default_on_timeout     TEXT NOT NULL DEFAULT 'reject',
    escalation_level       INTEGER NOT NULL DEFAULT 0,
    escalation_plan        TEXT,
    next_escalation_at     INTEGER
);
INSERT INTO approval_requests_v2 (id, tenant_id, kind, auth_req_hash, agent_id, user_id, scope,
    binding_message, context, context_sha256, status, created_at, expires_at, decided_at,
    decided_by, comment, token_issued_at, token_jti)
SELECT id, tenant_id, kind, auth_req_hash, agent_id, user_id, scope, binding_message, context,
    context_sha256, status, created_at, expires_at, decided_at, decided_by, comment,
    token_issued_at, token_jti
FROM approval_requests;
DROP TABLE approval_requests;
ALTER TABLE approval_requests_v2 RENAME TO approval_requests;
CREATE INDEX approval_requests_sweep ON approval_requests (status, expires_at);
CREATE INDEX approval_requests_escalation ON approval_requests (status, next_escalation_at);
CREATE INDEX approval_requests_by_status ON approval_requests (tenant_id, status, id);
CREATE INDEX approval_requests_by_kind ON approval_requests (tenant_id, kind, id);
-- One pending approval per identical tool call (same agent, session, tool and arguments).
CREATE UNIQUE INDEX approval_requests_pending_tool_call
    ON approval_requests (tenant_id, agent_id, session_id, tool_name, context_sha256)
    WHERE status = 'pending' AND kind = 'tool';

-- Who may decide a request, and from when (backups and escalation groups join later).
CREATE TABLE approval_reviewers (
    approval_id  TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    since        INTEGER NOT NULL,
    PRIMARY KEY (approval_id, user_id)
) WITHOUT ROWID;
CREATE INDEX approval_reviewers_by_user ON approval_reviewers (user_id, since);
INSERT INTO approval_reviewers (approval_id, user_id, since)
SELECT id, user_id, created_at FROM approval_requests WHERE user_id IS NOT NULL;

-- Every reviewer's decision; a quorum needs several distinct ones.
CREATE TABLE approval_decisions (
    approval_id   TEXT NOT NULL,
    tenant_id     TEXT NOT NULL,
    reviewer_id   TEXT NOT NULL,
    reviewer      TEXT NOT NULL,
    verdict       TEXT NOT NULL,
    comment       TEXT,
    channel       TEXT NOT NULL,
    decided_at    INTEGER NOT NULL,
    PRIMARY KEY (approval_id, reviewer_id)
) WITHOUT ROWID;
INSERT INTO approval_decisions (approval_id, tenant_id, reviewer_id, reviewer, verdict, comment, channel, decided_at)
SELECT id, tenant_id, decided_by, decided_by, CASE status WHEN 'approved' THEN 'approve' ELSE 'reject' END,
    comment, 'api', decided_at
FROM approval_requests WHERE status IN ('approved', 'rejected') AND decided_by IS NOT NULL;

CREATE TABLE policies (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    name             TEXT NOT NULL,
    description      TEXT,
    tool_pattern     TEXT NOT NULL,
    action           TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    is_active        INTEGER NOT NULL,
    condition        TEXT,
    approval_config  TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX policies_by_tenant ON policies (tenant_id, id);

CREATE TABLE approval_groups (
    tenant_id           TEXT NOT NULL REFERENCES tenants(id),
    id                  TEXT NOT NULL,
    name                TEXT NOT NULL,
    escalation_minutes  INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) WITHOUT ROWID;

CREATE TABLE approval_group_members (
    tenant_id  TEXT NOT NULL,
    group_id   TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id),
    role       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, group_id, user_id)
) WITHOUT ROWID;

-- Guard settings and routing rules, as JSON documents.
CREATE TABLE tenant_settings (
    tenant_id   TEXT PRIMARY KEY REFERENCES tenants(id),
    guard       TEXT NOT NULL,
    routing     TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
