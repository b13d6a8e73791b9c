/**
 * After an edit, the actions reading a changed file start before the cache
 * hits are keyed, so their compilers run while the rest is checked.
 */
import { appendFile, readFile, rm, writeFile } from 'node:fs/promises';
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
    // Compiles of equal priority start h..a: without the rule the edited a.o would start last.
    const firstStarts = first.stdout.split('\n').flatMap((l) => /^\S+\$ cc -c (\w)\.c /.exec(l)?.[1] ?? []);
    expect(firstStarts).toEqual([...NAMES].reverse());
    await appendFile(path.join(dir, 'a.c'), 'int a2(void) { return 2; }\n');
    const second = await build();
    expect(second.code, second.stderr).toBe(0);
    // --verbose prints each command as it starts: the edited compile comes before every other one.
    const startedCompiles = second.stdout.split('\n').flatMap((l) => /^\S+\$ cc -c (\w)\.c /.exec(l)?.[1] ?? []);
    expect(startedCompiles[0]).toBe('a');
    expect(startedCompiles).toHaveLength(NAMES.length);
    expect(second.lines.find((l) => l.label === 'CC a.o')?.tag).toBe('run');
    expect(second.lines.filter((l) => l.label !== 'CC a.o' && l.label !== 'AR lib.a').every((l) => l.tag === 'cached')).toBe(true);
    expect(second.lines.at(-1)).toEqual({ label: 'AR lib.a', tag: 'run' });
  });

  it('with more actions in flight than jobs, cache lookups wait until the edited compile is keyed and started', async () => {
    await appendFile(path.join(dir, 'e.c'), 'int e2(void) { return 2; }\n');
    const trace = path.join(path.dirname(dir), 'trace.json');
    const b = await orionBuild(dir, { cacheDir: cache, args: ['-j', '2', '--profile', trace], env: baseEnv() });
    expect(b.code, b.stderr).toBe(0);
    type Event = { ph: string; ts: number; name: string; cat?: string };
    const events = (JSON.parse(await readFile(trace, 'utf8')) as { traceEvents: Event[] }).traceEvents.filter((e) => e.ph === 'X');
    const compile = events.find((e) => e.name === 'CC e.o' && e.cat === 'compile');
    const lookups = events.filter((e) => e.cat === 'cache');
    expect(compile, 'the edited compile ran').toBeDefined();
    expect(lookups.map((e) => e.name).sort()).toEqual(NAMES.filter((n) => n !== 'e').map((n) => `CC ${n}.o`).sort());
    // Keying shares the build's one thread: lookups started beside it would delay the command.
    for (const l of lookups) expect(l.ts, `${l.name} started before the edited compile`).toBeGreaterThanOrEqual(compile!.ts);
  });
});
