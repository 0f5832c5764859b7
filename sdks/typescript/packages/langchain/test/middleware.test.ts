// countersignMiddleware in LangChain v1 agents driven by LangChain's fake tool-calling model,
// against the real binary: every tool call goes through the guard; allowed calls run, blocked
// ones get an error ToolMessage, and calls that need approval wait for the reviewer (mode
// `block`) or pause the run with an interrupt that a restarted agent resumes (mode `interrupt`).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Countersign, type Guard } from "@countersign/sdk";
import { countersignMiddleware, type CountersignInterrupt } from "@countersign/langchain";
import { Command, MemorySaver } from "@langchain/langgraph";
import { createAgent, FakeToolCallingModel, HumanMessage, tool, ToolMessage } from "langchain";
import { z } from "zod";
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

let threads = 0;
const newThread = () => `thread_${++threads}_${Date.now()}`;

function tools(ran: string[]) {
  return [
    tool(
      async ({ account }) => {
        ran.push(`read_balance ${account}`);
        return `balance of ${account}: 1200`;
      },
      { name: "read_balance", description: "Read an account's balance", schema: z.object({ account: z.string() }) },
    ),
    tool(
      async ({ amount, recipient }) => {
        ran.push(`payment_send ${amount} ${recipient}`);
        return `sent $${amount} to ${recipient}`;
      },
      { name: "payment_send", description: "Send a payment", schema: z.object({ amount: z.number(), recipient: z.string() }) },
    ),
    tool(
      async ({ table }) => {
        ran.push(`db_drop_table ${table}`);
        return "dropped";
      },
      { name: "db_drop_table", description: "Drop a table", schema: z.object({ table: z.string() }) },
    ),
  ];
}

/** The guard approvals of one session (the list's items do not carry it; the guard's view does). */
async function approvalsOf(sessionId: string, status?: string) {
  const { approvals } = await server.api(`/v1/approvals${status ? `?status=${status}` : ""}`, { key: server.reviewerKey });
  const found: string[] = [];
  for (const a of approvals.filter((a: any) => a.kind === "tool")) {
    if ((await reviewer.approval(a.id)).session_id === sessionId) found.push(a.id);
  }
  return found;
}

/** Plays the reviewer: waits for the session's pending approval, then approves or rejects it. */
async function decide(sessionId: string, decision: "approve" | "reject", text?: string) {
  for (let i = 0; i < 200; i++) {
    const [id] = await approvalsOf(sessionId, "pending");
    if (id) {
      if (decision === "approve") await reviewer.approve(id, text);
      else await reviewer.reject(id, text);
      return id;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no pending approval in session ${sessionId}`);
}

function toolMessage(messages: unknown[]): ToolMessage {
  const found = messages.find((m) => ToolMessage.isInstance(m)) as ToolMessage | undefined;
  assert.ok(found, "the run has a tool message");
  return found;
}

function blockingAgent(call: { name: string; args: Record<string, unknown>; id: string }, ran: string[], sessionId: string) {
  return createAgent({
    model: new FakeToolCallingModel({ toolCalls: [[call], []] }),
    tools: tools(ran),
    middleware: [countersignMiddleware({ client, proxyId: "default", sessionId, mode: "block", timeoutMs: 20_000 })],
  });
}

test("allow: the tool runs", async () => {
  const ran: string[] = [];
  const agent = blockingAgent({ name: "read_balance", args: { account: "ops" }, id: "call_read_1" }, ran, newThread());
  const result = await agent.invoke({ messages: [new HumanMessage("What is the ops balance?")] });
  assert.deepEqual(ran, ["read_balance ops"]);
  assert.equal(toolMessage(result.messages).content, "balance of ops: 1200");
});

test("block: the tool never runs and the model reads an error ToolMessage with the policy's reason", async () => {
  const ran: string[] = [];
  const agent = blockingAgent({ name: "db_drop_table", args: { table: "users" }, id: "call_drop_1" }, ran, newThread());
  const result = await agent.invoke({ messages: [new HumanMessage("Drop the users table")] });
  assert.deepEqual(ran, []);
  const message = toolMessage(result.messages);
  assert.equal(message.status, "error");
  assert.equal(message.tool_call_id, "call_drop_1");
  assert.match(String(message.content), /not run \(blocked by policy: .*No dropping tables/);
  assert.ok(result.messages.length >= 4, "the model ran again after reading the refusal");
});

test("mode block: the call waits for the reviewer; approved, it runs", async () => {
  const ran: string[] = [];
  const session = newThread();
  const agent = blockingAgent({ name: "payment_send", args: { amount: 500, recipient: "Acme Corp" }, id: "call_pay_1" }, ran, session);
  const [result] = await Promise.all([agent.invoke({ messages: [new HumanMessage("Pay Acme $500")] }), decide(session, "approve")]);
  assert.deepEqual(ran, ["payment_send 500 Acme Corp"]);
  const message = toolMessage(result.messages);
  assert.equal(message.content, "sent $500 to Acme Corp");
  assert.notEqual(message.status, "error");
});

test("mode block: rejected, the call is refused with the reviewer's reason", async () => {
  const ran: string[] = [];
  const session = newThread();
  const agent = blockingAgent({ name: "payment_send", args: { amount: 9000, recipient: "Bad Corp" }, id: "call_pay_2" }, ran, session);
  const [result] = await Promise.all([
    agent.invoke({ messages: [new HumanMessage("Pay Bad Corp $9000")] }),
    decide(session, "reject", "not a known supplier"),
  ]);
  assert.deepEqual(ran, []);
  const message = toolMessage(result.messages);
  assert.equal(message.status, "error");
  assert.match(String(message.content), /not run \(rejected by a reviewer: not a known supplier\)/);
});

function interruptingAgent(model: FakeToolCallingModel, ran: string[], checkpointer: MemorySaver) {
  return createAgent({
    model,
    tools: tools(ran),
    checkpointer,
    middleware: [countersignMiddleware({ client, proxyId: "default", mode: "interrupt" })],
  });
}

test("mode interrupt: the run pauses; after approval a restarted agent resumes it and the tool runs, asked once", async () => {
  const ran: string[] = [];
  const checkpointer = new MemorySaver();
  const thread = newThread();
  const config = { configurable: { thread_id: thread } };
  const call = { name: "payment_send", args: { amount: 75, recipient: "Acme Corp" }, id: "call_pay_int_1" };

  const first = interruptingAgent(new FakeToolCallingModel({ toolCalls: [[call], []] }), ran, checkpointer);
  const paused = await first.invoke({ messages: [new HumanMessage("Pay Acme $75")] }, config);
  assert.deepEqual(ran, []);
  const interrupts = (paused as { __interrupt__?: { value: CountersignInterrupt }[] }).__interrupt__;
  assert.equal(interrupts?.length, 1);
  const value = interrupts![0]!.value;
  assert.equal(value.type, "countersign_approval");
  assert.equal(value.toolCallId, "call_pay_int_1");
  assert.equal(value.toolName, "payment_send");
  assert.deepEqual(value.args, { amount: 75, recipient: "Acme Corp" });
  assert.equal((await reviewer.approval(value.approvalId)).session_id, thread, "the session defaults to the thread id");

  // Resuming before anyone decided pauses again on the same approval.
  const again = await first.invoke(new Command({ resume: "checked" }), config);
  assert.equal((again as any).__interrupt__?.[0]?.value.approvalId, value.approvalId);
  assert.deepEqual(ran, []);

  assert.equal(await decide(thread, "approve"), value.approvalId);

  // A new agent (a restarted process) on the same checkpointer and thread resumes the run.
  const restarted = interruptingAgent(new FakeToolCallingModel({ toolCalls: [[]] }), ran, checkpointer);
  const result = await restarted.invoke(new Command({ resume: { approved: true } }), config);
  assert.equal((result as any).__interrupt__, undefined);
  assert.deepEqual(ran, ["payment_send 75 Acme Corp"]);
  assert.equal(toolMessage(result.messages).content, "sent $75 to Acme Corp");
  assert.deepEqual(await approvalsOf(thread), [value.approvalId], "exactly one approval request");
});

test("mode interrupt: rejected, re-invoking the thread refuses the call without asking again", async () => {
  const ran: string[] = [];
  const checkpointer = new MemorySaver();
  const thread = newThread();
  const config = { configurable: { thread_id: thread } };
  const call = { name: "payment_send", args: { amount: 4000, recipient: "Bad Corp" }, id: "call_pay_int_2" };

  const first = interruptingAgent(new FakeToolCallingModel({ toolCalls: [[call], []] }), ran, checkpointer);
  const paused = await first.invoke({ messages: [new HumanMessage("Pay Bad Corp $4000")] }, config);
  const approvalId = (paused as any).__interrupt__[0].value.approvalId as string;
  assert.equal(await decide(thread, "reject", "unknown payee"), approvalId);

  const restarted = interruptingAgent(new FakeToolCallingModel({ toolCalls: [[]] }), ran, checkpointer);
  const result = await restarted.invoke(null, config);
  assert.deepEqual(ran, []);
  const message = toolMessage(result.messages);
  assert.equal(message.status, "error");
  assert.match(String(message.content), /rejected by a reviewer: unknown payee/);
  assert.deepEqual(await approvalsOf(thread), [approvalId]);
});

test("mode interrupt: two calls in one turn pause together; each resumes by its own decision", async () => {
  const ran: string[] = [];
  const checkpointer = new MemorySaver();
  const thread = newThread();
  const config = { configurable: { thread_id: thread } };
  const calls = [
    { name: "payment_send", args: { amount: 10, recipient: "Good Corp" }, id: "call_pay_par_1" },
    { name: "payment_send", args: { amount: 20, recipient: "Odd Corp" }, id: "call_pay_par_2" },
    { name: "read_balance", args: { account: "ops" }, id: "call_read_par_3" },
  ];
  const first = interruptingAgent(new FakeToolCallingModel({ toolCalls: [calls, []] }), ran, checkpointer);
  const paused = await first.invoke({ messages: [new HumanMessage("Pay both")] }, config);
  const values = ((paused as any).__interrupt__ as { value: CountersignInterrupt }[]).map((i) => i.value);
  assert.deepEqual(values.map((v) => v.toolCallId).sort(), ["call_pay_par_1", "call_pay_par_2"]);
  const byCall = Object.fromEntries(values.map((v) => [v.toolCallId, v.approvalId]));
  await reviewer.approve(byCall.call_pay_par_1!);
  await reviewer.reject(byCall.call_pay_par_2!, "who is Odd Corp?");

  const restarted = interruptingAgent(new FakeToolCallingModel({ toolCalls: [[]] }), ran, checkpointer);
  const result = await restarted.invoke(null, config);
  assert.equal((result as any).__interrupt__, undefined);
  assert.deepEqual([...ran].sort(), ["payment_send 10 Good Corp", "read_balance ops"]);
  const messages = result.messages.filter((m) => ToolMessage.isInstance(m)) as ToolMessage[];
  const answer = (id: string) => messages.find((m) => m.tool_call_id === id)!;
  assert.equal(answer("call_pay_par_1").content, "sent $10 to Good Corp");
  assert.equal(answer("call_pay_par_2").status, "error");
  assert.match(String(answer("call_pay_par_2").content), /who is Odd Corp\?/);
  assert.equal(answer("call_read_par_3").content, "balance of ops: 1200");
  assert.equal((await approvalsOf(thread)).length, 2);
});
