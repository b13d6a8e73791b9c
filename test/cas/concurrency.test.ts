import { describe, expect, it } from 'vitest';
import { createLimiter } from '../../cas/concurrency.js';

describe('createLimiter', () => {
  it('runs at most max calls at once and starts waiting ones in FIFO order, across a long queue', async () => {
    const limit = createLimiter(3);
    let active = 0;
    let peak = 0;
    const started: number[] = [];
    const gates: (() => void)[] = [];
    const calls = Array.from({ length: 5000 }, (_, i) =>
      limit(async () => {
        started.push(i);
        peak = Math.max(peak, ++active);
        await new Promise<void>((r) => gates.push(r));
        active--;
        return i;
      }),
    );
    // Release one call at a time so the queue drains while it is long (its head moves, then it is compacted).
    for (let done = 0; done < 5000; done++) {
      await new Promise((r) => setImmediate(r));
      gates.shift()!();
    }
    expect(await Promise.all(calls)).toEqual(Array.from({ length: 5000 }, (_, i) => i));
    expect(started).toEqual(Array.from({ length: 5000 }, (_, i) => i));
    expect(peak).toBe(3);
  });

  it('frees the slot of a call that throws', async () => {
    const limit = createLimiter(1);
    await expect(limit(async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(await limit(async () => 'next')).toBe('next');
  });

  it('accepts new calls after the queue drained completely', async () => {
    const limit = createLimiter(1);
    for (let round = 0; round < 3; round++) {
      const out = await Promise.all([1, 2, 3].map((n) => limit(async () => n * round)));
      expect(out).toEqual([round, 2 * round, 3 * round]);
    }
  });
});
