/**
 * A step make finds up to date (its rule's target newer than its prerequisites)
 * is settled as soon as make's decision can be taken, not after every action
 * before it: what follows it starts at once. Found out of date, it still runs
 * after everything before it, as in make's order. Embedded, and with a real
 * head and two real nodes.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, rm, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseEnv, orionBuild, scratch, sh, startCluster, type BuildRun, type Cluster } from '../helpers/build.js';

/**
 * In make's order: a.o; a stamp step (no prerequisites: it always runs, after a.o); slow.o and b.o;
 * the generator step (rule gen.c: spec.txt), decided after the stamp; gen.o and big.o; the link.
 */
const MAKEFILE = `OBJS = a.o slow.o b.o gen.o big.o
app: a.o stamp slow.o b.o gen.o big.o
\tcc -o app $(OBJS)
stamp:
\ttouch stamp
gen.c: spec.txt
\tsh gen.sh
%.o: %.c
\tcc -c $< -o $@
`;

async function project(dir: string) {
  await sh(`mkdir -p ${dir}`, path.dirname(dir));
  await writeFile(path.join(dir, 'Makefile'), MAKEFILE);
  await writeFile(path.join(dir, 'a.c'), 'int a(void) { return 1; }\n');
  await writeFile(path.join(dir, 'b.c'), 'int b(void) { return 2; }\n');
  // slow.c compiles in about half a second.
  const n = 1500;
  const fns = Array.from({ length: n }, (_, i) => `static int s${i}(int x) { return x / ${i + 1} + ${i}; }`).join('\n');
  await writeFile(path.join(dir, 'slow.c'), `${fns}\nint slow(void) { return (${Array.from({ length: n }, (_, i) => `s${i}(0)`).join(' + ')}) * 0; }\n`);
  const body = Array.from({ length: 300 }, (_, i) => `int f${i}(int x) { return x * ${i}; }`).join('\n');
  await writeFile(path.join(dir, 'big.c'), `${body}\nint gen(void);\nint a(void);\nint b(void);\nint slow(void);\nint main(void) { return f1(0) + gen() + a() + b() + slow() - 3; }\n`);
  await writeFile(path.join(dir, 'spec.txt'), '1\n');
  await writeFile(path.join(dir, 'gen.sh'), 'echo "int gen(void) { return $(cat spec.txt); }" > gen.c\n');
  await writeFile(path.join(dir, 'gen.c'), 'int gen(void) { return 1; }\n');
  // The generated file is newer than its prerequisite: make would not run the generator.
  const old = new Date(Date.now() - 3600_000);
  await utimes(path.join(dir, 'spec.txt'), old, old);
}

type Event = { ph: string; ts: number; dur: number; name: string; cat?: string };
/** Compile spans of a --profile trace, by label. */
async function spans(trace: string): Promise<(name: string) => Event> {
  const events = (JSON.parse(await readFile(trace, 'utf8')) as { traceEvents: Event[] }).traceEvents.filter((e) => e.ph === 'X' && e.cat === 'compile');
  return (name) => events.find((e) => e.name === name)!;
}

/** The compiles and the generator in the order --verbose printed them starting. */
const starts = (b: BuildRun) => b.stdout.split('\n').flatMap((l) => /^\S+\$ (?:cc -c (\w+)\.c|sh (gen)\.sh)/.exec(l)?.slice(1).filter(Boolean) ?? []);

describe('steps make finds up to date do not hold back what follows them', () => {
  let base: string;
  let cluster: Cluster | undefined;

  beforeAll(async () => {
    base = await scratch('skippable');
  });

  afterAll(async () => {
    await cluster?.stop();
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('embedded: the compiles after an up-to-date generator start while the slow one before it runs; an out-of-date one runs after it', async () => {
    const dir = path.join(base, 'embedded');
    await project(dir);
    const cache = path.join(base, 'cache-embedded');
    const trace = path.join(base, 'trace.json');
    const b = await orionBuild(dir, { cacheDir: cache, args: ['-j', '2', '--profile', trace], env: baseEnv() });
    expect(b.code, b.stderr).toBe(0);
    expect(b.lines.find((l) => l.label.includes('gen.sh'))?.tag).toBe('up to date');
    const span = await spans(trace);
    // Before, big.o waited for the generator, which waited for slow.o.
    expect(span('CC big.o').ts).toBeLessThan(span('CC slow.o').ts + span('CC slow.o').dur);
    expect(await readFile(path.join(dir, 'gen.c'), 'utf8')).toBe('int gen(void) { return 1; }\n');

    // spec.txt edited: make would run the generator, after everything before it in its order.
    await writeFile(path.join(dir, 'spec.txt'), '4\n');
    await sh('rm -f *.o app', dir);
    const again = await orionBuild(dir, { cacheDir: cache, args: ['-j', '2', '--verbose'], env: baseEnv() });
    expect(again.code, again.stderr).toBe(0);
    const order = starts(again);
    expect(order.indexOf('gen')).toBeGreaterThan(-1);
    // The other objects come from the cache (unchanged); the generator still waited for them, and gen.o for it.
    expect(again.lines.findIndex((l) => l.label === 'CC slow.o')).toBeLessThan(again.lines.findIndex((l) => l.label.includes('gen.sh')));
    expect(again.lines.findIndex((l) => l.label.includes('gen.sh'))).toBeLessThan(again.lines.findIndex((l) => l.label === 'CC gen.o'));
    expect(await readFile(path.join(dir, 'gen.c'), 'utf8')).toBe('int gen(void) { return 4; }\n');
    expect(execStatus(dir)).toBe(4);
  });

  it('with a head and two nodes: the step is reported up to date once the stamp before it ran, the compiles after it start while slow.o runs, and the outputs are those of make', async () => {
    cluster = await startCluster(path.join(base, 'cluster'));
    const dir = path.join(base, 'cluster-proj');
    await project(dir);
    const trace = path.join(base, 'cluster-trace.json');
    const b = await orionBuild(dir, { cacheDir: path.join(base, 'cache-cluster'), head: cluster.address, args: ['--profile', trace], env: baseEnv() });
    expect(b.code, b.stderr).toBe(0);
    expect(b.lines.find((l) => l.label.includes('gen.sh'))?.tag).toBe('up to date');
    // Only the stamp ran here; the compiles and the link ran on the nodes.
    expect(b.summary.where.local ?? 0, b.stdout + b.stderr).toBe(1);
    const span = await spans(trace);
    expect(span('CC big.o').ts).toBeLessThan(span('CC slow.o').ts + span('CC slow.o').dur);

    const ref = path.join(base, 'make-proj');
    await project(ref);
    await sh('make -s', ref);
    for (const f of ['a.o', 'slow.o', 'b.o', 'gen.o', 'big.o', 'app']) expect(sha(await readFile(path.join(dir, f))), f).toBe(sha(await readFile(path.join(ref, f))));
    expect(execStatus(dir)).toBe(1);
  }, 120_000);
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function execStatus(dir: string): number {
  return spawnSync(path.join(dir, 'app')).status ?? -1;
}
