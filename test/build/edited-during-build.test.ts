/**
 * A header saved while the compile that includes it runs: the object may hold
 * either version, so it is not cached under the key of the version Orion
 * hashed before the compile (ccache's "file changed during compilation").
 * Otherwise going back to that version would be served an object built from
 * the other one. Real make, real compiler (behind a wrapper named gcc that
 * waits for the edit before compiling), the real CLI.
 */
import { chmod, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseEnv, orionBuild, run, scratch, type BuildRun } from '../helpers/build.js';

describe('orion build and a header edited while its compile runs', () => {
  let base: string;
  let dir: string;
  const build = () => orionBuild(dir, { cacheDir: path.join(base, 'cache'), args: ['--verbose'], env: baseEnv() });
  const tag = (b: BuildRun, label: string) => b.lines.find((l) => l.label === label)?.tag;
  const exitOf = async () => (await run([path.join(dir, 'prog')], { cwd: dir })).code;

  beforeAll(async () => {
    base = await scratch('edited-during-build');
    dir = path.join(base, 'proj');
    await mkdir(path.join(dir, 'bin'), { recursive: true });
    // Signals that the compile started, then waits (up to 10 s) for the test to edit the header.
    await writeFile(
      path.join(dir, 'bin', 'gcc'),
      '#!/bin/sh\n[ -n "$MARK" ] || exec cc "$@"\ntouch "$MARK.started"\ni=0\nwhile [ ! -e "$MARK.edited" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done\nexec cc "$@"\n',
    );
    await chmod(path.join(dir, 'bin', 'gcc'), 0o755);
    await writeFile(path.join(dir, 'value.h'), '#define VALUE 1\n');
    await writeFile(path.join(dir, 'main.c'), '#include "value.h"\nint main(void) { return VALUE; }\n');
    await writeFile(path.join(dir, 'Makefile'), `prog: main.o\n\tcc -o prog main.o\n\nmain.o: main.c value.h\n\t./bin/gcc -c main.c -o main.o\n`);
  });

  afterAll(async () => {
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('does not cache the object, so going back to the first header compiles again and gives the first program', async () => {
    const mark = path.join(base, 'mark');
    const building = orionBuild(dir, { cacheDir: path.join(base, 'cache'), args: ['--verbose'], env: baseEnv({ MARK: mark }) });
    for (let i = 0; i < 400 && !(await stat(`${mark}.started`).catch(() => undefined)); i++) await new Promise((r) => setTimeout(r, 25));
    // The key was computed from VALUE 1; the compiler reads VALUE 2.
    await writeFile(path.join(dir, 'value.h'), '#define VALUE 2\n');
    await writeFile(`${mark}.edited`, '');
    const first = await building;
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toContain('value.h changed while CC main.o ran: its result is not cached');
    expect(await exitOf()).toBe(2);

    await writeFile(path.join(dir, 'value.h'), '#define VALUE 1\n');
    const back = await build();
    expect(back.code, back.stderr).toBe(0);
    expect(tag(back, 'CC main.o')).toBe('run');
    expect(await exitOf()).toBe(1);

    // Nothing changes during these builds: their results are cached as usual.
    await writeFile(path.join(dir, 'value.h'), '#define VALUE 2\n');
    const second = await build();
    expect(tag(second, 'CC main.o')).toBe('run');
    expect(await exitOf()).toBe(2);
    const again = await build();
    expect(again.stderr).not.toContain('changed while');
    await writeFile(path.join(dir, 'value.h'), '#define VALUE 1\n');
    const cached = await build();
    expect(tag(cached, 'CC main.o')).toBe('cached');
    expect(await exitOf()).toBe(1);
  }, 60_000);
});
