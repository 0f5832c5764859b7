import type { Countersign, Guard, GuardApproval, ToolDecision } from "@countersign/sdk";
import { WaitTimeoutError } from "@countersign/sdk";
import { ToolMessage } from "@langchain/core/messages";
import { interrupt } from "@langchain/langgraph";
import { createMiddleware, type ToolCallRequest } from "langchain";

export interface CountersignMiddlewareOptions {
  /** A client with an agent key. */
  client: Countersign;
  /** The guard tenant (`/v1/guard/{proxyId}`; `default` out of the box). */
  proxyId: string;
  /** The agent's session; default: the run's `thread_id`, else `langchain`. */
  sessionId?: string;
  /**
   * `block`: a call that needs approval waits (long-polling) for the reviewers' decision inside
   * the tool node. `interrupt`: it raises LangGraph's `interrupt()` so the run pauses (this needs
   * a checkpointer); resuming it (`Command({resume})`, or invoking the thread again) checks the
   * decision on the server and runs or refuses the call.
   */
  mode: "block" | "interrupt";
  /** An action category for trust rules, e.g. `payments`. */
  scope?: string;
  /** Why the agent calls the tool, shown to reviewers. */
  reason?: string | ((toolName: string, args: Record<string, unknown>) => string | undefined);
  /** The user the agent acts for; they may not approve it themselves. */
  onBehalfOf?: string;
  /** Mode `block`: stop waiting for a decision after this many milliseconds (default: until the approval expires). */
  timeoutMs?: number;
  /** Only these tools go through the guard (default: every tool). */
  tools?: string[] | ((toolName: string) => boolean);
}

/** The value of the interrupt raised in mode `interrupt` (`result.__interrupt__[0].value`). */
export interface CountersignInterrupt {
  type: "countersign_approval";
  approvalId: string;
  toolCallId: string;
  toolName: string;
  args: Record<string, unknown>;
  /** What the guard said, e.g. which policy requires approval. */
  message: string;
  expiresAt?: string | null;
}

type Outcome = { run: true; approvalId?: string } | { run: false; reason: string };

function refusalOf(approval: GuardApproval): Outcome {
  if (approval.status === "approved") return { run: true, approvalId: approval.approval_id };
  const what = approval.status === "rejected" ? "rejected by a reviewer" : approval.status;
  return { run: false, reason: `${what}${approval.reason ? `: ${approval.reason}` : ""}` };
}

/**
 * A LangChain v1 agent middleware (`createAgent({middleware: [...]})`) that sends every tool
 * call through Countersign's guard before it runs: `allow` runs the tool, `block` answers an
 * error `ToolMessage` with the reason, and `require_approval` waits for the decision (mode
 * `block`) or pauses the run with `interrupt()` (mode `interrupt`). Each call is submitted with
 * its tool call id as the Idempotency-Key, so a replayed or resumed node joins the same approval
 * instead of asking again.
 */
export function countersignMiddleware(options: CountersignMiddlewareOptions) {
  const guard: Guard = options.client.guard(options.proxyId);
  const guarded = (name: string) =>
    options.tools === undefined ? true : typeof options.tools === "function" ? options.tools(name) : options.tools.includes(name);

  return createMiddleware({
    name: "CountersignMiddleware",
    wrapToolCall: async (request, handler) => {
      const { toolCall } = request;
      if (!guarded(toolCall.name)) return handler(request);
      const toolCallId = toolCall.id ?? "";
      const args = (toolCall.args ?? {}) as Record<string, unknown>;
      const runtime = request.runtime as ToolCallRequest["runtime"] & { configurable?: { thread_id?: string } };
      const sessionId = options.sessionId ?? runtime.configurable?.thread_id ?? "langchain";
      const signal = runtime.signal;
      const reason = typeof options.reason === "function" ? options.reason(toolCall.name, args) : options.reason;

      const decision: ToolDecision = await guard.tool({
        sessionId,
        toolCall: { name: toolCall.name, arguments: args },
        ...(options.scope !== undefined ? { scope: options.scope } : {}),
        ...(reason !== undefined ? { reason } : {}),
        ...(options.onBehalfOf !== undefined ? { onBehalfOf: options.onBehalfOf } : {}),
        // One tool call, one approval: a replayed or resumed node gets the same answer back.
        ...(toolCallId ? { idempotencyKey: `langchain-guard:${options.proxyId}:${sessionId}:${toolCallId}` } : {}),
        signal,
      });

      let outcome: Outcome;
      if (decision.action === "allow") {
        outcome = { run: true };
      } else if (decision.action === "block") {
        outcome = { run: false, reason: `blocked by policy: ${decision.message}` };
      } else if (options.mode === "block") {
        outcome = await waitForDecision(guard, decision.approval_id!, options.timeoutMs, signal);
      } else {
        outcome = await decideOrInterrupt(guard, decision, { toolCallId, toolName: toolCall.name, args });
      }

      if (outcome.run) return handler(request);
      return new ToolMessage({
        content: `The call to ${toolCall.name} was not run (${outcome.reason}).`,
        tool_call_id: toolCallId,
        name: toolCall.name,
        status: "error",
      });
    },
  });
}

async function waitForDecision(guard: Guard, approvalId: string, timeoutMs: number | undefined, signal?: AbortSignal): Promise<Outcome> {
  try {
    return refusalOf(await guard.waitForApproval(approvalId, { timeoutMs, signal }));
  } catch (error) {
    if (error instanceof WaitTimeoutError) return { run: false, reason: "no decision came in time" };
    throw error;
  }
}

/**
 * Reads the approval: decided, it runs or refuses; still pending, it interrupts the run. On
 * resume the node runs again from the start, rejoins the same approval and reads it afresh: the
 * server's decision counts, not the resume value.
 */
async function decideOrInterrupt(
  guard: Guard,
  decision: ToolDecision,
  call: { toolCallId: string; toolName: string; args: Record<string, unknown> },
): Promise<Outcome> {
  const approvalId = decision.approval_id!;
  for (;;) {
    const approval = await guard.approval(approvalId);
    if (approval.status !== "pending") return refusalOf(approval);
    const value: CountersignInterrupt = {
      type: "countersign_approval",
      approvalId,
      toolCallId: call.toolCallId,
      toolName: call.toolName,
      args: call.args,
      message: decision.message,
      expiresAt: decision.expires_at,
    };
    // Pauses the run; returns only when the run is resumed with `Command({resume})`.
    interrupt(value);
  }
}
