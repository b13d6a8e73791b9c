/**
 * After an edit, the actions reading a changed file start before the cache
 * hits are keyed, so their compilers run while the rest is checked.
 */
import { appendFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseEnv, orionBuild, scratch, sh } from '../helpers/build.js';
import { RACY_WINDOW_MS } from '../../cas/stat-cache.js';

const NAMES = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];

describe('orion build starts the actions whose inputs changed first', () => {
  let dir: string;
  let cache: string;
  const build = () => orionBuild(dir, { cacheDir: cache, args: ['-j', '1', '--verbose'], env: baseEnv() });

  beforeAll(async () => {
    const base = await scratch('changed-first');
    dir = path.join(base, 'proj');
    cache = path.join(base, 'cache');
    await sh(`mkdir -p ${dir}`, base);
    for (const n of NAMES) await writeFile(path.join(dir, `${n}.c`), `int ${n}(void) { return 1; }\n`);
    await writeFile(path.join(dir, 'Makefile'), `OBJS = ${NAMES.map((n) => `${n}.o`).join(' ')}\nlib.a: $(OBJS)\n\tar rcs lib.a $(OBJS)\n%.o: %.c\n\tcc -c $< -o $@\n`);
    // Files modified moments before they are hashed are hashed again next time (racy stat):
    // let the sources age, as an edit in a real checkout finds them.
    await new Promise((r) => setTimeout(r, RACY_WINDOW_MS + 200));
  });

  afterAll(async () => {
    if (dir) await rm(path.dirname(dir), { recursive: true, force: true });
  });

  it('with one job, the compile of the edited file (otherwise the last one) runs before any cache hit', async () => {
    const first = await build();
    expect(first.code, first.stderr).toBe(0);
    // Compiles of equal priority run h..a: without the rule the edited a.o would come last.
    expect(first.lines.map((l) => l.label).slice(0, NAMES.length)).toEqual(NAMES.map((n) => `CC ${n}.o`).reverse());
    await appendFile(path.join(dir, 'a.c'), 'int a2(void) { return 2; }\n');
    const second = await build();
    expect(second.code, second.stderr).toBe(0);
    expect(second.lines[0]).toEqual({ label: 'CC a.o', tag: 'run' });
    expect(second.lines.slice(1, NAMES.length).every((l) => l.tag === 'cached')).toBe(true);
    expect(second.lines.at(-1)).toEqual({ label: 'AR lib.a', tag: 'run' });
  });
});
