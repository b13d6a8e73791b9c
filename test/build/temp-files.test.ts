/**
 * `orion build` leaves nothing in the temporary directory: the compilers'
 * dependency files it asks for (embedded runs) go to a directory of its own,
 * removed when the build ends, after a failed build as after a good one.
 * Real make, real compiler, the real CLI.
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { expect, it } from 'vitest';
import { baseEnv, orionBuild, scratchForFile } from '../helpers/build.js';

const scratchDir = scratchForFile('temp-files');

it('removes its dependency-file directory after a good and after a failed build', async () => {
  const base = scratchDir();
  const dir = path.join(base, 'proj');
  const tmp = path.join(base, 'tmp');
  await mkdir(dir);
  await mkdir(tmp);
  await writeFile(path.join(dir, 'Makefile'), 'prog: a.o b.o\n\tcc -o prog a.o b.o\n\n%.o: %.c\n\tcc -c $< -o $@\n');
  await writeFile(path.join(dir, 'a.c'), 'int b(void);\nint main(void) { return b(); }\n');
  await writeFile(path.join(dir, 'b.c'), 'int b(void) { return 0 }\n');
  const env = baseEnv({ TMPDIR: tmp });
  const cacheDir = path.join(base, 'cache');

  const failed = await orionBuild(dir, { cacheDir, env });
  expect(failed.code, failed.stderr).not.toBe(0);
  expect(failed.stderr).toMatch(/b\.c/);
  // a.o compiled, with Orion's dependency file: the directory was made, then removed.
  expect(failed.summary.run).toBeGreaterThanOrEqual(1);
  expect(await readdir(tmp)).toEqual([]);

  await writeFile(path.join(dir, 'b.c'), 'int b(void) { return 0; }\n');
  const good = await orionBuild(dir, { cacheDir, env });
  expect(good.code, good.stderr).toBe(0);
  expect(good.summary.run).toBeGreaterThanOrEqual(2);
  expect(await readdir(tmp)).toEqual([]);
}, 60_000);
