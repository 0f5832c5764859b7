// The guard API through the SDK, against the real binary: the seed's setup, tool calls that are
// allowed, blocked and approved or rejected, grants verified offline and by introspection.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  ConflictError,
  Countersign,
  GrantVerificationError,
  PermissionDeniedError,
  ToolCallBlockedError,
  WaitTimeoutError,
  canonicalSha256,
  verifyGrant,
  type FetchLike,
  type Guard,
} from "@countersign/sdk";
import { startServer, type TestServer } from "@countersign/test-server";

let server: TestServer;
let admin: Guard;
let agent: Guard;
let reviewer: Guard;
let agentClient: Countersign;

before(async () => {
  server = await startServer();
  const client = (apiKey: string) => new Countersign({ baseUrl: server.base, apiKey });
  admin = client(server.adminKey).guard("default");
  agentClient = client(server.agentKey);
  agent = agentClient.guard("default");
  reviewer = client(server.reviewerKey).guard("default");

  // The seed's setup: an approval group, then the policy that names it.
  await admin.groups.create({
    id: "group_finance",
    name: "Finance Team",
    members: [{ email: server.reviewerEmail, role: "primary" }],
    escalation_minutes: 15,
  });
  await admin.policies.create({
    name: "Approve Financial Operations",
    tool_pattern: "payment_*",
    action: "require_approval",
    approval_config: { timeout_minutes: 30, notification_channels: ["email"], approval_group_id: "group_finance" },
  });
  await admin.policies.create({ name: "No dropping tables", tool_pattern: "db_drop_*", action: "block" });
  await admin.settings.put({ ...(await admin.settings.get()), grant_audiences: [server.executorAudience] });
});
after(async () => {
  await server?.stop();
});

let sessions = 0;
const session = () => `session_${++sessions}_${Date.now()}`;

test("admin keys manage policies, groups, routing and settings", async () => {
  const policies = await admin.policies.list();
  assert.deepEqual(policies.map((p) => p.name).sort(), ["Approve Financial Operations", "No dropping tables"]);
  const created = await admin.policies.create({ name: "Read freely", tool_pattern: "read_*", action: "allow", priority: 5 });
  assert.equal((await admin.policies.get(created.id)).priority, 5);
  const updated = await admin.policies.update(created.id, { name: "Read freely", tool_pattern: "read_*", action: "block", condition: "args.secret == true" });
  assert.equal(updated.action, "block");
  const evaluated = await admin.policies.evaluate({ tool_call: { name: "read_file", arguments: { secret: true } } });
  assert.equal(evaluated.action, "block");
  assert.equal(evaluated.policy_matched, "Read freely");
  await admin.policies.delete(created.id);
  assert.equal((await admin.policies.list()).length, 2);

  const group = await admin.groups.get("group_finance");
  assert.equal(group.name, "Finance Team");
  assert.deepEqual((await admin.groups.list()).map((g) => g.id), ["group_finance"]);
  await admin.groups.create({ id: "group_security", name: "Security", members: [{ email: server.reviewerEmail, role: "backup" }] });
  await admin.groups.update("group_security", { id: "group_security", name: "Security Team", members: [{ email: server.reviewerEmail, role: "primary" }] });
  assert.equal((await admin.groups.get("group_security")).name, "Security Team");

  await admin.routing.put({ routing_rules: [{ condition: { risk_score_min: 0.99 }, approval_group: "group_security" }] });
  assert.equal((await admin.routing.get()).routing_rules.length, 1);
  // A group a routing rule uses cannot be deleted.
  await assert.rejects(admin.groups.delete("group_security"), (e: unknown) => e instanceof ConflictError && e.code === "in_use");
  await admin.routing.put({ routing_rules: [] });
  await admin.groups.delete("group_security");

  const settings = await admin.settings.get();
  assert.equal(settings.default_action, "allow");
  assert.deepEqual(settings.grant_audiences, [server.executorAudience]);

  // Agents may not.
  await assert.rejects(agent.policies.list(), (e: unknown) => e instanceof PermissionDeniedError && e.status === 403 && e.code === "forbidden");
});

test("validateAndWait: allow returns at once, block returns the refusal or throws it", async () => {
  const allowed = await agent.validateAndWait({ sessionId: session(), toolCall: { name: "search_docs", arguments: { q: "refunds" } } });
  assert.equal(allowed.action, "allow");
  assert.equal(allowed.approval_id, undefined);

  const blocked = await agent.validateAndWait({ sessionId: session(), toolCall: { name: "db_drop_table", arguments: { table: "users" } } });
  assert.equal(blocked.action, "block");
  assert.ok(blocked.action === "block" && blocked.code === "blocked" && blocked.reason.length > 0);
  assert.equal(blocked.decision.policy_matched, "No dropping tables");

  await assert.rejects(
    agent.validateAndWait({
      sessionId: session(),
      toolCall: { type: "function", function: { name: "db_drop_index", arguments: '{"index":"i"}' } },
      throwOnBlock: true,
    }),
    (e: unknown) => e instanceof ToolCallBlockedError && e.code === "blocked",
  );
});

test("require_approval: the agent waits, a reviewer approves, the grant is bound to the arguments", async () => {
  const sessionId = session();
  const args = { amount: 500, customer_id: "cust_123" };
  const toolCall = { name: "payment_refund", arguments: args };
  // A reviewer learns of the approval (here: the first answer); the agent waits for it.
  const first = await agent.tool({ sessionId, toolCall, reason: "The customer asked for a refund" });
  assert.equal(first.action, "require_approval");
  const approvalId = first.approval_id!;
  assert.match(approvalId, /^apr_/);

  const waiting = agent.validateAndWait({ sessionId, toolCall, timeoutMs: 20_000 });
  setTimeout(() => reviewer.approve(approvalId, "Verified with customer support ticket #1234"), 200);
  const result = await waiting;
  assert.equal(result.action, "allow");
  assert.ok(result.action === "allow");
  assert.equal(result.approval_id, approvalId, "the same session and arguments join the pending approval");
  assert.equal(result.approved_by, server.reviewerEmail);
  assert.equal(result.approval?.comment, "Verified with customer support ticket #1234");
  assert.equal(result.approval?.arguments_sha256, canonicalSha256(args));
  assert.equal(result.approval?.agent_reason, "The customer asked for a refund");

  const grant = await agent.grant(approvalId, { resource: server.executorAudience });
  assert.equal(grant.token_type, "Bearer");
  await assert.rejects(agent.grant(approvalId), (e: unknown) => e instanceof ConflictError && e.code === "already_exists");

  // The executor, offline.
  const verify = (overrides: Partial<Parameters<typeof verifyGrant>[1]> = {}) =>
    verifyGrant(grant.access_token, {
      jwksUrl: `${server.base}/.well-known/jwks.json`,
      issuer: server.base,
      audience: server.executorAudience,
      tenant: "default",
      expectedArguments: { customer_id: "cust_123", amount: 500 },
      ...overrides,
    });
  const { claims, detail } = await verify();
  assert.equal(claims.approval_id, approvalId);
  assert.equal(claims.tid, "default");
  assert.equal(detail?.type, "countersign_tool_call");
  const failsWith = async (overrides: Partial<Parameters<typeof verifyGrant>[1]>, code: string) =>
    assert.rejects(verify(overrides), (e: unknown) => {
      assert.ok(e instanceof GrantVerificationError, String(e));
      assert.equal(e.code, code);
      return true;
    });
  await failsWith({ expectedArguments: { ...args, amount: 5000 } }, "arguments_mismatch");
  await failsWith({ expectedArguments: { ...args, amount: 2 ** 53 } }, "invalid_number");
  await failsWith({ audience: "https://other.example.com" }, "invalid_aud");
  await failsWith({ issuer: "https://elsewhere.example.com" }, "invalid_iss");
  await failsWith({ tenant: "acme" }, "invalid_tid");
  const [h, p, s] = grant.access_token.split(".");
  const forged = `${h}.${p}.${s!.slice(0, -4)}${s!.slice(-4) === "AAAA" ? "BBBB" : "AAAA"}`;
  await assert.rejects(verifyGrant(forged, { jwksUrl: `${server.base}/.well-known/jwks.json`, issuer: server.base, audience: server.executorAudience }),
    (e: unknown) => e instanceof GrantVerificationError && e.code === "invalid_signature");

  // The executor, online: single use.
  const executor = new Countersign({ baseUrl: server.base, apiKey: server.executorKey });
  const active = await executor.introspect(grant.access_token, { consume: true });
  assert.equal(active.active, true);
  assert.ok(active.active && active.approval_id === approvalId && active.aud === server.executorAudience);
  assert.deepEqual(await executor.introspect(grant.access_token, { consume: true }), { active: false });

  const history = await admin.history({ status: "approved", tool: "payment_refund" });
  assert.ok(history.approvals.some((a) => a.approval_id === approvalId && a.decided_by === server.reviewerEmail));
});

test("require_approval: a rejection comes back as a block with the reviewer's reason", async () => {
  const sessionId = session();
  const toolCall = { type: "tool_use", name: "payment_transfer", input: { amount: 9000, to: "acct_9" } } as const;
  const first = await agent.tool({ sessionId, toolCall });
  setTimeout(() => reviewer.reject(first.approval_id!, "Suspicious activity detected"), 200);
  const result = await agent.validateAndWait({ sessionId, toolCall, timeoutMs: 20_000 });
  assert.equal(result.action, "block");
  assert.ok(result.action === "block");
  assert.equal(result.code, "rejected");
  assert.equal(result.reason, "Suspicious activity detected");
  await assert.rejects(agent.grant(first.approval_id!), (e: unknown) => e instanceof ConflictError && e.code === "not_approved");
});

test("waitForApproval honours timeoutMs and AbortSignal; the agent can cancel", async () => {
  const decision = await agent.tool({ sessionId: session(), toolCall: { name: "payment_send", arguments: { amount: 1 } } });
  const id = decision.approval_id!;
  await assert.rejects(agent.waitForApproval(id, { timeoutMs: 1_100 }), (e: unknown) => e instanceof WaitTimeoutError);
  const timedOut = await agent.validateAndWait({ sessionId: "other", toolCall: { name: "payment_send", arguments: { amount: 2 } }, timeoutMs: 500 });
  assert.ok(timedOut.action === "block" && timedOut.code === "approval_timeout" && timedOut.reason === "Approval timeout");

  const controller = new AbortController();
  const waiting = agent.waitForApproval(id, { signal: controller.signal });
  setTimeout(() => controller.abort(new Error("shutting down")), 150);
  const t0 = Date.now();
  await assert.rejects(waiting, /shutting down/);
  assert.ok(Date.now() - t0 < 2_000);

  const waiter = agent.waitForApproval(id, { timeoutMs: 20_000 });
  const cancelled = await agent.cancel(id);
  assert.equal(cancelled.status, "cancelled");
  assert.equal((await waiter).status, "cancelled");
  assert.equal((await agent.approval(id)).status, "cancelled");
  await assert.rejects(reviewer.approve(id), (e: unknown) => e instanceof ConflictError && e.code === "already_decided" && e.currentStatus === "cancelled");
});

test("a retried tool call whose first answer was lost returns the same approval, replayed", async () => {
  const keys: (string | null)[] = [];
  const replayed: (string | null)[] = [];
  let dropped = false;
  const flaky: FetchLike = async (input, init) => {
    const response = await fetch(input, init);
    if (init?.method === "POST") {
      keys.push(new Headers(init.headers).get("idempotency-key"));
      replayed.push(response.headers.get("idempotent-replayed"));
      if (!dropped) {
        dropped = true;
        await response.arrayBuffer();
        throw new TypeError("fetch failed: socket hang up");
      }
    }
    return response;
  };
  const client = new Countersign({ baseUrl: server.base, apiKey: server.agentKey, fetch: flaky, retries: { max: 2, baseDelayMs: 10 } });
  const sessionId = session();
  const decision = await client.guard("default").tool({ sessionId, toolCall: { name: "payment_refund", arguments: { amount: 77 } } });
  assert.equal(decision.action, "require_approval");
  assert.equal(keys.length, 2);
  assert.ok(keys[0]);
  assert.equal(keys[0], keys[1]);
  assert.deepEqual(replayed, [null, "true"], "the second answer is the first one, replayed");
  const pending = await server.api(`/v1/approvals?status=pending`, { key: server.reviewerKey });
  assert.equal(pending.approvals.filter((a: any) => a.session_id === sessionId || a.id === decision.approval_id).length, 1);
});

test("keyed by the tool call's id, a replay after the decision rejoins the approval instead of asking again", async () => {
  const sessionId = session();
  const call = { sessionId, toolCall: { name: "payment_refund", arguments: { amount: 8 } }, idempotencyKey: "tool-call:call_abc" };
  const first = await agent.tool(call);
  await reviewer.approve(first.approval_id!);
  // A restarted agent replays the same tool call: the first answer comes back, already approved.
  const replay = await agent.validateAndWait({ ...call, timeoutMs: 5_000 });
  assert.ok(replay.action === "allow" && replay.approval_id === first.approval_id);
  // Without the key, the same call after the decision is a new request.
  const fresh = await agent.tool({ sessionId, toolCall: call.toolCall });
  assert.notEqual(fresh.approval_id, first.approval_id);
  await agent.cancel(fresh.approval_id!);
});

test("the seed's TypeScript validateAndWaitForApproval runs against the server", async () => {
  const API_KEY = server.agentKey;
  const BASE = server.base; // the seed's https://api.bastio.com
  async function validateAndWaitForApproval(
    proxyId: string,
    toolCall: object,
    maxWaitMs: number = 1800000
  ): Promise<{ action: string; reason?: string }> {
    // Initial validation
    const response = await fetch(
      `${BASE}/v1/guard/${proxyId}/tool`,
      {
        method: 'POST',
        headers: {
          'Authorization': `Bearer ${API_KEY}`,
          'Content-Type': 'application/json',
        },
        body: JSON.stringify({
          session_id: 'session_123',
          tool_call: toolCall,
        }),
      }
    );
    const result = await response.json();
    if (result.action !== 'require_approval') {
      return result;
    }
    // Poll for approval
    const approvalId = result.approval_id;
    const pollInterval = 5000;
    let elapsed = 0;
    while (elapsed < maxWaitMs) {
      const approvalResponse = await fetch(
        `${BASE}/v1/guard/${proxyId}/approvals/${approvalId}`,
        { headers: { 'Authorization': `Bearer ${API_KEY}` } }
      );
      const approval = await approvalResponse.json();
      if (approval.status === 'approved') {
        return { action: 'allow' };
      }
      if (['rejected', 'expired'].includes(approval.status)) {
        return { action: 'block', reason: approval.reason || 'Denied' };
      }
      await new Promise(r => setTimeout(r, pollInterval));
      elapsed += pollInterval;
    }
    return { action: 'block', reason: 'Approval timeout' };
  }

  assert.equal((await validateAndWaitForApproval("default", { name: "search_docs", arguments: {} })).action, "allow");
  assert.equal((await validateAndWaitForApproval("default", { name: "db_drop_table", arguments: {} })).action, "block");

  // The reviewer approves what is pending for session_123 while the seed's loop sleeps.
  const toolCall = { name: "payment_refund", arguments: { amount: 500, customer_id: "cust_123" } };
  const waiting = validateAndWaitForApproval("default", toolCall);
  const pending = await agent.tool({ sessionId: "session_123", toolCall });
  await reviewer.approve(pending.approval_id!, "ok");
  assert.deepEqual(await waiting, { action: "allow" });

  // The SDK's one call gives the seed's answer shape too.
  const again = await agent.validateAndWait({ sessionId: "session_123", toolCall: { name: "search_docs", arguments: {} } });
  assert.equal(again.action, "allow");
});
