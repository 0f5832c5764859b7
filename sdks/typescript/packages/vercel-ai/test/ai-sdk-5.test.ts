// The same tools in AI SDK 5 (`ai@5`, installed here as `ai-v5`) with its `MockLanguageModelV2`,
// against the real binary: createCIBATool approved and denied, guardTools waiting for a reviewer.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Countersign } from "@countersign/sdk";
import { createCIBATool, guardTools } from "@countersign/vercel-ai";
import { generateText, stepCountIs, tool } from "ai-v5";
import { MockLanguageModelV2 } from "ai-v5/test";
import { z } from "zod";
import { startServer, type TestServer } from "@countersign/test-server";

// This package compiles against the `ai` (6) installed next to it; a user of AI SDK 5 has only
// `ai@5`, so its types are the ones both sides see. Here the two versions sit side by side, so the
// tool sets cross between their types with a cast; at run time they are the same objects.
type V5Tools = Parameters<typeof generateText>[0]["tools"];
const v5 = (tools: unknown) => tools as V5Tools;

let server: TestServer;
let client: Countersign;
let reviewer: Countersign;

before(async () => {
  server = await startServer();
  client = new Countersign({ baseUrl: server.base, apiKey: server.agentKey });
  reviewer = new Countersign({ baseUrl: server.base, apiKey: server.reviewerKey });
  const admin = new Countersign({ baseUrl: server.base, apiKey: server.adminKey }).guard("default");
  await admin.groups.create({ id: "group_ops", name: "Ops", members: [{ email: server.reviewerEmail, role: "primary" }] });
  await admin.policies.create({
    name: "Approve deploys",
    tool_pattern: "deploy_*",
    action: "require_approval",
    approval_config: { approval_group_id: "group_ops" },
  });
});
after(async () => {
  await server?.stop();
});

/** AI SDK 5's scripted model: a tool call first, then a text echoing the tool results it read. */
function modelV2(toolName: string, input: Record<string, unknown>, toolCallId: string) {
  const seen: unknown[] = [];
  const usage = { inputTokens: 1, outputTokens: 1, totalTokens: 2 };
  const model = new MockLanguageModelV2({
    doGenerate: async (options) => {
      const results = options.prompt
        .filter((m) => m.role === "tool")
        .flatMap((m) => m.content)
        .filter((p) => p.type === "tool-result");
      if (results.length === 0) {
        return {
          content: [{ type: "tool-call", toolCallId, toolName, input: JSON.stringify(input) }],
          finishReason: "tool-calls",
          usage,
          warnings: [],
        };
      }
      seen.push(...results.map((r) => (r as { output: unknown }).output));
      return { content: [{ type: "text", text: "done" }], finishReason: "stop", usage, warnings: [] };
    },
  });
  return { model, seen };
}

async function pending(match: (a: any) => boolean | Promise<boolean>) {
  for (let i = 0; i < 200; i++) {
    const { approvals } = await server.api(`/v1/approvals?status=pending`, { key: server.reviewerKey });
    for (const a of approvals) if (await match(a)) return a.id as string;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("no pending request");
}

function deleteTool(deleted: string[]) {
  return createCIBATool({
    client,
    userId: server.reviewerId,
    name: "delete_record",
    description: "Delete a customer record — requires human approval",
    approvalScope: "approve:delete",
    inputSchema: z.object({ customerId: z.string() }),
    buildMessage: ({ customerId }) => `AI SDK 5: delete ${customerId}?`,
    onApproved: async ({ customerId }) => {
      deleted.push(customerId);
      return `deleted ${customerId}`;
    },
  });
}

test("AI SDK 5: createCIBATool runs onApproved after approval", async () => {
  const deleted: string[] = [];
  const { model, seen } = modelV2("delete_record", { customerId: "cus_5" }, "call_v5_approve");
  const [result] = await Promise.all([
    generateText({ model, tools: v5({ delete_record: deleteTool(deleted) }), stopWhen: stepCountIs(3), prompt: "Delete cus_5" }),
    pending((a) => a.binding_message === "AI SDK 5: delete cus_5?").then((id) => reviewer.ciba.approve({ approvalId: id })),
  ]);
  assert.deepEqual(deleted, ["cus_5"]);
  assert.deepEqual(seen, [{ type: "text", value: "deleted cus_5" }]);
  assert.equal(result.finishReason, "stop");
});

test("AI SDK 5: a denial is the result the model reads", async () => {
  const deleted: string[] = [];
  const { model, seen } = modelV2("delete_record", { customerId: "cus_6" }, "call_v5_deny");
  const [result] = await Promise.all([
    generateText({ model, tools: v5({ delete_record: deleteTool(deleted) }), stopWhen: stepCountIs(3), prompt: "Delete cus_6" }),
    pending((a) => a.binding_message === "AI SDK 5: delete cus_6?").then((id) => reviewer.ciba.deny({ approvalId: id }, "No")),
  ]);
  assert.deepEqual(deleted, []);
  const out = seen[0] as { type: string; value: { approved: boolean; status: string } };
  assert.deepEqual([out.type, out.value.approved, out.value.status], ["json", false, "denied"]);
  assert.equal(result.finishReason, "stop");
});

test("AI SDK 5: guardTools waits for the reviewer, then runs the tool", async () => {
  const ran: string[] = [];
  const sessionId = `session_v5_${Date.now()}`;
  const tools = guardTools(
    v5({
      deploy_service: tool({
        description: "Deploy a service",
        inputSchema: z.object({ service: z.string() }),
        execute: async ({ service }) => {
          ran.push(service);
          return `deployed ${service}`;
        },
      }),
    }) as any,
    { client, proxyId: "default", sessionId, timeoutMs: 20_000 },
  );
  const guard = reviewer.guard("default");
  const { model, seen } = modelV2("deploy_service", { service: "billing" }, "call_v5_guard");
  await Promise.all([
    generateText({ model, tools: v5(tools), stopWhen: stepCountIs(3), prompt: "Deploy billing" }),
    pending(async (a) => a.kind === "tool" && (await guard.approval(a.id)).session_id === sessionId).then((id) => guard.approve(id)),
  ]);
  assert.deepEqual(ran, ["billing"]);
  assert.deepEqual(seen, [{ type: "text", value: "deployed billing" }]);
});
