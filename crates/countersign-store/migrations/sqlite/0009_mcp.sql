-- MCP: a tool call that came through an MCP gateway keeps the tool's annotations (JSON, as
-- the gateway sent them) and the server and client it came through.
ALTER TABLE approval_requests ADD COLUMN annotations TEXT;
ALTER TABLE approval_requests ADD COLUMN mcp_server TEXT;
ALTER TABLE approval_requests ADD COLUMN mcp_client TEXT;
-- The same tool call through two MCP servers is two different actions: one pending approval
-- per identical call per server.
DROP INDEX approval_requests_pending_tool_call;
CREATE UNIQUE INDEX approval_requests_pending_tool_call
    ON approval_requests (tenant_id, agent_id, session_id, tool_name, context_sha256, COALESCE(mcp_server, ''))
    WHERE status = 'pending' AND kind = 'tool';

-- Upstream MCP servers (streamable HTTP) an admin registered for the in-server gateway
-- (`/mcp/{id}`). `headers` is a JSON array of [name, value] pairs; the values are secrets.
CREATE TABLE mcp_servers (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    id          TEXT NOT NULL,
    url         TEXT NOT NULL,
    headers     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) WITHOUT ROWID;
