// The seed's CIBAApprovalTool in a LangChain v1 agent driven by LangChain's fake tool-calling
// model, against the real binary: the reviewer approves (the payment runs) or denies (the model
// reads the refusal and the agent ends normally).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Countersign } from "@countersign/sdk";
import { CIBAApprovalTool, CountersignToolkit } from "@countersign/langchain";
import { createAgent, FakeToolCallingModel, HumanMessage, ToolMessage } from "langchain";
import { startServer, type TestServer } from "@countersign/test-server";

let server: TestServer;
let reviewer: Countersign;
let toolkit: CountersignToolkit;

before(async () => {
  server = await startServer();
  reviewer = new Countersign({ baseUrl: server.base, apiKey: server.reviewerKey });
  toolkit = new CountersignToolkit({
    client: new Countersign({ baseUrl: server.base, apiKey: server.agentKey }),
    userId: server.reviewerId,
    timeoutMs: 20_000,
  });
});
after(async () => {
  await server?.stop();
});

/** Plays the reviewer: waits for the request with this question, then decides it. */
async function decide(bindingMessage: string, decision: "approve" | "deny", reason?: string) {
  for (let i = 0; i < 200; i++) {
    const { approvals } = await server.api(`/v1/approvals?status=pending`, { key: server.reviewerKey });
    const found = approvals.find((a: any) => a.binding_message === bindingMessage);
    if (found) {
      if (decision === "approve") await reviewer.ciba.approve({ approvalId: found.id });
      else await reviewer.ciba.deny({ approvalId: found.id }, reason);
      return found.id as string;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no pending request "${bindingMessage}"`);
}

function makeTool(sent: unknown[]) {
  const paymentGateway = {
    async send(payment: { amount: number; recipient: string }) {
      sent.push(payment);
      return `sent $${payment.amount} to ${payment.recipient}`;
    },
  };
  // The seed's snippet, with the package name changed.
  const sendPaymentTool = new CIBAApprovalTool({
    toolkit,
    name: "send_payment",
    description: "Send a payment (requires human approval)",
    approvalScope: "approve:payment",
    buildMessage: ({ amount, recipient }) =>
      `Approve payment of $${amount} to ${recipient}?`,
    onApproved: async ({ amount, recipient }) => {
      // executed only after human approves
      return await paymentGateway.send({ amount, recipient });
    },
  });
  return sendPaymentTool;
}

function agentCalling(tool: CIBAApprovalTool, args: Record<string, unknown>, id: string) {
  const model = new FakeToolCallingModel({ toolCalls: [[{ name: "send_payment", args, id }], []] });
  return createAgent({ model, tools: [tool] });
}

test("approved: the agent's tool call runs onApproved after the reviewer approves", async () => {
  const sent: unknown[] = [];
  const agent = agentCalling(makeTool(sent), { amount: 500, recipient: "Acme Corp" }, "call_approve_1");
  const [result] = await Promise.all([
    agent.invoke({ messages: [new HumanMessage("Pay Acme Corp $500")] }),
    decide("Approve payment of $500 to Acme Corp?", "approve"),
  ]);
  assert.deepEqual(sent, [{ amount: 500, recipient: "Acme Corp" }]);
  const toolMessage = result.messages.find((m) => ToolMessage.isInstance(m)) as ToolMessage;
  assert.equal(toolMessage.content, "sent $500 to Acme Corp");
  assert.equal(toolMessage.status, "success");
  assert.equal(toolMessage.tool_call_id, "call_approve_1");
});

test("denied: the refusal is the tool's error result, the payment never runs, the agent ends normally", async () => {
  const sent: unknown[] = [];
  const agent = agentCalling(makeTool(sent), { amount: 9000, recipient: "Bad Corp" }, "call_deny_1");
  const [result] = await Promise.all([
    agent.invoke({ messages: [new HumanMessage("Pay Bad Corp $9000")] }),
    decide("Approve payment of $9000 to Bad Corp?", "deny", "not a known supplier"),
  ]);
  assert.deepEqual(sent, []);
  const toolMessage = result.messages.find((m) => ToolMessage.isInstance(m)) as ToolMessage;
  assert.equal(toolMessage.status, "error");
  assert.match(String(toolMessage.content), /denied this action: not a known supplier/);
  assert.ok(result.messages.length >= 4, "the model ran again after reading the refusal");
});

test("a replayed tool call (same id) does not ask twice", async () => {
  const sent: unknown[] = [];
  const tool = makeTool(sent);
  const call = { name: "send_payment", args: { amount: 12, recipient: "Replay Corp" }, id: "call_replay_1", type: "tool_call" as const };
  const [first] = await Promise.all([tool.invoke(call), decide("Approve payment of $12 to Replay Corp?", "approve")]);
  assert.equal((first as ToolMessage).content, "sent $12 to Replay Corp");
  // The same call again (a replayed node): the same, already approved request; nobody is asked.
  const second = (await tool.invoke(call)) as ToolMessage;
  assert.equal(second.content, "sent $12 to Replay Corp");
  const { approvals } = await server.api(`/v1/approvals`, { key: server.reviewerKey });
  assert.equal(approvals.filter((a: any) => a.binding_message === "Approve payment of $12 to Replay Corp?").length, 1);
});
