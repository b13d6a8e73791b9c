/**
 * Steps that read git (a version header from `git rev-parse HEAD`) are keyed
 * by the commit and tags checked out, not only by the tree: the same tree at
 * another commit (an empty commit, a merge with the tree CI built before, a
 * tag) runs them again. Real git, real make, the real CLI.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gitIdentity } from '../../cli/build/git-identity.js';
import { baseEnv, orionBuild, run, scratch, sh } from '../helpers/build.js';

const GIT = 'git -c user.email=t@example.com -c user.name=t -c init.defaultBranch=main';

describe('gitIdentity', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'orion-git-id-'));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('is empty outside a work tree, and changes with each commit and tag, in the main tree and in a linked worktree', async () => {
    expect(await gitIdentity(dir)).toBe('');
    const repo = path.join(dir, 'repo');
    await sh(`mkdir -p ${repo} && cd ${repo} && ${GIT} init -q && echo a > a && ${GIT} add a && ${GIT} commit -qm one`, dir);
    const one = await gitIdentity(repo);
    expect(one).toMatch(/^refs\/heads\/main@[0-9a-f]{40} tags:[0-9a-f]{16}$/);
    expect(await gitIdentity(repo)).toBe(one);
    await sh(`${GIT} commit -q --allow-empty -m two`, repo);
    const two = await gitIdentity(repo);
    expect(two).not.toBe(one);
    await sh(`${GIT} tag v1.0`, repo);
    const tagged = await gitIdentity(repo);
    expect(tagged).not.toBe(two);
    // Packed refs give the same identity as loose ones.
    await sh(`${GIT} pack-refs --all`, repo);
    expect(await gitIdentity(repo)).toBe(tagged);
    const wt = path.join(dir, 'wt');
    await sh(`${GIT} worktree add -q ${wt} HEAD~1`, repo);
    const linked = await gitIdentity(wt);
    expect(linked).toMatch(/^[0-9a-f]{40} tags:/);
    expect(linked.split(' ')[1]).toBe((await gitIdentity(repo)).split(' ')[1]);
  });
});

describe('orion build and a step that reads git', () => {
  let base: string;
  let dir: string;
  beforeAll(async () => {
    base = await scratch('git-step');
    dir = path.join(base, 'proj');
    await sh(`mkdir -p ${dir}`, base);
    await writeFile(path.join(dir, 'Makefile'), 'prog: main.c version.h\n\tcc -o prog main.c\n\nversion.h:\n\techo "#define VERSION \\"$$(git rev-parse HEAD)\\"" > version.h\n');
    await writeFile(path.join(dir, 'main.c'), '#include <stdio.h>\n#include "version.h"\nint main(void) { puts(VERSION); return 0; }\n');
    await writeFile(path.join(dir, '.gitignore'), 'prog\nversion.h\n');
    await sh(`${GIT} init -q && ${GIT} add -A && ${GIT} commit -qm one`, dir);
  });
  afterAll(async () => {
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('makes the version header of the commit checked out, also when a fresh checkout of another commit has the same tree', async () => {
    const cache = path.join(base, 'cache');
    const head = async () => (await run(['git', 'rev-parse', 'HEAD'], { cwd: dir })).stdout.trim();
    const first = await orionBuild(dir, { cacheDir: cache, env: baseEnv() });
    expect(first.code, first.stderr).toBe(0);
    expect((await run([path.join(dir, 'prog')], { cwd: dir })).stdout.trim()).toBe(await head());

    // Another commit with the same tree, checked out fresh (CI): make would write its own hash.
    await sh(`${GIT} commit -q --allow-empty -m two && git clean -qfdx`, dir);
    const second = await orionBuild(dir, { cacheDir: cache, env: baseEnv() });
    expect(second.code, second.stderr).toBe(0);
    expect((await run([path.join(dir, 'prog')], { cwd: dir })).stdout.trim()).toBe(await head());

    // Back at the first commit, fresh: its header comes back (from the cache or run again).
    await sh(`git checkout -q HEAD~1 && git clean -qfdx`, dir);
    const third = await orionBuild(dir, { cacheDir: cache, env: baseEnv() });
    expect(third.code, third.stderr).toBe(0);
    expect((await run([path.join(dir, 'prog')], { cwd: dir })).stdout.trim()).toBe(await head());
  });
});
