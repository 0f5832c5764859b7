/**
 * Countersign for the OpenAI Agents SDK.
 *
 * Every call of a protected tool goes through the guard. A call the policies allow runs at once;
 * any other call (blocked, or needing approval) interrupts the run through the SDK's own
 * `needsApproval` pause. `resolveApprovals` then waits for Countersign's decision on each
 * interruption and approves or rejects it on the run state, which you run again:
 *
 * ```ts
 * const approvals = new CountersignApprovals({ client });   // a Countersign with an agent key
 * const refund = approvals.protect(tool({ name: "payment_refund", ... }));
 * const agent = new Agent({ name: "support", tools: [refund] });
 *
 * let result = await run(agent, "Refund order 42");
 * while (result.interruptions.length > 0) {
 *   const state = await approvals.resolveApprovals(result);
 *   result = await run(agent, state);
 * }
 * ```
 *
 * Each guard request is keyed by the tool call's id (`Idempotency-Key`), so asking again, even
 * from another process after a restart with a saved `RunState`, finds the same approval instead
 * of creating a second one.
 */
import { WaitTimeoutError, type Countersign, type GuardApproval, type ToolDecision } from "@countersign/sdk";
import type { Agent, FunctionTool, RunContext, RunState, RunToolApprovalItem } from "@openai/agents";

export interface CountersignApprovalsOptions {
  /** A `Countersign` client with an agent key. */
  client: Countersign;
  /** The guard tenant (default `"default"`). */
  proxyId?: string;
  /** Sent with every guard request; policies and reviewers see it (default `"openai-agents"`). */
  sessionId?: string;
  /** How long `resolveApprovals` waits for each decision (default 30 minutes); a wait that runs out rejects the call. */
  timeoutMs?: number;
  /** Stops `resolveApprovals`' waits. */
  signal?: AbortSignal;
}

/** The `needsApproval` function of a function tool. */
export type NeedsApproval = (runContext: RunContext<any>, input: any, callId?: string) => Promise<boolean>;

/** A run's result (anything with `state` and `interruptions`) or a `RunState`. */
export type ResultOrState<TContext, TAgent extends Agent<any, any>> =
  | RunState<TContext, TAgent>
  | { state: RunState<TContext, TAgent>; interruptions: RunToolApprovalItem[] };

const DEFAULT_TIMEOUT_MS = 30 * 60 * 1000;

/** Guard-backed approvals for an agent's function tools. */
export class CountersignApprovals {
  readonly client: Countersign;
  readonly proxyId: string;
  readonly sessionId: string;
  readonly timeoutMs: number | undefined;
  readonly signal: AbortSignal | undefined;

  constructor(options: CountersignApprovalsOptions) {
    this.client = options.client;
    this.proxyId = options.proxyId ?? "default";
    this.sessionId = options.sessionId ?? "openai-agents";
    this.timeoutMs = "timeoutMs" in options ? options.timeoutMs : DEFAULT_TIMEOUT_MS;
    this.signal = options.signal;
  }

  private key(callId: string): string {
    return `openai-agents:${this.sessionId}:${callId}`.slice(0, 255);
  }

  private check(toolName: string, args: Record<string, unknown>, callId: string): Promise<ToolDecision> {
    return this.client.guard(this.proxyId).tool({
      sessionId: this.sessionId,
      toolCall: { name: toolName, arguments: args },
      idempotencyKey: this.key(callId),
    });
  }

  /**
   * A `needsApproval` function for the tool `toolName`: `false` when the guard allows the call,
   * `true` (interrupt the run) when it needs approval or is blocked.
   */
  needsApproval(toolName: string): NeedsApproval {
    return async (_runContext, input, callId) => {
      if (!callId) return true;
      const decision = await this.check(toolName, toObject(input), callId);
      return decision.action !== "allow";
    };
  }

  /** Sets `tool.needsApproval` to the guard's answer, and returns the tool. */
  protect<T extends FunctionTool<any, any, any>>(tool: T): T {
    tool.needsApproval = this.needsApproval(tool.name) as T["needsApproval"];
    return tool;
  }

  /**
   * Approves or rejects every interruption of a run result (or a saved `RunState`) from
   * Countersign's decisions, waiting for them, and returns the state to run again.
   * Rejections carry the reason the model reads: `Blocked: …` or `Not approved: …`.
   */
  async resolveApprovals<TContext, TAgent extends Agent<any, any>>(
    resultOrState: ResultOrState<TContext, TAgent>,
  ): Promise<RunState<TContext, TAgent>> {
    let state: RunState<TContext, TAgent>;
    let items: RunToolApprovalItem[];
    if ("getInterruptions" in resultOrState && typeof resultOrState.getInterruptions === "function") {
      state = resultOrState as RunState<TContext, TAgent>;
      items = state.getInterruptions();
    } else {
      const result = resultOrState as { state: RunState<TContext, TAgent>; interruptions: RunToolApprovalItem[] };
      state = result.state;
      items = [...(result.interruptions ?? [])];
    }
    const guard = this.client.guard(this.proxyId);
    for (const item of items) {
      const raw = item.rawItem as { type?: string; callId?: string; name?: string; arguments?: string };
      const callId = raw.type === "function_call" ? raw.callId : undefined;
      const name = item.name ?? raw.name;
      if (!callId || !name) {
        state.reject(item, { message: "Countersign could not identify this call" });
        continue;
      }
      const decision = await this.check(name, toObject(item.arguments ?? raw.arguments ?? "{}"), callId);
      if (decision.action === "allow") {
        state.approve(item);
        continue;
      }
      if (decision.action === "block") {
        state.reject(item, { message: `Blocked: ${decision.message}` });
        continue;
      }
      let approval: GuardApproval;
      try {
        approval = await guard.waitForApproval(decision.approval_id!, { timeoutMs: this.timeoutMs, signal: this.signal });
      } catch (error) {
        if (!(error instanceof WaitTimeoutError)) throw error;
        state.reject(item, { message: "Not approved: approval timeout" });
        continue;
      }
      if (approval.status === "approved") {
        state.approve(item);
      } else {
        const reason = approval.reason || approval.comment || approval.status;
        state.reject(item, { message: `Not approved: ${reason}` });
      }
    }
    return state;
  }
}

function toObject(input: unknown): Record<string, unknown> {
  if (typeof input === "string") {
    try {
      input = JSON.parse(input || "{}");
    } catch {
      return { input };
    }
  }
  if (input !== null && typeof input === "object" && !Array.isArray(input)) return input as Record<string, unknown>;
  return { input };
}

/** `new CountersignApprovals(options).needsApproval(toolName)`. */
export function needsApproval(toolName: string, options: CountersignApprovalsOptions): NeedsApproval {
  return new CountersignApprovals(options).needsApproval(toolName);
}

/** `new CountersignApprovals(options).resolveApprovals(resultOrState)`. */
export function resolveApprovals<TContext, TAgent extends Agent<any, any>>(
  resultOrState: ResultOrState<TContext, TAgent>,
  options: CountersignApprovalsOptions,
): Promise<RunState<TContext, TAgent>> {
  return new CountersignApprovals(options).resolveApprovals(resultOrState);
}
