/**
 * fixtures/autotools-project, generated with the real autotools (autoreconf, configure): a
 * libtool shared and static library in src/ and a program in tests/ linked against it. Its
 * makefile stands next to nothing else; `orion build` follows it. libtool compiles are
 * cacheable compiles (the key names gcc, not the libtool script's shell), automake's rename of
 * each dependency file is folded into its compile so the compiles run side by side, and the
 * tree Orion leaves is make's, byte for byte: embedded, from the cache in a fresh copy, and on
 * a real head with two real nodes.
 */
import { cp, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { FIXTURES, baseEnv, graphOf, listFiles, orionBuild, scratch, sh, startCluster, type BuildRun } from '../helpers/build.js';

let base: string;
/** Configured, not built: copied to `dir` before each build. */
let pristine: string;
/** Where every build happens (the same path: debug info and libtool's files name it). */
let dir: string;
/** make -j2's tree. */
let reference: string;
const env = baseEnv();

beforeAll(async () => {
  base = await scratch('autotools');
  pristine = path.join(base, 'pristine');
  dir = path.join(base, 'proj');
  reference = path.join(base, 'make-build');
  await cp(path.join(FIXTURES, 'autotools-project'), dir, { recursive: true });
  await sh('autoreconf -fi && ./configure -q', dir, env);
  // As `$(LN_S) $(abs_srcdir)/x.dist $(abs_builddir)/x.c` leaves (pcre2): a head refuses input trees with absolute symlinks.
  await sh(`ln -s ${dir}/src/greet.h src/greet-link.h`, dir, env);
  await cp(dir, pristine, { recursive: true, preserveTimestamps: true });
  await sh('make -j2', dir, env);
  await rename(dir, reference);
}, 120_000);

afterAll(async () => {
  await rm(base, { recursive: true, force: true });
});

async function fresh(): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  await cp(pristine, dir, { recursive: true, preserveTimestamps: true });
}

async function expectSameAsMake(run: BuildRun): Promise<void> {
  expect(run.code, run.stderr).toBe(0);
  const mine = await listFiles(dir);
  expect(mine).toEqual(await listFiles(reference));
  for (const f of mine) expect(await readFile(path.join(dir, f)), f).toEqual(await readFile(path.join(reference, f)));
  expect((await sh('./tests/hello', dir, env)).stdout).toBe('hello from orion-autotools-fixture 2.1.0 (table 2026)\nHELLO FROM ORION-AUTOTOOLS-FIXTURE 2.1.0 (TABLE 2026)\n');
}

it('reads libtool compiles as compiles, without the dependency-file renames between them', async () => {
  await fresh();
  const graph = await graphOf(dir, [], env);
  const compiles = graph.actions.filter((a) => a.kind === 'compile');
  // table.c is made by the build (a symlink): its compile, named `test -f 'table.c' || echo './'`table.c, is a compile too.
  expect(compiles.map((a) => a.label).sort()).toEqual(['CC src/libgreet_la-greet.lo', 'CC src/libgreet_la-shout.lo', 'CC src/libgreet_la-table.lo', 'CC tests/hello-hello.o']);
  const greet = compiles.find((a) => a.label === 'CC src/libgreet_la-greet.lo')!;
  expect(greet.argv.slice(0, 4)).toEqual(['/bin/bash', '../libtool', '--tag=CC', '--mode=compile']);
  expect(greet.outputs.map((o) => path.relative(dir, o)).sort()).toEqual(['src/.deps/libgreet_la-greet.Plo', 'src/.libs/libgreet_la-greet.o', 'src/libgreet_la-greet.lo', 'src/libgreet_la-greet.o']);
  expect(greet.inputs).toContain(path.join(dir, 'libtool'));
  // No `mv -f .deps/X.Tpo .deps/X.Plo` steps: the compiles wait for nothing but the steps before them.
  expect(graph.actions.filter((a) => a.argv.join(' ').includes('.Tpo'))).toEqual([]);
  const shout = compiles.find((a) => a.label === 'CC src/libgreet_la-shout.lo')!;
  expect(shout.deps).not.toContain(greet.id);
  expect(greet.deps).toEqual(shout.deps);
}, 60_000);

it('extracts the same graph before and after a build (the generated source read the same way)', async () => {
  await fresh();
  const before = await graphOf(dir, [], env);
  const built = await orionBuild(dir, { cacheDir: path.join(base, 'cache-graphs'), env });
  expect(built.code, built.stderr).toBe(0);
  const after = await graphOf(dir, [], env);
  const shape = (g: typeof before) => g.actions.filter((a) => a.kind !== 'other').map((a) => [a.id, a.kind, a.label]);
  expect(shape(after)).toEqual(shape(before));
}, 120_000);

it('builds what make builds, then serves a fresh copy from the cache, compiles and links included', async () => {
  const cacheDir = path.join(base, 'cache-embedded');
  await fresh();
  const first = await orionBuild(dir, { cacheDir, env });
  await expectSameAsMake(first);
  expect(first.summary.run).toBeGreaterThan(0);

  await fresh();
  const second = await orionBuild(dir, { cacheDir, env });
  await expectSameAsMake(second);
  // The compiles come from the cache, and libtool's links (steps) from the step cache.
  expect(second.lines.filter((l) => l.label.startsWith('CC ') && l.tag !== 'cached')).toEqual([]);
  expect(second.summary.run).toBe(0);
}, 120_000);

it('runs the libtool compiles on real nodes (they check gcc, not bash) and builds what make builds', async () => {
  const cluster = await startCluster(path.join(base, 'cluster'));
  try {
    await fresh();
    const run = await orionBuild(dir, { cacheDir: path.join(base, 'cache-cluster'), head: cluster.address, env });
    await expectSameAsMake(run);
    const onNodes = Object.entries(run.summary.where).filter(([where]) => where !== 'local').reduce((n, [, k]) => n + k, 0);
    expect(onNodes).toBeGreaterThanOrEqual(3);
  } finally {
    await cluster.stop();
  }
}, 120_000);
