"""Countersign for LangChain v1 agents (``pip install 'countersign[langchain]'``).

``CountersignMiddleware`` sends every tool call of a ``create_agent`` agent through the guard: a
call the policies allow runs, a blocked call becomes an error ``ToolMessage`` with the reason,
and a call that needs approval waits for the reviewer (``mode="block"``) or pauses the graph
with LangGraph's ``interrupt()`` (``mode="interrupt"``, needs a checkpointer) and, resumed with
``Command(resume=...)``, runs or refuses the call on Countersign's decision::

    client = Countersign("https://countersign.example.com", agent_key)   # or AsyncCountersign
    agent = create_agent(
        model, tools=[refund],
        middleware=[CountersignMiddleware(client, session_id="support-42", mode="interrupt")],
        checkpointer=saver,
    )
    result = agent.invoke({"messages": [("user", "Refund order 42")]}, config)
    # result["__interrupt__"] holds {"approval_id": ...}; once the reviewer has decided
    # (resuming earlier just interrupts again):
    result = agent.invoke(Command(resume=True), config)

Each guard request is keyed by the tool call's id (``Idempotency-Key``), so a replayed node,
or the same thread resumed from another process, finds the same approval instead of asking
twice. The resume value is not trusted as a decision: only the reviewer's answer in Countersign
runs the call.

``ciba_tool`` makes a function a LangChain tool that asks a named user through CIBA first and
runs the function only once they approve; a denial or an expiry is the tool's error result.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from langchain.agents.middleware import AgentMiddleware
from langchain.agents.middleware.types import ToolCallRequest
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from langgraph.types import Command, interrupt

from ._async_client import AsyncCountersign
from ._errors import WaitTimeout
from ._sync_client import Countersign

__all__ = ["CountersignMiddleware", "ciba_tool"]

Mode = Literal["block", "interrupt"]
Client = Countersign | AsyncCountersign
F = TypeVar("F", bound=Callable[..., Any])

_PENDING = "pending"


def _key(prefix: str, session_id: str, call_id: str) -> str:
    return f"{prefix}:{session_id}:{call_id}"[:255]


def _refusal(approval: dict[str, Any]) -> str:
    status = approval.get("status") or "not approved"
    reason = approval.get("reason") or approval.get("comment")
    return f"Not approved ({status}): {reason}" if reason else f"Not approved ({status})"


class CountersignMiddleware(AgentMiddleware):
    """Guard every tool call of a LangChain v1 agent.

    ``client`` is a ``Countersign`` or an ``AsyncCountersign`` with an agent key (a sync client
    serves ``invoke`` and, on a thread, ``ainvoke``; an async client serves ``ainvoke`` only).
    ``proxy_id`` is the guard tenant, ``session_id`` is sent with every request (policies and
    reviewers see it). ``mode="block"`` waits for the decision inside the tool call (at most
    ``timeout`` seconds, then the call is refused); ``mode="interrupt"`` raises LangGraph's
    ``interrupt()`` with ``{"type": "countersign_approval", "approval_id", "tool_call", ...}``;
    resumed (``Command(resume=...)``, any value), it looks up the decision: approved runs the
    call, rejected or expired refuses it, still pending interrupts again for the same approval.
    """

    def __init__(
        self,
        client: Client,
        proxy_id: str = "default",
        *,
        session_id: str = "langchain",
        mode: Mode = "block",
        timeout: float | None = 1800,
    ) -> None:
        super().__init__()
        if mode not in ("block", "interrupt"):
            raise ValueError(f"mode must be 'block' or 'interrupt', not {mode!r}")
        self.client = client
        self.proxy_id = proxy_id
        self.session_id = session_id
        self.mode = mode
        self.timeout = timeout

    # The decisions, sync and async; each returns None to run the call or a refusal text.

    def _tool_call(self, request: ToolCallRequest) -> tuple[dict[str, Any], str]:
        call = request.tool_call
        call_id = call.get("id") or uuid.uuid4().hex
        return {"name": call["name"], "arguments": dict(call.get("args") or {})}, call_id

    def _interrupt(self, decision: dict[str, Any], tool_call: dict[str, Any], call_id: str) -> None:
        # The resume value is not a decision: whatever it is, Countersign's answer decides.
        interrupt({
            "type": "countersign_approval",
            "approval_id": decision["approval_id"],
            "tool_call": {**tool_call, "id": call_id},
            "message": decision.get("message"),
            "expires_at": decision.get("expires_at"),
        })

    def _check(self, request: ToolCallRequest) -> str | None:
        if not isinstance(self.client, Countersign):
            raise TypeError("a synchronous agent run needs a Countersign client, not AsyncCountersign")
        guard = self.client.guard(self.proxy_id)
        tool_call, call_id = self._tool_call(request)
        decision = dict(guard.tool(
            session_id=self.session_id, tool_call=tool_call,
            idempotency_key=_key("langchain", self.session_id, call_id),
        ))
        if decision["action"] == "allow":
            return None
        if decision["action"] != "require_approval":
            return f"Blocked: {decision.get('message')}"
        approval_id = str(decision["approval_id"])
        while self.mode == "interrupt":
            current = dict(guard.approval(approval_id))
            if current.get("status") != _PENDING:
                return None if current.get("status") == "approved" else _refusal(current)
            # Pauses the graph; on resume returns, and the loop looks again (still pending:
            # another interrupt for the same approval).
            self._interrupt(decision, tool_call, call_id)
        try:
            approval = dict(guard.wait_for_approval(approval_id, timeout=self.timeout))
        except WaitTimeout:
            return "Not approved: no decision in time"
        return None if approval.get("status") == "approved" else _refusal(approval)

    async def _acheck(self, request: ToolCallRequest) -> str | None:
        if isinstance(self.client, Countersign):
            if self.mode == "interrupt":
                # interrupt() must run in the graph's task, so only the HTTP calls go to a thread.
                return await self._acheck_with(_Threaded(self.client), request)
            return await asyncio.to_thread(self._check, request)
        return await self._acheck_with(self.client, request)

    async def _acheck_with(self, client: _AsyncLike, request: ToolCallRequest) -> str | None:
        guard = client.guard(self.proxy_id)
        tool_call, call_id = self._tool_call(request)
        decision = dict(await guard.tool(
            session_id=self.session_id, tool_call=tool_call,
            idempotency_key=_key("langchain", self.session_id, call_id),
        ))
        if decision["action"] == "allow":
            return None
        if decision["action"] != "require_approval":
            return f"Blocked: {decision.get('message')}"
        approval_id = str(decision["approval_id"])
        while self.mode == "interrupt":
            current = dict(await guard.approval(approval_id))
            if current.get("status") != _PENDING:
                return None if current.get("status") == "approved" else _refusal(current)
            # Pauses the graph; on resume returns, and the loop looks again (still pending:
            # another interrupt for the same approval).
            self._interrupt(decision, tool_call, call_id)
        try:
            approval = dict(await guard.wait_for_approval(approval_id, timeout=self.timeout))
        except WaitTimeout:
            return "Not approved: no decision in time"
        return None if approval.get("status") == "approved" else _refusal(approval)

    @staticmethod
    def _refused(request: ToolCallRequest, text: str) -> ToolMessage:
        call = request.tool_call
        return ToolMessage(content=text, tool_call_id=call.get("id") or "", name=call["name"], status="error")

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolMessage | Command[Any]],
    ) -> ToolMessage | Command[Any]:
        refusal = self._check(request)
        return handler(request) if refusal is None else self._refused(request, refusal)

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]],
    ) -> ToolMessage | Command[Any]:
        refusal = await self._acheck(request)
        return await handler(request) if refusal is None else self._refused(request, refusal)


class _ThreadedGuard:
    """The few guard calls the middleware makes, of a sync client, run on a thread."""

    def __init__(self, client: Countersign, proxy_id: str) -> None:
        self._guard = client.guard(proxy_id)

    async def tool(self, **kw: Any) -> Any:
        return await asyncio.to_thread(lambda: self._guard.tool(**kw))

    async def approval(self, approval_id: str) -> Any:
        return await asyncio.to_thread(self._guard.approval, approval_id)

    async def wait_for_approval(self, approval_id: str, *, timeout: float | None = None) -> Any:
        return await asyncio.to_thread(lambda: self._guard.wait_for_approval(approval_id, timeout=timeout))


class _Threaded:
    def __init__(self, client: Countersign) -> None:
        self._client = client

    def guard(self, proxy_id: str) -> _ThreadedGuard:
        return _ThreadedGuard(self._client, proxy_id)


_AsyncLike = AsyncCountersign | _Threaded

# The id of the tool call being run, for the CIBA request's Idempotency-Key.
_CALL_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("countersign_call_id", default=None)


class _CibaTool(StructuredTool):
    def run(self, tool_input: Any, *args: Any, tool_call_id: str | None = None, **kwargs: Any) -> Any:
        token = _CALL_ID.set(tool_call_id)
        try:
            return super().run(tool_input, *args, tool_call_id=tool_call_id, **kwargs)
        finally:
            _CALL_ID.reset(token)

    async def arun(self, tool_input: Any, *args: Any, tool_call_id: str | None = None, **kwargs: Any) -> Any:
        token = _CALL_ID.set(tool_call_id)
        try:
            return await super().arun(tool_input, *args, tool_call_id=tool_call_id, **kwargs)
        finally:
            _CALL_ID.reset(token)


def ciba_tool(
    client: Client,
    *,
    user_id: str,
    scope: str,
    binding_message: str | Callable[..., str] | None = None,
    requested_expiry: int | None = None,
    timeout: float | None = None,
    name: str | None = None,
    description: str | None = None,
) -> Callable[[Callable[..., Any]], BaseTool]:
    """A decorator: the function becomes a LangChain tool that asks ``user_id`` through CIBA
    (``scope``, ``binding_message``: a text, a ``str.format`` template of the arguments, or a
    function of them) and runs only after approval. The arguments go into the request's
    ``context`` (so into the grant). A denial or an expiry is the tool's error result
    (``ToolMessage`` with ``status="error"``), which the model reads; it does not raise.
    The request is keyed by the tool call's id, so a replayed call does not ask twice.
    ``client`` may be ``Countersign`` (sync and async tool) or ``AsyncCountersign`` (async
    functions only)::

        @ciba_tool(client, user_id="usr_01j...", scope="approve:payment",
                   binding_message="Approve payment of ${amount} to {recipient}?")
        def send_payment(amount: int, recipient: str) -> str:
            \"\"\"Send a payment (requires human approval).\"\"\"
            return gateway.send(amount, recipient)
    """

    def decorate(fn: Callable[..., Any]) -> BaseTool:
        tool_name = name or fn.__name__

        def message(args: dict[str, Any]) -> str:
            if binding_message is None:
                return f"Allow {tool_name}?"
            if callable(binding_message):
                return str(binding_message(**args))
            try:
                return binding_message.format(**args)
            except (KeyError, IndexError, ValueError):
                return binding_message

        def request_args(args: dict[str, Any]) -> dict[str, Any]:
            call_id = _CALL_ID.get() or uuid.uuid4().hex
            return {
                "user_id": user_id, "scope": scope, "binding_message": message(args)[:256],
                "requested_expiry": requested_expiry, "context": {"tool": tool_name, **args},
                "idempotency_key": _key("langchain-ciba", tool_name, call_id),
            }

        def outcome(answer: dict[str, Any]) -> None:
            if answer.get("status") != "approved":
                raise ToolException(_refusal(answer))

        def run(**args: Any) -> Any:
            if not isinstance(client, Countersign):
                raise TypeError("a synchronous tool call needs a Countersign client, not AsyncCountersign")
            started = client.ciba.authorize(**request_args(args))
            try:
                answer = client.ciba.wait_for(started["auth_req_id"], timeout=timeout)
            except WaitTimeout:
                raise ToolException("Not approved: no decision in time") from None
            outcome(dict(answer))
            return fn(**args)

        async def arun(**args: Any) -> Any:
            if isinstance(client, Countersign):
                answer_args = request_args(args)

                def ask() -> dict[str, Any]:
                    started = client.ciba.authorize(**answer_args)
                    return dict(client.ciba.wait_for(started["auth_req_id"], timeout=timeout))

                try:
                    answer = await asyncio.to_thread(ask)
                except WaitTimeout:
                    raise ToolException("Not approved: no decision in time") from None
            else:
                started = await client.ciba.authorize(**request_args(args))
                try:
                    answer = dict(await client.ciba.wait_for(started["auth_req_id"], timeout=timeout))
                except WaitTimeout:
                    raise ToolException("Not approved: no decision in time") from None
            outcome(answer)
            if inspect.iscoroutinefunction(fn):
                return await fn(**args)
            return await asyncio.to_thread(fn, **args)

        template = StructuredTool.from_function(fn, name=tool_name, description=description)
        return _CibaTool(
            name=tool_name,
            description=template.description,
            args_schema=template.args_schema,
            func=None if inspect.iscoroutinefunction(fn) else run,
            coroutine=arun,
            handle_tool_error=True,
        )

    return decorate
