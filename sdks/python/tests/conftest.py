"""One real countersign server for the whole test session, with an admin, an agent, a reviewer
and an executor key, an approval group and guard policies."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
AUDIENCE = "https://payments.example.com"


@dataclass
class Env:
    base_url: str
    admin_key: str
    agent_key: str
    reviewer_key: str
    executor_key: str
    user_id: str
    reviewer_email: str
    proxy_id: str = "default"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory):
    binary = os.environ.get("COUNTERSIGN_BIN") or str(REPO / "target" / "debug" / "countersign")
    if not Path(binary).exists():
        pytest.fail(f"no countersign binary at {binary} (set COUNTERSIGN_BIN)")
    work = tmp_path_factory.mktemp("server")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    admin_key = "csk_pytest_admin_" + secrets.token_hex(24)
    # The server reads every COUNTERSIGN_* variable as configuration and refuses unknown ones
    # (COUNTERSIGN_BIN among them), so the child gets only the ones set here.
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COUNTERSIGN_")},
        "COUNTERSIGN_BOOTSTRAP_ADMIN_KEY": admin_key,
        "COUNTERSIGN_LOG__LEVEL": "warn",
        "COUNTERSIGN_PUBLIC_URL": base,
        "COUNTERSIGN_LIMITS__PER_KEY_PER_SECOND": "0",
        "COUNTERSIGN_LIMITS__PER_IP_PER_SECOND": "0",
        "COUNTERSIGN_LIMITS__MAX_PENDING_PER_AGENT": "0",
    }
    log = open(work / "server.log", "w")
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
                pytest.fail("countersign exited:\n" + (work / "server.log").read_text())
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("countersign did not become ready")
            time.sleep(0.05)

        admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin_key}"})

        def post(path: str, body: dict) -> dict:
            r = admin.post(path, json=body)
            assert r.status_code in (200, 201), (path, r.status_code, r.text)
            return r.json()

        email = "reviewer@example.com"
        user = post("/v1/admin/users", {"email": email, "name": "Rita Reviewer"})
        agent = post("/v1/admin/agents", {"name": "pytest-agent", "trust_level": "standard"})
        agent_key = post("/v1/admin/api-keys", {"role": "agent", "agent_id": agent["id"]})["key"]
        reviewer_key = post("/v1/admin/api-keys", {"role": "reviewer", "user_id": user["id"]})["key"]
        executor_key = post("/v1/admin/api-keys", {"role": "executor", "audiences": [AUDIENCE]})["key"]
        g = "/v1/guard/default"
        post(f"{g}/approval-groups", {
            "id": "group_finance", "name": "Finance Team",
            "members": [{"email": email, "role": "primary"}], "escalation_minutes": 15,
        })
        post(f"{g}/policies", {
            "name": "Approve Financial Operations", "tool_pattern": "payment_*",
            "action": "require_approval",
            "approval_config": {"timeout_minutes": 30, "notification_channels": ["email"],
                                "approval_group_id": "group_finance"},
        })
        post(f"{g}/policies", {"name": "No deletions", "tool_pattern": "delete_*", "action": "block"})
        r = admin.get(f"{g}/settings")
        settings = r.json()
        settings["grant_audiences"] = [AUDIENCE]
        r = admin.put(f"{g}/settings", json=settings)
        assert r.status_code == 200, r.text
        admin.close()
        yield Env(base, admin_key, agent_key, reviewer_key, executor_key, user["id"], email)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def agent(env: Env):
    from countersign import Countersign

    with Countersign(env.base_url, env.agent_key) as client:
        yield client


@pytest.fixture
def reviewer(env: Env):
    from countersign import Countersign

    with Countersign(env.base_url, env.reviewer_key) as client:
        yield client


@pytest.fixture
def admin(env: Env):
    from countersign import Countersign

    with Countersign(env.base_url, env.admin_key) as client:
        yield client
