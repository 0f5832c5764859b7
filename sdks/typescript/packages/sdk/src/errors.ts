/** The body of every Countersign error: `{"error":{"code","message","current_status"?}}`. */
export interface ErrorDetail {
  code: string;
  message: string;
  current_status?: string | null;
}

export interface CountersignErrorOptions {
  status: number;
  code: string;
  message: string;
  retryAfter?: number;
  currentStatus?: string;
  requestId?: string;
  cause?: unknown;
}

/**
 * Every error the client raises. `status` is the HTTP status (0 when no answer arrived),
 * `code` the server's stable error code (see the README's errors table), `retryAfter` the
 * seconds the server asked to wait (429), `currentStatus` the request's status on a 409.
 */
export class CountersignError extends Error {
  readonly status: number;
  readonly code: string;
  readonly retryAfter?: number;
  readonly currentStatus?: string;
  readonly requestId?: string;

  constructor(options: CountersignErrorOptions) {
    super(options.message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.status = options.status;
    this.code = options.code;
    this.retryAfter = options.retryAfter;
    this.currentStatus = options.currentStatus;
    this.requestId = options.requestId;
  }
}

/** 400 and 422: the request was malformed (`invalid_request`, `invalid_body`, `invalid_number`, …). */
export class InvalidRequestError extends CountersignError {}
/** 401: no key, or an unknown, revoked or disabled one. */
export class AuthenticationError extends CountersignError {}
/** 403: the key's role may not do this. */
export class PermissionDeniedError extends CountersignError {}
/** 404: nothing with that id in the caller's tenant. */
export class NotFoundError extends CountersignError {}
/** 409: `already_decided`, `already_voted`, `not_approved`, `already_exists`, `in_use`, … */
export class ConflictError extends CountersignError {}
/** 429: `rate_limited` or `too_many_pending`; `retryAfter` says when to try again. */
export class RateLimitError extends CountersignError {}
/** 503 `unavailable`, or another 5xx. */
export class ServerError extends CountersignError {}
/** No answer arrived (connection refused, reset, DNS…): `status` 0, `code` `network_error`. */
export class NetworkError extends CountersignError {}
/** A wait (`waitFor`, `waitForApproval`) reached its `timeoutMs` while still pending: `code` `wait_timeout`. */
export class WaitTimeoutError extends CountersignError {}
/** A grant failed verification (`verifyGrant`): `code` names the check that failed. */
export class GrantVerificationError extends CountersignError {}
/** A value canonical JSON cannot represent exactly (RFC 8785): `code` `invalid_number` or `invalid_json`. */
export class CanonicalJsonError extends CountersignError {}

/** The guard blocked a tool call, or its approval was rejected, expired or cancelled. */
export class ToolCallBlockedError extends CountersignError {
  readonly reason: string;
  readonly approvalId?: string;
  readonly approvalStatus?: string;

  constructor(options: CountersignErrorOptions & { reason: string; approvalId?: string; approvalStatus?: string }) {
    super(options);
    this.reason = options.reason;
    this.approvalId = options.approvalId;
    this.approvalStatus = options.approvalStatus;
  }
}

/** Builds the typed error for an HTTP error answer. */
export function errorFromResponse(
  status: number,
  body: unknown,
  headers: { get(name: string): string | null },
): CountersignError {
  let code = `http_${status}`;
  let message = `HTTP ${status}`;
  let currentStatus: string | undefined;
  if (body && typeof body === "object" && "error" in body) {
    const error = (body as { error: unknown; error_description?: unknown }).error;
    if (error && typeof error === "object") {
      const detail = error as Partial<ErrorDetail>;
      if (typeof detail.code === "string") code = detail.code;
      if (typeof detail.message === "string") message = detail.message;
      if (typeof detail.current_status === "string") currentStatus = detail.current_status;
    } else if (typeof error === "string") {
      // OAuth-style errors: {"error":"invalid_request","error_description":"…"}
      code = error;
      const description = (body as { error_description?: unknown }).error_description;
      message = typeof description === "string" ? description : error;
    }
  }
  const options: CountersignErrorOptions = {
    status,
    code,
    message,
    retryAfter: parseRetryAfter(headers.get("retry-after")),
    currentStatus,
    requestId: headers.get("x-request-id") ?? undefined,
  };
  if (status === 400 || status === 413 || status === 415 || status === 422) return new InvalidRequestError(options);
  if (status === 401) return new AuthenticationError(options);
  if (status === 403) return new PermissionDeniedError(options);
  if (status === 404) return new NotFoundError(options);
  if (status === 409) return new ConflictError(options);
  if (status === 429) return new RateLimitError(options);
  if (status >= 500) return new ServerError(options);
  return new CountersignError(options);
}

/** `Retry-After` as seconds (delta-seconds or an HTTP date), or undefined. */
export function parseRetryAfter(value: string | null): number | undefined {
  if (value === null || value.trim() === "") return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds;
  const date = Date.parse(value);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, (date - Date.now()) / 1000);
}
