"""What the sync and async clients share: requests as data, retries, answer parsing."""

from __future__ import annotations

import math
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import quote

import httpx

from ._errors import error_from_response

DEFAULT_RETRIES = 2
#: The server's longest long-poll (``requests.max_wait_secs``); longer waits are split.
MAX_WAIT_SECONDS = 30
#: Retry-After beyond this many seconds is not waited for: the error is raised instead.
MAX_RETRY_DELAY = 30.0
USER_AGENT = "countersign-python/0.1.0"


def seg(value: str) -> str:
    """One URL path segment."""
    return quote(str(value), safe="")


def monotonic() -> float:
    return time.monotonic()


@dataclass
class Call:
    """One API call. ``idempotency_key`` is sent on every attempt of the call."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    form: dict[str, str] | None = None
    idempotency_key: str | None = None
    read_timeout: float | None = None
    parse: Callable[[Any], Any] = field(default=lambda body: body)
    #: A read that hands something out once (the CIBA access token): its lost answer cannot be
    #: asked for again, so it is not replayed.
    hands_out_once: bool = False

    @property
    def replay_safe(self) -> bool:
        """Whether sending it again after an unknown outcome cannot do anything twice."""
        if self.hands_out_once:
            return False
        return self.method == "GET" or self.idempotency_key is not None

    def request_kwargs(self) -> dict[str, Any]:
        headers: dict[str, str] = {}
        if self.idempotency_key is not None:
            headers["Idempotency-Key"] = self.idempotency_key
        kwargs: dict[str, Any] = {"headers": headers}
        if self.params:
            kwargs["params"] = {k: v for k, v in self.params.items() if v is not None}
        if self.json is not None:
            kwargs["json"] = self.json
        if self.form is not None:
            kwargs["data"] = self.form
        if self.read_timeout is not None:
            kwargs["timeout"] = httpx.Timeout(10.0, read=self.read_timeout)
        return kwargs


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def backoff(attempt: int) -> float:
    """Exponential backoff with jitter: about 0.2 s, 0.4 s, 0.8 s … capped at 5 s."""
    return float(min(5.0, 0.2 * (2**attempt)) * (0.5 + random.random() / 2))


def may_retry_transport(call: Call, exc: httpx.TransportError) -> bool:
    # A request that never reached the server can always be sent again; one whose answer was
    # lost only when a replay cannot act twice (a read, or a create with its Idempotency-Key).
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return True
    return call.replay_safe


def retry_delay(call: Call, response: httpx.Response, attempt: int) -> float | None:
    """How long to wait before retrying this answer, or None not to retry it."""
    status = response.status_code
    if status == 429 or (status == 503 and call.replay_safe):
        raw = response.headers.get("retry-after")
        delay = backoff(attempt)
        if raw:
            try:
                delay = max(0.0, float(raw))
            except ValueError:
                pass
        return delay if delay <= MAX_RETRY_DELAY else None
    return None


def handle(call: Call, response: httpx.Response) -> Any:
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = None
    if response.status_code >= 400:
        raise error_from_response(response.status_code, response.headers, body, response.text)
    return call.parse(body)


def normalize_base_url(base_url: str) -> str:
    return base_url.rstrip("/")


def client_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}


# --- answers -------------------------------------------------------------------------------

_CIBA_KEYS = {
    "authReqId": "auth_req_id",
    "expiresIn": "expires_in",
    "accessToken": "access_token",
    "tokenType": "token_type",
    "tokenAlreadyIssued": "token_already_issued",
    "approvalId": "approval_id",
}


def snake(body: Any) -> Any:
    if not isinstance(body, dict):
        return body
    return {_CIBA_KEYS.get(k, k): v for k, v in body.items()}


def drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


# --- calls ---------------------------------------------------------------------------------


def ciba_authorize(
    user_id: str,
    scope: str,
    binding_message: str,
    requested_expiry: int | None,
    context: dict[str, Any] | None,
    idempotency_key: str | None,
) -> Call:
    body = drop_none(
        {
            "userId": user_id,
            "scope": scope,
            "bindingMessage": binding_message,
            "requestedExpiry": requested_expiry,
            "context": context,
        }
    )
    return Call(
        "POST",
        "/ciba/authorize",
        json=body,
        idempotency_key=idempotency_key or new_idempotency_key(),
        parse=snake,
    )


def ciba_poll(auth_req_id: str, wait: int | None = None, resource: str | None = None) -> Call:
    return Call(
        "GET",
        "/ciba/token",
        params={"authReqId": auth_req_id, "waitSeconds": wait, "resource": resource},
        read_timeout=(wait or 0) + 15.0,
        parse=snake,
        hands_out_once=True,
    )


def ciba_decide(
    verb: str, auth_req_id: str | None, approval_id: str | None, text_key: str, text: str | None
) -> Call:
    if (auth_req_id is None) == (approval_id is None):
        raise TypeError(f"ciba.{verb} takes either auth_req_id or approval_id")
    body = drop_none({"authReqId": auth_req_id, "approvalId": approval_id, text_key: text})
    return Call("POST", f"/ciba/{verb}", json=body, parse=snake)


def wait_seconds(deadline: float | None) -> int:
    """The long-poll for the next wait: the server's longest, or what is left (rounded up, so
    a wait never turns into a busy loop of zero-second polls)."""
    if deadline is None:
        return MAX_WAIT_SECONDS
    return max(0, min(MAX_WAIT_SECONDS, math.ceil(deadline - monotonic())))


def guard_tool(
    proxy_id: str,
    session_id: str,
    tool_call: dict[str, Any],
    scope: str | None,
    reason: str | None,
    on_behalf_of: str | None,
    idempotency_key: str | None,
) -> Call:
    body = drop_none(
        {
            "session_id": session_id,
            "tool_call": tool_call,
            "scope": scope,
            "reason": reason,
            "on_behalf_of": on_behalf_of,
        }
    )
    return Call(
        "POST",
        f"/v1/guard/{seg(proxy_id)}/tool",
        json=body,
        idempotency_key=idempotency_key or new_idempotency_key(),
    )


def guard_approval(proxy_id: str, approval_id: str, wait: int | None = None) -> Call:
    return Call(
        "GET",
        f"/v1/guard/{seg(proxy_id)}/approvals/{seg(approval_id)}",
        params={"wait": wait},
        read_timeout=(wait or 0) + 15.0,
    )


def guard_action(proxy_id: str, approval_id: str, verb: str, body: Any = None,
                 params: dict[str, Any] | None = None) -> Call:
    return Call(
        "POST",
        f"/v1/guard/{seg(proxy_id)}/approvals/{seg(approval_id)}/{verb}",
        json=body,
        params=params,
    )


def guard_history(proxy_id: str, params: dict[str, Any]) -> Call:
    return Call("GET", f"/v1/guard/{seg(proxy_id)}/approvals/history", params=params)


def settle(tool: dict[str, Any], approval: dict[str, Any] | None) -> dict[str, Any]:
    """The guard seed's answer for a tool decision and, when it needed one, its approval."""
    if approval is None:
        return tool
    status = approval.get("status")
    base = {"approval_id": approval.get("approval_id"), "status": status, "approval": approval}
    if status == "approved":
        return {"action": "allow", "approved_by": approval.get("approved_by"), **base}
    if status == "pending":
        return {"action": "block", "reason": "Approval timeout", **base}
    reason = approval.get("reason") or approval.get("comment")
    if not reason:
        reason = {"expired": "Approval expired", "cancelled": "Approval cancelled"}.get(
            str(status), "Approval denied"
        )
    return {"action": "block", "reason": reason, **base}
