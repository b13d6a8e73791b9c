/**
 * `orion build --head` and a head that does not answer at the start: a wrong
 * address fails the build within --connect-timeout with one message naming the
 * head (not minutes of retries and a failure per action); a head that comes up
 * within that time (a CI script that starts it just before) is waited for.
 * Real processes: the CLI, a head and a node on 127.0.0.1.
 */
import { existsSync, readdirSync } from 'node:fs';
import { appendFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseEnv, copyFixture, orionBuild, run, scratch } from '../helpers/build.js';
import { closedPort, startNodeProcess, startOrion, waitForActiveNodes, type Daemon } from '../helpers/daemons.js';

/** Object files anywhere under `dir`. */
const objectFiles = (dir: string): string[] => (readdirSync(dir, { recursive: true }) as string[]).filter((f) => f.endsWith('.o'));

describe('orion build --head: the first contact with the head', () => {
  let base: string;
  const daemons: Daemon[] = [];

  beforeAll(async () => {
    base = await scratch('first-contact');
  });

  afterAll(async () => {
    for (const d of daemons) await d.kill('SIGKILL');
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('fails the build once, naming the head and the refusal, when nothing answers there; the tree is left as a failed make leaves it', async () => {
    const dir = await copyFixture('make-project', path.join(base, 'nothing'));
    const before = readdirSync(dir).sort();
    const port = await closedPort();
    const r = await orionBuild(dir, { cacheDir: path.join(base, 'cache-nothing'), head: `127.0.0.1:${port}`, args: ['--connect-timeout', '1s'], env: baseEnv() });
    expect(r.code, r.stderr).not.toBe(0);
    const failures = r.stderr.split('\n').filter((l) => l.startsWith('orion: failed:'));
    expect(failures, r.stderr).toHaveLength(1);
    expect(failures[0]).toMatch(new RegExp(`^orion: failed: cannot reach the head at 127\\.0\\.0\\.1:${port}: no answer in 1 s \\(\\d+ tries; last: .*ECONNREFUSED.*\\); check that \`orion head\` runs there`));
    expect(r.stderr).toMatch(new RegExp(`^orion: no answer from the head at 127\\.0\\.0\\.1:${port} yet \\(.*ECONNREFUSED.*\\); trying for up to 1 s$`, 'm'));
    // Only make's local steps ran (the generated header, as make would before its first compile);
    // no compile or link ran anywhere, and none left an object file.
    expect(r.summary.ok).toBe(false);
    expect(Object.keys(r.summary.where)).toEqual(r.summary.run > 0 ? ['local'] : []);
    expect(r.summary.run + r.summary.notRun).toBe(r.summary.total);
    expect(r.summary.notRun).toBeGreaterThanOrEqual(10);
    expect(objectFiles(dir)).toEqual([]);
    expect(existsSync(path.join(dir, 'hello'))).toBe(false);
    expect(readdirSync(dir).filter((f) => !before.includes(f))).toEqual(r.summary.run > 0 ? ['gen'] : []);
  });

  it('one-by-one mode (--no-dag) fails the same way: one message, every action not run', async () => {
    const dir = await copyFixture('make-project', path.join(base, 'nothing-no-dag'));
    const port = await closedPort();
    const r = await orionBuild(dir, { cacheDir: path.join(base, 'cache-no-dag'), head: `127.0.0.1:${port}`, args: ['--connect-timeout', '1s', '--no-dag'], env: baseEnv() });
    expect(r.code, r.stderr).not.toBe(0);
    expect(r.stderr.split('\n').filter((l) => l.startsWith('orion: failed:'))).toHaveLength(1);
    expect(r.stderr).toContain(`cannot reach the head at 127.0.0.1:${port}: no answer in 1 s`);
    // No per-action error line: the failure is the build's.
    expect(r.stderr).not.toMatch(/^orion: CC /m);
    expect(r.summary.run + r.summary.notRun).toBe(r.summary.total);
    expect(r.summary.notRun).toBeGreaterThanOrEqual(10);
    expect(objectFiles(dir)).toEqual([]);
  });

  it('a build the local cache serves whole does not wait for a head that does not answer (the tree prefetch stops with the build)', async () => {
    const dir = await copyFixture('make-project', path.join(base, 'cached'));
    const cacheDir = path.join(base, 'cache-cached');
    const first = await orionBuild(dir, { cacheDir, env: baseEnv() });
    expect(first.code, first.stderr).toBe(0);
    // The graph is extracted again (the Makefile changed), which sends the tree ahead to the
    // head; every compile and link is still in the local cache.
    await appendFile(path.join(dir, 'Makefile'), '# a comment\n');
    const port = await closedPort();
    const r = await orionBuild(dir, { cacheDir, head: `127.0.0.1:${port}`, args: ['--connect-timeout', '10m', '-v'], env: baseEnv() });
    expect(r.code, r.stderr).toBe(0);
    // The prefetch did ask the head, and the build ended without it (a wait would time the test out).
    expect(r.stderr).toContain(`no answer from the head at 127.0.0.1:${port} yet`);
    expect(r.stderr).toMatch(/ran 0 remotely, \d+ locally, 11 from cache/);
  }, 60_000);

  it('waits for a head that starts after the build did, then builds on its node', async () => {
    const dir = await copyFixture('make-project', path.join(base, 'late'));
    const port = await closedPort();
    const address = `127.0.0.1:${port}`;
    const building = orionBuild(dir, { cacheDir: path.join(base, 'cache-late'), head: address, args: ['--connect-timeout', '60s'], env: baseEnv() });
    // The build's first request finds nothing listening; the head comes up a little later.
    await new Promise((r) => setTimeout(r, 1_500));
    const head = startOrion(['head', '--host', '127.0.0.1', '--port', String(port), '--data-dir', path.join(base, 'late-head')]);
    daemons.push(head);
    daemons.push(startNodeProcess(address, 'late-n1', path.join(base, 'late-n1'), ['--no-sandbox', '--slots', '2']));
    await waitForActiveNodes(address, 1);
    const r = await building;
    expect(r.code, r.stderr + head.output()).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`^orion: no answer from the head at 127\\.0\\.0\\.1:${port} yet \\(.*ECONNREFUSED.*\\)`, 'm'));
    expect(r.summary.where['late-n1'], r.stderr).toBeGreaterThan(0);
    const hello = await run([path.join(dir, 'hello')], { cwd: dir });
    expect(hello.code).toBe(0);
  });
});
