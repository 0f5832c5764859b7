"""Countersign for the OpenAI Agents SDK (``pip install 'countersign[openai-agents]'``).

Every call of a protected tool goes through the guard. A call the policies allow runs at once;
any other call interrupts the run (the SDK's own ``needs_approval`` pause). ``resolve_approvals``
then waits for Countersign's decision on each interruption and approves or rejects it in the run
state, which you run again::

    approvals = CountersignApprovals(client)            # an AsyncCountersign with an agent key
    refund = approvals.protect(function_tool(payment_refund))
    agent = Agent(name="support", tools=[refund])

    result = await Runner.run(agent, "Refund order 42")
    while result.interruptions:
        state = await approvals.resolve_approvals(result)
        result = await Runner.run(agent, state)

Each guard request is keyed by the tool call's id (``Idempotency-Key``), so asking again, even
from another process after a restart with a saved ``RunState``, finds the same approval instead
of creating a second one.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from agents import FunctionTool, RunContextWrapper, RunState, ToolApprovalItem

from ._async_client import AsyncCountersign
from ._errors import WaitTimeout

__all__ = ["CountersignApprovals", "needs_approval", "resolve_approvals"]

T = TypeVar("T", bound=FunctionTool)

NeedsApproval = Callable[[RunContextWrapper[Any], dict[str, Any], str], Awaitable[bool]]


class CountersignApprovals:
    """Guard-backed approvals for an agent's function tools.

    ``session_id`` is sent with every guard request (policies and reviewers see it);
    ``proxy_id`` is the tenant; ``timeout`` bounds each wait in ``resolve_approvals`` (a wait
    that runs out rejects the call).
    """

    def __init__(
        self,
        client: AsyncCountersign,
        *,
        proxy_id: str = "default",
        session_id: str = "openai-agents",
        timeout: float | None = 1800,
    ) -> None:
        self.client = client
        self.proxy_id = proxy_id
        self.session_id = session_id
        self.timeout = timeout

    def _key(self, call_id: str) -> str:
        return f"openai-agents:{self.session_id}:{call_id}"[:255]

    async def _check(self, tool_name: str, arguments: dict[str, Any], call_id: str) -> dict[str, Any]:
        decision: dict[str, Any] = dict(
            await self.client.guard(self.proxy_id).tool(
                session_id=self.session_id,
                tool_call={"name": tool_name, "arguments": arguments},
                idempotency_key=self._key(call_id),
            )
        )
        return decision

    def needs_approval(self, tool_name: str) -> NeedsApproval:
        """A ``needs_approval`` function for the tool ``tool_name``: ``False`` when the guard
        allows the call, ``True`` (interrupt) when it needs approval or is blocked."""

        async def check(_ctx: RunContextWrapper[Any], params: dict[str, Any], call_id: str) -> bool:
            decision = await self._check(tool_name, params, call_id)
            return bool(decision["action"] != "allow")

        return check

    def protect(self, tool: T) -> T:
        """Set ``tool.needs_approval`` to the guard's answer, and return the tool."""
        tool.needs_approval = self.needs_approval(tool.name)
        return tool

    async def resolve_approvals(self, result_or_state: Any) -> RunState[Any, Any]:
        """Approve or reject every interruption of a run result (or a saved ``RunState``) from
        Countersign's decisions, waiting for them, and return the state to run again."""
        if isinstance(result_or_state, RunState):
            state: RunState[Any, Any] = result_or_state
            items: list[ToolApprovalItem] = state.get_interruptions()
        else:
            state = result_or_state.to_state()
            items = list(result_or_state.interruptions)
        guard = self.client.guard(self.proxy_id)
        for item in items:
            raw = item.raw_item
            call_id = _field(raw, "call_id")
            name = item.tool_name or _field(raw, "name")
            arguments = _field(raw, "arguments") or "{}"
            if isinstance(arguments, str):
                arguments = json.loads(arguments)
            if not call_id or not name:
                state.reject(item, rejection_message="Countersign could not identify this call")
                continue
            decision = await self._check(name, arguments, call_id)
            if decision["action"] == "allow":
                state.approve(item)
                continue
            if decision["action"] == "block":
                state.reject(item, rejection_message=f"Blocked: {decision.get('message')}")
                continue
            try:
                approval = await guard.wait_for_approval(decision["approval_id"], timeout=self.timeout)
            except WaitTimeout:
                state.reject(item, rejection_message="Not approved: approval timeout")
                continue
            if approval.get("status") == "approved":
                state.approve(item)
            else:
                reason = approval.get("reason") or approval.get("comment") or approval.get("status")
                state.reject(item, rejection_message=f"Not approved: {reason}")
        return state


def _field(raw: Any, name: str) -> Any:
    if isinstance(raw, dict):
        return raw.get(name)
    return getattr(raw, name, None)


def needs_approval(
    client: AsyncCountersign, tool_name: str, *, proxy_id: str = "default",
    session_id: str = "openai-agents",
) -> NeedsApproval:
    """``CountersignApprovals(client, …).needs_approval(tool_name)``."""
    return CountersignApprovals(client, proxy_id=proxy_id, session_id=session_id).needs_approval(tool_name)


async def resolve_approvals(
    result_or_state: Any, client: AsyncCountersign, *, proxy_id: str = "default",
    session_id: str = "openai-agents", timeout: float | None = 1800,
) -> RunState[Any, Any]:
    """``CountersignApprovals(client, …).resolve_approvals(result_or_state)``."""
    approvals = CountersignApprovals(client, proxy_id=proxy_id, session_id=session_id, timeout=timeout)
    return await approvals.resolve_approvals(result_or_state)
