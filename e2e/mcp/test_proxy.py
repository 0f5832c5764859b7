"""The MCP proxy's behaviour, the same through its three faces: `countersign mcp wrap` in front of
a stdio upstream, `wrap` in front of a streamable-HTTP upstream, and the in-server gateway
`/mcp/{id}`. An official MCP SDK client on one side, an official MCP SDK server on the other."""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Callable

import anyio
import pytest
from harness import (
    APPROVAL_POLICY,
    BLOCK_POLICY,
    CLIENT,
    MODES,
    Env,
    approve,
    connect,
    dump,
    expected_servers,
    find_pending,
    guard_approval,
    reject,
    session_id_for,
    text_of,
    unique,
    upstream_calls,
    wait_status,
)
from mcp import ClientSession
from mcp.types import CallToolResult, ElicitResult

pytestmark = pytest.mark.anyio

LIMIT = 20  # seconds any one test may take: a broken proxy fails, it does not hang


@dataclass
class Face:
    mode: str
    env: Env
    gateway_url: str | None

    def connect(self, **kwargs: Any) -> AbstractAsyncContextManager[ClientSession]:
        return connect(self.mode, self.env, gateway_url=self.gateway_url, **kwargs)


@pytest.fixture(params=MODES)
def face(request: pytest.FixtureRequest, env: Env) -> Face:
    gateway_url = request.getfixturevalue("gateway") if request.param == "gateway" else None
    return Face(request.param, env, gateway_url)


def calls_of(env: Env, tool: str, arguments: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in upstream_calls(env) if c["tool"] == tool and c["arguments"] == arguments]


@pytest.fixture(scope="session")
def direct() -> dict[str, Any]:
    """What the upstream itself answers, no proxy between: the proxy must answer the same."""

    async def ask() -> dict[str, Any]:
        with anyio.fail_after(LIMIT):
            async with connect("direct-stdio") as session:
                lookups = {}
                for mode in MODES:
                    query = unique(f"find-{mode}")
                    lookups[mode] = (query, dump(await session.call_tool("lookup", {"query": query})))
                return {
                    "tools": dump(await session.list_tools())["tools"],
                    "resources": dump(await session.list_resources())["resources"],
                    "resource": dump(await session.read_resource("note://greeting"))["contents"],
                    "prompts": dump(await session.list_prompts())["prompts"],
                    "prompt": dump(await session.get_prompt("summarize", {"topic": "otters"}))["messages"],
                    "lookups": lookups,
                }

    return anyio.run(ask)


async def test_lists_tools_resources_and_prompts_as_the_upstream_does(face: Face, direct: dict[str, Any]) -> None:
    by_name: Callable[[dict[str, Any]], str] = lambda t: t["name"]
    with anyio.fail_after(LIMIT):
        async with face.connect() as session:
            caps = session.initialize_result.capabilities
            tools = dump(await session.list_tools())["tools"]
            resources = dump(await session.list_resources())["resources"]
            resource = dump(await session.read_resource("note://greeting"))["contents"]
            prompts = dump(await session.list_prompts())["prompts"]
            prompt = dump(await session.get_prompt("summarize", {"topic": "otters"}))["messages"]
    assert caps.tools is not None and caps.resources is not None and caps.prompts is not None, caps
    assert sorted(tools, key=by_name) == sorted(direct["tools"], key=by_name)
    assert resources == direct["resources"]
    assert resource == direct["resource"]
    assert prompts == direct["prompts"]
    assert prompt == direct["prompt"]


async def test_an_allowed_call_returns_the_upstreams_result_unchanged(face: Face, direct: dict[str, Any]) -> None:
    query, expected = direct["lookups"][face.mode]
    with anyio.fail_after(LIMIT):
        async with face.connect() as session:
            result = await session.call_tool("lookup", {"query": query})
    assert not result.is_error, text_of(result)
    assert dump(result) == expected
    assert len(calls_of(face.env, "lookup", {"query": query})) == 1


async def test_a_blocked_call_is_an_error_naming_the_policy_and_never_reaches_the_upstream(face: Face) -> None:
    table = unique("customers")
    with anyio.fail_after(LIMIT):
        async with face.connect() as session:
            result = await session.call_tool("delete_records", {"table": table})
            # The session goes on after a block.
            after = await session.call_tool("lookup", {"query": table})
    assert result.is_error, dump(result)
    text = text_of(result)
    assert "block" in text.lower(), text
    assert BLOCK_POLICY in text, text
    assert not after.is_error, text_of(after)
    assert [c for c in upstream_calls(face.env) if c["tool"] == "delete_records"] == []


async def test_an_approved_call_is_forwarded_with_exactly_the_approved_arguments(face: Face) -> None:
    arguments = {"text": unique("hello"), "n": 3}
    results: dict[str, CallToolResult] = {}
    with anyio.fail_after(LIMIT):
        async with face.connect() as session:

            async def call() -> None:
                results["echo"] = await session.call_tool("echo", arguments)

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                pending = await find_pending(face.env, "echo", arguments, results)
                seen_while_held = calls_of(face.env, "echo", arguments)
                answered_while_held = "echo" in results
                view = await guard_approval(face.env, pending["id"])
                await approve(face.env, pending["id"], "fine by me")
    # Held: neither the upstream nor the client had anything before the approval.
    assert seen_while_held == [] and not answered_while_held
    # What the reviewer saw: the MCP origin, the tool's annotations as the upstream declared them.
    assert pending.get("mcp", {}).get("server") in expected_servers(face.mode, face.env), pending
    assert CLIENT.name in pending["mcp"].get("client", ""), pending
    assert pending.get("annotations") == {"readOnlyHint": False, "destructiveHint": False}, pending
    assert pending["policy_matched"] == APPROVAL_POLICY, pending
    if session_id_for(face.mode):
        assert pending["session_id"] == session_id_for(face.mode), pending
    assert view.get("mcp") == pending["mcp"] and view.get("annotations") == pending["annotations"], view
    assert view["arguments"] == arguments, view
    result = results["echo"]
    assert not result.is_error, text_of(result)
    assert result.structured_content == arguments, dump(result)
    assert json.loads(text_of(result)) == arguments, dump(result)
    assert calls_of(face.env, "echo", arguments) == [{"tool": "echo", "arguments": arguments}]


async def test_a_rejected_call_is_an_error_with_the_reason_and_never_reaches_the_upstream(face: Face) -> None:
    arguments = {"text": unique("hello"), "n": 3}
    results: dict[str, CallToolResult] = {}
    with anyio.fail_after(LIMIT):
        async with face.connect() as session:

            async def call() -> None:
                results["echo"] = await session.call_tool("echo", arguments)

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                pending = await find_pending(face.env, "echo", arguments, results)
                await reject(face.env, pending["id"], "not today")
    result = results["echo"]
    assert result.is_error, dump(result)
    assert "not today" in text_of(result), dump(result)
    assert calls_of(face.env, "echo", arguments) == []


async def test_a_held_call_sends_progress_and_a_log_message_naming_the_approval(face: Face) -> None:
    arguments = {"text": unique("hello"), "n": 1}
    progress: list[tuple[float, float | None, str | None]] = []
    logs: list[Any] = []
    results: dict[str, CallToolResult] = {}

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async def on_log(params: Any) -> None:
        logs.append(params)

    with anyio.fail_after(LIMIT):
        async with face.connect(logging_callback=on_log) as session:

            async def call() -> None:
                results["echo"] = await session.call_tool("echo", arguments, progress_callback=on_progress)

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                pending = await find_pending(face.env, "echo", arguments, results)
                with anyio.move_on_after(12):
                    while not (progress and any(pending["id"] in json.dumps(p.data) for p in logs)):
                        await anyio.sleep(0.1)
                await reject(face.env, pending["id"], "seen enough")
    assert progress, "no notifications/progress while the call was held"
    log_texts = [json.dumps(p.data) for p in logs]
    assert any(pending["id"] in t for t in log_texts), f"no log message naming {pending['id']}: {log_texts}"
    assert results["echo"].is_error


async def test_cancelling_a_held_call_cancels_its_approval(face: Face) -> None:
    arguments = {"text": unique("hello"), "n": 2}
    results: dict[str, CallToolResult] = {}
    with anyio.fail_after(LIMIT):
        async with face.connect() as session:

            async def call() -> None:
                results["echo"] = await session.call_tool("echo", arguments)

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                pending = await find_pending(face.env, "echo", arguments, results)
                # The SDK sends notifications/cancelled for a request its caller abandons.
                tg.cancel_scope.cancel()
            view = await wait_status(face.env, pending["id"], "cancelled")
            # The session goes on.
            after = await session.call_tool("lookup", {"query": "still here"})
    assert view["status"] == "cancelled"
    assert not after.is_error, text_of(after)
    assert calls_of(face.env, "echo", arguments) == []


async def test_progress_of_a_forwarded_call_reaches_the_client(face: Face) -> None:
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    with anyio.fail_after(LIMIT):
        async with face.connect() as session:
            result = await session.call_tool("slow", {"seconds": 0.4}, progress_callback=on_progress)
    assert not result.is_error, text_of(result)
    assert text_of(result) == "waited 0.4 seconds"
    upstream = [p for p in progress if p[2] and p[2].startswith("step ")]
    assert upstream, f"no progress from the upstream reached the client: {progress}"
    assert (4.0, 4.0, "done") in progress, progress


async def test_cancelling_a_forwarded_call_reaches_the_upstream(face: Face) -> None:
    arguments = {"seconds": 7.5 + int(unique("s")[-4:], 16) / 100000}
    started = anyio.Event()

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        started.set()

    with anyio.fail_after(LIMIT):
        async with face.connect() as session:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: session.call_tool("slow", arguments, progress_callback=on_progress))
                await started.wait()  # the upstream is running it
                tg.cancel_scope.cancel()
            with anyio.move_on_after(5):
                while not [c for c in upstream_calls(face.env) if c["arguments"] == arguments and c.get("cancelled")]:
                    await anyio.sleep(0.1)
            after = await session.call_tool("lookup", {"query": "still here"})
    entries = [c for c in upstream_calls(face.env) if c["arguments"] == arguments]
    assert {"tool": "slow", "arguments": arguments, "cancelled": True} in entries, entries
    assert not after.is_error, text_of(after)


async def test_a_client_that_opens_urls_is_offered_the_review_page_which_decides_nothing(face: Face) -> None:
    arguments = {"text": unique("hello"), "n": 4}
    offers: list[Any] = []
    results: dict[str, CallToolResult] = {}

    async def on_elicit(context: Any, params: Any) -> ElicitResult:
        offers.append(params)
        # The user opened the page; only a reviewer's decision on the server counts.
        return ElicitResult(action="accept")

    with anyio.fail_after(LIMIT):
        async with face.connect(elicitation_callback=on_elicit) as session:

            async def call() -> None:
                results["echo"] = await session.call_tool("echo", arguments)

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                pending = await find_pending(face.env, "echo", arguments, results)
                with anyio.move_on_after(10):
                    while not offers:
                        await anyio.sleep(0.1)
                await anyio.sleep(0.3)
                still = await guard_approval(face.env, pending["id"])
                answered_before_decision = "echo" in results
                await approve(face.env, pending["id"], "seen the page")
    assert len(offers) == 1, offers
    offer = offers[0]
    assert offer.mode == "url", dump(offer)
    assert offer.url == f"{face.env.base_url}/ui/requests/{pending['id']}", dump(offer)
    assert offer.elicitation_id == pending["id"], dump(offer)
    assert still["status"] == "pending" and not answered_before_decision
    assert not results["echo"].is_error, text_of(results["echo"])
