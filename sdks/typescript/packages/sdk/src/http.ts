import { CountersignError, NetworkError, errorFromResponse } from "./errors.js";

export type FetchLike = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

export interface RetryOptions {
  /** Retries after the first attempt (default 3). */
  max?: number;
  /** First backoff in milliseconds, doubled on each retry, with jitter (default 200). */
  baseDelayMs?: number;
  /** Longest wait between attempts, `Retry-After` included (default 30000). */
  maxDelayMs?: number;
}

export interface TransportOptions {
  baseUrl: string;
  apiKey?: string;
  fetch?: FetchLike;
  retries?: number | RetryOptions;
  /** Per-attempt time limit in milliseconds, on top of any long-poll wait (default 30000). */
  timeoutMs?: number;
  userAgent?: string;
}

/**
 * How a call may be retried:
 * - `safe`: reads; retried on network errors, 429 and 503;
 * - `idempotent`: creates sent with an `Idempotency-Key`; retried like reads, with the same key;
 * - `unsafe`: other changes; retried only on 429, which the server answers before acting.
 */
export type RetryClass = "safe" | "idempotent" | "unsafe";

export interface RequestOptions {
  method?: string;
  query?: Record<string, string | number | boolean | undefined | null>;
  json?: unknown;
  form?: Record<string, string | undefined>;
  retry?: RetryClass;
  idempotencyKey?: string;
  signal?: AbortSignal;
  /** Extra time this attempt may take (a long-poll's wait), in milliseconds. */
  extraTimeoutMs?: number;
  /** Override the client's key (e.g. an executor key for introspection). */
  apiKey?: string;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });

/** One signal that aborts when any of `signals` does. */
export function anySignal(signals: (AbortSignal | undefined)[]): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const present = signals.filter((s): s is AbortSignal => s !== undefined);
  const listeners: [AbortSignal, () => void][] = [];
  for (const s of present) {
    if (s.aborted) {
      controller.abort(s.reason);
      break;
    }
    const listener = () => controller.abort(s.reason);
    s.addEventListener("abort", listener, { once: true });
    listeners.push([s, listener]);
  }
  return {
    signal: controller.signal,
    dispose: () => listeners.forEach(([s, l]) => s.removeEventListener("abort", l)),
  };
}

export class Transport {
  readonly baseUrl: string;
  private readonly apiKey?: string;
  private readonly fetchImpl: FetchLike;
  private readonly retry: Required<RetryOptions>;
  private readonly timeoutMs: number;
  private readonly userAgent: string;

  constructor(options: TransportOptions) {
    if (!options.baseUrl) throw new TypeError("baseUrl is required");
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.apiKey = options.apiKey;
    const f = options.fetch ?? globalThis.fetch;
    if (typeof f !== "function") throw new TypeError("no fetch: pass one in the options");
    this.fetchImpl = options.fetch ? options.fetch : (input, init) => globalThis.fetch(input, init);
    const r = typeof options.retries === "number" ? { max: options.retries } : (options.retries ?? {});
    this.retry = { max: r.max ?? 3, baseDelayMs: r.baseDelayMs ?? 200, maxDelayMs: r.maxDelayMs ?? 30_000 };
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.userAgent = options.userAgent ?? "countersign-sdk-typescript/0.1.0";
  }

  url(path: string, query?: RequestOptions["query"]): string {
    const url = new URL(this.baseUrl + path);
    for (const [k, v] of Object.entries(query ?? {})) {
      if (v !== undefined && v !== null) url.searchParams.set(k, String(v));
    }
    return url.toString();
  }

  async request<T>(path: string, options: RequestOptions = {}): Promise<T> {
    const method = options.method ?? "GET";
    const retryClass = options.retry ?? (method === "GET" ? "safe" : "unsafe");
    const headers: Record<string, string> = { Accept: "application/json", "User-Agent": this.userAgent };
    const key = options.apiKey ?? this.apiKey;
    if (key) headers.Authorization = `Bearer ${key}`;
    let body: string | undefined;
    if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.json);
    } else if (options.form) {
      headers["Content-Type"] = "application/x-www-form-urlencoded";
      const form = new URLSearchParams();
      for (const [k, v] of Object.entries(options.form)) if (v !== undefined) form.set(k, v);
      body = form.toString();
    }
    if (retryClass === "idempotent") headers["Idempotency-Key"] = options.idempotencyKey ?? crypto.randomUUID();
    const url = this.url(path, options.query);

    for (let attempt = 0; ; attempt++) {
      options.signal?.throwIfAborted();
      const timeout = AbortSignal.timeout(this.timeoutMs + (options.extraTimeoutMs ?? 0));
      const combined = anySignal([options.signal, timeout]);
      let response: Response;
      try {
        response = await this.fetchImpl(url, { method, headers, body, signal: combined.signal });
      } catch (cause) {
        combined.dispose();
        if (options.signal?.aborted) throw options.signal.reason;
        const error = new NetworkError({
          status: 0,
          code: timeout.aborted ? "timeout" : "network_error",
          message: `${method} ${path}: ${cause instanceof Error ? cause.message : String(cause)}`,
          cause,
        });
        if (retryClass !== "unsafe" && attempt < this.retry.max) {
          await sleep(this.backoff(attempt), options.signal);
          continue;
        }
        throw error;
      }
      let parsed: unknown = undefined;
      let text: string;
      try {
        text = await response.text();
      } catch (cause) {
        combined.dispose();
        if (options.signal?.aborted) throw options.signal.reason;
        // The answer was lost on the way: as a network error.
        if (retryClass !== "unsafe" && attempt < this.retry.max) {
          await sleep(this.backoff(attempt), options.signal);
          continue;
        }
        throw new NetworkError({ status: 0, code: "network_error", message: `${method} ${path}: the answer was cut off`, cause });
      }
      combined.dispose();
      if (text.length > 0) {
        try {
          parsed = JSON.parse(text);
        } catch {
          parsed = undefined;
        }
      }
      if (response.ok) {
        if (text.length > 0 && parsed === undefined) {
          throw new CountersignError({ status: response.status, code: "invalid_response", message: `${method} ${path}: the answer is not JSON` });
        }
        return parsed as T;
      }
      const error = errorFromResponse(response.status, parsed, response.headers);
      const retryable =
        response.status === 429 || (response.status === 503 && retryClass !== "unsafe");
      if (retryable && attempt < this.retry.max) {
        const wait = error.retryAfter !== undefined ? error.retryAfter * 1000 : this.backoff(attempt);
        if (wait <= this.retry.maxDelayMs) {
          await sleep(wait, options.signal);
          continue;
        }
      }
      throw error;
    }
  }

  private backoff(attempt: number): number {
    const exp = this.retry.baseDelayMs * 2 ** attempt;
    return Math.min(this.retry.maxDelayMs, exp / 2 + Math.random() * (exp / 2));
  }
}
