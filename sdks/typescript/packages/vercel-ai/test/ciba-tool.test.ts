// The seed's createCIBATool in AI SDK 6's generateText with a scripted model, against the real
// binary: the reviewer approves (onApproved runs) or denies (the model reads the refusal and the
// run ends normally).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Countersign } from "@countersign/sdk";
import { createCIBATool } from "@countersign/vercel-ai";
import { generateText, stepCountIs } from "ai";
import { z } from "zod";
import { scriptedModel } from "./model.js";
import { startServer, type TestServer } from "@countersign/test-server";

let server: TestServer;
let reviewer: Countersign;
let session: Countersign;

before(async () => {
  server = await startServer();
  reviewer = new Countersign({ baseUrl: server.base, apiKey: server.reviewerKey });
  session = new Countersign({ baseUrl: server.base, apiKey: server.agentKey });
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

function makeTool(deleted: string[]) {
  const db = {
    customers: {
      async delete(customerId: string) {
        deleted.push(customerId);
        return { deleted: customerId };
      },
    },
  };
  const userId = server.reviewerId;
  // The seed's snippet, with the package name changed and the reviewer's id filled in.
  const tool = createCIBATool({
    session,
    userId,
    name: "delete_record",
    description: "Delete a customer record — requires human approval",
    approvalScope: "approve:delete",
    parameters: z.object({ customerId: z.string() }),
    buildMessage: ({ customerId }) =>
      `Permanently delete customer ${customerId}? This cannot be undone.`,
    onApproved: ({ customerId }) => db.customers.delete(customerId),
  });
  return tool;
}

test("approved: the model's tool call runs onApproved after the reviewer approves", async () => {
  const deleted: string[] = [];
  const { model, seen } = scriptedModel("delete_record", { customerId: "cus_42" }, "call_approve_1");
  const [result, approvalId] = await Promise.all([
    generateText({ model, tools: { delete_record: makeTool(deleted) }, stopWhen: stepCountIs(3), prompt: "Delete customer cus_42" }),
    decide("Permanently delete customer cus_42? This cannot be undone.", "approve"),
  ]);
  assert.deepEqual(deleted, ["cus_42"]);
  assert.deepEqual(seen, [{ type: "json", value: { deleted: "cus_42" } }]);
  assert.equal(result.steps.length, 2);
  assert.equal(result.finishReason, "stop");

  // The request carried the arguments as its context, and its id is the tool call's key.
  const request = await server.api(`/v1/approvals/${approvalId}`, { key: server.reviewerKey });
  assert.equal(request.scope ?? request.scopes?.join(" "), "approve:delete");
  assert.deepEqual(request.context, { customerId: "cus_42" });
});

test("denied: the model reads the refusal, nothing is deleted and the run ends normally", async () => {
  const deleted: string[] = [];
  const { model, seen } = scriptedModel("delete_record", { customerId: "cus_7" }, "call_deny_1");
  const [result] = await Promise.all([
    generateText({ model, tools: { delete_record: makeTool(deleted) }, stopWhen: stepCountIs(3), prompt: "Delete customer cus_7" }),
    decide("Permanently delete customer cus_7? This cannot be undone.", "deny", "Customer has open invoices"),
  ]);
  assert.deepEqual(deleted, []);
  assert.equal(seen.length, 1);
  const output = seen[0] as { type: string; value: { approved: boolean; status: string; error: string } };
  assert.equal(output.type, "json");
  assert.equal(output.value.approved, false);
  assert.equal(output.value.status, "denied");
  assert.match(output.value.error, /denied this action: Customer has open invoices/);
  assert.equal(result.finishReason, "stop");
});

test("a replayed tool call (same id) joins its request instead of asking again", async () => {
  const deleted: string[] = [];
  const tool = createCIBATool({
    client: session,
    userId: server.reviewerId,
    name: "delete_record",
    description: "Delete a customer record",
    approvalScope: "approve:delete",
    inputSchema: z.object({ customerId: z.string() }),
    buildMessage: ({ customerId }) => `Delete ${customerId} (replay)?`,
    onApproved: async ({ customerId }, { authReqId }) => {
      deleted.push(customerId);
      return authReqId;
    },
  });
  const call = { toolCallId: "call_replay_1", messages: [] };
  const [first, approvalId] = await Promise.all([
    tool.execute!({ customerId: "cus_9" }, call),
    decide("Delete cus_9 (replay)?", "approve"),
  ]);
  const second = await tool.execute!({ customerId: "cus_9" }, call);
  assert.equal(first, second, "the same request both times");
  const { approvals } = await server.api(`/v1/approvals?status=pending`, { key: server.reviewerKey });
  assert.equal(approvals.filter((a: any) => a.binding_message === "Delete cus_9 (replay)?").length, 0);
});

test("a timeout becomes a refusal result, not an exception", async () => {
  const tool = createCIBATool({
    client: session,
    userId: server.reviewerId,
    description: "Wire money",
    approvalScope: "approve:wire",
    buildMessage: () => "Wire $1 to nobody?",
    onApproved: () => "wired",
    timeoutMs: 300,
  });
  const out = (await tool.execute!({}, { toolCallId: "call_timeout_1", messages: [] })) as any;
  assert.deepEqual({ approved: out.approved, status: out.status }, { approved: false, status: "timeout" });
});

test("the call's abort signal stops the wait", async () => {
  const tool = createCIBATool({
    client: session,
    userId: server.reviewerId,
    description: "Wire money",
    approvalScope: "approve:wire",
    buildMessage: () => "Wire $2 to nobody?",
    onApproved: () => "wired",
  });
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 300);
  const started = Date.now();
  await assert.rejects(tool.execute!({}, { toolCallId: "call_abort_1", messages: [], abortSignal: controller.signal }) as Promise<unknown>);
  assert.ok(Date.now() - started < 5_000);
});
