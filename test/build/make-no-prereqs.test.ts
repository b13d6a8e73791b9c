/**
 * Recipes make runs only when their target is missing, and those it runs every
 * time: the suckless pattern (`config.h:` / `cp config.def.h $@`, then the
 * user edits config.h), a stamp step without prerequisites, a copy with a
 * prerequisite that the user edited after it, and a phony target with a
 * directory of its name. Real make, real compiler, the real CLI; embedded and
 * with a real head and two real nodes.
 */
import { appendFile, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseEnv, orionBuild, run, scratch, sh, startCluster, type BuildRun, type Cluster } from '../helpers/build.js';

const MAKEFILE = `.PHONY: all docs
all: prog docs stamp defaults.txt

config.h:
\tcp config.def.h $@

defaults.txt: defaults.in
\tcp defaults.in defaults.txt

stamp:
\techo stamped >> stamp.log; touch stamp

docs:
\techo doc >> docs/runs.log

prog: main.c config.h
\tcc -o prog main.c
`;

async function project(dir: string) {
  await sh(`mkdir -p ${dir}/docs`, path.dirname(dir));
  await writeFile(path.join(dir, 'Makefile'), MAKEFILE);
  await writeFile(path.join(dir, 'config.def.h'), '#define FONT "default"\n');
  await writeFile(path.join(dir, 'defaults.in'), 'color=blue\n');
  await writeFile(path.join(dir, 'main.c'), '#include <stdio.h>\n#include "config.h"\nint main(void) { puts(FONT); return 0; }\n');
}

const lines = async (f: string) => (await readFile(f, 'utf8').catch(() => '')).split('\n').filter(Boolean).length;

describe.each(['embedded', 'cluster'] as const)('orion build runs a recipe without prerequisites only when its target is missing (%s)', (mode) => {
  let base: string;
  let dir: string;
  let cluster: Cluster | undefined;
  const build = () => orionBuild(dir, { cacheDir: path.join(base, 'cache'), ...(cluster ? { head: cluster.address } : {}), args: ['--verbose'], env: baseEnv() });
  const tag = (b: BuildRun, label: string) => b.lines.find((l) => l.label === label)?.tag;
  const prog = async () => (await run([path.join(dir, 'prog')], { cwd: dir })).stdout.trim();

  beforeAll(async () => {
    base = await scratch(`make-no-prereqs-${mode}`);
    dir = path.join(base, 'proj');
    await project(dir);
    if (mode === 'cluster') cluster = await startCluster(path.join(base, 'cluster'));
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('first build: copies the default config, runs the stamp and the phony target', async () => {
    const b = await build();
    expect(b.code, b.stderr).toBe(0);
    expect(await readFile(path.join(dir, 'config.h'), 'utf8')).toBe('#define FONT "default"\n');
    expect(await prog()).toBe('default');
    expect(await lines(path.join(dir, 'stamp.log'))).toBe(1);
    expect(await lines(path.join(dir, 'docs/runs.log'))).toBe(1);
  });

  it("keeps the user's config.h and the user's defaults.txt, does not run the stamp again, and runs the phony target again, as make does", async () => {
    await writeFile(path.join(dir, 'config.h'), '#define FONT "mine"\n');
    await writeFile(path.join(dir, 'defaults.txt'), 'color=green\n');
    const b = await build();
    expect(b.code, b.stderr).toBe(0);
    expect(tag(b, 'CP config.h')).toBe('up to date');
    expect(tag(b, 'CP defaults.txt')).toBe('up to date');
    expect(await readFile(path.join(dir, 'config.h'), 'utf8')).toBe('#define FONT "mine"\n');
    expect(await readFile(path.join(dir, 'defaults.txt'), 'utf8')).toBe('color=green\n');
    expect(await prog(), 'the program was rebuilt with the edited config').toBe('mine');
    expect(await lines(path.join(dir, 'stamp.log'))).toBe(1);
    expect(await lines(path.join(dir, 'docs/runs.log')), 'docs is phony: make runs it although docs/ exists').toBe(2);

    // make itself agrees that only the phony target is left to run.
    const ref = await run(['make', '-n'], { cwd: dir });
    expect(ref.stdout.trim()).toBe('echo doc >> docs/runs.log');
  });

  it('copies the default again once config.h is deleted, and copies a newer defaults.in over defaults.txt', async () => {
    await rm(path.join(dir, 'config.h'));
    await appendFile(path.join(dir, 'defaults.in'), 'size=12\n');
    const b = await build();
    expect(b.code, b.stderr).toBe(0);
    expect(tag(b, 'CP config.h')).not.toBe('up to date');
    expect(await prog()).toBe('default');
    expect(await readFile(path.join(dir, 'defaults.txt'), 'utf8')).toBe('color=blue\nsize=12\n');
    expect(await lines(path.join(dir, 'stamp.log'))).toBe(1);
  });
});
