"""The in-server gateway `/mcp/{id}` lets in only agents, and only to servers an admin registered."""

from __future__ import annotations

import httpx
import pytest
from harness import Env

INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "countersign-e2e", "version": "1.0.0"}},
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def post(url: str, key: str | None) -> httpx.Response:
    headers = dict(HEADERS)
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(url, json=INITIALIZE, headers=headers, timeout=10)


@pytest.mark.parametrize("key", [None, "csk_not_a_key_0123456789abcdef0123456789abcdef"], ids=["no-key", "wrong-key"])
def test_without_a_valid_agent_key_the_gateway_answers_401(env: Env, gateway: str, key: str | None) -> None:
    r = post(gateway, key)
    assert r.status_code == 401, (r.status_code, r.text)


def test_an_unknown_server_id_is_404(env: Env, gateway: str) -> None:
    r = post(f"{env.base_url}/mcp/no-such-server", env.agent_key)
    assert r.status_code == 404, (r.status_code, r.text)


def test_the_agent_key_opens_a_session(env: Env, gateway: str) -> None:
    r = post(gateway, env.agent_key)
    assert r.status_code == 200, (r.status_code, r.text)
    assert "protocolVersion" in r.text, r.text


def test_a_reviewer_key_is_403(env: Env, gateway: str) -> None:
    r = post(gateway, env.reviewer_key)
    assert r.status_code == 403, (r.status_code, r.text)


def test_a_session_belongs_to_the_key_that_opened_it(env: Env, gateway: str) -> None:
    opened = post(gateway, env.agent_key)
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    # Another agent of the tenant, with its own key.
    admin = {"Authorization": f"Bearer {env.admin_key}"}
    agent = httpx.post(f"{env.base_url}/v1/admin/agents", headers=admin, timeout=10,
                       json={"name": "another agent", "trust_level": "standard"})
    assert agent.status_code == 201, agent.text
    key = httpx.post(f"{env.base_url}/v1/admin/api-keys", headers=admin, timeout=10,
                     json={"role": "agent", "agent_id": agent.json()["id"]})
    assert key.status_code == 201, key.text
    other = key.json()["key"]
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    for who, status in [(other, 404), (env.agent_key, 200)]:
        headers = {**HEADERS, "Authorization": f"Bearer {who}", "Mcp-Session-Id": session,
                   "Mcp-Protocol-Version": "2025-06-18"}
        r = httpx.post(gateway, json=listing, headers=headers, timeout=10)
        assert r.status_code == status, (who == other, r.status_code, r.text)
    assert "delete_records" in r.text
