"""The protocol versions current clients speak open a session through every face, and the proxy
answers with the version the client asked for (the upstream speaks them all)."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import tempfile
from typing import Any

import httpx
import pytest
from harness import UPSTREAM, Env

VERSIONS = ["2025-06-18", "2025-11-25"]


def initialize(version: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {},
                   "clientInfo": {"name": "countersign-e2e", "version": "1.0.0"}},
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_wrap_answers_initialize_with_the_clients_version(env: Env, version: str) -> None:
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [env.binary, "mcp", "wrap", "--url", env.base_url, "--key", env.agent_key,
             "--", sys.executable, str(UPSTREAM), "stdio"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(initialize(version)) + "\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], 15)
            line = proc.stdout.readline() if ready else ""
        finally:
            proc.stdin.close()  # end of the session: wrap stops its upstream and exits
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        err.seek(0)
        assert line, f"no answer to initialize within 15 s; stderr:\n{err.read()[-3000:]}"
    answer = json.loads(line)
    assert answer.get("result", {}).get("protocolVersion") == version, answer


@pytest.mark.parametrize("version", VERSIONS)
def test_the_gateway_answers_initialize_with_the_clients_version(env: Env, gateway: str, version: str) -> None:
    r = httpx.post(
        gateway, json=initialize(version), timeout=10,
        headers={"Authorization": f"Bearer {env.agent_key}", "Accept": "application/json, text/event-stream"},
    )
    assert r.status_code == 200, (r.status_code, r.text)
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in r.text.splitlines() if line.startswith("data:")]
        answer = json.loads(next(d for d in data if d))
    else:
        answer = r.json()
    assert answer.get("result", {}).get("protocolVersion") == version, answer
