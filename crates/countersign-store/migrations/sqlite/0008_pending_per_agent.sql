-- The pending cap per agent (limits.max_pending_per_agent) counts an agent's pending requests
-- on every create: an index by agent keeps that proportional to the agent's own requests, not
-- to the tenant's.
CREATE INDEX approval_requests_pending_by_agent ON approval_requests (tenant_id, agent_id, status, expires_at);
