import { describe, expect, it } from 'vitest';
import { Code, OrionError, statusOf } from '../../common/errors.js';
import { backoffMs, isTransient, retryTransient } from '../../common/retry.js';

function fakeTime() {
  let t = 0;
  const waits: number[] = [];
  return { now: () => t, sleep: async (ms: number) => { waits.push(ms); t += ms; }, waits };
}

describe('retryTransient', () => {
  it('retries UNAVAILABLE (a head restarting, a reset connection) until the call succeeds', async () => {
    const time = fakeTime();
    let calls = 0;
    const retried: number[] = [];
    const out = await retryTransient('download', async () => {
      if (++calls < 4) throw new OrionError(Code.UNAVAILABLE, 'read ECONNRESET');
      return 'ok';
    }, { budgetMs: 60_000, ...time, random: () => 1, onRetry: (_e, n) => retried.push(n) });
    expect(out).toBe('ok');
    expect(calls).toBe(4);
    expect(retried).toEqual([1, 2, 3]);
    expect(time.waits).toEqual([400, 800, 1600]);
  });

  it('does not retry errors that would fail again (NOT_FOUND, INVALID_ARGUMENT, DATA_LOSS)', async () => {
    for (const code of [Code.NOT_FOUND, Code.INVALID_ARGUMENT, Code.DATA_LOSS, Code.PERMISSION_DENIED]) {
      let calls = 0;
      await expect(retryTransient('x', async () => { calls++; throw new OrionError(code, 'no'); }, { budgetMs: 60_000, ...fakeTime() })).rejects.toMatchObject({ code });
      expect(calls).toBe(1);
    }
  });

  it('gives up after the budget with a message naming what and how many attempts, keeping the code', async () => {
    const time = fakeTime();
    const err = await retryTransient('downloading blob X', async () => { throw new OrionError(Code.UNAVAILABLE, 'connection refused'); }, { budgetMs: 5_000, ...time, random: () => 1 }).catch((e) => e);
    expect(statusOf(err)).toBe(Code.UNAVAILABLE);
    expect(err.message).toMatch(/downloading blob X: gave up after \d+ attempts: connection refused/);
    expect(time.now()).toBeGreaterThan(5_000);
    expect(time.now()).toBeLessThan(20_000);
  });

  it('stops at once when the signal is aborted', async () => {
    const ac = new AbortController();
    let calls = 0;
    const p = retryTransient('x', async () => { calls++; ac.abort(); throw new OrionError(Code.UNAVAILABLE, 'down'); }, { budgetMs: 60_000, signal: ac.signal, ...fakeTime() });
    await expect(p).rejects.toMatchObject({ code: Code.UNAVAILABLE });
    expect(calls).toBe(1);
  });

  it('backs off exponentially with jitter, capped at 10 s', () => {
    expect(backoffMs(1, () => 0)).toBe(200);
    expect(backoffMs(1, () => 1)).toBe(400);
    expect(backoffMs(3, () => 1)).toBe(1600);
    expect(backoffMs(20, () => 1)).toBe(10_000);
    expect(isTransient(new OrionError(Code.ABORTED, ''))).toBe(true);
    expect(isTransient({ code: 14 })).toBe(true);
    expect(isTransient(new Error('plain'))).toBe(false);
  });
});
