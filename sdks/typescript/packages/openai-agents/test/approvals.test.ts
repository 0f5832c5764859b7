// Guard-backed approvals in an OpenAI Agents SDK run driven by the SDK's scripted model, against
// the real binary: an allowed call runs at once; a call that needs approval interrupts the run and
// runs after the reviewer approves; rejected and blocked calls never run and the model reads why;
// a run saved as a string and resumed by a fresh process finds the same approval request.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Countersign, type Guard } from "@countersign/sdk";
import { CountersignApprovals, needsApproval, resolveApprovals } from "@countersign/openai-agents";
import { Agent, RunState, run, setTracingDisabled, tool } from "@openai/agents";
import { ScriptedModel, assistantMessage, functionCall } from "@openai/agents/testing";
import { z } from "zod";
import { startServer, type TestServer } from "@countersign/test-server";

let server: TestServer;
let admin: Guard;
let reviewer: Guard;
let agentClient: Countersign;

setTracingDisabled(true);

before(async () => {
  server = await startServer();
  const client = (apiKey: string) => new Countersign({ baseUrl: server.base, apiKey });
  admin = client(server.adminKey).guard("default");
  reviewer = client(server.reviewerKey).guard("default");
  agentClient = client(server.agentKey);
  await admin.groups.create({ id: "group_finance", name: "Finance Team", members: [{ email: server.reviewerEmail, role: "primary" }] });
  await admin.policies.create({
    name: "Approve refunds",
    tool_pattern: "payment_*",
    action: "require_approval",
    approval_config: { timeout_minutes: 30, approval_group_id: "group_finance" },
  });
  await admin.policies.create({ name: "No dropping tables", tool_pattern: "db_drop_*", action: "block" });
});
after(async () => {
  await server?.stop();
});

let sessions = 0;
const session = () => `session_${++sessions}_${Date.now()}`;

/** The agent's tools; `ran` records every call that actually executed. */
function tools(approvals: CountersignApprovals, ran: string[]) {
  const refund = approvals.protect(
    tool({
      name: "payment_refund",
      description: "Refund an order",
      parameters: z.object({ order_id: z.number() }),
      execute: async ({ order_id }) => {
        ran.push(`payment_refund:${order_id}`);
        return `refunded order ${order_id}`;
      },
    }),
  );
  const search = approvals.protect(
    tool({
      name: "search_docs",
      description: "Search the docs",
      parameters: z.object({ q: z.string() }),
      execute: async ({ q }) => {
        ran.push(`search_docs:${q}`);
        return `found 3 pages about ${q}`;
      },
    }),
  );
  const drop = tool({
    name: "db_drop_table",
    description: "Drop a table",
    parameters: z.object({ table: z.string() }),
    needsApproval: needsApproval("db_drop_table", { client: agentClient, sessionId: approvals.sessionId }),
    execute: async ({ table }) => {
      ran.push(`db_drop_table:${table}`);
      return `dropped ${table}`;
    },
  });
  return [refund, search, drop];
}

function setup(call: { name: string; args: Record<string, unknown>; callId: string }, sessionId = session()) {
  const ran: string[] = [];
  const approvals = new CountersignApprovals({ client: agentClient, sessionId, timeoutMs: 20_000 });
  const model = new ScriptedModel([[functionCall(call.name, call.args, { callId: call.callId })], [assistantMessage("Done.")]]);
  const agent = new Agent({ name: "support", instructions: "Help the customer.", model, tools: tools(approvals, ran) });
  return { ran, approvals, model, agent, sessionId };
}

/** Plays the reviewer: waits for the pending approval of this tool and session, then decides it. */
async function decide(toolName: string, sessionId: string, decision: "approve" | "reject", reason?: string): Promise<string> {
  for (let i = 0; i < 200; i++) {
    const { approvals } = await admin.history({ status: "pending", tool: toolName });
    for (const item of approvals) {
      const full = await admin.approval(item.approval_id);
      if (full.session_id !== sessionId) continue;
      if (decision === "approve") await reviewer.approve(item.approval_id, "ok");
      else await reviewer.reject(item.approval_id, reason);
      return item.approval_id;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no pending ${toolName} in ${sessionId}`);
}

/** The approvals of this session, whatever their status. */
async function approvalsOf(sessionId: string): Promise<string[]> {
  const { approvals } = await admin.history({ limit: 100 });
  const ids: string[] = [];
  for (const item of approvals) {
    if ((await admin.approval(item.approval_id)).session_id === sessionId) ids.push(item.approval_id);
  }
  return ids;
}

/** What the model was told about the tool call with this id in its last request. */
function toolOutputSeen(model: ScriptedModel, callId: string): string {
  const input = model.lastCall!.request.input;
  assert.ok(Array.isArray(input));
  const output = input.find((i: any) => i.type === "function_call_result" && i.callId === callId) as any;
  assert.ok(output, `the model saw no output for ${callId}: ${JSON.stringify(input)}`);
  return typeof output.output === "string" ? output.output : (output.output.text ?? JSON.stringify(output.output));
}

test("a call the guard allows runs at once, without an interruption", async () => {
  const { ran, agent, model } = setup({ name: "search_docs", args: { q: "refunds" }, callId: "call_allow" });
  const result = await run(agent, "How do refunds work?");
  assert.deepEqual(result.interruptions, []);
  assert.deepEqual(ran, ["search_docs:refunds"]);
  assert.equal(result.finalOutput, "Done.");
  assert.equal(toolOutputSeen(model, "call_allow"), "found 3 pages about refunds");
});

test("a call that needs approval interrupts the run and runs once the reviewer approves", async () => {
  const { ran, approvals, agent, model, sessionId } = setup({ name: "payment_refund", args: { order_id: 42 }, callId: "call_approve" });
  let result = await run(agent, "Refund order 42");
  assert.equal(result.interruptions.length, 1);
  assert.equal(result.interruptions[0].name, "payment_refund");
  assert.deepEqual(ran, []);

  const [state] = await Promise.all([approvals.resolveApprovals(result), decide("payment_refund", sessionId, "approve")]);
  result = await run(agent, state);
  assert.deepEqual(result.interruptions, []);
  assert.deepEqual(ran, ["payment_refund:42"]);
  assert.equal(result.finalOutput, "Done.");
  assert.equal(toolOutputSeen(model, "call_approve"), "refunded order 42");
  assert.equal((await approvalsOf(sessionId)).length, 1);
});

test("a rejected call never runs, and the model reads the reviewer's reason", async () => {
  const { ran, agent, model, sessionId } = setup({ name: "payment_refund", args: { order_id: 7 }, callId: "call_reject" });
  let result = await run(agent, "Refund order 7");
  assert.equal(result.interruptions.length, 1);

  const [state] = await Promise.all([
    resolveApprovals(result, { client: agentClient, sessionId, timeoutMs: 20_000 }),
    decide("payment_refund", sessionId, "reject", "Order 7 was already refunded"),
  ]);
  result = await run(agent, state);
  assert.deepEqual(ran, []);
  assert.equal(result.finalOutput, "Done.");
  assert.equal(toolOutputSeen(model, "call_reject"), "Not approved: Order 7 was already refunded");
});

test("a blocked call interrupts the run, never runs, and the model reads the guard's message", async () => {
  const { ran, approvals, agent, model } = setup({ name: "db_drop_table", args: { table: "users" }, callId: "call_block" });
  let result = await run(agent, "Drop the users table");
  assert.equal(result.interruptions.length, 1);
  const state = await approvals.resolveApprovals(result);
  result = await run(agent, state);
  assert.deepEqual(ran, []);
  assert.equal(result.finalOutput, "Done.");
  assert.match(toolOutputSeen(model, "call_block"), /^Blocked: .+/);
});

test("a run saved as a string resumes in a fresh process with the same approval request", async () => {
  const sessionId = session();
  const first = setup({ name: "payment_refund", args: { order_id: 99 }, callId: "call_restart" }, sessionId);
  const interrupted = await run(first.agent, "Refund order 99");
  assert.equal(interrupted.interruptions.length, 1);
  const saved = interrupted.state.toString();
  const [approvalId] = await approvalsOf(sessionId);
  assert.ok(approvalId);

  // The "restarted process": new client, approvals, tools, agent and model; only the string survives.
  const ran: string[] = [];
  const client = new Countersign({ baseUrl: server.base, apiKey: server.agentKey });
  const approvals = new CountersignApprovals({ client, sessionId, timeoutMs: 20_000 });
  const model = new ScriptedModel([[assistantMessage("Done.")]]);
  const agent = new Agent({ name: "support", instructions: "Help the customer.", model, tools: tools(approvals, ran) });
  const restored = await RunState.fromString(agent, saved);
  assert.equal(restored.getInterruptions().length, 1);

  const [state, decided] = await Promise.all([approvals.resolveApprovals(restored), decide("payment_refund", sessionId, "approve")]);
  assert.equal(decided, approvalId);
  const result = await run(agent, state);
  assert.deepEqual(result.interruptions, []);
  assert.deepEqual(ran, ["payment_refund:99"]);
  assert.equal(toolOutputSeen(model, "call_restart"), "refunded order 99");
  assert.deepEqual(await approvalsOf(sessionId), [approvalId]);
  assert.deepEqual(first.ran, []);
});
