/**
 * -j N bounds the commands running at once, while cache hits are checked and
 * restored alongside them.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseEnv, orionBuild, scratch, sh } from '../helpers/build.js';

const NAMES = ['a', 'b', 'c', 'd', 'e', 'f'];

/** The most "start" lines not yet matched by an "end" line, in log order. */
function maxOverlap(log: string): number {
  let now = 0;
  let max = 0;
  for (const l of log.split('\n')) {
    if (l.startsWith('start')) max = Math.max(max, ++now);
    else if (l.startsWith('end')) now--;
  }
  return max;
}

describe('orion build -j', () => {
  let dir: string;
  let base: string;

  beforeAll(async () => {
    base = await scratch('jobs');
    dir = path.join(base, 'proj');
    await sh(`mkdir -p ${dir}`, base);
    for (const n of NAMES) await writeFile(path.join(dir, `${n}.c`), `int ${n}(void) { return 1; }\n`);
    await writeFile(path.join(dir, 'slow-cc'), `#!/bin/sh\necho start >> "${base}/cc.log"\nsleep 0.3\ncc "$@"; s=$?\necho end >> "${base}/cc.log"\nexit $s\n`, { mode: 0o755 });
    await writeFile(path.join(dir, 'Makefile'), `CC = ./slow-cc\nOBJS = ${NAMES.map((n) => `${n}.o`).join(' ')}\nlib.a: $(OBJS)\n\tar rcs lib.a $(OBJS)\n%.o: %.c\n\t$(CC) -c $< -o $@\n`);
  });

  afterAll(async () => {
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('starts no further command after a failure (without -k), as make does, even with more actions in flight', async () => {
    const proj = path.join(base, 'failing');
    await sh(`mkdir -p ${proj}`, base);
    // Compiles of equal priority start from the last one: g.c, which does not compile, usually comes first.
    const names = [...NAMES, 'g'];
    for (const n of names) await writeFile(path.join(proj, `${n}.c`), n === 'g' ? 'int g(void) { return }\n' : `int ${n}(void) { return 1; }\n`);
    await writeFile(path.join(proj, 'slow-cc'), `#!/bin/sh\necho "start $2" >> "${base}/fail.log"\nsleep 0.3\nexec cc "$@"\n`, { mode: 0o755 });
    await writeFile(path.join(proj, 'Makefile'), `CC = ./slow-cc\nOBJS = ${names.map((n) => `${n}.o`).join(' ')}\nlib.a: $(OBJS)\n\tar rcs lib.a $(OBJS)\n%.o: %.c\n\t$(CC) -c $< -o $@\n`);
    const b = await orionBuild(proj, { cacheDir: path.join(base, 'cache-fail'), args: ['-j', '1'], env: baseEnv() });
    expect(b.code).toBe(2);
    expect(b.summary.failed).toBe(1);
    expect(b.stderr).toMatch(/CC g\.o/);
    const log = await readFile(path.join(base, 'fail.log'), 'utf8');
    // Under load another compile may be keyed first and run before g.c; none starts after it.
    const starts = log.split('\n').filter((l) => l.startsWith('start '));
    expect(starts.at(-1), 'nothing started after the failing compile').toBe('start g.c');
    expect(starts.length).toBeLessThan(names.length);
  });

  for (const jobs of [1, 2, 3]) {
    it(`runs at most ${jobs} command(s) at once with -j ${jobs}, and uses them all`, async () => {
      await rm(path.join(base, 'cc.log'), { force: true });
      const b = await orionBuild(dir, { cacheDir: path.join(base, `cache-${jobs}`), args: ['-j', String(jobs)], env: baseEnv() });
      expect(b.code, b.stderr).toBe(0);
      const log = await readFile(path.join(base, 'cc.log'), 'utf8');
      expect(log.split('\n').filter((l) => l === 'start')).toHaveLength(NAMES.length);
      expect(maxOverlap(log)).toBe(jobs);
    });
  }
});
