import { WaitTimeoutError } from "./errors.js";

export interface WaitOptions {
  /** Stop waiting (the promise rejects with the signal's reason). */
  signal?: AbortSignal;
  /** Give up after this many milliseconds with a `WaitTimeoutError` (default: wait until the request is decided or expires). */
  timeoutMs?: number;
}

/** The server holds a long-poll at most this long. */
export const MAX_WAIT_SECONDS = 30;

/**
 * Long-polls with `poll(waitSeconds)` until `done(answer)`, honouring `signal` and `timeoutMs`.
 */
export async function longPoll<T>(
  poll: (waitSeconds: number, signal?: AbortSignal) => Promise<T>,
  done: (answer: T) => boolean,
  options: WaitOptions,
  what: string,
): Promise<T> {
  const deadline = options.timeoutMs === undefined ? undefined : Date.now() + options.timeoutMs;
  for (;;) {
    options.signal?.throwIfAborted();
    let wait = MAX_WAIT_SECONDS;
    if (deadline !== undefined) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new WaitTimeoutError({ status: 0, code: "wait_timeout", message: `${what} was still pending after ${options.timeoutMs} ms` });
      }
      wait = Math.min(MAX_WAIT_SECONDS, Math.max(0, Math.floor(remaining / 1000)));
    }
    const answer = await poll(wait, options.signal);
    if (done(answer)) return answer;
    if (wait === 0) {
      // Under a second left: one short pause instead of a busy loop.
      await new Promise((r) => setTimeout(r, Math.min(250, Math.max(0, deadline! - Date.now()))));
    }
  }
}
