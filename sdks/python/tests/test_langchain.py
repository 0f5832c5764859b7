"""countersign.langchain with LangChain v1's create_agent, a scripted fake chat model and an
in-memory checkpointer: the guard middleware in both modes (sync and async runs) and ciba_tool,
with a reviewer deciding through the API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from countersign import AsyncCountersign, Countersign
from countersign.langchain import CountersignMiddleware, ciba_tool

from helpers import later, unique


class ScriptedChatModel(GenericFakeChatModel):
    """GenericFakeChatModel that accepts tools (create_agent binds them) and ignores them."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def script(*messages: BaseMessage) -> ScriptedChatModel:
    return ScriptedChatModel(messages=iter(messages))


def call(name: str, args: dict[str, Any], call_id: str | None = None) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id or unique("call")}])


def make_tools(ran: list) -> list:
    @tool
    def payment_refund(amount: int, customer_id: str) -> str:
        """Refund a customer."""
        ran.append(("payment_refund", amount, customer_id))
        return f"refunded {amount} to {customer_id}"

    @tool
    def lookup_order(order_id: str) -> str:
        """Look an order up."""
        ran.append(("lookup_order", order_id))
        return f"order {order_id}: shipped"

    @tool
    def delete_customer(customer_id: str) -> str:
        """Delete a customer."""
        ran.append(("delete_customer", customer_id))
        return "deleted"

    return [payment_refund, lookup_order, delete_customer]


def tool_messages(result: dict) -> list[ToolMessage]:
    return [m for m in result["messages"] if isinstance(m, ToolMessage)]


def approvals_of(env, customer: str, status: str = "all") -> list[dict]:
    with Countersign(env.base_url, env.admin_key) as admin:
        page = admin.request("GET", "/v1/approvals", params={"status": status, "limit": 200})
    return [a for a in page["approvals"] if (a.get("context") or {}).get("customer_id") == customer]


def decide(env, customer: str, verb: str = "approve", ciba: bool = False, **body: Any) -> None:
    """As the reviewer: wait for the one pending request about ``customer`` and decide it."""
    deadline = time.monotonic() + 10
    while not (mine := approvals_of(env, customer, "pending")):
        assert time.monotonic() < deadline, f"no pending request for {customer}"
        time.sleep(0.05)
    assert len(mine) == 1, mine
    with Countersign(env.base_url, env.reviewer_key) as reviewer:
        if ciba:
            if verb == "approve":
                reviewer.ciba.approve(approval_id=mine[0]["id"], **body)
            else:
                reviewer.ciba.deny(approval_id=mine[0]["id"], **body)
        elif verb == "approve":
            reviewer.guard().approve(mine[0]["id"], **body)
        else:
            reviewer.guard().reject(mine[0]["id"], **body)


def test_an_allowed_call_runs(env, agent):
    ran: list = []
    graph = create_agent(
        script(call("lookup_order", {"order_id": "42"}), AIMessage("It shipped.")),
        tools=make_tools(ran), middleware=[CountersignMiddleware(agent, session_id=unique("s"))],
    )
    result = graph.invoke({"messages": [("user", "Where is order 42?")]})
    assert ran == [("lookup_order", "42")]
    assert tool_messages(result)[0].content == "order 42: shipped"
    assert result["messages"][-1].content == "It shipped."


def test_a_blocked_call_is_refused_with_the_reason(env, agent):
    ran: list = []
    customer = unique("cust")
    graph = create_agent(
        script(call("delete_customer", {"customer_id": customer}), AIMessage("I cannot.")),
        tools=make_tools(ran), middleware=[CountersignMiddleware(agent, session_id=unique("s"))],
    )
    result = graph.invoke({"messages": [("user", "Delete them")]})
    assert ran == []
    [refusal] = tool_messages(result)
    assert refusal.status == "error" and refusal.content.startswith("Blocked: ")
    assert result["messages"][-1].content == "I cannot."


@pytest.mark.parametrize("client_class", [AsyncCountersign, Countersign])
async def test_an_approved_call_runs_after_the_wait(env, client_class):
    ran: list = []
    customer = unique("cust")
    client = client_class(env.base_url, env.agent_key)
    try:
        graph = create_agent(
            script(call("payment_refund", {"amount": 500, "customer_id": customer}), AIMessage("Done.")),
            tools=make_tools(ran),
            middleware=[CountersignMiddleware(client, session_id=unique("s"), timeout=20)],
        )
        reviewer = later(0.1, lambda: decide(env, customer, comment="ok"))
        result = await graph.ainvoke({"messages": [("user", "Refund 500")]})
        reviewer.join()
    finally:
        if isinstance(client, AsyncCountersign):
            await client.aclose()
        else:
            client.close()
    assert ran == [("payment_refund", 500, customer)]
    assert tool_messages(result)[0].status == "success"
    assert result["messages"][-1].content == "Done."


def test_a_rejected_call_never_runs_and_the_model_gets_the_reason(env, agent):
    ran: list = []
    customer = unique("cust")
    graph = create_agent(
        script(call("payment_refund", {"amount": 9, "customer_id": customer}), AIMessage("Refused.")),
        tools=make_tools(ran),
        middleware=[CountersignMiddleware(agent, session_id=unique("s"), timeout=20)],
    )
    reviewer = later(0.1, lambda: decide(env, customer, "reject", reason="Suspicious activity detected"))
    result = graph.invoke({"messages": [("user", "Refund 9")]})
    reviewer.join()
    assert ran == []
    [refusal] = tool_messages(result)
    assert refusal.status == "error"
    assert refusal.content == "Not approved (rejected): Suspicious activity detected"


def interrupted(graph: Any, config: dict, customer: str) -> dict:
    value = graph.get_state(config).interrupts
    assert len(value) == 1, value
    payload = value[0].value
    assert payload["type"] == "countersign_approval" and payload["approval_id"].startswith("apr_")
    assert payload["tool_call"]["arguments"]["customer_id"] == customer
    return payload


def test_interrupt_mode_resumes_after_a_restart_with_one_approval_request(env, agent):
    ran: list = []
    customer = unique("cust")
    session = unique("s")
    saver = InMemorySaver()
    config = {"configurable": {"thread_id": unique("thread")}}
    args = {"amount": 77, "customer_id": customer}

    first = create_agent(
        script(call("payment_refund", args)), tools=make_tools(ran), checkpointer=saver,
        middleware=[CountersignMiddleware(agent, session_id=session, mode="interrupt")],
    )
    result = first.invoke({"messages": [("user", "Refund 77")]}, config)
    assert "__interrupt__" in result and ran == []
    payload = interrupted(first, config, customer)
    assert result["__interrupt__"][0].value == payload
    # Resuming before the reviewer decides interrupts again, for the same approval (the
    # replayed node sends the same tool call id, and the guard answers from its Idempotency-Key).
    result = first.invoke(Command(resume=True), config)
    assert "__interrupt__" in result and ran == []
    assert interrupted(first, config, customer)["approval_id"] == payload["approval_id"]
    assert len(approvals_of(env, customer)) == 1

    decide(env, customer, comment="fine")

    # A restart: a new client, model and agent on the same checkpointer.
    with Countersign(env.base_url, env.agent_key) as client:
        second = create_agent(
            script(AIMessage("Refunded after approval.")), tools=make_tools(ran), checkpointer=saver,
            middleware=[CountersignMiddleware(client, session_id=session, mode="interrupt", timeout=20)],
        )
        result = second.invoke(Command(resume={"approval_id": payload["approval_id"]}), config)
    assert ran == [("payment_refund", 77, customer)]
    assert result["messages"][-1].content == "Refunded after approval."
    mine = approvals_of(env, customer)
    assert len(mine) == 1 and mine[0]["status"] == "approved"


@pytest.mark.parametrize("client_class", [AsyncCountersign, Countersign])
async def test_interrupt_mode_async_refuses_a_rejected_call_on_resume(env, client_class):
    ran: list = []
    customer = unique("cust")
    saver = InMemorySaver()
    config = {"configurable": {"thread_id": unique("thread")}}
    client = client_class(env.base_url, env.agent_key)
    try:
        middleware = [CountersignMiddleware(client, session_id=unique("s"), mode="interrupt", timeout=20)]
        graph = create_agent(
            script(call("payment_refund", {"amount": 5, "customer_id": customer}), AIMessage("Not done.")),
            tools=make_tools(ran), checkpointer=saver, middleware=middleware,
        )
        result = await graph.ainvoke({"messages": [("user", "Refund 5")]}, config)
        assert "__interrupt__" in result
        decide(env, customer, "reject", reason="no")
        # A resume value that claims approval does not override the reviewer.
        result = await graph.ainvoke(Command(resume={"status": "approved"}), config)
    finally:
        if isinstance(client, AsyncCountersign):
            await client.aclose()
        else:
            client.close()
    assert ran == []
    [refusal] = tool_messages(result)
    assert refusal.status == "error" and refusal.content == "Not approved (rejected): no"
    assert len(approvals_of(env, customer)) == 1


def ciba_tools(env, client: Any, ran: list) -> Any:
    @ciba_tool(client, user_id=env.user_id, scope="approve:payment", requested_expiry=60, timeout=20,
               binding_message="Approve payment of ${amount} to {customer_id}?")
    def send_payment(amount: int, customer_id: str) -> str:
        """Send a payment (requires human approval)."""
        ran.append((amount, customer_id))
        return f"sent {amount} to {customer_id}"

    return send_payment


def test_ciba_tool_runs_after_approval(env, agent):
    ran: list = []
    customer = unique("cust")
    send_payment = ciba_tools(env, agent, ran)
    assert set(send_payment.tool_call_schema.model_json_schema()["properties"]) == {"amount", "customer_id"}
    graph = create_agent(
        script(call("send_payment", {"amount": 12, "customer_id": customer}), AIMessage("Paid.")),
        tools=[send_payment],
    )
    reviewer = later(0.1, lambda: decide(env, customer, ciba=True))
    result = graph.invoke({"messages": [("user", "Pay 12")]})
    reviewer.join()
    assert ran == [(12, customer)]
    assert tool_messages(result)[0].content == f"sent 12 to {customer}"
    [request] = approvals_of(env, customer)
    assert request["status"] == "approved"


async def test_ciba_tool_denial_is_the_tools_error_result(env):
    ran: list = []
    customer = unique("cust")
    call_id = unique("call")
    async with AsyncCountersign(env.base_url, env.agent_key) as client:
        send_payment = ciba_tools(env, client, ran)
        reviewer = later(0.1, lambda: decide(env, customer, "deny", ciba=True, reason="not today"))
        tool_call = {"name": "send_payment", "args": {"amount": 3, "customer_id": customer},
                     "id": call_id, "type": "tool_call"}
        message = await send_payment.ainvoke(tool_call)
        reviewer.join()
        # The same tool call again (a replay): the same request, no second question.
        again = await send_payment.ainvoke(tool_call)
    assert ran == []
    assert isinstance(message, ToolMessage) and message.status == "error"
    assert "not today" in message.content and again.content == message.content
    assert len(approvals_of(env, customer)) == 1


def test_interrupt_mode_with_two_calls_in_one_turn(env, agent):
    ran: list = []
    customer = unique("cust")
    saver = InMemorySaver()
    config = {"configurable": {"thread_id": unique("thread")}}
    both = AIMessage(content="", tool_calls=[
        {"name": "payment_refund", "args": {"amount": 1, "customer_id": customer}, "id": unique("call")},
        {"name": "payment_refund", "args": {"amount": 2, "customer_id": customer}, "id": unique("call")},
    ])
    graph = create_agent(
        script(both, AIMessage("Both handled.")), tools=make_tools(ran), checkpointer=saver,
        middleware=[CountersignMiddleware(agent, session_id=unique("s"), mode="interrupt")],
    )
    result = graph.invoke({"messages": [("user", "Refund twice")]}, config)
    assert len(result["__interrupt__"]) == 2 and ran == []
    with Countersign(env.base_url, env.reviewer_key) as reviewer:
        first, second = sorted(approvals_of(env, customer, "pending"), key=lambda a: a["context"]["amount"])
        reviewer.guard().approve(first["id"])
        reviewer.guard().reject(second["id"], reason="once is enough")
    # Two pending interrupts: LangGraph wants a resume value per interrupt id.
    result = graph.invoke(Command(resume={i.id: True for i in result["__interrupt__"]}), config)
    assert ran == [("payment_refund", 1, customer)]
    statuses = sorted((m.status, m.content) for m in tool_messages(result))
    assert statuses == [("error", "Not approved (rejected): once is enough"), ("success", f"refunded 1 to {customer}")]
    assert len(approvals_of(env, customer)) == 2
