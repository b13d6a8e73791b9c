/**
 * The first contact of `orion build --head` with its head. A head that never
 * answers (a wrong address, a head not started, a firewall) is a mistake to
 * report at once, in one line, not after every action has spent minutes
 * retrying: a build asks once (REAPI GetCapabilities), retries refused and
 * dropped connections for `timeoutMs` (a head a CI script started just before
 * may still be coming up), then fails the whole build. Once the head has
 * answered, losing it later is a restart to ride out: the long per-request
 * retries apply from then on (remote-executor.ts, remote-action-cache.ts).
 */
import { Code, OrionError, isFatal, messageOf, statusOf } from '../../common/errors.js';

export interface HeadProbeOptions {
  /** host:port, for the messages. */
  address: string;
  /** How long to keep trying before giving up on the head. */
  timeoutMs: number;
  /** One request to the head, abandoned at `deadline` (epoch ms) or when `signal` aborts. */
  ask(deadline: number, signal?: AbortSignal): Promise<void>;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  signal?: AbortSignal;
  /** Told once, after the first try fails, why the head has not answered yet. */
  onWaiting?(reason: string): void;
}

const HINT = 'check that `orion head` runs there and that --head (or ORION_HEAD, orion.json "head") names it, or build without --head';

/** Resolves once the head answers; otherwise throws a fatal OrionError naming the address and the last failure. */
export async function reachHead(o: HeadProbeOptions): Promise<void> {
  const now = o.now ?? Date.now;
  const sleep = o.sleep ?? ((ms: number) => abortableSleep(ms, o.signal));
  const deadline = now() + o.timeoutMs;
  /** What the last refused or failed connection said: more telling than a try cut short by the deadline. */
  let reason: string | undefined;
  for (let attempt = 1; ; attempt++) {
    if (o.signal?.aborted) throw new OrionError(Code.CANCELLED, 'build cancelled');
    try {
      // Each try gets at most 5 s: a connection that hangs (packets dropped) is retried too.
      await o.ask(Math.min(deadline, now() + 5_000), o.signal);
      return;
    } catch (err) {
      if (isFatal(err)) throw err;
      if (o.signal?.aborted) throw new OrionError(Code.CANCELLED, 'build cancelled');
      const code = statusOf(err);
      const message = messageOf(err);
      if (code !== Code.UNAVAILABLE && code !== Code.DEADLINE_EXCEEDED) {
        throw new OrionError(code, `the head at ${o.address} refused this build's first request: ${message}`, { fatal: true, cause: err });
      }
      if (code === Code.UNAVAILABLE || reason === undefined) reason = message;
      if (attempt === 1) o.onWaiting?.(reason);
      const left = deadline - now();
      if (left <= 0) {
        const seconds = Math.round(o.timeoutMs / 100) / 10;
        throw new OrionError(Code.UNAVAILABLE, `cannot reach the head at ${o.address}: no answer in ${seconds} s (${attempt} tries; last: ${reason})`, { fatal: true, hint: HINT, cause: err });
      }
      await sleep(Math.min(left, 100 * 2 ** Math.min(attempt - 1, 4)));
    }
  }
}

/** Resolves after `ms`, or at once when `signal` aborts (a build that ends does not wait for the head). */
function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
