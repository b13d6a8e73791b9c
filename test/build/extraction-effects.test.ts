import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { baseEnv, orion, run } from '../helpers/build.js';

// A makefile that generates a header while it is parsed, as Redis does with
// `release_hdr := $(shell sh -c './mkreleasehdr.sh')`: even a dry run writes it.
async function writeProject(dir: string) {
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'mkstamp.sh'), '#!/bin/sh\n[ -f stamp.h ] || echo \'#define STAMP "made while parsing"\' > stamp.h\n', { mode: 0o755 });
  await writeFile(path.join(dir, 'main.c'), '#include <stdio.h>\n#include "stamp.h"\nint main(void) { puts(STAMP); return 0; }\n');
  await writeFile(path.join(dir, 'Makefile'), 'stamp := $(shell sh -c ./mkstamp.sh)\napp: main.o\n\tcc -o app main.o\nmain.o: main.c\n\tcc -c main.c -o main.o\n');
}

describe('files a graph extraction writes', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('are written again when a cached graph is used on a fresh checkout that lacks them', async () => {
    const base = await mkdtemp(path.join(os.tmpdir(), 'orion-extract-'));
    dirs.push(base);
    const proj = path.join(base, 'proj');
    const cache = path.join(base, 'cache');
    await writeProject(proj);
    const first = await orion(['build', '--cache-dir', cache], { cwd: proj, env: baseEnv() });
    expect(first.code, first.stderr).toBe(0);
    // A fresh checkout at the same path: the graph comes from the cache, and make does not run.
    await rm(proj, { recursive: true, force: true });
    await writeProject(proj);
    const second = await orion(['build', '--cache-dir', cache], { cwd: proj, env: baseEnv() });
    expect(second.code, second.stderr).toBe(0);
    expect(await readFile(path.join(proj, 'stamp.h'), 'utf8')).toBe('#define STAMP "made while parsing"\n');
    expect((await run([path.join(proj, 'app')], { cwd: proj })).stdout).toBe('made while parsing\n');
    expect(second.stdout).toMatch(/CC main\.o \(cached\)/);
  });
});
