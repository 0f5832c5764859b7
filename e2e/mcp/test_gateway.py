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
