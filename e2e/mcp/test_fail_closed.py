"""When Countersign cannot be asked, `countersign mcp wrap` runs nothing: every call fails closed."""

from __future__ import annotations

import dataclasses
import socket

import anyio
import pytest
from harness import Env, connect, text_of, unique, upstream_calls

pytestmark = pytest.mark.anyio


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_an_unreachable_server_means_no_call_reaches_the_upstream(env: Env) -> None:
    unreachable = dataclasses.replace(env, base_url=closed_port_url())
    query = unique("unchecked")
    with anyio.fail_after(20):
        async with connect("wrap-stdio", unreachable) as session:
            listed = await session.list_tools()
            result = await session.call_tool("lookup", {"query": query})
    # The session itself is relayed; the call is not.
    assert "lookup" in [t.name for t in listed.tools]
    assert result.is_error, text_of(result)
    assert "could not check" in text_of(result), text_of(result)
    assert not [c for c in upstream_calls(env) if c["arguments"] == {"query": query}]
