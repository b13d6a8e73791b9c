/**
 * A compiler's warnings: printed when the compile runs, printed again when its cached result is
 * put in place (a fresh tree served from the cache, as ccache replays them), and not printed by a
 * no-op, where make would not have run the compile. Real make, real compiler, the real CLI.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { expect, it } from 'vitest';
import { baseEnv, orionBuild, scratchForFile } from '../helpers/build.js';

const scratchDir = scratchForFile('warnings');

it('replays a cached compile\'s warning when it writes the object, and stays quiet on a no-op', async () => {
  const base = scratchDir();
  const dir = path.join(base, 'proj');
  await mkdir(dir);
  await writeFile(path.join(dir, 'Makefile'), 'prog: a.o\n\tcc -o prog a.o\n\na.o: a.c\n\tcc -Wall -c a.c -o a.o\n');
  await writeFile(path.join(dir, 'a.c'), 'int main(void) {\n  int unused_thing = 3;\n  return 0;\n}\n');
  const env = baseEnv({ LC_ALL: 'C' });
  const cacheDir = path.join(base, 'cache');
  const warning = /a\.c:2:7: warning: unused variable 'unused_thing'/;

  const first = await orionBuild(dir, { cacheDir, env });
  expect(first.code, first.stderr).toBe(0);
  expect(first.stderr).toMatch(warning);

  const noop = await orionBuild(dir, { cacheDir, env });
  expect(noop.code, noop.stderr).toBe(0);
  expect(noop.summary.run).toBe(0);
  expect(noop.stderr).not.toMatch(warning);

  await rm(path.join(dir, 'a.o'));
  await rm(path.join(dir, 'prog'));
  const fromCache = await orionBuild(dir, { cacheDir, env });
  expect(fromCache.code, fromCache.stderr).toBe(0);
  expect(fromCache.summary.run).toBe(0);
  expect(fromCache.stderr).toMatch(warning);
}, 60_000);
