import { mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeFindsUpToDate, statMtime } from '../../cli/build/make-rule.js';

const times = (m: Record<string, number>) => async (f: string) => (f in m ? BigInt(m[f]!) : undefined);

describe("make's up-to-date rule for steps", () => {
  it('is up to date when the target exists and no prerequisite is newer (equal times count as up to date)', async () => {
    expect(await makeFindsUpToDate({ target: 't', prereqs: ['a', 'b'] }, times({ t: 10, a: 5, b: 10 }))).toBe(true);
  });

  it('runs when any prerequisite is newer, even by a nanosecond', async () => {
    expect(await makeFindsUpToDate({ target: 't', prereqs: ['a', 'b'] }, times({ t: 10, a: 5, b: 11 }))).toBe(false);
  });

  it('runs when the target is missing, or a prerequisite is missing (a phony target such as distclean)', async () => {
    expect(await makeFindsUpToDate({ target: 't', prereqs: ['a'] }, times({ a: 5 }))).toBe(false);
    expect(await makeFindsUpToDate({ target: 't', prereqs: ['a', 'distclean'] }, times({ t: 10, a: 5 }))).toBe(false);
  });

  it('finds a rule without prerequisites up to date exactly when its target exists, however old', async () => {
    expect(await makeFindsUpToDate({ target: 't', prereqs: [] }, times({ t: 1, a: 99 }))).toBe(true);
    expect(await makeFindsUpToDate({ target: 't', prereqs: [] }, times({ a: 99 }))).toBe(false);
  });

  it('reads nanosecond modification times from the file system', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'orion-make-rule-'));
    try {
      const [t, a] = [path.join(dir, 't'), path.join(dir, 'a')];
      await writeFile(t, 't');
      await writeFile(a, 'a');
      await utimes(a, 1000, 1000);
      await utimes(t, 1000.5, 1000.5);
      expect(await makeFindsUpToDate({ target: t, prereqs: [a] })).toBe(true);
      await utimes(a, 1000.75, 1000.75);
      expect(await makeFindsUpToDate({ target: t, prereqs: [a] })).toBe(false);
      expect(await statMtime(path.join(dir, 'absent'))).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
