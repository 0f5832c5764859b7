"""Countersign: a human between an AI agent and its sensitive actions.

``Countersign`` (sync) and ``AsyncCountersign`` (asyncio) speak the CIBA API (``client.ciba``),
the guard API (``client.guard(proxy_id)``) and grant introspection; ``verify_grant`` checks a
grant offline.
"""

from ._async_client import AsyncCountersign
from ._errors import (
    AlreadyDecided,
    AlreadyExists,
    AlreadyVoted,
    Conflict,
    ConnectionFailed,
    CountersignError,
    Forbidden,
    GrantVerificationError,
    InvalidRequest,
    NotApproved,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)
from ._sync_client import Countersign
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
from .grants import arguments_digest, verify_grant

__version__ = "0.1.0"

__all__ = [
    "Countersign",
    "AsyncCountersign",
    "verify_grant",
    "arguments_digest",
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
    "Approval",
    "AuthorizeResult",
    "CibaStatus",
    "Decision",
    "Grant",
    "History",
    "ToolDecision",
    "ValidateResult",
]
