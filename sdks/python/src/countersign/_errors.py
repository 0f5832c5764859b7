"""Exceptions raised by the Countersign clients."""

from __future__ import annotations

from typing import Any

__all__ = [
    "CountersignError",
    "ConnectionFailed",
    "InvalidRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "AlreadyDecided",
    "AlreadyVoted",
    "NotApproved",
    "AlreadyExists",
    "RateLimited",
    "Unavailable",
    "WaitTimeout",
    "GrantVerificationError",
]


class CountersignError(Exception):
    """An error answer of the server (or a failure to reach it).

    ``status`` is the HTTP status (``None`` when the server was not reached), ``code`` the
    server's stable error code (see the server's README, "Errors"), ``message`` its explanation,
    ``retry_after`` the seconds the server asked to wait (429 and 503), ``current_status`` the
    request's state on conflicts, and ``body`` the decoded error body.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        current_status: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if code else message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.current_status = current_status
        self.body = body


class ConnectionFailed(CountersignError):
    """The server could not be reached, or the connection broke, after every retry."""


class InvalidRequest(CountersignError):
    """400 or 422: the request was refused as malformed (``code`` says why)."""


class Unauthorized(CountersignError):
    """401: no key, or an unknown, revoked or disabled one."""


class Forbidden(CountersignError):
    """403: the key's role may not do this."""


class NotFound(CountersignError):
    """404: nothing with that id in the caller's tenant."""


class Conflict(CountersignError):
    """409: the request conflicts with the current state."""


class AlreadyDecided(Conflict):
    """409 ``already_decided``: the request is no longer pending (see ``current_status``)."""


class AlreadyVoted(Conflict):
    """409 ``already_voted``: this reviewer already decided this request."""


class NotApproved(Conflict):
    """409 ``not_approved``: a grant was asked for an approval that is not approved."""


class AlreadyExists(Conflict):
    """409 ``already_exists``: a unique name is taken, or the grant was already issued."""


class RateLimited(CountersignError):
    """429 (``rate_limited`` or ``too_many_pending``); ``retry_after`` says when to try again."""


class Unavailable(CountersignError):
    """503: the store is unavailable or the request timed out."""


class WaitTimeout(TimeoutError):
    """A wait ended before the request was decided; ``last`` holds the last answer."""

    def __init__(self, message: str, last: Any = None) -> None:
        super().__init__(message)
        self.last = last


class GrantVerificationError(Exception):
    """A grant failed offline verification; the message says which check failed."""


_BY_CODE: dict[str, type[CountersignError]] = {
    "already_decided": AlreadyDecided,
    "already_voted": AlreadyVoted,
    "not_approved": NotApproved,
    "already_exists": AlreadyExists,
    "not_found": NotFound,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "rate_limited": RateLimited,
    "too_many_pending": RateLimited,
    "unavailable": Unavailable,
}

_BY_STATUS: dict[int, type[CountersignError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: InvalidRequest,
    429: RateLimited,
    503: Unavailable,
}


def error_from_response(status: int, headers: Any, body: Any, text: str) -> CountersignError:
    code: str | None = None
    message = text or f"HTTP {status}"
    current: str | None = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = err.get("code")
            message = err.get("message") or message
            current = err.get("current_status")
        elif isinstance(err, str):  # OAuth-style error body
            code = err
            message = body.get("error_description") or message
    retry_after: float | None = None
    raw = headers.get("retry-after") if headers is not None else None
    if raw:
        try:
            retry_after = float(raw)
        except ValueError:
            retry_after = None
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status) or CountersignError
    return cls(
        message,
        status=status,
        code=code,
        retry_after=retry_after,
        current_status=current,
        body=body,
    )
