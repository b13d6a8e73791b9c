/**
 * The compiler's search-path variables are part of every action's key: the
 * same sources compiled with CPATH (or LIBRARY_PATH) naming another directory
 * read other files, and must not be served the first result. Real make, real
 * compiler, the real CLI.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseEnv, orionBuild, run, scratch, sh, type BuildRun } from '../helpers/build.js';

describe('orion build keys the compiler search-path variables', () => {
  let base: string;
  let dir: string;
  const build = (env: Record<string, string>) => orionBuild(dir, { cacheDir: path.join(base, 'cache'), args: ['--verbose'], env: baseEnv(env) });
  const tag = (b: BuildRun, label: string) => b.lines.find((l) => l.label === label)?.tag;
  const exitOf = async () => (await run([path.join(dir, 'prog')], { cwd: dir })).code;

  beforeAll(async () => {
    base = await scratch('keyed-env');
    dir = path.join(base, 'proj');
    await mkdir(dir, { recursive: true });
    for (const [name, value] of [['inc-a', 1], ['inc-b', 2]] as const) {
      await mkdir(path.join(base, name), { recursive: true });
      await writeFile(path.join(base, name, 'value.h'), `#define VALUE ${value}\n`);
    }
    for (const [name, value] of [['lib-a', 10], ['lib-b', 20]] as const) {
      await mkdir(path.join(base, name), { recursive: true });
      await writeFile(path.join(base, name, 'w.c'), `int w(void) { return ${value}; }\n`);
      await sh('cc -c w.c -o w.o && ar rcs libw.a w.o', path.join(base, name));
    }
    await writeFile(path.join(dir, 'main.c'), '#include <value.h>\nint w(void);\nint main(void) { return VALUE + w(); }\n');
    await writeFile(path.join(dir, 'Makefile'), 'prog: main.o\n\tcc -o prog main.o -lw\n\nmain.o: main.c\n\tcc -c main.c -o main.o\n');
  });

  afterAll(async () => {
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('recompiles when CPATH names another include directory, and relinks when LIBRARY_PATH names another library directory', async () => {
    const first = await build({ CPATH: path.join(base, 'inc-a'), LIBRARY_PATH: path.join(base, 'lib-a') });
    expect(first.code, first.stderr).toBe(0);
    expect(await exitOf()).toBe(11);

    const otherHeaders = await build({ CPATH: path.join(base, 'inc-b'), LIBRARY_PATH: path.join(base, 'lib-a') });
    expect(otherHeaders.code, otherHeaders.stderr).toBe(0);
    expect(tag(otherHeaders, 'CC main.o')).toBe('run');
    expect(await exitOf()).toBe(12);

    const otherLibs = await build({ CPATH: path.join(base, 'inc-b'), LIBRARY_PATH: path.join(base, 'lib-b') });
    expect(otherLibs.code, otherLibs.stderr).toBe(0);
    expect(tag(otherLibs, 'LD prog')).toBe('run');
    expect(await exitOf()).toBe(22);

    // Back to the first paths: the first program again. (The compile's key now also covers
    // inc-b/value.h, which its dependency output showed it read once: it may run again, and
    // its object is the first one, so the link comes from the cache.)
    const back = await build({ CPATH: path.join(base, 'inc-a'), LIBRARY_PATH: path.join(base, 'lib-a') });
    expect(back.code, back.stderr).toBe(0);
    expect(tag(back, 'LD prog')).toBe('cached');
    expect(await exitOf()).toBe(11);
  });
});
