/**
 * A cold cache finds and digests the build's compiler (gcc and the cc1, as and ld it runs) while
 * make's first steps run, rather than after them, in front of the first compile. Real make, real
 * gcc, the real CLI: the first step waits (up to 10 s) for the toolchain answers file the warm-up
 * writes into the cache, and records whether it appeared.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { expect, it } from 'vitest';
import { baseEnv, orionBuild, scratchForFile } from '../helpers/build.js';

const scratchDir = scratchForFile('tool-warmup');

it('digests the compiler while the steps before the first compile run', async () => {
  const base = scratchDir();
  const dir = path.join(base, 'proj');
  const cacheDir = path.join(base, 'cache');
  await mkdir(dir);
  const wait = 'for i in $$(seq 100); do test -s $(CACHE)/toolchains.json && break; sleep 0.1; done';
  await writeFile(
    path.join(dir, 'Makefile'),
    `prog: a.o\n\tgcc -o prog a.o\n\na.o: a.c stamp\n\tgcc -c a.c -o a.o\n\nstamp:\n\t${wait}; if test -s $(CACHE)/toolchains.json; then echo warmed; else echo cold; fi > stamp\n`,
  );
  await writeFile(path.join(dir, 'a.c'), 'int main(void) { return 0; }\n');
  const r = await orionBuild(dir, { cacheDir, env: baseEnv({ LC_ALL: 'C' }), args: [`CACHE=${cacheDir}`] });
  expect(r.code, r.stderr).toBe(0);
  expect((await readFile(path.join(dir, 'stamp'), 'utf8')).trim()).toBe('warmed');
  expect(JSON.parse(await readFile(path.join(cacheDir, 'toolchains.json'), 'utf8'))).toEqual(expect.any(Object));
}, 60_000);
