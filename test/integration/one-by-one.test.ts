/**
 * `orion build --no-dag` sends each action to the head on its own (REAPI Execute), dozens at
 * once: every one of them listens to the build's abort signal, which must not make Node warn
 * about a listener leak on the user's terminal. Real head, two real nodes, real compiler.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { expect, it } from 'vitest';
import { baseEnv, orionBuild, scratchForFile, startCluster } from '../helpers/build.js';

const scratchDir = scratchForFile('one-by-one');

it('runs 24 compiles one by one on the cluster without a MaxListenersExceededWarning', async () => {
  const base = scratchDir();
  const dir = path.join(base, 'proj');
  await mkdir(dir);
  const names = Array.from({ length: 24 }, (_, i) => `f${i}`);
  await writeFile(path.join(dir, 'Makefile'), `all: ${names.map((n) => `${n}.o`).join(' ')}\n\n%.o: %.c\n\tcc -c $< -o $@\n`);
  for (const [i, n] of names.entries()) await writeFile(path.join(dir, `${n}.c`), `int ${n}(void) { return ${i}; }\n`);
  const cluster = await startCluster(path.join(base, 'cluster'));
  try {
    const r = await orionBuild(dir, { cacheDir: path.join(base, 'cache'), head: cluster.address, args: ['--no-dag', '-j', '24'], env: baseEnv() });
    expect(r.code, r.stderr).toBe(0);
    expect(r.summary.run).toBe(24);
    expect(Object.entries(r.summary.where).filter(([w]) => w !== 'local').reduce((n, [, k]) => n + k, 0)).toBe(24);
    expect(r.stderr).not.toContain('MaxListenersExceededWarning');
  } finally {
    await cluster.stop();
  }
}, 120_000);
