// The seed's CIBA flow through the SDK, against the real binary.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  AuthenticationError,
  Countersign,
  CountersignError,
  InvalidRequestError,
  NotFoundError,
  ConflictError,
  WaitTimeoutError,
  verifyGrant,
  type FetchLike,
} from "@countersign/sdk";
import { startServer, type TestServer } from "@countersign/test-server";

let server: TestServer;
let agent: Countersign;
let reviewer: Countersign;

before(async () => {
  server = await startServer();
  agent = new Countersign({ baseUrl: server.base, apiKey: server.agentKey });
  reviewer = new Countersign({ baseUrl: server.base, apiKey: server.reviewerKey });
});
after(async () => {
  await server?.stop();
});

const context = { amount: 500, recipient: "Acme Corp", currency: "USD" };

test("the seed's snippets run unchanged: request, approve, poll, then the executor verifies the token", async () => {
  const executed: unknown[] = [];
  async function executePayment(accessToken: string | undefined) {
    assert.ok(accessToken, "an access token");
    const { claims } = await verifyGrant(accessToken, {
      jwksUrl: `${server.base}/.well-known/jwks.json`,
      issuer: server.base,
      audience: "urn:countersign:tenant:default",
      tenant: "default",
      expectedArguments: context,
    });
    executed.push(claims);
  }

  // 1. Request approval
  let countersign = agent;
  const { authReqId, expiresIn } = await countersign.ciba.authorize({
    userId: server.reviewerId,
    scope: "approve:payment",
    bindingMessage: "Approve payment of $500 to Acme Corp?",
    requestedExpiry: 300, // 5 minutes
    context: {
      amount: 500,
      recipient: "Acme Corp",
      currency: "USD",
    },
  });
  assert.equal(expiresIn, 300);

  // 3. User approves (dashboard/mobile): in your approval UI
  {
    const countersign = reviewer;
    await countersign.ciba.approve(authReqId);
  }

  // 2. Poll for result
  let approval;
  while (true) {
    approval = await countersign.ciba.poll(authReqId);
    if (approval.status === "approved") break;
    if (approval.status === "denied") throw new Error("User denied");
    if (approval.status === "expired") throw new Error("Approval expired");
    await new Promise((r) => setTimeout(r, 5000)); // poll every 5s
  }

  // Proceed with the approved action
  await executePayment(approval.accessToken);
  assert.equal(executed.length, 1);

  // The token is handed out once.
  assert.deepEqual(await countersign.ciba.poll(authReqId), { status: "approved", tokenAlreadyIssued: true });
});

test("the seed's deny path: the poll loop ends with 'User denied'", async () => {
  const countersign = agent;
  const { authReqId } = await countersign.ciba.authorize({
    userId: server.reviewerId,
    scope: "approve:payment",
    bindingMessage: "Approve payment of $900 to Bad Corp?",
  });
  {
    const countersign = reviewer;
    await countersign.ciba.deny(authReqId);
  }
  await assert.rejects(async () => {
    let approval;
    while (true) {
      approval = await countersign.ciba.poll(authReqId);
      if (approval.status === "approved") break;
      if (approval.status === "denied") throw new Error("User denied");
      if (approval.status === "expired") throw new Error("Approval expired");
      await new Promise((r) => setTimeout(r, 5000));
    }
  }, /User denied/);
});

test("waitFor long-polls and wakes within a moment of the decision", async () => {
  const { authReqId } = await agent.ciba.authorize({
    userId: server.reviewerId,
    scope: "approve:payment",
    bindingMessage: "Approve payment of $42 to Acme Corp?",
    context: { amount: 42 },
  });
  const started = Date.now();
  const waiting = agent.ciba.waitFor(authReqId, { timeoutMs: 20_000 });
  await new Promise((r) => setTimeout(r, 300));
  await reviewer.ciba.deny(authReqId, "not this month");
  const decided = await waiting;
  assert.deepEqual(decided, { status: "denied", reason: "not this month" });
  assert.ok(Date.now() - started < 5_000, "long-polling answers at once, not on the next poll");
});

test("waitFor honours its timeout and AbortSignal", async () => {
  const { authReqId } = await agent.ciba.authorize({
    userId: server.reviewerId,
    scope: "approve:payment",
    bindingMessage: "Approve payment of $7 to Acme Corp?",
  });
  const t0 = Date.now();
  await assert.rejects(agent.ciba.waitFor(authReqId, { timeoutMs: 1_200 }), (e: unknown) => {
    assert.ok(e instanceof WaitTimeoutError);
    assert.equal(e.code, "wait_timeout");
    return true;
  });
  assert.ok(Date.now() - t0 < 4_000);

  const controller = new AbortController();
  const waiting = agent.ciba.waitFor(authReqId, { signal: controller.signal });
  setTimeout(() => controller.abort(new Error("the user left")), 200);
  const t1 = Date.now();
  await assert.rejects(waiting, /the user left/);
  assert.ok(Date.now() - t1 < 2_000, "aborting ends the long-poll at once");
  // Still pending: waiting was given up, not the request.
  assert.deepEqual(await agent.ciba.poll(authReqId), { status: "pending" });
});

test("errors carry the HTTP status and the server's stable code", async () => {
  await assert.rejects(
    agent.ciba.authorize({ userId: server.reviewerId, scope: "approve:payment", bindingMessage: "Pay?", context: { account: 9007199254740993 } }),
    (e: unknown) => {
      assert.ok(e instanceof InvalidRequestError && e instanceof CountersignError);
      assert.equal(e.status, 400);
      assert.equal(e.code, "invalid_number");
      assert.match(e.message, /context\.account/);
      return true;
    },
  );
  await assert.rejects(agent.ciba.poll("no-such-request"), (e: unknown) => e instanceof NotFoundError && e.code === "not_found");
  const stranger = new Countersign({ baseUrl: server.base, apiKey: "csk_unknown_key_0000000000000000" });
  await assert.rejects(stranger.ciba.poll("x"), (e: unknown) => e instanceof AuthenticationError && e.status === 401 && e.code === "unauthorized");

  const { authReqId } = await agent.ciba.authorize({ userId: server.reviewerId, scope: "approve:payment", bindingMessage: "Pay $1?" });
  await reviewer.ciba.approve(authReqId, { comment: "fine" });
  await assert.rejects(reviewer.ciba.deny(authReqId), (e: unknown) => {
    assert.ok(e instanceof ConflictError);
    assert.equal(e.code, "already_decided");
    assert.equal(e.currentStatus, "approved");
    return true;
  });
});

test("a retried authorize whose first answer was lost creates one request, with one Idempotency-Key", async () => {
  const keys: (string | null)[] = [];
  let dropped = false;
  const flaky: FetchLike = async (input, init) => {
    const response = await fetch(input, init);
    if (init?.method === "POST") {
      keys.push(new Headers(init.headers).get("idempotency-key"));
      if (!dropped) {
        dropped = true;
        await response.arrayBuffer(); // the server answered and committed…
        throw new TypeError("fetch failed: connection reset"); // …but the answer never arrived
      }
      assert.equal(response.headers.get("idempotent-replayed"), "true");
    }
    return response;
  };
  const client = new Countersign({ baseUrl: server.base, apiKey: server.agentKey, fetch: flaky, retries: { max: 2, baseDelayMs: 10 } });
  const bindingMessage = `Approve payment of $31 to Retry Corp? (${Date.now()})`;
  const { authReqId } = await client.ciba.authorize({ userId: server.reviewerId, scope: "approve:payment", bindingMessage });
  assert.ok(authReqId);
  assert.equal(keys.length, 2);
  assert.match(keys[0]!, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(keys[0], keys[1]);

  const pending = await server.api(`/v1/approvals?status=pending`, { key: server.reviewerKey });
  assert.equal(pending.approvals.filter((a: any) => a.binding_message === bindingMessage).length, 1, "exactly one request");

  // A new call is a new request, with a new key.
  await client.ciba.authorize({ userId: server.reviewerId, scope: "approve:payment", bindingMessage });
  assert.notEqual(keys[2], keys[0]);
});

test("429 with Retry-After is retried after the pause the server asked for", async () => {
  let calls = 0;
  const limited: FetchLike = async (input, init) => {
    calls++;
    if (calls === 1) {
      return new Response(JSON.stringify({ error: { code: "rate_limited", message: "slow down" } }), {
        status: 429,
        headers: { "content-type": "application/json", "retry-after": "1" },
      });
    }
    return fetch(input, init);
  };
  const client = new Countersign({ baseUrl: server.base, apiKey: server.agentKey, fetch: limited });
  const t0 = Date.now();
  const { authReqId } = await client.ciba.authorize({ userId: server.reviewerId, scope: "approve:payment", bindingMessage: "Pay $2?" });
  assert.ok(authReqId);
  assert.equal(calls, 2);
  assert.ok(Date.now() - t0 >= 950, "waited for Retry-After");

  const noRetry = new Countersign({ baseUrl: server.base, apiKey: server.agentKey, retries: 0, fetch: async () =>
    new Response(JSON.stringify({ error: { code: "too_many_pending", message: "wait" } }), { status: 429, headers: { "retry-after": "7" } }) });
  await assert.rejects(noRetry.ciba.poll("x"), (e: unknown) => e instanceof CountersignError && e.code === "too_many_pending" && e.retryAfter === 7);
});

test("reads are retried on 503; a decision lost on the network is not resent", async () => {
  let reads = 0;
  const unavailableOnce: FetchLike = async (input, init) => {
    if ((init?.method ?? "GET") === "GET" && ++reads === 1) {
      return new Response(JSON.stringify({ error: { code: "unavailable", message: "try again" } }), { status: 503 });
    }
    return fetch(input, init);
  };
  const { authReqId } = await agent.ciba.authorize({ userId: server.reviewerId, scope: "approve:payment", bindingMessage: "Pay $3?" });
  const client = new Countersign({ baseUrl: server.base, apiKey: server.agentKey, fetch: unavailableOnce, retries: { baseDelayMs: 5 } });
  assert.deepEqual(await client.ciba.poll(authReqId), { status: "pending" });
  assert.equal(reads, 2);

  let posts = 0;
  const dropsAnswers: FetchLike = async (input, init) => {
    const response = await fetch(input, init);
    if (init?.method === "POST") {
      posts++;
      await response.arrayBuffer();
      throw new TypeError("fetch failed");
    }
    return response;
  };
  const flakyReviewer = new Countersign({ baseUrl: server.base, apiKey: server.reviewerKey, fetch: dropsAnswers, retries: { baseDelayMs: 5 } });
  await assert.rejects(flakyReviewer.ciba.approve(authReqId), (e: unknown) => e instanceof CountersignError && e.status === 0 && e.code === "network_error");
  assert.equal(posts, 1, "a decision is sent once");
  // It did arrive: the agent sees the approval.
  assert.equal((await agent.ciba.waitFor(authReqId, { timeoutMs: 5_000 })).status, "approved");
});
