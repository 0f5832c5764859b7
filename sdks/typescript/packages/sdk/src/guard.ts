import { ToolCallBlockedError, WaitTimeoutError } from "./errors.js";
import type { Transport } from "./http.js";
import { longPoll, type WaitOptions } from "./wait.js";

export type PolicyAction = "allow" | "block" | "require_approval";
export type ApprovalStatus = "pending" | "approved" | "rejected" | "expired" | "cancelled";

/** `{name, arguments}`, OpenAI's `{type:"function", function:{name, arguments}}` or Anthropic's `{type:"tool_use", name, input}`. */
export type ToolCall =
  | { name: string; arguments?: Record<string, unknown> | string | null; type?: null }
  | { type: "function"; function: { name: string; arguments?: Record<string, unknown> | string | null } }
  | { type: "tool_use"; name: string; input?: Record<string, unknown> | string | null };

export interface ToolParams {
  sessionId: string;
  toolCall: ToolCall | Record<string, unknown>;
  /** An action category for trust rules, e.g. `payments`. */
  scope?: string;
  /** Why the agent wants to run it, shown to reviewers. */
  reason?: string;
  /** The user (id or email) the agent acts for; they may not approve it themselves. */
  onBehalfOf?: string;
  /** The `Idempotency-Key` to send; by default a fresh UUID per call, reused across its retries. */
  idempotencyKey?: string;
  signal?: AbortSignal;
}

/** The answer of `POST /tool`. */
export interface ToolDecision {
  action: PolicyAction;
  approval_id?: string | null;
  message: string;
  expires_at?: string | null;
  risk_score: number;
  threats_detected: string[];
  policy_matched?: string | null;
}

export interface DecisionView {
  decision: string;
  decided_by?: string | null;
  decided_at?: string;
  comment?: string | null;
  [key: string]: unknown;
}

/** MCP tool annotations, as the MCP server declared them (absent hints are MCP's defaults). */
export interface ToolAnnotations {
  readOnlyHint?: boolean;
  destructiveHint?: boolean;
  idempotentHint?: boolean;
  openWorldHint?: boolean;
}

/** Where a tool call came from when an MCP proxy (`countersign mcp wrap`, `/mcp/{id}`) sent it. */
export interface McpOrigin {
  /** The upstream MCP server: its registered id or the name `wrap` gives it. */
  server: string;
  /** The MCP client's name and version. */
  client?: string;
}

/** `GET /approvals/{id}`: the seed's fields plus the tool call and how it is decided. */
export interface GuardApproval {
  approval_id: string;
  status: ApprovalStatus;
  approved_by?: string | null;
  approved_at?: string | null;
  comment?: string | null;
  reason?: string | null;
  decided_by?: string | null;
  decided_at?: string | null;
  tool_name: string;
  arguments: Record<string, unknown>;
  arguments_sha256: string;
  agent_id: string;
  agent_reason?: string | null;
  session_id?: string | null;
  risk_score: number;
  threats_detected: string[];
  policy_matched?: string | null;
  approval_group?: string | null;
  /** Present when the call came through MCP. */
  annotations?: ToolAnnotations;
  mcp?: McpOrigin;
  escalation_level: number;
  required_approvals: number;
  decisions: DecisionView[];
  requested_at: string;
  expires_at: string;
}

export interface GrantResponse {
  access_token: string;
  token_type: string;
  expires_in: number;
}

export interface HistoryQuery {
  status?: ApprovalStatus;
  tool?: string;
  /** A reviewer's email. */
  decided_by?: string;
  /** RFC 3339. */
  from?: string;
  to?: string;
  cursor?: string;
  limit?: number;
}

export interface HistoryItem {
  approval_id: string;
  tool_name: string;
  status: ApprovalStatus;
  requested_at: string;
  decided_at?: string | null;
  decided_by?: string | null;
  comment?: string | null;
}

export interface History {
  approvals: HistoryItem[];
  next_cursor?: string | null;
}

export interface ApprovalConfig {
  approval_group_id?: string;
  timeout_minutes?: number;
  default_on_timeout?: "reject" | "approve";
  notification_channels?: string[];
  escalation_rules?: { after_minutes: number; escalate_to: string }[];
  required_approvals?: number;
  allow_self_approval?: boolean;
  audiences?: string[];
  [key: string]: unknown;
}

export interface PolicyInput {
  name: string;
  tool_pattern: string;
  action: PolicyAction;
  description?: string | null;
  priority?: number | null;
  is_active?: boolean | null;
  condition?: string | null;
  approval_config?: ApprovalConfig | null;
}

export interface Policy extends PolicyInput {
  id: string;
  priority: number;
  is_active: boolean;
  approval_config: ApprovalConfig;
  created_at: string;
  updated_at: string;
}

export interface EvaluateParams {
  tool_call: ToolCall | Record<string, unknown>;
  agent_id?: string;
  scope?: string;
  session_id?: string;
}

export interface GroupInput {
  id?: string;
  name: string;
  members: { email: string; role: "primary" | "backup" }[];
  escalation_minutes?: number | null;
}

export interface Group {
  id: string;
  name: string;
  members: { email: string; role: "primary" | "backup"; [key: string]: unknown }[];
  escalation_minutes?: number | null;
  [key: string]: unknown;
}

export interface RoutingRules {
  routing_rules: { condition: { risk_score_min?: number; tool_pattern?: string }; approval_group: string }[];
}

export interface GuardSettings {
  default_action?: PolicyAction;
  default_approval_group_id?: string | null;
  admins_can_decide?: boolean;
  trust_rules?: { trust_levels?: string[]; tool_patterns?: string[]; scopes?: string[]; approval_group_id?: string }[];
  default_timeout_minutes?: number;
  grant_audiences?: string[];
}

export interface ValidateAndWaitOptions extends ToolParams {
  /** Stop waiting for the decision after this many milliseconds (default: until the approval expires). */
  timeoutMs?: number;
  /** Throw `ToolCallBlockedError` instead of returning `{action: "block"}`. */
  throwOnBlock?: boolean;
}

/** What `validateAndWait` answers: the seed's `{action, reason?}` plus what the server said. */
export type ValidateResult =
  | {
      action: "allow";
      /** Set when a reviewer approved (or the approval timed out to approve). */
      approval_id?: string;
      approved_by?: string | null;
      decision: ToolDecision;
      approval?: GuardApproval;
    }
  | {
      action: "block";
      reason: string;
      /** `blocked` (by a policy), `rejected`, `expired`, `cancelled` or `approval_timeout`. */
      code: "blocked" | "rejected" | "expired" | "cancelled" | "approval_timeout";
      approval_id?: string;
      decision: ToolDecision;
      approval?: GuardApproval;
    };

const enc = encodeURIComponent;

/** The guard API of one tenant: `/v1/guard/{proxyId}`. */
export class Guard {
  readonly policies: Policies;
  readonly groups: Groups;
  readonly routing: Routing;
  readonly settings: Settings;
  private readonly base: string;

  constructor(
    private readonly http: Transport,
    readonly proxyId: string,
  ) {
    this.base = `/v1/guard/${enc(proxyId)}`;
    this.policies = new Policies(http, this.base);
    this.groups = new Groups(http, this.base);
    this.routing = new Routing(http, this.base);
    this.settings = new Settings(http, this.base);
  }

  /** Submits a tool call (`POST /tool`); retried safely with an `Idempotency-Key`. */
  tool(params: ToolParams): Promise<ToolDecision> {
    const body: Record<string, unknown> = { session_id: params.sessionId, tool_call: params.toolCall };
    if (params.scope !== undefined) body.scope = params.scope;
    if (params.reason !== undefined) body.reason = params.reason;
    if (params.onBehalfOf !== undefined) body.on_behalf_of = params.onBehalfOf;
    return this.http.request<ToolDecision>(`${this.base}/tool`, {
      method: "POST",
      json: body,
      retry: "idempotent",
      idempotencyKey: params.idempotencyKey,
      signal: params.signal,
    });
  }

  /** Reads an approval (`GET /approvals/{id}`); `wait` long-polls up to that many seconds (at most 30). */
  approval(id: string, options: { wait?: number; signal?: AbortSignal } = {}): Promise<GuardApproval> {
    return this.http.request<GuardApproval>(`${this.base}/approvals/${enc(id)}`, {
      query: { wait: options.wait },
      signal: options.signal,
      extraTimeoutMs: (options.wait ?? 0) * 1000,
    });
  }

  /** Long-polls until the approval leaves `pending` and returns it. */
  waitForApproval(id: string, options: WaitOptions = {}): Promise<GuardApproval> {
    return longPoll(
      (wait, signal) => this.approval(id, { wait, signal }),
      (a) => a.status !== "pending",
      options,
      `approval ${id}`,
    );
  }

  /**
   * The seed's `validateAndWaitForApproval` as one call: submits the tool call; `allow` returns at
   * once, `block` returns `{action: "block"}` (or throws with `throwOnBlock`), and
   * `require_approval` long-polls until a reviewer decides. Calling it again with the same
   * session and arguments joins the pending approval; with `idempotencyKey` (e.g. the tool call's
   * id) a replay after the decision rejoins it too.
   */
  async validateAndWait(options: ValidateAndWaitOptions): Promise<ValidateResult> {
    const decision = await this.tool(options);
    let result: ValidateResult;
    if (decision.action === "allow") {
      return { action: "allow", decision };
    } else if (decision.action === "block") {
      result = { action: "block", code: "blocked", reason: decision.message, decision };
    } else {
      const approvalId = decision.approval_id!;
      let approval: GuardApproval | undefined;
      try {
        approval = await this.waitForApproval(approvalId, { signal: options.signal, timeoutMs: options.timeoutMs });
      } catch (error) {
        if (!(error instanceof WaitTimeoutError)) throw error;
      }
      if (approval === undefined) {
        result = { action: "block", code: "approval_timeout", reason: "Approval timeout", approval_id: approvalId, decision };
      } else if (approval.status === "approved") {
        return { action: "allow", approval_id: approvalId, approved_by: approval.approved_by, decision, approval };
      } else {
        const status = approval.status as "rejected" | "expired" | "cancelled";
        const reason =
          approval.reason ?? (status === "rejected" ? "Denied" : status === "expired" ? "Approval expired" : "Approval cancelled");
        result = { action: "block", code: status, reason, approval_id: approvalId, decision, approval };
      }
    }
    if (options.throwOnBlock) {
      throw new ToolCallBlockedError({
        status: 0,
        code: result.code,
        message: result.reason,
        reason: result.reason,
        approvalId: result.approval_id,
        approvalStatus: result.approval?.status,
      });
    }
    return result;
  }

  /** Redeems an approved approval for its signed grant, once (`POST /approvals/{id}/grant`). */
  grant(id: string, options: { resource?: string; signal?: AbortSignal } = {}): Promise<GrantResponse> {
    return this.http.request<GrantResponse>(`${this.base}/approvals/${enc(id)}/grant`, {
      method: "POST",
      query: { resource: options.resource },
      signal: options.signal,
    });
  }

  /** Approves, as an eligible reviewer. */
  approve(id: string, comment?: string): Promise<GuardApproval> {
    return this.http.request<GuardApproval>(`${this.base}/approvals/${enc(id)}/approve`, {
      method: "POST",
      json: comment === undefined ? {} : { comment },
    });
  }

  /** Rejects, as an eligible reviewer. */
  reject(id: string, reason?: string): Promise<GuardApproval> {
    return this.http.request<GuardApproval>(`${this.base}/approvals/${enc(id)}/reject`, {
      method: "POST",
      json: reason === undefined ? {} : { reason },
    });
  }

  /** Withdraws a pending approval (the agent that asked, or an admin). */
  cancel(id: string): Promise<GuardApproval> {
    return this.http.request<GuardApproval>(`${this.base}/approvals/${enc(id)}/cancel`, { method: "POST" });
  }

  /** The decided approvals, newest first (`GET /approvals/history`). */
  history(query: HistoryQuery = {}): Promise<History> {
    return this.http.request<History>(`${this.base}/approvals/history`, { query: { ...query } });
  }
}

class Policies {
  constructor(
    private readonly http: Transport,
    private readonly base: string,
  ) {}
  create(policy: PolicyInput): Promise<Policy> {
    return this.http.request(`${this.base}/policies`, { method: "POST", json: policy });
  }
  async list(): Promise<Policy[]> {
    return (await this.http.request<{ policies: Policy[] }>(`${this.base}/policies`)).policies;
  }
  get(id: string): Promise<Policy> {
    return this.http.request(`${this.base}/policies/${enc(id)}`);
  }
  update(id: string, policy: PolicyInput): Promise<Policy> {
    return this.http.request(`${this.base}/policies/${enc(id)}`, { method: "PUT", json: policy });
  }
  async delete(id: string): Promise<void> {
    await this.http.request(`${this.base}/policies/${enc(id)}`, { method: "DELETE" });
  }
  /** What `/tool` would answer for a sample call, creating nothing. */
  evaluate(params: EvaluateParams): Promise<ToolDecision> {
    return this.http.request(`${this.base}/policies/evaluate`, { method: "POST", json: params });
  }
}

class Groups {
  constructor(
    private readonly http: Transport,
    private readonly base: string,
  ) {}
  create(group: GroupInput): Promise<Group> {
    return this.http.request(`${this.base}/approval-groups`, { method: "POST", json: group });
  }
  async list(): Promise<Group[]> {
    return (await this.http.request<{ approval_groups: Group[] }>(`${this.base}/approval-groups`)).approval_groups;
  }
  get(id: string): Promise<Group> {
    return this.http.request(`${this.base}/approval-groups/${enc(id)}`);
  }
  update(id: string, group: GroupInput): Promise<Group> {
    return this.http.request(`${this.base}/approval-groups/${enc(id)}`, { method: "PUT", json: group });
  }
  async delete(id: string): Promise<void> {
    await this.http.request(`${this.base}/approval-groups/${enc(id)}`, { method: "DELETE" });
  }
}

class Routing {
  constructor(
    private readonly http: Transport,
    private readonly base: string,
  ) {}
  get(): Promise<RoutingRules> {
    return this.http.request(`${this.base}/routing-rules`);
  }
  put(rules: RoutingRules): Promise<RoutingRules> {
    return this.http.request(`${this.base}/routing-rules`, { method: "PUT", json: rules });
  }
}

class Settings {
  constructor(
    private readonly http: Transport,
    private readonly base: string,
  ) {}
  get(): Promise<GuardSettings> {
    return this.http.request(`${this.base}/settings`);
  }
  put(settings: GuardSettings): Promise<GuardSettings> {
    return this.http.request(`${this.base}/settings`, { method: "PUT", json: settings });
  }
}

export type { Policies, Groups, Routing, Settings };
