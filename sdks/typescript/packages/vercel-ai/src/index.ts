import { Countersign, type CibaDecidedStatus, type Guard, type ValidateResult } from "@countersign/sdk";
import { jsonSchema, tool, type FlexibleSchema, type Tool, type ToolSet } from "ai";

/** The options an AI SDK tool's `execute` receives (`ToolCallOptions` in 5, `ToolExecutionOptions` in 6). */
export type ToolCallOptions = Parameters<NonNullable<Tool<any, any>["execute"]>>[1];

/** What `onApproved` learns besides the arguments. */
export interface ApprovalInfo {
  authReqId: string;
  /** The signed grant bound to this request's context; absent when an earlier run received it. */
  accessToken?: string;
  /** The AI SDK's tool call options (its id, messages and abort signal). */
  options: ToolCallOptions;
}

/** The result the model reads when the action was not taken. */
export interface RefusalResult {
  approved: false;
  /** `denied`, `expired` or `timeout` (CIBA); `blocked`, `rejected`, `expired`, `cancelled` or `approval_timeout` (guard). */
  status: string;
  error: string;
}

export interface CreateCIBAToolOptions<Args extends Record<string, any>, Result> {
  /** A client with an agent key. */
  client?: Countersign;
  /** The seed's name for `client`. */
  session?: Countersign;
  /** The reviewer (`usr_…`) who approves. */
  userId: string;
  /** The tool's name, used in the Idempotency-Key and messages; the tool set's key is what the model calls. */
  name?: string;
  description: string;
  /** What the agent asks to do, e.g. `approve:delete`. */
  approvalScope: string;
  /** The arguments' schema (zod, or the AI SDK's `jsonSchema()`); default: any JSON object. */
  inputSchema?: FlexibleSchema<Args>;
  /** The seed's name for `inputSchema`. */
  parameters?: FlexibleSchema<Args>;
  /** The question the reviewer sees. */
  buildMessage: (args: Args) => string;
  /** Runs only after the reviewer approved; its result is the tool's result. */
  onApproved: (args: Args, approval: ApprovalInfo) => Result | PromiseLike<Result>;
  /** The `context` bound into the grant; default: the arguments themselves. */
  buildContext?: (args: Args) => Record<string, unknown>;
  /** Seconds a request waits for its reviewer (10 to 86400; default 300). */
  requestedExpiry?: number;
  /** Stop waiting after this many milliseconds (default: until the request expires). */
  timeoutMs?: number;
}

const anyObject = () => jsonSchema<any>({ type: "object", properties: {}, additionalProperties: true });

function refusal(status: string, error: string): RefusalResult {
  return { approved: false, status, error };
}

/**
 * An AI SDK tool that asks a reviewer through Countersign's CIBA flow, waits (long-polling) for
 * the decision and runs `onApproved` only after approval. A denial or expiry becomes the tool's
 * result (`{approved: false, status, error}`), which the model reads; it does not end the run.
 * The request is keyed by the tool call's id, so a replayed call does not ask twice.
 */
export function createCIBATool<Args extends Record<string, any> = Record<string, any>, Result = unknown>(
  options: CreateCIBAToolOptions<Args, Result>,
): Tool<Args, Result | RefusalResult> {
  const client = options.client ?? options.session;
  if (!client) throw new TypeError("createCIBATool needs a client (or session)");
  const schema = options.inputSchema ?? options.parameters ?? (anyObject() as FlexibleSchema<Args>);
  const buildContext = options.buildContext ?? ((args: Args) => args);
  const label = options.name ?? options.approvalScope;

  return tool<Args, Result | RefusalResult>({
    description: options.description,
    inputSchema: schema,
    async execute(args: Args, callOptions: ToolCallOptions): Promise<Result | RefusalResult> {
      const signal = callOptions?.abortSignal;
      const toolCallId = callOptions?.toolCallId;
      const { authReqId } = await client.ciba.authorize({
        userId: options.userId,
        scope: options.approvalScope,
        bindingMessage: options.buildMessage(args),
        context: buildContext(args),
        ...(options.requestedExpiry !== undefined ? { requestedExpiry: options.requestedExpiry } : {}),
        // One tool call, one request: a replay of the same call gets the same request back.
        ...(toolCallId ? { idempotencyKey: `ai-sdk-tool-call:${label}:${toolCallId}` } : {}),
        signal,
      });
      let decision: CibaDecidedStatus;
      try {
        decision = await client.ciba.waitFor(authReqId, { timeoutMs: options.timeoutMs, signal });
      } catch (error) {
        if ((error as { code?: string }).code === "wait_timeout") {
          return refusal("timeout", "No decision came in time; the action was not taken.");
        }
        throw error;
      }
      if (decision.status === "approved") {
        return await options.onApproved(args, { authReqId, accessToken: decision.accessToken, options: callOptions });
      }
      if (decision.status === "denied") {
        return refusal(
          "denied",
          `The reviewer denied this action${decision.reason ? `: ${decision.reason}` : ""}. It was not taken.`,
        );
      }
      return refusal("expired", "The approval request expired without a decision; the action was not taken.");
    },
  } as unknown as Tool<Args, Result | RefusalResult>);
}

export interface GuardToolsOptions {
  /** A client with an agent key. */
  client: Countersign;
  /** The guard tenant (`/v1/guard/{proxyId}`). */
  proxyId: string;
  /** The agent's session; repeated calls with the same arguments in it join one approval. */
  sessionId: string;
  /**
   * `result` (default): a blocked, rejected or expired call returns a refusal result the model
   * reads. `throw`: it throws `ToolCallBlockedError`, which the AI SDK turns into a tool error.
   */
  mode?: "result" | "throw";
  /** An action category for trust rules, e.g. `payments`. */
  scope?: string;
  /** Why the agent calls the tool, shown to reviewers. */
  reason?: string | ((toolName: string, args: unknown) => string | undefined);
  /** The user the agent acts for; they may not approve it themselves. */
  onBehalfOf?: string;
  /** Stop waiting for a decision after this many milliseconds (default: until the approval expires). */
  timeoutMs?: number;
  /** Called with each guard outcome, e.g. to log it. */
  onDecision?: (toolName: string, result: ValidateResult) => void;
}

/**
 * Wraps every tool of a tool set so that each call goes through the guard first
 * (`validateAndWait`): `allow` runs the original `execute`, `block` returns a refusal result,
 * `require_approval` waits for the reviewers' decision. Tools without `execute` are left as they
 * are. Each call's Idempotency-Key is its tool call id, so a replayed call rejoins its approval.
 */
export function guardTools<TOOLS extends ToolSet>(tools: TOOLS, options: GuardToolsOptions): TOOLS {
  const guard: Guard = options.client.guard(options.proxyId);
  const wrapped: Record<string, unknown> = {};
  for (const [name, original] of Object.entries(tools)) {
    const execute = original.execute as ((input: unknown, o: ToolCallOptions) => unknown) | undefined;
    if (!execute) {
      wrapped[name] = original;
      continue;
    }
    // The guard's verdict, or undefined when the call may run.
    const check = async (input: unknown, callOptions: ToolCallOptions): Promise<RefusalResult | undefined> => {
      const reason = typeof options.reason === "function" ? options.reason(name, input) : options.reason;
      const result = await guard.validateAndWait({
        sessionId: options.sessionId,
        toolCall: { name, arguments: (input ?? {}) as Record<string, unknown> },
        ...(options.scope !== undefined ? { scope: options.scope } : {}),
        ...(reason !== undefined ? { reason } : {}),
        ...(options.onBehalfOf !== undefined ? { onBehalfOf: options.onBehalfOf } : {}),
        ...(callOptions?.toolCallId ? { idempotencyKey: `ai-sdk-guard:${options.sessionId}:${callOptions.toolCallId}` } : {}),
        timeoutMs: options.timeoutMs,
        throwOnBlock: options.mode === "throw",
        signal: callOptions?.abortSignal,
      });
      options.onDecision?.(name, result);
      if (result.action === "allow") return undefined;
      const what = result.code === "blocked" ? "blocked by policy" : result.code.replace("_", " ");
      return refusal(result.code, `The call to ${name} was not run (${what}): ${result.reason}`);
    };
    // A streaming tool (an async generator) stays one, so its preliminary outputs still stream.
    const streaming = execute.constructor?.name === "AsyncGeneratorFunction";
    wrapped[name] = {
      ...original,
      execute: streaming
        ? async function* (input: unknown, callOptions: ToolCallOptions) {
            const refused = await check(input, callOptions);
            if (refused) {
              yield refused;
              return;
            }
            yield* execute.call(original, input, callOptions) as AsyncIterable<unknown>;
          }
        : async (input: unknown, callOptions: ToolCallOptions) =>
            (await check(input, callOptions)) ?? execute.call(original, input, callOptions),
    };
  }
  return wrapped as TOOLS;
}

/** AI SDK 7's `ToolApprovalStatus`, as far as `guardToolApproval` answers it. */
export type GuardApprovalStatus = { type: "approved"; reason?: string } | { type: "denied"; reason?: string };

/** The part of AI SDK 7's `toolApproval` function arguments that `guardToolApproval` reads. */
export interface ToolApprovalCall {
  toolCall: { toolCallId: string; toolName: string; input: unknown };
}

/**
 * A function for AI SDK 7's `toolApproval` option: sends each tool call through the guard and
 * answers with its decision (`allow` becomes `approved`; `block`, rejected, expired and cancelled
 * become `denied` with the reason). `mode` is ignored: a denial is always an answer.
 */
export function guardToolApproval(
  options: Omit<GuardToolsOptions, "mode">,
): (call: ToolApprovalCall) => Promise<GuardApprovalStatus> {
  const guard: Guard = options.client.guard(options.proxyId);
  return async ({ toolCall }) => {
    const { toolName: name, input, toolCallId } = toolCall;
    const reason = typeof options.reason === "function" ? options.reason(name, input) : options.reason;
    const result = await guard.validateAndWait({
      sessionId: options.sessionId,
      toolCall: { name, arguments: (input ?? {}) as Record<string, unknown> },
      ...(options.scope !== undefined ? { scope: options.scope } : {}),
      ...(reason !== undefined ? { reason } : {}),
      ...(options.onBehalfOf !== undefined ? { onBehalfOf: options.onBehalfOf } : {}),
      ...(toolCallId ? { idempotencyKey: `ai-sdk-guard:${options.sessionId}:${toolCallId}` } : {}),
      timeoutMs: options.timeoutMs,
    });
    options.onDecision?.(name, result);
    if (result.action === "allow") {
      return { type: "approved", ...(result.approved_by ? { reason: `Approved by ${result.approved_by}` } : {}) };
    }
    return { type: "denied", reason: result.reason };
  };
}
