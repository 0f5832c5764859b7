"""The asyncio client: the same surface, awaited, against the real server."""

from __future__ import annotations

import asyncio
import time

import pytest

from countersign import AlreadyDecided, AsyncCountersign, NotFound, WaitTimeout, verify_grant

from conftest import AUDIENCE
from helpers import unique


async def test_ciba_authorize_wait_for_and_approve_concurrently(env):
    async with AsyncCountersign(env.base_url, env.agent_key) as agent, \
            AsyncCountersign(env.base_url, env.reviewer_key) as reviewer:
        req = await agent.ciba.authorize(
            user_id=env.user_id, scope="approve:payment", binding_message="Async pay $5?",
            requested_expiry=120, context={"amount": 5},
        )

        async def approve_soon():
            await asyncio.sleep(0.3)
            return await reviewer.ciba.approve(req["auth_req_id"], comment="ok")

        started = time.monotonic()
        result, decision = await asyncio.gather(
            agent.ciba.wait_for(req["auth_req_id"], timeout=20), approve_soon()
        )
        assert time.monotonic() - started < 3
        assert result["status"] == "approved" and result["access_token"]
        assert decision["status"] == "approved"
        with pytest.raises(AlreadyDecided) as info:
            await reviewer.ciba.deny(req["auth_req_id"])
        assert info.value.code == "already_decided"
        claims = verify_grant(
            result["access_token"], jwks_url=f"{env.base_url}/.well-known/jwks.json",
            issuer=env.base_url, audience="urn:countersign:tenant:default",
            expected_arguments={"amount": 5},
        )
        assert claims["tid"] == "default"


async def test_guard_validate_and_wait_grant_and_introspect(env):
    async with AsyncCountersign(env.base_url, env.agent_key) as agent, \
            AsyncCountersign(env.base_url, env.reviewer_key) as reviewer, \
            AsyncCountersign(env.base_url, env.executor_key) as executor:
        guard = agent.guard("default")
        call = {"name": "payment_refund", "arguments": {"amount": 99, "customer_id": unique("c")}}
        session = unique("s")

        async def reviewer_approves():
            while True:
                page = await reviewer.request("GET", "/v1/approvals", params={"status": "pending"})
                mine = [a for a in page["approvals"] if a.get("context") == call["arguments"]]
                if mine:
                    return await reviewer.guard().approve(mine[0]["id"], comment="async ok")
                await asyncio.sleep(0.05)

        result, _ = await asyncio.gather(
            guard.validate_and_wait(session_id=session, tool_call=call, max_wait_seconds=20),
            reviewer_approves(),
        )
        assert result["action"] == "allow" and result["approved_by"] == env.reviewer_email
        grant = await guard.grant(result["approval_id"], resource=AUDIENCE)
        introspected = await executor.introspect(grant["access_token"], consume=True)
        assert introspected["active"] is True
        assert (await executor.introspect(grant["access_token"])) == {"active": False}

        history = await reviewer.guard().history(status="approved", tool="payment_refund")
        assert history["approvals"][0]["approval_id"] == result["approval_id"]
        blocked = await guard.validate_and_wait(session_id=session, tool_call={"name": "delete_all", "arguments": {}})
        assert blocked["action"] == "block"


async def test_async_waits_time_out_and_errors_are_typed(env):
    async with AsyncCountersign(env.base_url, env.agent_key) as agent:
        decision = await agent.guard().tool(
            session_id=unique("s"), tool_call={"name": "payment_x", "arguments": {"n": 1}}
        )
        with pytest.raises(WaitTimeout) as info:
            await agent.guard().wait_for_approval(decision["approval_id"], timeout=1)
        assert info.value.last["status"] == "pending"
        assert (await agent.guard().cancel(decision["approval_id"]))["status"] == "cancelled"
        with pytest.raises(NotFound):
            await agent.guard().approval("apr_" + "0" * 26)
    async with AsyncCountersign(env.base_url, env.admin_key) as admin:
        policies = await admin.guard().policies.list()
        assert any(p["name"] == "No deletions" for p in policies["policies"])
