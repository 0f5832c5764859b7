"""What the tests share: the constants the server is set up with, `connect()`, which opens an MCP
client session through each face of the proxy, and the API calls a reviewer and an admin make
while an MCP client waits."""

from __future__ import annotations

import json
import sys
import tempfile
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

import anyio
import httpx
import httpx2
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, Implementation, TextContent

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
UPSTREAM = HERE / "upstream.py"
PROXY = "default"
GATEWAY_ID = "files"
STDIO_SERVER_NAME = "files-stdio"
UPSTREAM_TOKEN = "upstream-secret-" + uuid.uuid4().hex
CLIENT = Implementation(name="countersign-e2e", version="1.0.0")

BLOCK_POLICY = "destructive tools are blocked"
APPROVAL_POLICY = "echo needs a person"
GROUP = "group_mcp_reviewers"

# The three ways an agent reaches an upstream through Countersign.
MODES = ["wrap-stdio", "wrap-http", "gateway"]


@dataclass
class Env:
    binary: str
    base_url: str
    admin_key: str
    agent_key: str
    reviewer_key: str
    reviewer_email: str
    call_log: Path
    upstream_url: str
    work: Path


def expected_servers(mode: str, env: Env) -> set[str]:
    """What the approval's `mcp.server` may say for each face: the name given to `wrap`, the
    upstream URL's host (with or without its port), the gateway's registered id."""
    if mode == "wrap-stdio":
        return {STDIO_SERVER_NAME}
    if mode == "wrap-http":
        url = urlsplit(env.upstream_url)
        return {url.netloc, str(url.hostname)}
    return {GATEWAY_ID}


def session_id_for(mode: str) -> str | None:
    """The stdio face passes `--session-id`; the others leave it to the proxy."""
    return "mcp-e2e-stdio-session" if mode == "wrap-stdio" else None


@asynccontextmanager
async def connect(
    mode: str,
    env: Env | None = None,
    *,
    gateway_url: str | None = None,
    logging_callback: Any = None,
    elicitation_callback: Any = None,
) -> AsyncIterator[ClientSession]:
    """An initialized MCP client session through `mode`: `direct-stdio` (the upstream itself, no
    proxy), `wrap-stdio` (`countersign mcp wrap -- python upstream.py stdio`, URL and key as
    flags), `wrap-http` (`countersign mcp wrap --upstream-url …`, URL and key from the
    environment) or `gateway` (`POST /mcp/files` with the agent key). A failure carries the
    proxy's stderr."""
    errlog = tempfile.TemporaryFile("w+", encoding="utf-8")
    try:
        async with _transport(mode, env, gateway_url, errlog) as (read, write):
            async with ClientSession(read, write, logging_callback=logging_callback,
                                     elicitation_callback=elicitation_callback, client_info=CLIENT) as session:
                with anyio.fail_after(15):
                    await session.initialize()
                yield session
    except BaseException as exc:
        errlog.seek(0)
        stderr = errlog.read().strip()
        if stderr and isinstance(exc, Exception):
            exc.add_note(f"stderr of {mode}:\n{stderr[-4000:]}")
        raise
    finally:
        errlog.close()


@asynccontextmanager
async def _transport(mode: str, env: Env | None, gateway_url: str | None, errlog: Any) -> AsyncIterator[Any]:
    upstream_cmd = [sys.executable, str(UPSTREAM), "stdio"]
    if mode == "direct-stdio":
        # Without the call log: direct calls are not the proxy's.
        params = StdioServerParameters(command=upstream_cmd[0], args=upstream_cmd[1:])
        async with stdio_client(params, errlog=errlog) as streams:
            yield streams
        return
    assert env is not None
    if mode == "wrap-stdio":
        args = ["mcp", "wrap", "--url", env.base_url, "--key", env.agent_key, "--proxy-id", PROXY,
                "--session-id", str(session_id_for(mode)), "--server-name", STDIO_SERVER_NAME,
                "--", *upstream_cmd]
        params = StdioServerParameters(command=env.binary, args=args,
                                       env={"UPSTREAM_CALL_LOG": str(env.call_log)})
        async with stdio_client(params, errlog=errlog) as streams:
            yield streams
    elif mode == "wrap-http":
        args = ["mcp", "wrap", "--upstream-url", env.upstream_url, "--header", f"X-Upstream-Token: {UPSTREAM_TOKEN}"]
        params = StdioServerParameters(command=env.binary, args=args, env={
            "COUNTERSIGN_URL": env.base_url, "COUNTERSIGN_KEY": env.agent_key,
        })
        async with stdio_client(params, errlog=errlog) as streams:
            yield streams
    elif mode == "gateway":
        assert gateway_url is not None
        headers = {"Authorization": f"Bearer {env.agent_key}"}
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http:
            async with streamable_http_client(gateway_url, http_client=http) as streams:
                yield streams
    else:
        raise ValueError(mode)


def upstream_calls(env: Env) -> list[dict[str, Any]]:
    """Every tools/call the upstream has received this session (stdio and HTTP alike)."""
    return [json.loads(line) for line in env.call_log.read_text().splitlines() if line.strip()]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


async def api(env: Env, key: str, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=env.base_url, headers={"Authorization": f"Bearer {key}"},
                                 timeout=10) as client:
        return await client.request(method, path, json=body)


async def find_pending(
    env: Env, tool: str, arguments: dict[str, Any], answered: dict[str, Any] | None = None, within: float = 10
) -> dict[str, Any]:
    """The reviewer's pending request for exactly this tool call, as `GET /v1/approvals` shows it.
    `answered` holds the call's result once it returned: a call that returns is not held."""
    seen: list[Any] = []
    with anyio.move_on_after(within):
        while True:
            r = await api(env, env.reviewer_key, "GET", "/v1/approvals?status=pending&limit=100")
            assert r.status_code == 200, r.text
            seen = r.json()["approvals"]
            for item in seen:
                if item.get("tool_name") == tool and item.get("context") == arguments:
                    return item
            if answered:
                result = next(iter(answered.values()))
                raise AssertionError(f"{tool} was not held; it returned {dump(result)}")
            await anyio.sleep(0.1)
    raise AssertionError(f"no pending approval for {tool} {json.dumps(arguments)}; pending: {json.dumps(seen)[:2000]}")


async def guard_approval(env: Env, approval_id: str) -> dict[str, Any]:
    r = await api(env, env.admin_key, "GET", f"/v1/guard/{PROXY}/approvals/{approval_id}")
    assert r.status_code == 200, r.text
    return r.json()


async def wait_status(env: Env, approval_id: str, status: str, within: float = 10) -> dict[str, Any]:
    view: dict[str, Any] = {}
    with anyio.move_on_after(within):
        while True:
            view = await guard_approval(env, approval_id)
            if view["status"] == status:
                return view
            await anyio.sleep(0.1)
    raise AssertionError(f"{approval_id} is {view.get('status')!r}, not {status!r}: {json.dumps(view)[:2000]}")


async def approve(env: Env, approval_id: str, comment: str) -> dict[str, Any]:
    r = await api(env, env.reviewer_key, "POST", f"/v1/guard/{PROXY}/approvals/{approval_id}/approve",
                  {"comment": comment})
    assert r.status_code == 200, r.text
    return r.json()


async def reject(env: Env, approval_id: str, reason: str) -> dict[str, Any]:
    r = await api(env, env.reviewer_key, "POST", f"/v1/guard/{PROXY}/approvals/{approval_id}/reject",
                  {"reason": reason})
    assert r.status_code == 200, r.text
    return r.json()
