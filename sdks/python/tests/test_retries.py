"""Retries: a call whose answer is lost after the server acted is retried with the same
Idempotency-Key, so it never creates a second request. The transports below forward every
request to the real server; they only lose answers or put a 429 in front, as a flaky network or
a proxy would."""

from __future__ import annotations

import httpx
import pytest

from countersign import AsyncCountersign, ConnectionFailed, Countersign, RateLimited

from helpers import unique


class LosesFirstAnswer(httpx.BaseTransport):
    """Sends each request to the server; for the first request to ``path``, drops the answer."""

    def __init__(self, path: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.path = path
        self.sent: list[httpx.Request] = []
        self.answers: list[httpx.Response] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path == self.path:
            self.sent.append(request)
            response.read()
            self.answers.append(response)
            if len(self.sent) == 1:
                response.close()
                raise httpx.ReadError("connection reset after the server answered", request=request)
        return response


class AsyncLosesFirstAnswer(httpx.AsyncBaseTransport):
    def __init__(self, path: str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.path = path
        self.sent: list[httpx.Request] = []
        self.answers: list[httpx.Response] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path == self.path:
            self.sent.append(request)
            await response.aread()
            self.answers.append(response)
            if len(self.sent) == 1:
                await response.aclose()
                raise httpx.ReadError("connection reset after the server answered", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class TooManyFirst(httpx.BaseTransport):
    """Answers the first request to ``path`` with a 429 (as a rate-limiting proxy would)."""

    def __init__(self, path: str, retry_after: str = "0.2") -> None:
        self.inner = httpx.HTTPTransport()
        self.path = path
        self.retry_after = retry_after
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == self.path:
            self.sent.append(request)
            if len(self.sent) == 1:
                return httpx.Response(
                    429,
                    headers={"Retry-After": self.retry_after},
                    json={"error": {"code": "rate_limited", "message": "slow down"}},
                )
        return self.inner.handle_request(request)


def pending_with_message(admin: Countersign, message: str) -> list[dict]:
    page = admin.request("GET", "/v1/approvals", params={"status": "pending", "limit": 200})
    return [a for a in page["approvals"] if a.get("binding_message") == message]


def test_a_lost_authorize_answer_is_retried_with_the_same_key_and_creates_one_request(env, admin):
    transport = LosesFirstAnswer("/ciba/authorize")
    message = unique("Approve payment of $500?")
    with Countersign(env.base_url, env.agent_key, transport=transport) as agent:
        req = agent.ciba.authorize(user_id=env.user_id, scope="approve:payment", binding_message=message)
    assert len(transport.sent) == 2
    keys = {r.headers["Idempotency-Key"] for r in transport.sent}
    assert len(keys) == 1
    first, second = transport.answers
    assert first.json()["authReqId"] == second.json()["authReqId"] == req["auth_req_id"]
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert len(pending_with_message(admin, message)) == 1


def test_a_lost_tool_answer_is_retried_with_the_same_key(env):
    transport = LosesFirstAnswer("/v1/guard/default/tool")
    with Countersign(env.base_url, env.agent_key, transport=transport) as agent:
        decision = agent.guard().tool(
            session_id=unique("s"), tool_call={"name": "payment_refund", "arguments": {"amount": 3}}
        )
    assert decision["action"] == "require_approval"
    assert len({r.headers["Idempotency-Key"] for r in transport.sent}) == 1
    assert transport.answers[1].headers.get("Idempotent-Replayed") == "true"
    assert transport.answers[0].json()["approval_id"] == decision["approval_id"]


def test_each_call_has_its_own_key_and_a_chosen_key_returns_the_same_request(env, agent):
    kw = dict(user_id=env.user_id, scope="approve:x", binding_message="Same?")
    a = agent.ciba.authorize(**kw)
    b = agent.ciba.authorize(**kw)
    assert a["auth_req_id"] != b["auth_req_id"]
    key = unique("toolcall")
    c = agent.ciba.authorize(**kw, idempotency_key=key)
    d = agent.ciba.authorize(**kw, idempotency_key=key)
    assert c["auth_req_id"] == d["auth_req_id"]


def test_429_is_retried_after_retry_after_with_the_same_key(env):
    transport = TooManyFirst("/ciba/authorize")
    with Countersign(env.base_url, env.agent_key, transport=transport) as agent:
        req = agent.ciba.authorize(user_id=env.user_id, scope="approve:x", binding_message="429?")
    assert req["auth_req_id"]
    assert len(transport.sent) == 2
    assert transport.sent[0].headers["Idempotency-Key"] == transport.sent[1].headers["Idempotency-Key"]


def test_without_retries_the_errors_surface(env):
    with Countersign(env.base_url, env.agent_key, transport=TooManyFirst("/ciba/authorize"), retries=0) as agent:
        with pytest.raises(RateLimited) as info:
            agent.ciba.authorize(user_id=env.user_id, scope="approve:x", binding_message="No retry")
    assert (info.value.status, info.value.code, info.value.retry_after) == (429, "rate_limited", 0.2)
    with Countersign(env.base_url, env.agent_key, transport=LosesFirstAnswer("/ciba/authorize"), retries=0) as agent:
        with pytest.raises(ConnectionFailed) as lost:
            agent.ciba.authorize(user_id=env.user_id, scope="approve:x", binding_message="Lost")
    assert lost.value.status is None


def test_a_decision_whose_answer_was_lost_is_not_sent_again(env, agent):
    req = agent.ciba.authorize(user_id=env.user_id, scope="approve:x", binding_message="Decide once")
    transport = LosesFirstAnswer("/ciba/approve")
    with Countersign(env.base_url, env.reviewer_key, transport=transport) as reviewer:
        with pytest.raises(ConnectionFailed):
            reviewer.ciba.approve(req["auth_req_id"])
    assert len(transport.sent) == 1
    assert agent.ciba.poll(req["auth_req_id"])["status"] == "approved"


def test_unreachable_servers_are_a_connection_failure():
    with Countersign("http://127.0.0.1:9", "csk_x", retries=1) as client:
        with pytest.raises(ConnectionFailed):
            client.ciba.poll("x")


async def test_the_async_client_retries_a_lost_answer_with_the_same_key(env, admin):
    transport = AsyncLosesFirstAnswer("/ciba/authorize")
    message = unique("Async payment?")
    async with AsyncCountersign(env.base_url, env.agent_key, transport=transport) as agent:
        req = await agent.ciba.authorize(user_id=env.user_id, scope="approve:payment", binding_message=message)
    assert len({r.headers["Idempotency-Key"] for r in transport.sent}) == 1 and len(transport.sent) == 2
    assert transport.answers[1].headers.get("Idempotent-Replayed") == "true"
    assert transport.answers[0].json()["authReqId"] == req["auth_req_id"]
    assert len(pending_with_message(admin, message)) == 1


def test_a_lost_token_answer_is_not_replayed(env, agent, reviewer):
    # The first approved answer of /ciba/token carries the access token, once: asking again
    # would only learn that it was issued. The error says the answer was lost instead.
    req = agent.ciba.authorize(user_id=env.user_id, scope="approve:x", binding_message="Token once")
    reviewer.ciba.approve(req["auth_req_id"])
    transport = LosesFirstAnswer("/ciba/token")
    with Countersign(env.base_url, env.agent_key, transport=transport) as lossy:
        with pytest.raises(ConnectionFailed):
            lossy.ciba.poll(req["auth_req_id"])
    assert len(transport.sent) == 1
    assert agent.ciba.poll(req["auth_req_id"]) == {"status": "approved", "token_already_issued": True}
