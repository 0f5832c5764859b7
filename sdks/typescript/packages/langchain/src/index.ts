import { Countersign, type CibaDecidedStatus } from "@countersign/sdk";
import { ToolMessage } from "@langchain/core/messages";
import { StructuredTool, type ToolRunnableConfig } from "@langchain/core/tools";
import type { CallbackManagerForToolRun } from "@langchain/core/callbacks/manager";

/** Who is asked, through which client: shared by the tools of one agent. */
export interface CountersignToolkitOptions {
  /** A client with an agent key. */
  client: Countersign;
  /** The reviewer (`usr_…`) who approves. */
  userId: string;
  /** Seconds a request waits for its reviewer (10 to 86400; default 300). */
  requestedExpiry?: number;
  /** Stop waiting after this many milliseconds (default: until the request expires). */
  timeoutMs?: number;
}

export class CountersignToolkit implements CountersignToolkitOptions {
  readonly client: Countersign;
  readonly userId: string;
  readonly requestedExpiry?: number;
  readonly timeoutMs?: number;

  constructor(options: CountersignToolkitOptions) {
    this.client = options.client;
    this.userId = options.userId;
    this.requestedExpiry = options.requestedExpiry;
    this.timeoutMs = options.timeoutMs;
  }
}

/** What `onApproved` learns besides the arguments. */
export interface ApprovalInfo {
  authReqId: string;
  /** The signed grant bound to this request's context; absent when an earlier run received it. */
  accessToken?: string;
}

export interface CIBAApprovalToolFields<Args extends Record<string, any>> {
  toolkit: CountersignToolkit | CountersignToolkitOptions;
  name: string;
  description: string;
  /** What the agent asks to do, e.g. `approve:payment`. */
  approvalScope: string;
  /** The question the reviewer sees. */
  buildMessage: (args: Args) => string;
  /** Runs only after the reviewer approved; its result is the tool's result. */
  onApproved: (args: Args, approval: ApprovalInfo) => unknown | Promise<unknown>;
  /** The arguments' schema (zod or JSON Schema); default: any JSON object. */
  schema?: StructuredTool["schema"];
  /** The `context` bound into the grant; default: the arguments themselves. */
  buildContext?: (args: Args) => Record<string, unknown>;
}

const anyObject = { type: "object", properties: {}, additionalProperties: true } as const;

/**
 * A LangChain structured tool that asks a reviewer through Countersign's CIBA flow, waits
 * (long-polling) for the decision, and runs `onApproved` only after approval. A denial or
 * expiry becomes the tool's error result, which the model reads; it does not end the agent.
 * The request is keyed by the tool call's id, so a replayed call does not ask twice.
 */
export class CIBAApprovalTool<Args extends Record<string, any> = Record<string, any>> extends StructuredTool {
  name: string;
  description: string;
  schema: StructuredTool["schema"];
  readonly toolkit: CountersignToolkitOptions;
  readonly approvalScope: string;
  private readonly buildMessage: (args: Args) => string;
  private readonly onApproved: (args: Args, approval: ApprovalInfo) => unknown | Promise<unknown>;
  private readonly buildContext: (args: Args) => Record<string, unknown>;

  constructor(fields: CIBAApprovalToolFields<Args>) {
    super();
    this.name = fields.name;
    this.description = fields.description;
    this.schema = fields.schema ?? (anyObject as unknown as StructuredTool["schema"]);
    this.toolkit = fields.toolkit;
    this.approvalScope = fields.approvalScope;
    this.buildMessage = fields.buildMessage;
    this.onApproved = fields.onApproved;
    this.buildContext = fields.buildContext ?? ((args) => args);
  }

  protected async _call(args: Args, _runManager?: CallbackManagerForToolRun, config?: ToolRunnableConfig): Promise<unknown> {
    const toolCallId = config?.toolCall?.id;
    const { client, userId, requestedExpiry, timeoutMs } = this.toolkit;
    const { authReqId } = await client.ciba.authorize({
      userId,
      scope: this.approvalScope,
      bindingMessage: this.buildMessage(args),
      context: this.buildContext(args),
      ...(requestedExpiry !== undefined ? { requestedExpiry } : {}),
      // One tool call, one request: a replay of the same call gets the same request back.
      ...(toolCallId ? { idempotencyKey: `langchain-tool-call:${toolCallId}` } : {}),
      signal: config?.signal,
    });
    let decision: CibaDecidedStatus;
    try {
      decision = await client.ciba.waitFor(authReqId, { timeoutMs, signal: config?.signal });
    } catch (error) {
      if ((error as { code?: string }).code === "wait_timeout") {
        return this.refusal("No decision came in time; the action was not taken.", toolCallId);
      }
      throw error;
    }
    if (decision.status === "approved") {
      return this.onApproved(args, { authReqId, accessToken: decision.accessToken });
    }
    if (decision.status === "denied") {
      return this.refusal(`The reviewer denied this action${decision.reason ? `: ${decision.reason}` : ""}. It was not taken.`, toolCallId);
    }
    return this.refusal("The approval request expired without a decision; the action was not taken.", toolCallId);
  }

  private refusal(content: string, toolCallId: string | undefined): string | ToolMessage {
    if (!toolCallId) return content;
    return new ToolMessage({ content, tool_call_id: toolCallId, name: this.name, status: "error" });
  }
}

export { countersignMiddleware, type CountersignMiddlewareOptions, type CountersignInterrupt } from "./middleware.js";
