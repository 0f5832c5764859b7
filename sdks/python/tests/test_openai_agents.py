"""countersign.openai_agents with the Agents SDK's own ScriptedModel: the agent calls a
protected tool, the run is interrupted, a reviewer decides through the API, and
resolve_approvals resumes the run, also from a saved RunState after a simulated restart."""

from __future__ import annotations

import os

os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
os.environ.setdefault("OPENAI_API_KEY", "sk-unused-by-the-scripted-model")

from agents import Agent, RunState, Runner, function_tool  # noqa: E402
from agents.testing import ScriptedModel, assistant_message, function_call  # noqa: E402

from countersign import AsyncCountersign  # noqa: E402
from countersign.openai_agents import CountersignApprovals, resolve_approvals  # noqa: E402

from helpers import unique  # noqa: E402


def make_agent(model: ScriptedModel, approvals: CountersignApprovals, ran: list) -> Agent:
    @function_tool
    def payment_refund(amount: int, customer_id: str) -> str:
        """Refund a customer."""
        ran.append(("payment_refund", amount, customer_id))
        return f"refunded {amount} to {customer_id}"

    @function_tool
    def lookup_order(order_id: str) -> str:
        """Look an order up."""
        ran.append(("lookup_order", order_id))
        return f"order {order_id}: shipped"

    @function_tool
    def delete_customer(customer_id: str) -> str:
        """Delete a customer."""
        ran.append(("delete_customer", customer_id))
        return "deleted"

    tools = [approvals.protect(t) for t in (payment_refund, lookup_order, delete_customer)]
    return Agent(name="support", instructions="Help.", model=model, tools=tools)


def tool_outputs(result) -> list[str]:
    return [str(i.output) for i in result.new_items if getattr(i, "type", "") == "tool_call_output_item"]


async def approve_when_pending(env, customer_id: str, verb: str = "approve", **body) -> None:
    async with AsyncCountersign(env.base_url, env.reviewer_key) as reviewer:
        page = await reviewer.request("GET", "/v1/approvals", params={"status": "pending"})
        mine = [a for a in page["approvals"] if (a.get("context") or {}).get("customer_id") == customer_id]
        assert len(mine) == 1, mine
        guard = reviewer.guard()
        if verb == "approve":
            await guard.approve(mine[0]["id"], **body)
        else:
            await guard.reject(mine[0]["id"], **body)


async def test_an_allowed_tool_runs_at_once(env):
    async with AsyncCountersign(env.base_url, env.agent_key) as client:
        ran: list = []
        model = ScriptedModel([
            [function_call("lookup_order", {"order_id": "42"}, call_id=unique("call"))],
            [assistant_message("It shipped.")],
        ])
        agent = make_agent(model, CountersignApprovals(client, session_id=unique("s")), ran)
        result = await Runner.run(agent, "Where is order 42?")
        assert not result.interruptions
        assert ran == [("lookup_order", "42")] and result.final_output == "It shipped."


async def test_an_approved_call_runs_after_the_interruption_is_resolved(env):
    async with AsyncCountersign(env.base_url, env.agent_key) as client:
        ran: list = []
        customer = unique("cust")
        model = ScriptedModel([
            [function_call("payment_refund", {"amount": 500, "customer_id": customer}, call_id=unique("call"))],
            [assistant_message("Refund done.")],
        ])
        approvals = CountersignApprovals(client, session_id=unique("s"), timeout=20)
        agent = make_agent(model, approvals, ran)
        result = await Runner.run(agent, "Refund 500")
        assert len(result.interruptions) == 1 and ran == []

        await approve_when_pending(env, customer, comment="ok")
        state = await approvals.resolve_approvals(result)
        result = await Runner.run(agent, state)
        assert ran == [("payment_refund", 500, customer)]
        assert result.final_output == "Refund done."


async def test_a_rejected_call_never_runs_and_the_model_gets_the_reason(env):
    async with AsyncCountersign(env.base_url, env.agent_key) as client:
        ran: list = []
        customer = unique("cust")
        session = unique("s")
        model = ScriptedModel([
            [function_call("payment_refund", {"amount": 9, "customer_id": customer}, call_id=unique("call")),
             function_call("delete_customer", {"customer_id": customer}, call_id=unique("call"))],
            [assistant_message("I could not do that.")],
        ])
        agent = make_agent(model, CountersignApprovals(client, session_id=session), ran)
        result = await Runner.run(agent, "Refund and delete")
        assert len(result.interruptions) == 2

        await approve_when_pending(env, customer, "reject", reason="Suspicious activity detected")
        state = await resolve_approvals(result, client, session_id=session, timeout=20)
        result = await Runner.run(agent, state)
        assert ran == []
        outputs = tool_outputs(result)
        assert "Not approved: Suspicious activity detected" in outputs
        assert any(o.startswith("Blocked: ") for o in outputs)
        assert result.final_output == "I could not do that."


async def test_a_saved_run_resumes_in_a_new_process_without_asking_twice(env):
    customer = unique("cust")
    session = unique("s")
    call_id = unique("call")
    ran: list = []
    async with AsyncCountersign(env.base_url, env.agent_key) as client:
        model = ScriptedModel([
            [function_call("payment_refund", {"amount": 77, "customer_id": customer}, call_id=call_id)],
        ])
        agent = make_agent(model, CountersignApprovals(client, session_id=session), ran)
        result = await Runner.run(agent, "Refund 77")
        saved = result.to_state().to_string()
    assert ran == []

    await approve_when_pending(env, customer)

    # A new process: new client, new agent and model, the saved state.
    async with AsyncCountersign(env.base_url, env.agent_key) as client:
        approvals = CountersignApprovals(client, session_id=session, timeout=20)
        model = ScriptedModel([[assistant_message("Refunded after approval.")]])
        agent = make_agent(model, approvals, ran)
        state = await RunState.from_string(agent, saved)
        state = await approvals.resolve_approvals(state)
        result = await Runner.run(agent, state)
    assert ran == [("payment_refund", 77, customer)]
    assert result.final_output == "Refunded after approval."
    # One approval for the call, though it was checked in two processes.
    async with AsyncCountersign(env.base_url, env.admin_key) as admin:
        page = await admin.request("GET", "/v1/approvals", params={"status": "all", "limit": 200})
    mine = [a for a in page["approvals"] if (a.get("context") or {}).get("customer_id") == customer]
    assert len(mine) == 1 and mine[0]["status"] == "approved"
