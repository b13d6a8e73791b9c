/** The first contact with the head (cli/build/head-probe.ts), with an injected clock and requests. */
import { describe, expect, it } from 'vitest';
import { Code, OrionError, isFatal } from '../../common/errors.js';
import { reachHead } from '../../cli/build/head-probe.js';

/** A clock that sleeping advances, and a head that answers as `answers` says, one entry per try. */
function fakeHead(answers: (Error | 'ok')[]) {
  let t = 1_000;
  const deadlines: number[] = [];
  const sleeps: number[] = [];
  return {
    deadlines,
    sleeps,
    now: () => t,
    sleep: async (ms: number) => {
      sleeps.push(ms);
      t += ms;
    },
    ask: async (deadline: number) => {
      deadlines.push(deadline - t);
      const a = answers[Math.min(deadlines.length - 1, answers.length - 1)]!;
      if (a !== 'ok') {
        // A try that times out uses up its time.
        if (a instanceof OrionError && a.code === Code.DEADLINE_EXCEEDED) t = deadline;
        throw a;
      }
    },
  };
}

const refused = new OrionError(Code.UNAVAILABLE, 'GetCapabilities: No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:9. Resolution note: ');
const timedOut = new OrionError(Code.DEADLINE_EXCEEDED, 'GetCapabilities: Deadline exceeded');

describe('reachHead', () => {
  it('resolves once the head answers, retrying refused connections with growing waits', async () => {
    const h = fakeHead([refused, refused, refused, 'ok']);
    const waiting: string[] = [];
    await reachHead({ address: '127.0.0.1:9', timeoutMs: 15_000, ask: h.ask, now: h.now, sleep: h.sleep, onWaiting: (r) => waiting.push(r) });
    expect(h.deadlines).toHaveLength(4);
    // Told once, with the refusal (grpc-js's empty resolution note dropped).
    expect(waiting).toEqual(['GetCapabilities: No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:9']);
    expect(h.sleeps).toEqual([100, 200, 400]);
    // Each try is cut at 5 s, so a connection that hangs is tried again.
    expect(h.deadlines[0]).toBe(5_000);
  });

  it('gives up after the timeout with one fatal error naming the address, the time, the tries and the refusal (not a try cut short)', async () => {
    const h = fakeHead([refused, refused, refused, refused, refused, timedOut]);
    const err = await reachHead({ address: '127.0.0.1:9', timeoutMs: 2_000, ask: h.ask, now: h.now, sleep: h.sleep }).then(
      () => undefined,
      (e: unknown) => e as OrionError,
    );
    expect(err).toBeInstanceOf(OrionError);
    expect(err!.code).toBe(Code.UNAVAILABLE);
    expect(isFatal(err)).toBe(true);
    expect(err!.message).toMatch(/^cannot reach the head at 127\.0\.0\.1:9: no answer in 2 s \(\d+ tries; last: GetCapabilities: No connection established\. Last error: Error: connect ECONNREFUSED 127\.0\.0\.1:9\)$/);
    expect(err!.hint).toContain('orion head');
    // Never waits past the deadline.
    expect(h.now() - 1_000).toBeLessThanOrEqual(2_000);
  });

  it('fails at once, fatally, when the head answers with a refusal (wrong credentials, not an Orion head)', async () => {
    const h = fakeHead([new OrionError(Code.UNAUTHENTICATED, 'GetCapabilities: missing bearer token')]);
    const err = (await reachHead({ address: 'h:1', timeoutMs: 15_000, ask: h.ask, now: h.now, sleep: h.sleep }).catch((e: unknown) => e)) as OrionError;
    expect(err.code).toBe(Code.UNAUTHENTICATED);
    expect(isFatal(err)).toBe(true);
    expect(err.message).toBe("the head at h:1 refused this build's first request: GetCapabilities: missing bearer token");
    expect(h.deadlines).toHaveLength(1);
  });

  it('stops trying when the build is cancelled', async () => {
    const h = fakeHead([refused]);
    const ac = new AbortController();
    const sleep = async (ms: number) => {
      await h.sleep(ms);
      ac.abort();
    };
    const err = (await reachHead({ address: 'h:1', timeoutMs: 15_000, ask: h.ask, now: h.now, sleep, signal: ac.signal }).catch((e: unknown) => e)) as OrionError;
    expect(err.code).toBe(Code.CANCELLED);
    expect(h.deadlines).toHaveLength(1);
  });
});
