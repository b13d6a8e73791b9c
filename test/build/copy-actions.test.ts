/**
 * `install SRC DST` and `cp SRC DST` are cached actions keyed by SRC's content:
 * a copy of a binary runs beside other work, a copy of anything else (a header
 * a compile may include) still orders the build as a step would, and a copy
 * into an existing directory writes DIR/SRC's name. Real make, real compiler,
 * the real CLI.
 */
import { appendFile, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actionByLabel, baseEnv, graphOf, orionBuild, run, scratch, type BuildRun } from '../helpers/build.js';

const MAKEFILE = `.PHONY: all
all: prog prog-copy bin/prog

config.h: config.h.in
\tcp config.h.in config.h

main.o: main.c config.h
\tcc -c main.c -o main.o

prog: main.o
\tcc -o prog main.o

prog-copy: prog
\tinstall prog prog-copy

bin/prog: prog
\tcp prog bin
`;

describe('orion build caches install and cp copies', () => {
  let dir: string;
  let cache: string;
  const build = () => orionBuild(dir, { cacheDir: cache, args: ['--verbose'], env: baseEnv() });
  const tag = (b: BuildRun, label: string) => b.lines.find((l) => l.label === label)?.tag;
  const same = async (a: string, b: string) => (await readFile(path.join(dir, a))).equals(await readFile(path.join(dir, b)));
  const mode = async (f: string) => (await stat(path.join(dir, f))).mode & 0o777;
  const makeQ = async () => (await run(['make', '-q'], { cwd: dir })).code;
  const progExit = async () => (await run([path.join(dir, 'prog')], { cwd: dir })).code;

  beforeAll(async () => {
    const base = await scratch('copies');
    dir = path.join(base, 'proj');
    cache = path.join(base, 'cache');
    await mkdir(path.join(dir, 'bin'), { recursive: true });
    await writeFile(path.join(dir, 'Makefile'), MAKEFILE);
    await writeFile(path.join(dir, 'config.h.in'), '#define ANSWER 7\n');
    await writeFile(path.join(dir, 'main.c'), '#include "config.h"\nint main(void) { return ANSWER; }\n');
  });

  afterAll(async () => {
    if (dir) await rm(path.dirname(dir), { recursive: true, force: true });
  });

  it('orders a header copy before the compiles and lets a binary copy run beside other work', async () => {
    const graph = await graphOf(dir);
    const copyHeader = actionByLabel(graph, 'CP config.h');
    const install = actionByLabel(graph, 'INSTALL prog-copy');
    expect([copyHeader.kind, copyHeader.cacheable, install.kind, install.cacheable]).toEqual(['copy', true, 'copy', true]);
    expect(actionByLabel(graph, 'CC main.o').deps).toContain(copyHeader.id);
    // Everything after a barrier waits for it; beyond that the install waits for the link alone,
    // and the other binary copy does not wait for the install.
    expect([...install.deps].sort()).toEqual([copyHeader.id, actionByLabel(graph, 'LD prog').id].sort());
    expect(actionByLabel(graph, 'CP bin').deps).not.toContain(install.id);
  });

  it('runs the copies on the first build, byte-identical and executable as install and cp make them', async () => {
    const b = await build();
    expect(b.code, b.stderr).toBe(0);
    expect([tag(b, 'CP config.h'), tag(b, 'INSTALL prog-copy'), tag(b, 'CP bin')]).toEqual(['run', 'run', 'run']);
    expect(await progExit()).toBe(7);
    expect(await same('prog', 'prog-copy')).toBe(true);
    expect(await same('prog', 'bin/prog')).toBe(true);
    expect(await mode('prog-copy')).toBe(0o755);
    expect(await makeQ(), 'make -q: nothing left to do').toBe(0);
  });

  it('restores deleted copies from the cache without running them', async () => {
    await rm(path.join(dir, 'prog-copy'));
    await rm(path.join(dir, 'bin/prog'));
    const b = await build();
    expect(b.code, b.stderr).toBe(0);
    expect([tag(b, 'INSTALL prog-copy'), tag(b, 'CP bin')]).toEqual(['cached', 'cached']);
    expect(b.summary.run, 'nothing ran').toBe(0);
    expect(await same('prog', 'prog-copy')).toBe(true);
    expect(await same('prog', 'bin/prog')).toBe(true);
    expect(await mode('prog-copy')).toBe(0o755);
    expect(await makeQ()).toBe(0);
  });

  it('copies a changed header again and recompiles what includes it', async () => {
    await writeFile(path.join(dir, 'config.h.in'), '#define ANSWER 9\n');
    const b = await build();
    expect(b.code, b.stderr).toBe(0);
    expect([tag(b, 'CP config.h'), tag(b, 'CC main.o'), tag(b, 'LD prog'), tag(b, 'INSTALL prog-copy')]).toEqual(['run', 'run', 'run', 'run']);
    expect(await progExit()).toBe(9);
    expect(await same('prog', 'prog-copy')).toBe(true);
    expect(await same('prog', 'bin/prog')).toBe(true);
    expect(await makeQ()).toBe(0);
  });

  it('after a comment-only edit serves the copies from the cache and leaves them newer than the binary, as make expects', async () => {
    await appendFile(path.join(dir, 'main.c'), '/* a comment */\n');
    const b = await build();
    expect(b.code, b.stderr).toBe(0);
    expect([tag(b, 'CC main.o'), tag(b, 'LD prog'), tag(b, 'INSTALL prog-copy'), tag(b, 'CP bin')]).toEqual(['run', 'cached', 'cached', 'cached']);
    expect(await makeQ(), 'make -q: nothing left to do').toBe(0);
  });
});
