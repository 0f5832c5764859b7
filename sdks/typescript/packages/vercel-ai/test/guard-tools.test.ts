// guardTools around an ordinary AI SDK tool set in generateText with a scripted model, against
// the real binary: allowed calls run, blocked ones return a refusal the model reads, and calls
// that need approval wait for the reviewer (who approves or rejects through the API).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Countersign, ToolCallBlockedError, type Guard } from "@countersign/sdk";
import { guardToolApproval, guardTools } from "@countersign/vercel-ai";
import { generateText, stepCountIs, tool } from "ai";
import { z } from "zod";
import { scriptedModel } from "./model.js";
import { startServer, type TestServer } from "@countersign/test-server";

let server: TestServer;
let client: Countersign;
let reviewer: Guard;

before(async () => {
  server = await startServer();
  client = new Countersign({ baseUrl: server.base, apiKey: server.agentKey });
  reviewer = new Countersign({ baseUrl: server.base, apiKey: server.reviewerKey }).guard("default");
  const admin = new Countersign({ baseUrl: server.base, apiKey: server.adminKey }).guard("default");
  await admin.groups.create({ id: "group_finance", name: "Finance Team", members: [{ email: server.reviewerEmail, role: "primary" }] });
  await admin.policies.create({
    name: "Approve payments",
    tool_pattern: "payment_*",
    action: "require_approval",
    approval_config: { approval_group_id: "group_finance" },
  });
  await admin.policies.create({ name: "No dropping tables", tool_pattern: "db_drop_*", action: "block" });
  await admin.policies.create({ name: "Read freely", tool_pattern: "read_*", action: "allow" });
});
after(async () => {
  await server?.stop();
});

let sessions = 0;
const newSession = () => `session_${++sessions}_${Date.now()}`;

function toolSet(ran: string[]) {
  return {
    read_balance: tool({
      description: "Read an account's balance",
      inputSchema: z.object({ account: z.string() }),
      execute: async ({ account }) => {
        ran.push(`read_balance ${account}`);
        return { account, balance: 1200 };
      },
    }),
    payment_send: tool({
      description: "Send a payment",
      inputSchema: z.object({ amount: z.number(), recipient: z.string() }),
      execute: async ({ amount, recipient }) => {
        ran.push(`payment_send ${amount} ${recipient}`);
        return `sent $${amount} to ${recipient}`;
      },
    }),
    db_drop_table: tool({
      description: "Drop a table",
      inputSchema: z.object({ table: z.string() }),
      execute: async ({ table }) => {
        ran.push(`db_drop_table ${table}`);
        return "dropped";
      },
    }),
  };
}

/** Plays the reviewer: waits for the session's pending approval, then approves or rejects it. */
async function decide(sessionId: string, decision: "approve" | "reject", text?: string) {
  for (let i = 0; i < 200; i++) {
    const { approvals } = await server.api(`/v1/approvals?status=pending`, { key: server.reviewerKey });
    // The list's items do not carry the session; the guard's view of each approval does.
    let found: any;
    for (const a of approvals.filter((a: any) => a.kind === "tool")) {
      if ((await reviewer.approval(a.id)).session_id === sessionId) found = a;
    }
    if (found) {
      if (decision === "approve") await reviewer.approve(found.id, text);
      else await reviewer.reject(found.id, text);
      return found.id as string;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no pending approval for ${sessionId}`);
}

async function run(sessionId: string, toolName: string, input: Record<string, unknown>, ran: string[], mode?: "result" | "throw") {
  const { model, seen } = scriptedModel(toolName, input, `call_${sessionId}`);
  const tools = guardTools(toolSet(ran), { client, proxyId: "default", sessionId, mode, timeoutMs: 20_000 });
  const result = await generateText({ model, tools, stopWhen: stepCountIs(3), prompt: "Do it" });
  return { result, seen };
}

test("allow: the original execute runs at once", async () => {
  const ran: string[] = [];
  const { seen, result } = await run(newSession(), "read_balance", { account: "acc_1" }, ran);
  assert.deepEqual(ran, ["read_balance acc_1"]);
  assert.deepEqual(seen, [{ type: "json", value: { account: "acc_1", balance: 1200 } }]);
  assert.equal(result.finishReason, "stop");
});

test("block: the model reads a refusal and the tool does not run", async () => {
  const ran: string[] = [];
  const { seen, result } = await run(newSession(), "db_drop_table", { table: "users" }, ran);
  assert.deepEqual(ran, []);
  const out = seen[0] as { type: string; value: { approved: boolean; status: string; error: string } };
  assert.equal(out.value.approved, false);
  assert.equal(out.value.status, "blocked");
  assert.match(out.value.error, /db_drop_table was not run \(blocked by policy\)/);
  assert.equal(result.finishReason, "stop");
});

test("require_approval, approved: the tool runs after the reviewer approves", async () => {
  const ran: string[] = [];
  const sessionId = newSession();
  const [{ seen }] = await Promise.all([
    run(sessionId, "payment_send", { amount: 500, recipient: "Acme Corp" }, ran),
    decide(sessionId, "approve", "Verified"),
  ]);
  assert.deepEqual(ran, ["payment_send 500 Acme Corp"]);
  assert.deepEqual(seen, [{ type: "text", value: "sent $500 to Acme Corp" }]);
});

test("require_approval, rejected: the model reads the reviewer's reason", async () => {
  const ran: string[] = [];
  const sessionId = newSession();
  const [{ seen, result }] = await Promise.all([
    run(sessionId, "payment_send", { amount: 9000, recipient: "Mallory" }, ran),
    decide(sessionId, "reject", "Unknown recipient"),
  ]);
  assert.deepEqual(ran, []);
  const out = seen[0] as { type: string; value: { approved: boolean; status: string; error: string } };
  assert.equal(out.value.status, "rejected");
  assert.match(out.value.error, /Unknown recipient/);
  assert.equal(result.finishReason, "stop");
});

test("mode throw: a block throws ToolCallBlockedError, which the AI SDK hands the model as a tool error", async () => {
  const ran: string[] = [];
  const sessionId = newSession();
  const tools = guardTools(toolSet(ran), { client, proxyId: "default", sessionId, mode: "throw" });
  await assert.rejects(
    tools.db_drop_table.execute!({ table: "users" }, { toolCallId: "call_throw_1", messages: [] }) as Promise<unknown>,
    (e: unknown) => e instanceof ToolCallBlockedError && e.code === "blocked",
  );
  const { model, seen } = scriptedModel("db_drop_table", { table: "users" }, "call_throw_2");
  const result = await generateText({ model, tools, stopWhen: stepCountIs(3), prompt: "Drop it" });
  assert.deepEqual(ran, []);
  assert.equal((seen[0] as { type: string }).type, "error-text");
  assert.equal(result.finishReason, "stop");
});

test("guardToolApproval answers AI SDK 7's toolApproval with the guard's decision", async () => {
  const approval = guardToolApproval({ client, proxyId: "default", sessionId: newSession(), timeoutMs: 20_000 });
  assert.deepEqual(await approval({ toolCall: { toolCallId: "c1", toolName: "read_balance", input: { account: "a" } } }), { type: "approved" });
  const blocked = await approval({ toolCall: { toolCallId: "c2", toolName: "db_drop_table", input: { table: "users" } } });
  assert.equal(blocked.type, "denied");
  assert.ok(blocked.reason);

  const sessionId = newSession();
  const waiting = guardToolApproval({ client, proxyId: "default", sessionId, timeoutMs: 20_000 });
  const [approved] = await Promise.all([
    waiting({ toolCall: { toolCallId: "c3", toolName: "payment_send", input: { amount: 5, recipient: "Bob" } } }),
    decide(sessionId, "approve"),
  ]);
  assert.deepEqual(approved, { type: "approved", reason: `Approved by ${server.reviewerEmail}` });

  const rejectedSession = newSession();
  const rejecting = guardToolApproval({ client, proxyId: "default", sessionId: rejectedSession, timeoutMs: 20_000 });
  const [rejected] = await Promise.all([
    rejecting({ toolCall: { toolCallId: "c4", toolName: "payment_send", input: { amount: 6, recipient: "Eve" } } }),
    decide(rejectedSession, "reject", "Not today"),
  ]);
  assert.deepEqual(rejected, { type: "denied", reason: "Not today" });
});

test("a streaming tool (async generator) stays one: its last output is the result, a block yields the refusal", async () => {
  const sessionId = newSession();
  const tools = guardTools(
    {
      read_report: tool({
        description: "Read a long report",
        inputSchema: z.object({ id: z.string() }),
        async *execute({ id }) {
          yield { status: "loading" as const, id };
          yield { status: "done" as const, id, pages: 3 };
        },
      }),
      db_drop_report: tool({
        description: "Drop a report",
        inputSchema: z.object({ id: z.string() }),
        async *execute({ id }) {
          yield { dropped: id };
        },
      }),
    },
    { client, proxyId: "default", sessionId },
  );
  const { model, seen } = scriptedModel("read_report", { id: "r1" }, "call_stream_1");
  await generateText({ model, tools, stopWhen: stepCountIs(3), prompt: "Read r1" });
  assert.deepEqual(seen, [{ type: "json", value: { status: "done", id: "r1", pages: 3 } }]);

  const outputs: unknown[] = [];
  for await (const out of tools.db_drop_report.execute!({ id: "r1" }, { toolCallId: "call_stream_2", messages: [] }) as AsyncIterable<unknown>) {
    outputs.push(out);
  }
  assert.equal(outputs.length, 1);
  assert.equal((outputs[0] as { status: string }).status, "blocked");
});

test("the call's abort signal stops the wait", async () => {
  const ran: string[] = [];
  const tools = guardTools(toolSet(ran), { client, proxyId: "default", sessionId: newSession() });
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 300);
  const started = Date.now();
  await assert.rejects(
    tools.payment_send.execute!({ amount: 1, recipient: "Nobody" }, { toolCallId: "call_abort_1", messages: [], abortSignal: controller.signal }) as Promise<unknown>,
  );
  assert.ok(Date.now() - started < 5_000);
  assert.deepEqual(ran, []);
});
