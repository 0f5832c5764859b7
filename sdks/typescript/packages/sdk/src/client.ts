import { Ciba } from "./ciba.js";
import { Guard } from "./guard.js";
import { Transport, type FetchLike, type RetryOptions } from "./http.js";
import type { GrantClaims } from "./grants.js";

export interface CountersignOptions {
  /** The server's URL, e.g. `https://countersign.example.com`. */
  baseUrl: string;
  /** An API key (`csk_…`): agent, reviewer, admin or executor. */
  apiKey: string;
  /** A `fetch` to use instead of the global one. */
  fetch?: FetchLike;
  /** Retries on network errors, 429 and 503: a count (default 3) or finer options. */
  retries?: number | RetryOptions;
  /** Per-attempt time limit in milliseconds, on top of any long-poll wait (default 30000). */
  timeoutMs?: number;
}

/** `POST /oauth/introspect`: `{active: false}`, or `active: true` with the grant's claims. */
export type Introspection = { active: false } | ({ active: true; token_type?: string } & GrantClaims);

/** The Countersign client. */
export class Countersign {
  /** The seed's CIBA face (`/ciba/*`). */
  readonly ciba: Ciba;
  private readonly http: Transport;
  private readonly guards = new Map<string, Guard>();

  constructor(options: CountersignOptions) {
    this.http = new Transport(options);
    this.ciba = new Ciba(this.http);
  }

  get baseUrl(): string {
    return this.http.baseUrl;
  }

  /** The guard API of one tenant (`proxyId`; `default` out of the box). */
  guard(proxyId: string): Guard {
    let guard = this.guards.get(proxyId);
    if (!guard) {
      guard = new Guard(this.http, proxyId);
      this.guards.set(proxyId, guard);
    }
    return guard;
  }

  /**
   * Introspects a grant (RFC 7662), as an executor (or admin) key. With `consume: true` an
   * active answer also marks the grant used: of concurrent consumers exactly one sees it active.
   * The executor still compares the arguments digest.
   */
  introspect(token: string, options: { consume?: boolean; signal?: AbortSignal } = {}): Promise<Introspection> {
    return this.http.request<Introspection>("/oauth/introspect", {
      method: "POST",
      form: { token, consume: options.consume ? "true" : undefined },
      // Consuming is a change; a read otherwise.
      retry: options.consume ? "unsafe" : "safe",
      signal: options.signal,
    });
  }

  /** Ends a grant early (RFC 7009). */
  async revoke(token: string): Promise<void> {
    await this.http.request("/oauth/revoke", { method: "POST", form: { token }, retry: "safe" });
  }

  /** Low-level access to any endpoint, with the client's key, retries and typed errors. */
  request<T = unknown>(path: string, options: Parameters<Transport["request"]>[1] = {}): Promise<T> {
    return this.http.request<T>(path, options);
  }
}
