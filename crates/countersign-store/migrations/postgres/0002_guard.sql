-- The guard: tool-call approvals with policies, groups, routing, escalation and quorum.
ALTER TABLE approval_requests ALTER COLUMN user_id DROP NOT NULL;
ALTER TABLE approval_requests
    ADD COLUMN tool_name              TEXT,
    ADD COLUMN session_id             TEXT,
    ADD COLUMN reason                 TEXT,
    ADD COLUMN risk_score             DOUBLE PRECISION,
    ADD COLUMN threats                TEXT,
    ADD COLUMN policy_id              TEXT,
    ADD COLUMN policy_name            TEXT,
    ADD COLUMN notification_channels  TEXT,
    ADD COLUMN on_behalf_of           TEXT,
    ADD COLUMN approval_group_id      TEXT,
    ADD COLUMN required_approvals     INTEGER NOT NULL DEFAULT 1,
    ADD COLUMN allow_self_approval    BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN default_on_timeout     TEXT NOT NULL DEFAULT 'reject',
    ADD COLUMN escalation_level       INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN escalation_plan        TEXT,
    ADD COLUMN next_escalation_at     BIGINT;
DROP INDEX approval_requests_by_reviewer;
CREATE INDEX approval_requests_escalation ON approval_requests (next_escalation_at) WHERE status = 'pending';
CREATE INDEX approval_requests_by_kind ON approval_requests (tenant_id, kind, id);
CREATE UNIQUE INDEX approval_requests_pending_tool_call
    ON approval_requests (tenant_id, agent_id, session_id, tool_name, context_sha256)
    WHERE status = 'pending' AND kind = 'tool';

CREATE TABLE approval_reviewers (
    approval_id  TEXT COLLATE "C" NOT NULL,
    user_id      TEXT COLLATE "C" NOT NULL,
    since        BIGINT NOT NULL,
    PRIMARY KEY (approval_id, user_id)
);
CREATE INDEX approval_reviewers_by_user ON approval_reviewers (user_id, since);
INSERT INTO approval_reviewers (approval_id, user_id, since)
SELECT id, user_id, created_at FROM approval_requests WHERE user_id IS NOT NULL;

CREATE TABLE approval_decisions (
    approval_id   TEXT COLLATE "C" NOT NULL,
    tenant_id     TEXT COLLATE "C" NOT NULL,
    reviewer_id   TEXT NOT NULL,
    reviewer      TEXT NOT NULL,
    verdict       TEXT NOT NULL,
    comment       TEXT,
    channel       TEXT NOT NULL,
    decided_at    BIGINT NOT NULL,
    PRIMARY KEY (approval_id, reviewer_id)
);
INSERT INTO approval_decisions (approval_id, tenant_id, reviewer_id, reviewer, verdict, comment, channel, decided_at)
SELECT id, tenant_id, decided_by, decided_by, CASE status WHEN 'approved' THEN 'approve' ELSE 'reject' END,
    comment, 'api', decided_at
FROM approval_requests WHERE status IN ('approved', 'rejected') AND decided_by IS NOT NULL;

CREATE TABLE policies (
    id               TEXT COLLATE "C" PRIMARY KEY,
    tenant_id        TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    name             TEXT NOT NULL,
    description      TEXT,
    tool_pattern     TEXT NOT NULL,
    action           TEXT NOT NULL,
    priority         BIGINT NOT NULL,
    is_active        BOOLEAN NOT NULL,
    condition        TEXT,
    approval_config  TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX policies_by_tenant ON policies (tenant_id, id);

CREATE TABLE approval_groups (
    tenant_id           TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    id                  TEXT COLLATE "C" NOT NULL,
    name                TEXT NOT NULL,
    escalation_minutes  INTEGER,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE approval_group_members (
    tenant_id  TEXT COLLATE "C" NOT NULL,
    group_id   TEXT COLLATE "C" NOT NULL,
    user_id    TEXT COLLATE "C" NOT NULL REFERENCES users(id),
    role       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, group_id, user_id)
);

CREATE TABLE tenant_settings (
    tenant_id   TEXT COLLATE "C" PRIMARY KEY REFERENCES tenants(id),
    guard       TEXT NOT NULL,
    routing     TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
