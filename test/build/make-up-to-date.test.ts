/**
 * Steps whose effects Orion cannot key (a generator script, `cat prog > copy`) follow
 * make's own rule: skipped when their target is newer than every
 * prerequisite, run when a prerequisite changed. Real make, real compiler,
 * the real CLI.
 */
import { readFile, rm, utimes, writeFile, chmod, appendFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseEnv, orionBuild, run, scratch, sh, type BuildRun } from '../helpers/build.js';

const MAKEFILE = `.PHONY: all
all: prog prog-copy both

gen.c: spec.txt gen.sh
\t./gen.sh spec.txt $(LOG) > gen.c

prog: main.o gen.o
\tcc -o prog main.o gen.o

prog-copy: prog
\tcat prog > prog-copy; chmod 755 prog-copy

# A recipe that mixes a cacheable link with a step: no rule for its step.
both: main.o gen.o
\tcc -o both main.o gen.o
\t./gen.sh spec.txt $(LOG).both > both.note

%.o: %.c
\tcc -c $< -o $@
`;

describe("orion build applies make's up-to-date rule to steps", () => {
  let dir: string;
  let log: string;
  let cache: string;
  const build = () => orionBuild(dir, { cacheDir: cache, args: ['--verbose', '--', `LOG=${log}`], env: baseEnv() });
  const tag = (b: BuildRun, label: string) => b.lines.find((l) => l.label === label)?.tag;
  const runs = async (f: string) => (await readFile(f, 'utf8').catch(() => '')).split('\n').filter(Boolean).length;

  beforeAll(async () => {
    const base = await scratch('make-rule');
    dir = path.join(base, 'proj');
    log = path.join(base, 'gen.log');
    cache = path.join(base, 'cache');
    await sh(`mkdir -p ${dir}`, base);
    await writeFile(path.join(dir, 'Makefile'), MAKEFILE);
    await writeFile(path.join(dir, 'gen.sh'), '#!/bin/sh\necho run >> "$2"\necho "int gen(void) { return $(cat "$1"); }"\n');
    await chmod(path.join(dir, 'gen.sh'), 0o755);
    await writeFile(path.join(dir, 'spec.txt'), '7\n');
    await writeFile(path.join(dir, 'main.c'), 'int gen(void);\nint main(void) { return gen() == 7 ? 0 : 3; }\n');
  });

  afterAll(async () => {
    if (dir) await rm(path.dirname(dir), { recursive: true, force: true });
  });

  it('runs every step on the first build, and leaves a tree make finds up to date', async () => {
    const b = await build();
    expect(b.code, b.stderr).toBe(0);
    expect(await runs(log)).toBe(1);
    expect(await runs(`${log}.both`)).toBe(1);
    expect(tag(b, 'GEN gen.c')).toBe('run');
    expect(b.summary.upToDate).toBe(0);
    expect((await run([path.join(dir, 'prog')], { cwd: dir })).code).toBe(0);
    expect(await readFile(path.join(dir, 'prog-copy'))).toEqual(await readFile(path.join(dir, 'prog')));
    expect((await run(['make', '-q', `LOG=${log}`], { cwd: dir })).code, 'make -q: nothing left to do').toBe(0);
  });

  it('skips the generator and the install when a source edit leaves their prerequisites older, as make would', async () => {
    await appendFile(path.join(dir, 'main.c'), 'int unused(void) { return 1; }\n');
    const b = await build();
    expect(b.code, b.stderr).toBe(0);
    expect(tag(b, 'CC main.o')).toBe('run');
    expect(tag(b, 'GEN gen.c')).toBe('up to date');
    expect(await runs(log), 'the generator did not run again').toBe(1);
    // prog was relinked, so its copy is out of date and is installed again.
    expect(tag(b, 'LD prog')).toBe('run');
    expect(tag(b, 'GEN prog-copy')).toBe('run');
    expect(await readFile(path.join(dir, 'prog-copy'))).toEqual(await readFile(path.join(dir, 'prog')));
    // A recipe that also holds a cacheable command gets no rule: its step went through the step cache.
    expect(tag(b, 'GEN both.note')).not.toBe('up to date');
    expect(b.summary.upToDate).toBe(1);
    expect((await run(['make', '-q', `LOG=${log}`], { cwd: dir })).code).toBe(0);
  });

  it('after an edit that leaves the object identical, the cached link is made newer than it, so the install runs and make finds nothing to do', async () => {
    const before = await readFile(path.join(dir, 'main.o'));
    await appendFile(path.join(dir, 'main.c'), '/* a comment only */\n');
    const b = await build();
    expect(b.code, b.stderr).toBe(0);
    expect(tag(b, 'CC main.o')).toBe('run');
    expect(await readFile(path.join(dir, 'main.o'))).toEqual(before);
    expect(tag(b, 'LD prog')).toBe('cached');
    // make would relink prog (main.o is newer) and so reinstall its copy: Orion touches the
    // cached prog, and the install's rule sees it newer than the copy.
    expect(tag(b, 'GEN prog-copy')).toBe('run');
    expect((await run(['make', '-q', `LOG=${log}`], { cwd: dir })).code, 'make -q: nothing left to do').toBe(0);
    const again = await build();
    expect(tag(again, 'GEN prog-copy')).toBe('up to date');
  });

  it('runs the generator again once a prerequisite is newer than its target, and the program sees the new output', async () => {
    await writeFile(path.join(dir, 'spec.txt'), '9\n');
    await writeFile(path.join(dir, 'main.c'), 'int gen(void);\nint main(void) { return gen() == 9 ? 0 : 3; }\n');
    const later = Date.now() / 1000 + 5;
    await utimes(path.join(dir, 'spec.txt'), later, later);
    const b = await build();
    expect(b.code, b.stderr).toBe(0);
    expect(tag(b, 'GEN gen.c')).toBe('run');
    expect(await runs(log)).toBe(2);
    expect(await readFile(path.join(dir, 'gen.c'), 'utf8')).toContain('return 9');
    expect((await run([path.join(dir, 'prog')], { cwd: dir })).code).toBe(0);
    expect(await readFile(path.join(dir, 'prog-copy'))).toEqual(await readFile(path.join(dir, 'prog')));
  });

  it('runs a step whose target was deleted', async () => {
    await rm(path.join(dir, 'prog-copy'));
    const b = await build();
    expect(b.code, b.stderr).toBe(0);
    expect(tag(b, 'GEN prog-copy')).not.toBe('up to date');
    expect(await readFile(path.join(dir, 'prog-copy'))).toEqual(await readFile(path.join(dir, 'prog')));
  });
});
