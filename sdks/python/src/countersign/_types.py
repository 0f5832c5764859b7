"""Shapes of the server's answers. They are plain dicts at runtime."""

from __future__ import annotations

import sys
from typing import Any, Literal, TypedDict

if sys.version_info >= (3, 11):
    from typing import NotRequired
else:  # pragma: no cover
    from typing_extensions import NotRequired

ApprovalStatus = Literal["pending", "approved", "rejected", "expired", "cancelled"]
CibaStatusValue = Literal["pending", "approved", "denied", "expired"]
ToolAction = Literal["allow", "block", "require_approval"]


class AuthorizeResult(TypedDict):
    """The answer of ``ciba.authorize``."""

    auth_req_id: str
    expires_in: int
    interval: int


class CibaStatus(TypedDict):
    """The answer of ``ciba.poll``: ``status`` and, once approved, the access token (once)."""

    status: CibaStatusValue
    access_token: NotRequired[str | None]
    token_type: NotRequired[str | None]
    expires_in: NotRequired[int | None]
    token_already_issued: NotRequired[bool]
    reason: NotRequired[str | None]


class Decision(TypedDict):
    """The answer of ``ciba.approve`` and ``ciba.deny``."""

    approval_id: str
    status: Literal["approved", "denied"]


class ToolDecision(TypedDict):
    """The guard's answer to a tool call."""

    action: ToolAction
    message: str
    risk_score: float
    threats_detected: list[str]
    approval_id: NotRequired[str | None]
    expires_at: NotRequired[str | None]
    policy_matched: NotRequired[str | None]


class Approval(TypedDict, total=False):
    """A guard approval: the seed's fields, the tool call, its digest and every decision."""

    approval_id: str
    status: ApprovalStatus
    approved_by: str | None
    approved_at: str | None
    comment: str | None
    reason: str | None
    decided_by: str | None
    decided_at: str | None
    tool_name: str
    arguments: dict[str, Any]
    arguments_sha256: str
    agent_id: str
    agent_reason: str | None
    session_id: str | None
    risk_score: float
    threats_detected: list[str]
    policy_matched: str | None
    approval_group: str | None
    # Present when the call came through MCP: the tool's hints and where it came from.
    annotations: dict[str, bool]
    mcp: dict[str, str]
    escalation_level: int
    required_approvals: int
    decisions: list[dict[str, Any]]
    requested_at: str
    expires_at: str


class ValidateResult(TypedDict):
    """The answer of ``validate_and_wait``, shaped like the guard seed's helper."""

    action: Literal["allow", "block"]
    approval_id: NotRequired[str | None]
    approved_by: NotRequired[str | None]
    reason: NotRequired[str | None]
    message: NotRequired[str]
    status: NotRequired[str]
    approval: NotRequired[Approval]
    risk_score: NotRequired[float]
    threats_detected: NotRequired[list[str]]
    policy_matched: NotRequired[str | None]
    expires_at: NotRequired[str | None]


class Grant(TypedDict):
    """A signed grant for an approved tool call."""

    access_token: str
    token_type: str
    expires_in: int


class HistoryItem(TypedDict, total=False):
    approval_id: str
    tool_name: str
    status: ApprovalStatus
    requested_at: str
    decided_at: str | None
    decided_by: str | None
    comment: str | None


class History(TypedDict):
    approvals: list[HistoryItem]
    next_cursor: NotRequired[str | None]
