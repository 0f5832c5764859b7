import type { Transport } from "./http.js";
import { longPoll, type WaitOptions } from "./wait.js";

export interface AuthorizeParams {
  /** The reviewer (`usr_…`) who must approve. */
  userId: string;
  /** What the agent asks to do, e.g. `approve:payment`. */
  scope: string;
  /** The question the reviewer sees. */
  bindingMessage: string;
  /** Seconds until the request expires (10 to 86400, default 300). */
  requestedExpiry?: number;
  /** Any JSON object describing the action (at most 16 KiB); bound into the access token. */
  context?: Record<string, unknown>;
  /** The `Idempotency-Key` to send; by default a fresh UUID per call, reused across its retries. */
  idempotencyKey?: string;
  signal?: AbortSignal;
}

export interface AuthorizeResponse {
  /** The secret handle for polling; keep it private. */
  authReqId: string;
  expiresIn: number;
  interval: number;
}

export type CibaStatus =
  | { status: "pending" }
  | {
      status: "approved";
      /** The signed grant; present on the first poll after approval only. */
      accessToken?: string;
      tokenType?: string;
      expiresIn?: number;
      /** True when an earlier poll already received the access token. */
      tokenAlreadyIssued?: boolean;
    }
  | { status: "denied"; reason?: string | null }
  | { status: "expired" };

export type CibaDecidedStatus = Exclude<CibaStatus, { status: "pending" }>;

export interface PollOptions {
  /** RFC 8707: the resource (absolute URI) the access token is for. */
  resource?: string;
  signal?: AbortSignal;
}

export interface CibaWaitOptions extends WaitOptions {
  resource?: string;
}

/** A request named by its secret `authReqId` (a string) or its public `approvalId`. */
export type CibaRef = string | { authReqId: string } | { approvalId: string };

export interface DecisionResponse {
  approvalId: string;
  status: string;
}

function ref(r: CibaRef): { authReqId?: string; approvalId?: string } {
  return typeof r === "string" ? { authReqId: r } : { ...r };
}

/** The seed's CIBA face: `/ciba/*`. */
export class Ciba {
  constructor(private readonly http: Transport) {}

  /** Asks the reviewer (`POST /ciba/authorize`); retried safely with an `Idempotency-Key`. */
  authorize(params: AuthorizeParams): Promise<AuthorizeResponse> {
    const { idempotencyKey, signal, ...body } = params;
    return this.http.request<AuthorizeResponse>("/ciba/authorize", {
      method: "POST",
      json: body,
      retry: "idempotent",
      idempotencyKey,
      signal,
    });
  }

  /** One poll (`GET /ciba/token`): `{status: "pending" | "approved" | "denied" | "expired", …}`. */
  poll(authReqId: string, options: PollOptions & { waitSeconds?: number } = {}): Promise<CibaStatus> {
    return this.http.request<CibaStatus>("/ciba/token", {
      query: { authReqId, waitSeconds: options.waitSeconds, resource: options.resource },
      signal: options.signal,
      extraTimeoutMs: (options.waitSeconds ?? 0) * 1000,
    });
  }

  /**
   * Long-polls until the request is approved, denied or expired and returns that status (the
   * approved one carries the access token). Rejects with `WaitTimeoutError` after `timeoutMs`,
   * or with the signal's reason when aborted.
   */
  waitFor(authReqId: string, options: CibaWaitOptions = {}): Promise<CibaDecidedStatus> {
    return longPoll(
      (waitSeconds, signal) => this.poll(authReqId, { waitSeconds, signal, resource: options.resource }),
      (s) => s.status !== "pending",
      options,
      "the CIBA request",
    ) as Promise<CibaDecidedStatus>;
  }

  /** Approves (`POST /ciba/approve`), as a reviewer. */
  approve(request: CibaRef, options: { comment?: string; signal?: AbortSignal } = {}): Promise<DecisionResponse> {
    return this.http.request<DecisionResponse>("/ciba/approve", {
      method: "POST",
      json: { ...ref(request), ...(options.comment !== undefined ? { comment: options.comment } : {}) },
      signal: options.signal,
    });
  }

  /** Denies (`POST /ciba/deny`), as a reviewer. */
  deny(request: CibaRef, reason?: string, options: { signal?: AbortSignal } = {}): Promise<DecisionResponse> {
    return this.http.request<DecisionResponse>("/ciba/deny", {
      method: "POST",
      json: { ...ref(request), ...(reason !== undefined ? { reason } : {}) },
      signal: options.signal,
    });
  }
}
