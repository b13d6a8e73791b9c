/**
 * Retrying transient failures (a head restarting, a connection reset) with
 * jittered exponential backoff, within a time budget. Time, randomness and
 * sleeping are injected so the rule is tested without waiting.
 */
import { Code, statusOf, wrap } from './errors.js';

export interface RetryOptions {
  /** Give up once this long has passed since the first attempt. */
  budgetMs: number;
  signal?: AbortSignal;
  now?: () => number;
  random?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /** Called before each wait (for example to forget what the server was known to hold). */
  onRetry?: (err: unknown, attempt: number) => void;
}

/** Codes that say "try again later": the request may succeed unchanged. */
export function isTransient(err: unknown): boolean {
  const c = statusOf(err);
  return c === Code.UNAVAILABLE || c === Code.ABORTED || c === Code.RESOURCE_EXHAUSTED;
}

/** The wait before retry number `attempt` (1-based): 400 ms doubling to 10 s, with jitter in [50%, 100%]. */
export function backoffMs(attempt: number, random: () => number): number {
  return Math.min(10_000, 200 * 2 ** Math.min(attempt, 8)) * (0.5 + random() / 2);
}

export async function retryTransient<T>(what: string, fn: () => Promise<T>, opts: RetryOptions): Promise<T> {
  const now = opts.now ?? Date.now;
  const random = opts.random ?? Math.random;
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const deadline = now() + opts.budgetMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isTransient(err) || opts.signal?.aborted || now() > deadline) throw err;
      opts.onRetry?.(err, attempt);
      await sleep(backoffMs(attempt, random));
      if (now() > deadline) throw wrap(err, `${what}: gave up after ${attempt} attempts`);
    }
  }
}
