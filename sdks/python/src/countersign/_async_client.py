"""The asynchronous client. ``_sync_client.py`` is generated from this file by
``tools/unasync.py``: edit this one and regenerate."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from . import _core
from ._core import Call, seg
from ._errors import ConnectionFailed, WaitTimeout
from ._types import (
    Approval,
    AuthorizeResult,
    CibaStatus,
    Decision,
    Grant,
    History,
    ToolDecision,
    ValidateResult,
)

__all__ = ["AsyncCountersign"]


class AsyncCountersign:
    """A Countersign client.

    ``base_url`` is the server (``https://countersign.example.com``), ``api_key`` an agent,
    reviewer, executor or admin key. ``retries`` is how many times a call is retried on
    connection errors, 429 (after ``Retry-After``) and 503; create calls carry one
    ``Idempotency-Key`` across their retries, so a retry never creates a second request.
    ``transport`` replaces httpx's transport (tests, proxies); ``http_client`` replaces the
    whole httpx client.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retries: int = _core.DEFAULT_RETRIES,
        timeout: float = 10.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = _core.normalize_base_url(base_url)
        self.retries = retries
        self._http = http_client or httpx.AsyncClient(
            base_url=self.base_url, transport=transport, timeout=timeout
        )
        self._owns_http = http_client is None
        self._headers = _core.client_headers(api_key)
        self.ciba = AsyncCiba(self)

    async def __aenter__(self) -> AsyncCountersign:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    def guard(self, proxy_id: str = "default") -> AsyncGuard:
        """The guard API of one tenant (``proxyId``; ``default`` out of the box)."""
        return AsyncGuard(self, proxy_id)

    async def introspect(self, token: str, *, consume: bool = False) -> dict[str, Any]:
        """RFC 7662 introspection (executor or admin key). ``consume=True`` makes the grant
        single-use: of concurrent consumers exactly one sees it active."""
        form = {"token": token}
        if consume:
            form["consume"] = "true"
        result: dict[str, Any] = await self._send(Call("POST", "/oauth/introspect", form=form))
        return result

    async def revoke(self, token: str) -> None:
        """RFC 7009: end a grant early."""
        await self._send(Call("POST", "/oauth/revoke", form={"token": token}))

    async def request(self, method: str, path: str, *, json: Any = None,
                      params: dict[str, Any] | None = None) -> Any:
        """Any other endpoint, with this client's key, retries and errors."""
        return await self._send(Call(method.upper(), path, json=json, params=params))

    async def _send(self, call: Call) -> Any:
        attempt = 0
        kwargs = call.request_kwargs()
        kwargs["headers"] = {**self._headers, **kwargs["headers"]}
        while True:
            try:
                response = await self._http.request(call.method, call.path, **kwargs)
            except httpx.TransportError as exc:
                if attempt < self.retries and _core.may_retry_transport(call, exc):
                    await asyncio.sleep(_core.backoff(attempt))
                    attempt += 1
                    continue
                raise ConnectionFailed(f"{type(exc).__name__}: {exc}") from exc
            if attempt < self.retries:
                delay = _core.retry_delay(call, response, attempt)
                if delay is not None:
                    await response.aclose()
                    await asyncio.sleep(delay)
                    attempt += 1
                    continue
            return _core.handle(call, response)


class AsyncCiba:
    """The seed's CIBA API (``/ciba/*``)."""

    def __init__(self, client: AsyncCountersign) -> None:
        self._client = client

    async def authorize(
        self,
        *,
        user_id: str,
        scope: str,
        binding_message: str,
        requested_expiry: int | None = None,
        context: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> AuthorizeResult:
        """Ask the reviewer ``user_id``. Pass a stable ``idempotency_key`` (a tool-call id) to
        get the same request back after a restart instead of asking twice."""
        call = _core.ciba_authorize(
            user_id, scope, binding_message, requested_expiry, context, idempotency_key
        )
        result: AuthorizeResult = await self._client._send(call)
        return result

    async def poll(
        self, auth_req_id: str, *, wait_seconds: int | None = None, resource: str | None = None
    ) -> CibaStatus:
        """The request's status; the access token comes with the first approved answer.
        ``wait_seconds`` long-polls (at most 30); ``resource`` names the grant's audience."""
        result: CibaStatus = await self._client._send(
            _core.ciba_poll(auth_req_id, wait_seconds, resource)
        )
        return result

    async def wait_for(
        self, auth_req_id: str, *, timeout: float | None = None, resource: str | None = None
    ) -> CibaStatus:
        """Long-poll until the request is decided or expires, and return that answer.
        Raises ``WaitTimeout`` if ``timeout`` seconds pass first."""
        deadline = None if timeout is None else _core.monotonic() + timeout
        while True:
            wait = _core.wait_seconds(deadline)
            answer = await self.poll(auth_req_id, wait_seconds=wait, resource=resource)
            if answer["status"] != "pending":
                return answer
            if deadline is not None and _core.monotonic() >= deadline:
                raise WaitTimeout(f"{auth_req_id} still pending after {timeout}s", answer)

    async def approve(
        self,
        auth_req_id: str | None = None,
        *,
        approval_id: str | None = None,
        comment: str | None = None,
    ) -> Decision:
        """Approve (reviewer key), by ``auth_req_id`` as in the seed or by the public
        ``approval_id`` (``apr_…``) reviewers see in their lists."""
        result: Decision = await self._client._send(
            _core.ciba_decide("approve", auth_req_id, approval_id, "comment", comment)
        )
        return result

    async def deny(
        self,
        auth_req_id: str | None = None,
        reason: str | None = None,
        *,
        approval_id: str | None = None,
    ) -> Decision:
        """Deny (reviewer key), by ``auth_req_id`` or public ``approval_id``."""
        result: Decision = await self._client._send(
            _core.ciba_decide("deny", auth_req_id, approval_id, "reason", reason)
        )
        return result


class AsyncGuard:
    """The guard API of one tenant (``/v1/guard/{proxyId}``)."""

    def __init__(self, client: AsyncCountersign, proxy_id: str) -> None:
        self._client = client
        self.proxy_id = proxy_id
        base = f"/v1/guard/{seg(proxy_id)}"
        self.policies = AsyncCollection(client, f"{base}/policies")
        self.groups = AsyncCollection(client, f"{base}/approval-groups")
        self.routing = AsyncSingleton(client, f"{base}/routing-rules")
        self.settings = AsyncSingleton(client, f"{base}/settings")

    async def tool(
        self,
        *,
        session_id: str,
        tool_call: dict[str, Any],
        scope: str | None = None,
        reason: str | None = None,
        on_behalf_of: str | None = None,
        idempotency_key: str | None = None,
    ) -> ToolDecision:
        """Check a tool call: ``allow``, ``block`` or ``require_approval`` (with its
        ``approval_id``). ``tool_call`` is ``{name, arguments}``, OpenAI's or Anthropic's shape."""
        call = _core.guard_tool(
            self.proxy_id, session_id, tool_call, scope, reason, on_behalf_of, idempotency_key
        )
        result: ToolDecision = await self._client._send(call)
        return result

    async def approval(self, approval_id: str, *, wait: int | None = None) -> Approval:
        """The approval; ``wait`` long-polls up to that many seconds (at most 30)."""
        result: Approval = await self._client._send(
            _core.guard_approval(self.proxy_id, approval_id, wait)
        )
        return result

    async def wait_for_approval(self, approval_id: str, *, timeout: float | None = None) -> Approval:
        """Long-poll until the approval leaves ``pending``, and return it. Raises
        ``WaitTimeout`` if ``timeout`` seconds pass first."""
        deadline = None if timeout is None else _core.monotonic() + timeout
        while True:
            wait = _core.wait_seconds(deadline)
            answer = await self.approval(approval_id, wait=wait)
            if answer.get("status") != "pending":
                return answer
            if deadline is not None and _core.monotonic() >= deadline:
                raise WaitTimeout(f"{approval_id} still pending after {timeout}s", answer)

    async def validate_and_wait(
        self,
        *,
        session_id: str,
        tool_call: dict[str, Any],
        scope: str | None = None,
        reason: str | None = None,
        on_behalf_of: str | None = None,
        idempotency_key: str | None = None,
        max_wait_seconds: float = 1800,
    ) -> ValidateResult:
        """The guard seed's ``validate_and_wait_for_approval`` as one call: check the tool call,
        wait for its approval if it needs one, and answer ``{"action": "allow"|"block", …}``
        (``approved_by`` when approved, ``reason`` when not; a wait past ``max_wait_seconds``
        is a block with ``"Approval timeout"``)."""
        decision = await self.tool(
            session_id=session_id,
            tool_call=tool_call,
            scope=scope,
            reason=reason,
            on_behalf_of=on_behalf_of,
            idempotency_key=idempotency_key,
        )
        if decision["action"] != "require_approval":
            result: ValidateResult = _core.settle(dict(decision), None)  # type: ignore[assignment]
            return result
        approval_id = decision.get("approval_id") or ""
        try:
            approval = await self.wait_for_approval(approval_id, timeout=max_wait_seconds)
        except WaitTimeout as exc:
            approval = exc.last
        settled: ValidateResult = _core.settle(dict(decision), dict(approval))  # type: ignore[assignment]
        return settled

    async def grant(self, approval_id: str, *, resource: str | None = None) -> Grant:
        """Redeem an approved request, once, for a signed grant (audience ``resource``)."""
        result: Grant = await self._client._send(
            _core.guard_action(self.proxy_id, approval_id, "grant", params={"resource": resource})
        )
        return result

    async def approve(self, approval_id: str, *, comment: str | None = None) -> Approval:
        """Approve (an eligible reviewer's key)."""
        result: Approval = await self._client._send(
            _core.guard_action(self.proxy_id, approval_id, "approve", _core.drop_none({"comment": comment}))
        )
        return result

    async def reject(self, approval_id: str, *, reason: str | None = None) -> Approval:
        """Reject (an eligible reviewer's key)."""
        result: Approval = await self._client._send(
            _core.guard_action(self.proxy_id, approval_id, "reject", _core.drop_none({"reason": reason}))
        )
        return result

    async def cancel(self, approval_id: str) -> Approval:
        """Withdraw a pending request (the agent that made it, or an admin)."""
        result: Approval = await self._client._send(
            _core.guard_action(self.proxy_id, approval_id, "cancel")
        )
        return result

    async def history(
        self,
        *,
        status: str | None = None,
        tool: str | None = None,
        decided_by: str | None = None,
        from_: str | None = None,
        to: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> History:
        """One page of decided and pending approvals, newest first (``next_cursor`` pages on)."""
        params = {
            "status": status, "tool": tool, "decided_by": decided_by, "from": from_, "to": to,
            "cursor": cursor, "limit": limit,
        }
        result: History = await self._client._send(_core.guard_history(self.proxy_id, params))
        return result


class AsyncCollection:
    """Policies or approval groups (admin key)."""

    def __init__(self, client: AsyncCountersign, path: str) -> None:
        self._client = client
        self._path = path

    async def list(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._client._send(Call("GET", self._path))
        return result

    async def get(self, ident: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._client._send(Call("GET", f"{self._path}/{seg(ident)}"))
        return result

    async def create(self, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._client._send(Call("POST", self._path, json=fields))
        return result

    async def update(self, ident: str, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._client._send(
            Call("PUT", f"{self._path}/{seg(ident)}", json=fields)
        )
        return result

    async def delete(self, ident: str) -> None:
        await self._client._send(Call("DELETE", f"{self._path}/{seg(ident)}"))

    async def evaluate(self, **fields: Any) -> dict[str, Any]:
        """Policies only: what ``tool`` would answer for a sample call, creating nothing."""
        result: dict[str, Any] = await self._client._send(
            Call("POST", f"{self._path}/evaluate", json=fields)
        )
        return result


class AsyncSingleton:
    """Routing rules or settings (admin key)."""

    def __init__(self, client: AsyncCountersign, path: str) -> None:
        self._client = client
        self._path = path

    async def get(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._client._send(Call("GET", self._path))
        return result

    async def set(self, **fields: Any) -> dict[str, Any]:
        """Replace it (``PUT``) with these fields."""
        result: dict[str, Any] = await self._client._send(Call("PUT", self._path, json=fields))
        return result
