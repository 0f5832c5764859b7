"""The guard seed's Python snippets, run against the real server. They are the seed's code,
adapted only by names: the server's URL and key, the tenant (``default`` for ``proxy_xyz``),
and the helpers the second snippet calls, bound to this package."""

from __future__ import annotations

import asyncio

import httpx

from countersign import AsyncCountersign

from helpers import unique


async def reviewer_decides(env, tool_call: dict, verb: str, **body) -> None:
    """Approve or reject the pending approval of ``tool_call`` as soon as it appears."""
    async with AsyncCountersign(env.base_url, env.reviewer_key) as reviewer:
        while True:
            page = await reviewer.request("GET", "/v1/approvals", params={"status": "pending"})
            mine = [a for a in page["approvals"] if a.get("context") == tool_call["arguments"]]
            if mine:
                guard = reviewer.guard()
                await (guard.approve(mine[0]["id"], **body) if verb == "approve"
                       else guard.reject(mine[0]["id"], **body))
                return
            await asyncio.sleep(0.05)


async def test_handling_approvals_in_your_agent(env):
    API_KEY = env.agent_key
    BASE = env.base_url

    # --- the seed's snippet ("Handling Approvals in Your Agent"), URL adapted ---
    async def validate_and_wait_for_approval(
        proxy_id: str,
        tool_call: dict,
        max_wait_seconds: int = 1800
    ) -> dict:
        """Validate tool call and wait for approval if needed."""
        async with httpx.AsyncClient() as client:
            # Initial validation
            response = await client.post(
                f"{BASE}/v1/guard/{proxy_id}/tool",
                headers={"Authorization": f"Bearer {API_KEY}"},
                json={"session_id": "session_123", "tool_call": tool_call}
            )
            result = response.json()
            if result["action"] != "require_approval":
                return result
            # Poll for approval
            approval_id = result["approval_id"]
            poll_interval = 5  # seconds
            elapsed = 0
            while elapsed < max_wait_seconds:
                response = await client.get(
                    f"{BASE}/v1/guard/{proxy_id}/approvals/{approval_id}",
                    headers={"Authorization": f"Bearer {API_KEY}"}
                )
                approval = response.json()
                if approval["status"] == "approved":
                    return {"action": "allow", "approved_by": approval["approved_by"]}
                if approval["status"] in ["rejected", "expired"]:
                    return {"action": "block", "reason": approval.get("reason", "Approval denied")}
                await asyncio.sleep(poll_interval)
                elapsed += poll_interval
            return {"action": "block", "reason": "Approval timeout"}
    # --- end of the seed's snippet ---

    executed = []

    def execute_tool(tool_call):
        executed.append(tool_call)

    async def usage(tool_call):
        # The seed's "Usage" lines.
        result = await validate_and_wait_for_approval("default", tool_call)
        if result["action"] == "allow":
            execute_tool(tool_call)
        else:
            return f"Operation not permitted: {result.get('reason', 'Approval required')}"

    tool_call = {"name": "payment_refund", "arguments": {"amount": 500, "customer_id": unique("cust")}}
    outcome, _ = await asyncio.gather(
        usage(tool_call), reviewer_decides(env, tool_call, "approve", comment="Verified")
    )
    assert outcome is None and executed == [tool_call]

    rejected_call = {"name": "payment_refund", "arguments": {"amount": 501, "customer_id": unique("cust")}}
    outcome, _ = await asyncio.gather(
        usage(rejected_call),
        reviewer_decides(env, rejected_call, "reject", reason="Suspicious activity detected"),
    )
    assert outcome == "Operation not permitted: Suspicious activity detected"
    assert executed == [tool_call]


async def test_graceful_user_experience(env):
    async with AsyncCountersign(env.base_url, env.agent_key) as cs:
        guard = cs.guard("default")
        proxy_id = "default"

        # The helpers the seed's snippet calls, bound to this package.
        async def validate_tool_call(proxy_id, tool_call):
            return await cs.guard(proxy_id).tool(session_id="session_123", tool_call=tool_call)

        async def wait_for_approval(approval_id):
            approval = await guard.wait_for_approval(approval_id, timeout=30)
            if approval["status"] == "approved":
                return {"action": "allow", "approved_by": approval["approved_by"]}
            return {"action": "block", "reason": approval.get("reason") or approval["status"]}

        executed = []

        async def execute_tool(tool_call):
            executed.append(tool_call)
            return "done"

        # --- the seed's snippet ("Graceful User Experience") ---
        async def handle_tool_with_approval(tool_call, user_message_callback):
            result = await validate_tool_call(proxy_id, tool_call)
            if result["action"] == "require_approval":
                # Inform user
                await user_message_callback(
                    "This operation requires approval from a team member. "
                    "You'll be notified once it's reviewed."
                )
                # Wait for decision
                result = await wait_for_approval(result["approval_id"])
                if result["action"] == "allow":
                    await user_message_callback("Operation approved! Proceeding...")
                    return await execute_tool(tool_call)
                else:
                    return f"Operation was not approved: {result.get('reason')}"
            elif result["action"] == "allow":
                return await execute_tool(tool_call)
            else:
                return f"Operation blocked: {result['message']}"
        # --- end of the seed's snippet ---

        messages: list[str] = []

        async def tell(text):
            messages.append(text)

        call = {"name": "payment_refund", "arguments": {"amount": 10, "customer_id": unique("c")}}
        outcome, _ = await asyncio.gather(
            handle_tool_with_approval(call, tell), reviewer_decides(env, call, "approve")
        )
        assert outcome == "done" and executed == [call]
        assert messages == [
            "This operation requires approval from a team member. You'll be notified once it's reviewed.",
            "Operation approved! Proceeding...",
        ]

        call = {"name": "payment_refund", "arguments": {"amount": 11, "customer_id": unique("c")}}
        outcome, _ = await asyncio.gather(
            handle_tool_with_approval(call, tell), reviewer_decides(env, call, "reject", reason="No.")
        )
        assert outcome == "Operation was not approved: No."

        assert await handle_tool_with_approval({"name": "lookup", "arguments": {}}, tell) == "done"
        blocked = await handle_tool_with_approval({"name": "delete_user", "arguments": {}}, tell)
        assert blocked.startswith("Operation blocked: ")
