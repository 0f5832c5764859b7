"""The suite's own upstream, without any proxy: what the proxy tests compare against must hold."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest
from harness import UPSTREAM_TOKEN, connect, dump, text_of
from test_versions import initialize

pytestmark = pytest.mark.anyio


async def test_the_upstream_serves_its_tools_resource_and_prompt() -> None:
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    with anyio.fail_after(20):
        async with connect("direct-stdio") as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
            assert set(tools) == {"lookup", "delete_records", "echo", "slow"}
            assert dump(tools["lookup"].annotations) == {"readOnlyHint": True}
            assert dump(tools["delete_records"].annotations) == {"destructiveHint": True}
            assert dump(tools["echo"].annotations) == {"readOnlyHint": False, "destructiveHint": False}
            assert dump(tools["slow"].annotations) == {"readOnlyHint": True}
            echo = await session.call_tool("echo", {"text": "hello", "n": 3})
            assert json.loads(text_of(echo)) == echo.structured_content == {"text": "hello", "n": 3}
            assert text_of(await session.call_tool("delete_records", {"table": "t"})) == "deleted"
            slow = await session.call_tool("slow", {"seconds": 0.1}, progress_callback=on_progress)
            assert text_of(slow) == "waited 0.1 seconds"
            assert progress[-1] == (4.0, 4.0, "done")
            assert [r.uri for r in (await session.list_resources()).resources] == ["note://greeting"]
            assert [p.name for p in (await session.list_prompts()).prompts] == ["summarize"]


def test_the_http_upstream_wants_its_token(upstream_url: str) -> None:
    headers = {"Accept": "application/json, text/event-stream"}
    assert httpx.post(upstream_url, json=initialize("2025-11-25"), headers=headers, timeout=10).status_code == 401
    headers["X-Upstream-Token"] = UPSTREAM_TOKEN
    assert httpx.post(upstream_url, json=initialize("2025-11-25"), headers=headers, timeout=10).status_code == 200
