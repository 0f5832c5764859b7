"""The guard seed's flows through the sync client, against the real server."""

from __future__ import annotations

import pytest

from countersign import (
    AlreadyExists,
    Countersign,
    Forbidden,
    GrantVerificationError,
    InvalidRequest,
    NotApproved,
    verify_grant,
)

from conftest import AUDIENCE
from helpers import later, unique


def refund(amount: int = 500) -> dict:
    return {"name": "payment_refund", "arguments": {"amount": amount, "customer_id": unique("cust")}}


def test_allow_and_block_answer_at_once(agent):
    guard = agent.guard("default")
    allowed = guard.validate_and_wait(session_id="s", tool_call={"name": "lookup_order", "arguments": {"id": 1}})
    assert allowed["action"] == "allow"
    blocked = guard.validate_and_wait(session_id="s", tool_call={"name": "delete_customer", "arguments": {"id": 1}})
    assert blocked["action"] == "block"
    assert blocked["policy_matched"] == "No deletions"


def test_validate_and_wait_returns_allow_once_a_reviewer_approves(env, agent, reviewer):
    guard = agent.guard()
    call = refund()
    decision = guard.tool(session_id=unique("s"), tool_call=call, reason="customer asked")
    assert decision["action"] == "require_approval"
    assert decision["policy_matched"] == "Approve Financial Operations"
    approval_id = decision["approval_id"]
    pending = guard.approval(approval_id)
    assert pending["status"] == "pending" and pending["arguments"] == call["arguments"]

    # The same call again, with the same session: the same pending approval, now waited for.
    decider = later(0.5, lambda: reviewer.guard().approve(approval_id, comment="Verified with customer"))
    result = guard.validate_and_wait(session_id=pending["session_id"], tool_call=call, max_wait_seconds=20)
    decider.join()
    assert result["action"] == "allow"
    assert result["approval_id"] == approval_id
    assert result["approved_by"] == env.reviewer_email
    assert result["approval"]["comment"] == "Verified with customer"


def test_a_rejection_is_a_block_with_the_reviewers_reason(agent, reviewer):
    guard = agent.guard()
    decision = guard.tool(session_id=unique("s"), tool_call=refund())
    reviewer.guard().reject(decision["approval_id"], reason="Suspicious activity detected")
    result = guard.validate_and_wait(session_id="other", tool_call={"name": "lookup", "arguments": {}})
    assert result["action"] == "allow"
    waited = guard.wait_for_approval(decision["approval_id"], timeout=5)
    assert waited["status"] == "rejected"
    assert waited["reason"] == "Suspicious activity detected"


def test_a_wait_past_max_wait_is_a_block_and_cancel_withdraws(agent):
    guard = agent.guard()
    result = guard.validate_and_wait(session_id=unique("s"), tool_call=refund(), max_wait_seconds=1)
    assert result["action"] == "block" and result["reason"] == "Approval timeout"
    cancelled = guard.cancel(result["approval_id"])
    assert cancelled["status"] == "cancelled"
    assert guard.wait_for_approval(result["approval_id"])["status"] == "cancelled"


def test_a_grant_is_bound_to_the_approved_arguments_and_single_use_on_introspection(env, agent, reviewer):
    guard = agent.guard()
    call = refund(750)
    decision = guard.tool(session_id=unique("s"), tool_call=call)
    with pytest.raises(NotApproved):
        guard.grant(decision["approval_id"], resource=AUDIENCE)
    reviewer.guard().approve(decision["approval_id"])
    grant = guard.grant(decision["approval_id"], resource=AUDIENCE)
    assert grant["token_type"] == "Bearer" and grant["expires_in"] > 0
    with pytest.raises(AlreadyExists):
        guard.grant(decision["approval_id"], resource=AUDIENCE)

    check = dict(
        jwks_url=f"{env.base_url}/.well-known/jwks.json", issuer=env.base_url, audience=AUDIENCE
    )
    claims = verify_grant(
        grant["access_token"], tenant="default", expected_arguments=call["arguments"],
        expected_tool="payment_refund", **check,
    )
    assert claims["approval_id"] == decision["approval_id"]
    with pytest.raises(GrantVerificationError, match="differ"):
        verify_grant(grant["access_token"], expected_arguments={**call["arguments"], "amount": 751}, **check)
    with pytest.raises(GrantVerificationError, match="tid"):
        verify_grant(grant["access_token"], tenant="acme", **check)
    with pytest.raises(GrantVerificationError):
        verify_grant(grant["access_token"], **{**check, "audience": "https://other.example.com"})
    with pytest.raises(GrantVerificationError):
        verify_grant(grant["access_token"], **{**check, "issuer": "https://evil.example.com"})
    with pytest.raises(GrantVerificationError, match="2\\^53"):
        verify_grant(grant["access_token"], expected_arguments={"amount": 2**53}, **check)
    tampered = grant["access_token"][:-4] + ("AAAA" if not grant["access_token"].endswith("AAAA") else "BBBB")
    with pytest.raises(GrantVerificationError):
        verify_grant(tampered, **check)

    with Countersign(env.base_url, env.executor_key) as executor:
        first = executor.introspect(grant["access_token"], consume=True)
        assert first["active"] is True and first["approval_id"] == decision["approval_id"]
        assert executor.introspect(grant["access_token"], consume=True) == {"active": False}


def test_history_lists_decisions_newest_first(env, agent, reviewer, admin):
    decision = agent.guard().tool(session_id=unique("s"), tool_call=refund(42))
    reviewer.guard().approve(decision["approval_id"], comment="fine")
    page = admin.guard().history(status="approved", tool="payment_refund", limit=50)
    first = page["approvals"][0]
    assert first["approval_id"] == decision["approval_id"]
    assert first["decided_by"] == env.reviewer_email and first["comment"] == "fine"


def test_admins_manage_policies_groups_routing_and_settings(admin, agent):
    guard = admin.guard("default")
    group = guard.groups.create(
        name=unique("Ops"), members=[{"email": "reviewer@example.com", "role": "primary"}]
    )
    assert guard.groups.get(group["id"])["name"] == group["name"]
    name = unique("Approve exports")
    policy = guard.policies.create(
        name=name, tool_pattern="export_*", action="require_approval",
        approval_config={"approval_group_id": group["id"], "timeout_minutes": 5},
    )
    assert any(p["id"] == policy["id"] for p in guard.policies.list()["policies"])
    evaluated = guard.policies.evaluate(tool_call={"name": "export_users", "arguments": {}})
    assert evaluated["action"] == "require_approval"
    updated = guard.policies.update(policy["id"], name=name, tool_pattern="export_*", action="block")
    assert updated["action"] == "block"
    assert agent.guard().tool(session_id="s", tool_call={"name": "export_users", "arguments": {}})["action"] == "block"
    guard.policies.delete(policy["id"])

    rules = guard.routing.get()
    assert "routing_rules" in rules
    guard.routing.set(routing_rules=[{"condition": {"tool_pattern": "export_*"}, "approval_group": group["id"]}])
    assert guard.routing.get()["routing_rules"][0]["approval_group"] == group["id"]
    guard.routing.set(routing_rules=[])
    guard.groups.delete(group["id"])

    settings = guard.settings.get()
    assert AUDIENCE in settings["grant_audiences"]
    assert guard.settings.set(**settings)["grant_audiences"] == settings["grant_audiences"]


def test_agents_cannot_administer_and_bad_input_is_an_invalid_request(agent):
    with pytest.raises(Forbidden):
        agent.guard().policies.list()
    with pytest.raises(InvalidRequest) as info:
        agent.guard().tool(session_id="s", tool_call={"name": "payment_x", "arguments": {"n": 2**60}})
    assert (info.value.status, info.value.code) == (400, "invalid_number")
