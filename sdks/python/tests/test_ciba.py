"""The CIBA seed's flow through the sync client, against the real server."""

from __future__ import annotations

import time

import pytest

from countersign import (
    AlreadyDecided,
    Countersign,
    Forbidden,
    GrantVerificationError,
    NotFound,
    Unauthorized,
    WaitTimeout,
    verify_grant,
)

from helpers import later, unique


def test_the_seeds_flow_authorize_poll_approve_and_verify_the_token(env, agent, reviewer):
    context = {"amount": 500, "recipient": "Acme Corp", "currency": "USD"}
    req = agent.ciba.authorize(
        user_id=env.user_id,
        scope="approve:payment",
        binding_message="Approve payment of $500 to Acme Corp?",
        requested_expiry=300,
        context=context,
    )
    assert set(req) == {"auth_req_id", "expires_in", "interval"}
    assert req["expires_in"] == 300
    auth_req_id = req["auth_req_id"]

    assert agent.ciba.poll(auth_req_id) == {"status": "pending"}
    decision = reviewer.ciba.approve(auth_req_id)
    assert decision["status"] == "approved" and decision["approval_id"].startswith("apr_")

    approval = agent.ciba.poll(auth_req_id)
    assert approval["status"] == "approved"
    assert approval["token_type"] == "Bearer"
    token = approval["access_token"]
    again = agent.ciba.poll(auth_req_id)
    assert again == {"status": "approved", "token_already_issued": True}

    claims = verify_grant(
        token,
        jwks_url=f"{env.base_url}/.well-known/jwks.json",
        issuer=env.base_url,
        audience="urn:countersign:tenant:default",
        tenant="default",
        expected_arguments=context,
    )
    assert claims["approval_id"] == decision["approval_id"]
    assert claims["authorization_details"][-1]["scope"] == "approve:payment"
    with pytest.raises(GrantVerificationError, match="differ"):
        verify_grant(
            token,
            jwks_url=f"{env.base_url}/.well-known/jwks.json",
            issuer=env.base_url,
            audience="urn:countersign:tenant:default",
            expected_arguments={**context, "amount": 5000},
        )


def test_wait_for_long_polls_and_returns_within_moments_of_the_decision(env, agent, reviewer):
    req = agent.ciba.authorize(user_id=env.user_id, scope="approve:delete", binding_message="Delete cust_1?")
    decider = later(0.5, lambda: reviewer.ciba.deny(req["auth_req_id"], reason="not this one"))
    started = time.monotonic()
    result = agent.ciba.wait_for(req["auth_req_id"], timeout=20)
    elapsed = time.monotonic() - started
    decider.join()
    assert result == {"status": "denied", "reason": "not this one"}
    assert 0.4 < elapsed < 3, elapsed


def test_wait_for_raises_wait_timeout_when_nobody_decides(env, agent):
    req = agent.ciba.authorize(user_id=env.user_id, scope="approve:x", binding_message="Wait?")
    with pytest.raises(WaitTimeout) as info:
        agent.ciba.wait_for(req["auth_req_id"], timeout=1)
    assert info.value.last == {"status": "pending"}


def test_errors_carry_status_and_the_servers_stable_code(env, agent, reviewer):
    req = agent.ciba.authorize(user_id=env.user_id, scope="approve:x", binding_message="Twice?")
    reviewer.ciba.approve(req["auth_req_id"])
    with pytest.raises(AlreadyDecided) as info:
        reviewer.ciba.deny(req["auth_req_id"], reason="too late")
    err = info.value
    assert (err.status, err.code, err.current_status) == (409, "already_decided", "approved")
    assert err.message

    with pytest.raises(Forbidden) as forbidden:
        agent.ciba.approve(req["auth_req_id"])
    assert forbidden.value.code == "forbidden"

    with pytest.raises(NotFound) as missing:
        agent.ciba.poll("no-such-request-" + unique())
    assert (missing.value.status, missing.value.code) == (404, "not_found")

    with Countersign(env.base_url, "csk_not_a_key_at_all_0000000000000000") as stranger:
        with pytest.raises(Unauthorized) as unauthorized:
            stranger.ciba.poll(req["auth_req_id"])
    assert unauthorized.value.status == 401


def test_the_seeds_poll_loop_in_python(env, agent, reviewer):
    # The seed's "Poll for result" loop, written with this client.
    req = agent.ciba.authorize(
        user_id=env.user_id, scope="approve:payment", binding_message="Approve payment of $500?"
    )
    reviewer.ciba.approve(req["auth_req_id"])
    while True:
        approval = agent.ciba.poll(req["auth_req_id"])
        if approval["status"] == "approved":
            break
        if approval["status"] == "denied":
            raise RuntimeError("User denied")
        if approval["status"] == "expired":
            raise RuntimeError("Approval expired")
        time.sleep(0.1)
    assert approval["access_token"]


def test_reviewers_decide_by_public_id_too(env, agent, reviewer):
    req = agent.ciba.authorize(user_id=env.user_id, scope="approve:x", binding_message="By id?")
    pending = reviewer.request("GET", "/v1/approvals", params={"status": "pending"})
    mine = [a for a in pending["approvals"] if a["binding_message"] == "By id?"]
    decision = reviewer.ciba.deny(approval_id=mine[0]["id"], reason="no")
    assert decision == {"approval_id": mine[0]["id"], "status": "denied"}
    assert agent.ciba.poll(req["auth_req_id"]) == {"status": "denied", "reason": "no"}
    with pytest.raises(TypeError):
        reviewer.ciba.approve()
