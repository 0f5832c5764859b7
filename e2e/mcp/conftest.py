"""One real countersign server for the session (with an agent, a reviewer, an approval group and
the two MCP policies), one streamable-HTTP upstream, and the gateway's registration of it."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import APPROVAL_POLICY, BLOCK_POLICY, GATEWAY_ID, GROUP, PROXY, REPO, UPSTREAM, UPSTREAM_TOKEN, Env


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _binary() -> str:
    binary = os.environ.get("COUNTERSIGN_BIN") or str(REPO / "target" / "debug" / "countersign")
    if not Path(binary).is_file():
        pytest.fail(f"no countersign binary at {binary} (build it, or set COUNTERSIGN_BIN)")
    return binary


@pytest.fixture(scope="session")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mcp")


@pytest.fixture(scope="session")
def call_log(work: Path) -> Path:
    path = work / "upstream-calls.jsonl"
    path.touch()
    return path


@pytest.fixture(scope="session")
def upstream_url(work: Path, call_log: Path) -> Any:
    """The upstream served over streamable HTTP (for `wrap --upstream-url` and the gateway)."""
    url_file = work / "upstream-url"
    log = open(work / "upstream-http.log", "w")
    proc = subprocess.Popen(
        [sys.executable, str(UPSTREAM), "http", str(url_file)],
        env={**os.environ, "UPSTREAM_CALL_LOG": str(call_log), "UPSTREAM_TOKEN": UPSTREAM_TOKEN},
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 20
        while not (url_file.exists() and url_file.read_text().endswith("\n")):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the HTTP upstream did not start:\n" + (work / "upstream-http.log").read_text())
            time.sleep(0.05)
        yield url_file.read_text().strip()
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="session")
def env(work: Path, call_log: Path, upstream_url: str) -> Any:
    binary = _binary()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    admin_key = "csk_mcp_e2e_admin_" + secrets.token_hex(24)
    # The server reads every COUNTERSIGN_* variable as configuration and refuses unknown ones
    # (COUNTERSIGN_BIN among them), so it gets only the ones set here.
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COUNTERSIGN_")},
        "COUNTERSIGN_BOOTSTRAP_ADMIN_KEY": admin_key,
        "COUNTERSIGN_LOG__LEVEL": "warn",
        "COUNTERSIGN_PUBLIC_URL": base,
        "COUNTERSIGN_OUTBOUND__ALLOW_HTTP": "true",
        "COUNTERSIGN_OUTBOUND__ALLOW_PRIVATE_NETWORKS": "true",
        "COUNTERSIGN_LIMITS__PER_KEY_PER_SECOND": "0",
        "COUNTERSIGN_LIMITS__PER_IP_PER_SECOND": "0",
        "COUNTERSIGN_LIMITS__MAX_PENDING_PER_AGENT": "0",
    }
    server_log = work / "server.log"
    log = open(server_log, "w")
    proc = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(work / "data")],
        env=environ,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail("countersign exited:\n" + server_log.read_text())
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("countersign did not become ready:\n" + server_log.read_text())
            time.sleep(0.05)

        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin_key}"}) as admin:

            def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
                r = admin.post(path, json=body)
                assert r.status_code in (200, 201), (path, r.status_code, r.text)
                return r.json()

            email = "mcp-reviewer@example.com"
            user = post("/v1/admin/users", {"email": email, "name": "Mia Reviewer"})
            agent = post("/v1/admin/agents", {"name": "mcp-e2e-agent", "trust_level": "standard"})
            agent_key = post("/v1/admin/api-keys", {"role": "agent", "agent_id": agent["id"]})["key"]
            reviewer_key = post("/v1/admin/api-keys", {"role": "reviewer", "user_id": user["id"]})["key"]
            g = f"/v1/guard/{PROXY}"
            post(f"{g}/approval-groups", {
                "id": GROUP, "name": "MCP Reviewers",
                "members": [{"email": email, "role": "primary"}], "escalation_minutes": 15,
            })
            post(f"{g}/policies", {
                "name": BLOCK_POLICY, "tool_pattern": "*",
                "condition": "tool.annotations.destructiveHint",
                "action": "block", "priority": 10,
            })
            post(f"{g}/policies", {
                "name": APPROVAL_POLICY, "tool_pattern": "echo",
                "action": "require_approval", "priority": 5,
                "approval_config": {"timeout_minutes": 10, "approval_group_id": GROUP},
            })
            r = admin.get(f"{g}/settings")
            assert r.status_code == 200, r.text
            assert r.json().get("default_action", "allow") == "allow", r.text

        yield Env(binary, base, admin_key, agent_key, reviewer_key, email, call_log, upstream_url, work)
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="session")
def gateway(env: Env) -> str:
    """The HTTP upstream registered with the in-server gateway; its endpoint."""
    r = httpx.post(
        f"{env.base_url}/v1/admin/mcp-servers",
        headers={"Authorization": f"Bearer {env.admin_key}"},
        json={"id": GATEWAY_ID, "url": env.upstream_url, "headers": {"X-Upstream-Token": UPSTREAM_TOKEN}},
    )
    assert r.status_code in (200, 201), ("POST /v1/admin/mcp-servers", r.status_code, r.text)
    # The header's value is a secret: never shown again.
    assert UPSTREAM_TOKEN not in r.text, r.text
    return f"{env.base_url}/mcp/{GATEWAY_ID}"


